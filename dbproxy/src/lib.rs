//! Governed Postgres access: statement classification with sqlparser (pure), the Postgres wire
//! framing (pure), and the proxy that enforces `database_rules` and
//! `database_connection_rules` with credential injection and SCRAM upstream.
#![forbid(unsafe_code)]

pub mod classify;
pub mod proxy;
pub mod wire;

pub use classify::{Effect, ObjectRef, classify};
pub use proxy::{ClientCtx, DbEvent, DbEventKind, DbProxy, EventSink, ProxyError, ProxyOptions, Served};
