//! [`ProxyError`]: why a proxied connection ended badly, with the side at fault. A policy
//! refusal is not an error (it is an event and an answer to the client); a connection the
//! rules refuse ends `Ok`.

use std::io;

use crate::wire::WireError;

use super::scram::ScramError;

/// Which side caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The agent's client.
    Client,
    /// The upstream server (or the way to it).
    Upstream,
    /// The proxy's own configuration or state.
    Internal,
}

/// Why a proxied connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Reading from or writing to a side failed.
    #[error("{side:?} i/o while {context}: {source}")]
    Io {
        /// The side.
        side: Side,
        /// What the proxy was doing.
        context: &'static str,
        /// The error.
        source: io::Error,
    },
    /// A side sent bytes that are not the Postgres protocol.
    #[error("{side:?} sent an invalid message: {source}")]
    Protocol {
        /// The side.
        side: Side,
        /// What was wrong.
        source: WireError,
    },
    /// A side broke the protocol's order (e.g. SSLRequest twice).
    #[error("{side:?} protocol violation: {why}")]
    Sequence {
        /// The side.
        side: Side,
        /// What happened.
        why: String,
    },
    /// The upstream could not be reached or set up.
    #[error("upstream {upstream}: {why}")]
    Upstream {
        /// `host:port`.
        upstream: String,
        /// What failed.
        why: String,
    },
    /// The upstream refused the login (its ErrorResponse).
    #[error("upstream {upstream} refused the login: {message} (SQLSTATE {code})")]
    UpstreamRefused {
        /// `host:port`.
        upstream: String,
        /// The server's SQLSTATE.
        code: String,
        /// The server's message.
        message: String,
    },
    /// SCRAM with the upstream failed.
    #[error("upstream SCRAM login: {0}")]
    Scram(#[from] ScramError),
    /// The service's credentials cannot be used.
    #[error("credentials of db service {service}: {why}")]
    Credentials {
        /// The service.
        service: String,
        /// What is missing or wrong.
        why: String,
    },
    /// Upstream TLS could not be set up.
    #[error("upstream TLS: {0}")]
    Tls(String),
    /// The cancel-key table is full.
    #[error("backend key table is full ({0} live connections)")]
    KeyTableFull(usize),
    /// A step took too long.
    #[error("{0} timed out")]
    Timeout(&'static str),
}

impl ProxyError {
    /// The side at fault.
    pub fn side(&self) -> Side {
        match self {
            ProxyError::Io { side, .. }
            | ProxyError::Protocol { side, .. }
            | ProxyError::Sequence { side, .. } => *side,
            ProxyError::Upstream { .. }
            | ProxyError::UpstreamRefused { .. }
            | ProxyError::Scram(_)
            | ProxyError::Tls(_)
            | ProxyError::Timeout(_) => Side::Upstream,
            ProxyError::Credentials { .. } | ProxyError::KeyTableFull(_) => Side::Internal,
        }
    }

    pub(crate) fn client_io(context: &'static str) -> impl FnOnce(io::Error) -> ProxyError {
        move |source| ProxyError::Io { side: Side::Client, context, source }
    }

    pub(crate) fn upstream_io(context: &'static str) -> impl FnOnce(io::Error) -> ProxyError {
        move |source| ProxyError::Io { side: Side::Upstream, context, source }
    }
}
