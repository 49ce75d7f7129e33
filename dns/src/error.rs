//! The crate's error type. A policy refusal is not an error: it is a [`crate::Plan`].

use std::{io, net::SocketAddr};

/// What went wrong while talking to an upstream or decoding its answer.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// No upstream resolver is configured.
    #[error("no upstream DNS resolver configured")]
    NoUpstream,
    /// Every upstream timed out.
    #[error("upstream {upstream} did not answer within {timeout_ms} ms")]
    Timeout {
        /// The last upstream tried.
        upstream: SocketAddr,
        /// The per-attempt timeout.
        timeout_ms: u64,
    },
    /// A socket error talking to an upstream.
    #[error("upstream {upstream}: {source}")]
    Io {
        /// The upstream.
        upstream: SocketAddr,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The upstream's answer could not be decoded or did not match the question.
    #[error("upstream {upstream} sent a bad answer: {reason}")]
    BadAnswer {
        /// The upstream.
        upstream: SocketAddr,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A message of ours could not be encoded (a bug or an oversized answer).
    #[error("cannot encode DNS message: {0}")]
    Encode(String),
}
