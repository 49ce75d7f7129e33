//! Postgres wire framing, pure: no IO, no async, no policy. [`check`] says whether a whole
//! message is buffered and how long it is; [`parse_frontend`] and [`parse_backend`] decode it
//! into borrowed, typed messages, which encode back to the same bytes. One file per message
//! family. Lengths are verified before anything is read: at most [`MAX_MESSAGE`] for typed
//! messages and [`MAX_STARTUP`] for the untyped first message.
//!
//! Own decoder rather than pgwire's codec: pgwire decodes from a mutable `BytesMut` and owns
//! its strings; here every message borrows the caller's buffer, so `check` + `parse` cost no
//! allocation for the hot messages (Query, Parse, Bind, Execute).

mod auth;
mod codec;
mod copy;
mod error_response;
mod extended;
mod function_call;
mod query;
mod startup;
mod status;

pub use auth::Authentication;
pub use copy::{CopyFail, encode_copy_data};
pub use error_response::{ErrorFields, SQLSTATE_INSUFFICIENT_PRIVILEGE, SQLSTATE_INVALID_AUTHORIZATION};
pub use extended::{Bind, Execute, Named, Parse, Target};
pub use function_call::FunctionCall;
pub use query::Query;
pub use startup::{CANCEL_REQUEST_CODE, CancelRequest, GSSENC_REQUEST_CODE, SSL_REQUEST_CODE, Startup};
pub use status::{BackendKeyData, ParameterStatus, TxStatus};

/// The largest typed message accepted (1 GiB, the server's own limit for most messages).
pub const MAX_MESSAGE: usize = 1 << 30;
/// The largest untyped first message accepted (10 KiB; the server allows the same).
pub const MAX_STARTUP: usize = 10 * 1024;

/// Who sent the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The client (frontend).
    Frontend,
    /// The server (backend).
    Backend,
}

/// Where in the connection the bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Frontend: the untyped first message (StartupMessage, SSLRequest, GSSENCRequest,
    /// CancelRequest). Backend: the single-byte answer to SSLRequest or GSSENCRequest.
    Startup,
    /// Typed messages: a tag byte and an Int32 length.
    Normal,
}

/// Bytes that are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The declared length is over the limit.
    #[error("message of {len} bytes is over the {max}-byte limit")]
    TooLarge {
        /// Declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The declared length is smaller than the length field itself.
    #[error("invalid message length {0}")]
    BadLength(i64),
    /// A tag this side never sends.
    #[error("unexpected message type {0:#04x}")]
    UnknownTag(u8),
    /// An untyped first message with an unknown code or protocol version.
    #[error("unsupported startup code or protocol version {0:#010x}")]
    UnsupportedStartup(u32),
    /// The body does not match the message's format.
    #[error("malformed {message}: {why}")]
    Malformed {
        /// The message type.
        message: &'static str,
        /// What is wrong.
        why: &'static str,
    },
}

/// Whether `buf` starts with a whole message: `Ok(None)` if more bytes are needed,
/// `Ok(Some(n))` with its total length, an error if the length is invalid. Never reads more
/// than the header.
pub fn check(buf: &[u8], dir: Direction, phase: Phase) -> Result<Option<usize>, WireError> {
    let (header, max) = match (dir, phase) {
        (Direction::Backend, Phase::Startup) => return Ok((!buf.is_empty()).then_some(1)),
        (Direction::Frontend, Phase::Startup) => (0, MAX_STARTUP),
        (_, Phase::Normal) => (1, MAX_MESSAGE),
    };
    let Some(len) = buf.get(header..header + 4) else { return Ok(None) };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let min = if header == 0 { 8 } else { 4 };
    if len < min {
        return Err(WireError::BadLength(len as i64));
    }
    if len > max {
        return Err(WireError::TooLarge { len, max });
    }
    Ok((buf.len() >= header + len).then_some(header + len))
}

