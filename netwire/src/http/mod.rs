//! Plain HTTP/1.x request heads: method, target, version and the destination host, for the
//! gateway's decision on cleartext HTTP.
//!
//! [`parse_request_head`] is pure and incremental like the TLS parser: `Ok(None)` until the
//! blank line ending the head has arrived. It is strict where a lenient parser would let the
//! gateway and the upstream disagree about the destination (request smuggling): one `Host`
//! only, no obs-fold, an absolute-form target must agree with `Host`, and the head is bounded.

mod authority;

pub use authority::{Authority, Host};

/// Largest request head accepted (request line, headers and the blank line), in octets.
pub const MAX_HEAD_LEN: usize = 16 * 1024;
/// Most header fields accepted in one head.
pub const MAX_HEADERS: usize = 100;

/// HTTP/1 minor version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    /// HTTP/1.0
    Http10,
    /// HTTP/1.1
    Http11,
}

/// A complete, validated request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpHead {
    /// The method token, as sent (methods are case-sensitive).
    pub method: String,
    /// The request target, as sent (origin-, absolute-, authority- or asterisk-form).
    pub target: String,
    /// The protocol version.
    pub version: HttpVersion,
    /// The destination host: from an absolute- or authority-form target, else from `Host`.
    /// `None` only for an HTTP/1.0 request that names no host.
    pub host: Option<Host>,
    /// The explicit port, if the target or `Host` carried one (stripped from `host`).
    pub port: Option<u16>,
    /// Length of the head in octets, blank line included; the body (if any) starts here.
    pub head_len: usize,
}

/// Why the bytes are not a request head we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The head is not complete within [`MAX_HEAD_LEN`] octets.
    #[error("request head exceeds {MAX_HEAD_LEN} octets")]
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] header fields.
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    /// The head breaks HTTP/1 syntax (obs-fold included); `httparse`'s reason.
    #[error("malformed request head: {0}")]
    Syntax(&'static str),
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2).
    #[error("HTTP/1.1 request without a Host header")]
    MissingHost,
    /// Two or more `Host` fields.
    #[error("more than one Host header")]
    MultipleHost,
    /// The `Host` value or the target's authority is not a valid host[:port].
    #[error("invalid authority {value:?}: {reason}")]
    BadAuthority {
        /// The offending value (lossily decoded, at most 256 octets).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An absolute-form target names a different host or port than `Host`.
    #[error("request target authority does not match Host")]
    HostMismatch,
}

/// Parse the HTTP/1.x request head at the start of `buf`; see the module contract.
pub fn parse_request_head(buf: &[u8]) -> Result<Option<HttpHead>, HttpError> {
    let window = &buf[..buf.len().min(MAX_HEAD_LEN)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_LEN => return Err(HttpError::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(e) => return Err(HttpError::Syntax(syntax_reason(e))),
    };
    // httparse fills these three on Complete; their absence would be its bug, not the peer's.
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HttpError::Syntax("incomplete request line"));
    };
    let version = if minor == 0 { HttpVersion::Http10 } else { HttpVersion::Http11 };

    let mut host_header = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("host") {
            if host_header.is_some() {
                return Err(HttpError::MultipleHost);
            }
            host_header = Some(h.value);
        }
    }
    let from_header = host_header.map(Authority::parse).transpose()?;
    let from_target = authority::from_target(method, target)?;
    let chosen = match (from_target, from_header) {
        (Some(t), Some(h)) if t.host != h.host || t.port != h.port => return Err(HttpError::HostMismatch),
        (Some(t), _) => Some(t),
        (None, Some(h)) => Some(h),
        (None, None) if version == HttpVersion::Http11 => return Err(HttpError::MissingHost),
        (None, None) => None,
    };
    let (host, port) = match chosen {
        Some(a) => (Some(a.host), a.port),
        None => (None, None),
    };
    Ok(Some(HttpHead { method: method.to_owned(), target: target.to_owned(), version, host, port, head_len }))
}

fn syntax_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name (obs-fold or bad token)",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid method token",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "not HTTP/1.0 or HTTP/1.1",
    }
}
