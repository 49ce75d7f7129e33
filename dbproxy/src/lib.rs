//! Governed Postgres access: statement classification with sqlparser (pure), the Postgres wire
//! framing (pure), and, to come, the proxy that enforces `database_rules` and
//! `database_connection_rules` with credential injection and SCRAM upstream.
#![forbid(unsafe_code)]

pub mod classify;
pub mod wire;

pub use classify::{Effect, ObjectRef, classify};
