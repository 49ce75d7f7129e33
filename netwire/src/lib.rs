//! `netwire`: the gateway's view of the first bytes of a connection and the byte relay behind it.
//!
//! - [`tls`] and [`http`] are pure parsers over `&[u8]` (no IO, no async) that answer
//!   `Ok(None)` while more bytes are needed, so a caller can re-run them on a longer buffer;
//!   [`tls::rewrite_sni`] re-encodes a ClientHello with another `server_name` the same way.
//! - [`peek`] classifies a connection from its first bytes without consuming them.
//! - [`relay`] moves bytes between two TCP sockets with `splice(2)`, propagating half-close,
//!   resets and an idle timeout.
//! - [`stream::MaybeTls`]: a plain-or-TLS stream for code that serves both alike.
#![forbid(unsafe_code)]

pub mod hostname;
pub mod http;
pub mod peek;
pub mod relay;
pub mod stream;
pub mod tls;

pub use hostname::{Hostname, HostnameError};
pub use http::{HttpError, HttpHead, parse_request_head};
pub use peek::{PeekError, Peeked, classify, peek_first_bytes};
pub use relay::{RelayConfig, RelayEnd, RelayError, RelayMode, RelayStats, Side, relay, relay_with};
pub use tls::{ClientHelloInfo, Rewritten, TlsError, parse_client_hello, rewrite_sni};