/// A message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frontend<'a> {
    /// StartupMessage.
    Startup(Startup<'a>),
    /// SSLRequest.
    SslRequest,
    /// GSSENCRequest.
    GssEncRequest,
    /// CancelRequest.
    CancelRequest(CancelRequest<'a>),
    /// Simple query.
    Query(Query<'a>),
    /// Parse.
    Parse(Parse<'a>),
    /// Bind.
    Bind(Bind<'a>),
    /// Describe.
    Describe(Named<'a>),
    /// Execute.
    Execute(Execute<'a>),
    /// Close.
    Close(Named<'a>),
    /// Sync.
    Sync,
    /// Flush.
    Flush,
    /// FunctionCall.
    FunctionCall(FunctionCall<'a>),
    /// CopyData.
    CopyData(&'a [u8]),
    /// CopyDone.
    CopyDone,
    /// CopyFail.
    CopyFail(CopyFail<'a>),
    /// Terminate.
    Terminate,
    /// PasswordMessage, SASLInitialResponse or SASLResponse (told apart by the auth state).
    Password(&'a [u8]),
}

/// A message from the server. Messages the proxy relays without looking inside (row data,
/// descriptions, command tags, COPY responses) stay raw in `Other`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend<'a> {
    /// The one-byte answer to SSLRequest/GSSENCRequest (`S`/`G` yes, `N` no).
    EncryptionAnswer(u8),
    /// Authentication request or outcome.
    Authentication(Authentication<'a>),
    /// ParameterStatus.
    ParameterStatus(ParameterStatus<'a>),
    /// BackendKeyData.
    BackendKeyData(BackendKeyData<'a>),
    /// ReadyForQuery.
    ReadyForQuery(TxStatus),
    /// ErrorResponse.
    ErrorResponse(ErrorFields<'a>),
    /// NoticeResponse.
    NoticeResponse(ErrorFields<'a>),
    /// Any other message, by tag and body.
    Other {
        /// The tag.
        tag: u8,
        /// The body.
        body: &'a [u8],
    },
}

fn empty(body: &[u8], message: &'static str) -> Result<(), WireError> {
    if body.is_empty() { Ok(()) } else { Err(WireError::Malformed { message, why: "body must be empty" }) }
}

/// Decodes the client message at the start of `buf`: `Ok(None)` if incomplete, else the
/// message and the bytes it used.
pub fn parse_frontend(buf: &[u8], phase: Phase) -> Result<Option<(Frontend<'_>, usize)>, WireError> {
    let Some(n) = check(buf, Direction::Frontend, phase)? else { return Ok(None) };
    let msg = match phase {
        Phase::Startup => {
            let body = &buf[8..n];
            let code = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
            match code {
                SSL_REQUEST_CODE => empty(body, "SSLRequest").map(|_| Frontend::SslRequest)?,
                GSSENC_REQUEST_CODE => empty(body, "GSSENCRequest").map(|_| Frontend::GssEncRequest)?,
                CANCEL_REQUEST_CODE => Frontend::CancelRequest(CancelRequest::decode(body)?),
                c if c >> 16 == 3 => Frontend::Startup(Startup::decode(3, c as u16, body)?),
                c => return Err(WireError::UnsupportedStartup(c)),
            }
        }
        Phase::Normal => {
            let body = &buf[5..n];
            match buf[0] {
                b'Q' => Frontend::Query(Query::decode(body)?),
                b'P' => Frontend::Parse(Parse::decode(body)?),
                b'B' => Frontend::Bind(Bind::decode(body)?),
                b'D' => Frontend::Describe(Named::decode(body, "Describe")?),
                b'E' => Frontend::Execute(Execute::decode(body)?),
                b'C' => Frontend::Close(Named::decode(body, "Close")?),
                b'S' => empty(body, "Sync").map(|_| Frontend::Sync)?,
                b'H' => empty(body, "Flush").map(|_| Frontend::Flush)?,
                b'F' => Frontend::FunctionCall(FunctionCall::decode(body)?),
                b'd' => Frontend::CopyData(body),
                b'c' => empty(body, "CopyDone").map(|_| Frontend::CopyDone)?,
                b'f' => Frontend::CopyFail(CopyFail::decode(body)?),
                b'X' => empty(body, "Terminate").map(|_| Frontend::Terminate)?,
                b'p' => Frontend::Password(body),
                t => return Err(WireError::UnknownTag(t)),
            }
        }
    };
    Ok(Some((msg, n)))
}

/// Decodes the server message at the start of `buf` (see [`parse_frontend`]).
pub fn parse_backend(buf: &[u8], phase: Phase) -> Result<Option<(Backend<'_>, usize)>, WireError> {
    let Some(n) = check(buf, Direction::Backend, phase)? else { return Ok(None) };
    if phase == Phase::Startup {
        return match buf[0] {
            b @ (b'S' | b'N' | b'G') => Ok(Some((Backend::EncryptionAnswer(b), 1))),
            // A server that does not speak the protocol may answer with an ErrorResponse.
            t => Err(WireError::UnknownTag(t)),
        };
    }
    let body = &buf[5..n];
    let msg = match buf[0] {
        b'R' => Backend::Authentication(Authentication::decode(body)?),
        b'S' => Backend::ParameterStatus(ParameterStatus::decode(body)?),
        b'K' => Backend::BackendKeyData(BackendKeyData::decode(body)?),
        b'Z' => Backend::ReadyForQuery(TxStatus::decode(body)?),
        b'E' => Backend::ErrorResponse(ErrorFields::decode(body, "ErrorResponse")?),
        b'N' => Backend::NoticeResponse(ErrorFields::decode(body, "NoticeResponse")?),
        tag => Backend::Other { tag, body },
    };
    Ok(Some((msg, n)))
}

fn encode_bare(tag: u8, out: &mut Vec<u8>) {
    codec::frame(out, Some(tag), |_| {});
}

impl Frontend<'_> {
    /// Writes the message; parsing the output gives back an equal message.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Frontend::Startup(s) => s.encode(out),
            Frontend::SslRequest => startup::encode_code(out, SSL_REQUEST_CODE),
            Frontend::GssEncRequest => startup::encode_code(out, GSSENC_REQUEST_CODE),
            Frontend::CancelRequest(c) => c.encode(out),
            Frontend::Query(q) => q.encode(out),
            Frontend::Parse(p) => p.encode(out),
            Frontend::Bind(b) => b.encode(out),
            Frontend::Describe(d) => d.encode(b'D', out),
            Frontend::Execute(e) => e.encode(out),
            Frontend::Close(c) => c.encode(b'C', out),
            Frontend::Sync => encode_bare(b'S', out),
            Frontend::Flush => encode_bare(b'H', out),
            Frontend::FunctionCall(f) => f.encode(out),
            Frontend::CopyData(d) => encode_copy_data(d, out),
            Frontend::CopyDone => encode_bare(b'c', out),
            Frontend::CopyFail(f) => f.encode(out),
            Frontend::Terminate => encode_bare(b'X', out),
            Frontend::Password(p) => codec::frame(out, Some(b'p'), |b| b.extend_from_slice(p)),
        }
    }
}

impl Backend<'_> {
    /// Writes the message; parsing the output gives back an equal message.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Backend::EncryptionAnswer(b) => out.push(*b),
            Backend::Authentication(a) => a.encode(out),
            Backend::ParameterStatus(p) => p.encode(out),
            Backend::BackendKeyData(k) => k.encode(out),
            Backend::ReadyForQuery(s) => s.encode(out),
            Backend::ErrorResponse(e) => e.encode(b'E', out),
            Backend::NoticeResponse(e) => e.encode(b'N', out),
            Backend::Other { tag, body } => codec::frame(out, Some(*tag), |b| b.extend_from_slice(body)),
        }
    }
}

/// The bytes the proxy sends when policy denies a statement outside a transaction:
/// ErrorResponse (SQLSTATE 42501, naming `rule`) then ReadyForQuery(`status`).
pub fn encode_statement_denied(rule: &str, detail: Option<&str>, status: TxStatus, out: &mut Vec<u8>) {
    ErrorFields::policy_denied(rule, detail, false).encode(b'E', out);
    status.encode(out);
}
