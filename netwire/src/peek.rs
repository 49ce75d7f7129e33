//! Classifying a connection by its first bytes, without consuming them.
//!
//! [`classify`] is the pure decision over a buffer; [`peek_first_bytes`] drives it from a live
//! socket with `MSG_PEEK`, so every byte is still queued for the upstream when it returns.
//!
//! Decision rules, in order:
//! 1. first byte `0x16` → the TLS path ([`crate::tls::parse_client_hello`]); a record header
//!    that turns out not to be TLS falls back to raw;
//! 2. an ASCII method token followed by a space → HTTP, but only once the request line ends
//!    in ` HTTP/1.0` or ` HTTP/1.1` (so `SET k v\r\n` to Redis stays raw);
//! 3. anything else → raw.
//!
//! A client that sends nothing at all is reported as [`Peeked::Silent`]: protocols where the
//! server speaks first (SSH, SMTP, FTP) look exactly like that and must keep working.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::sys::socket::{MsgFlags, recv};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::http::{self, HttpError, HttpHead};
use crate::tls::{self, ClientHelloInfo, TlsError};

/// Longest wait between two looks at a socket whose queued bytes are not yet decisive.
const MAX_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Longest method token considered (`PROPPATCH`, `MKCALENDAR`, … fit easily).
const MAX_METHOD_LEN: usize = 20;

/// What the first bytes of a connection are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peeked {
    /// A complete TLS ClientHello.
    Tls(ClientHelloInfo),
    /// A complete HTTP/1.x request head.
    Http(HttpHead),
    /// Neither TLS nor HTTP/1: relay it as opaque TCP.
    Raw,
    /// Consistent so far; more bytes are needed to decide.
    NeedMore,
    /// The client sent nothing before the timeout (or closed without sending): it may be a
    /// protocol where the server speaks first. Only [`peek_first_bytes`] returns this.
    Silent,
    /// It claims to be TLS or HTTP but is broken or evasive; the caller should refuse it.
    Malformed(PeekError),
}

/// Why a TLS- or HTTP-looking start was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeekError {
    /// The TLS ClientHello was rejected.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The HTTP request head was rejected.
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// Classify the bytes a client has sent so far; see the module's decision rules.
pub fn classify(buf: &[u8]) -> Peeked {
    match buf.first() {
        None => Peeked::NeedMore,
        Some(0x16) => match tls::parse_client_hello(buf) {
            Ok(Some(info)) => Peeked::Tls(info),
            Ok(None) => Peeked::NeedMore,
            Err(TlsError::NotTls) => Peeked::Raw,
            Err(e) => Peeked::Malformed(e.into()),
        },
        Some(_) => classify_http(buf),
    }
}

fn classify_http(buf: &[u8]) -> Peeked {
    let token_len = buf.iter().take(MAX_METHOD_LEN + 1).take_while(|b| is_method_byte(**b)).count();
    match buf.get(token_len) {
        _ if token_len == 0 || token_len > MAX_METHOD_LEN => return Peeked::Raw,
        None => return Peeked::NeedMore,
        Some(b' ') => {}
        Some(_) => return Peeked::Raw,
    }
    let window = &buf[..buf.len().min(http::MAX_HEAD_LEN)];
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= http::MAX_HEAD_LEN { Peeked::Raw } else { Peeked::NeedMore };
    };
    let line = window[..nl].strip_suffix(b"\r").unwrap_or(&window[..nl]);
    if !(line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0")) {
        return Peeked::Raw;
    }
    match http::parse_request_head(buf) {
        Ok(Some(head)) => Peeked::Http(head),
        Ok(None) => Peeked::NeedMore,
        Err(e) => Peeked::Malformed(e.into()),
    }
}

fn is_method_byte(b: u8) -> bool {
    b.is_ascii_uppercase() || b == b'-' || b == b'_'
}

/// Peek at `stream` until [`classify`] decides, `max` bytes are queued, or `timeout` passes.
///
/// Returns the classification and how many bytes were looked at; nothing is consumed. With no
/// byte at all by the deadline (or a close before any byte) the answer is [`Peeked::Silent`];
/// with some bytes but no decision it is [`Peeked::NeedMore`], and the caller decides.
pub async fn peek_first_bytes(
    stream: &TcpStream,
    max: usize,
    timeout: Duration,
) -> io::Result<(Peeked, usize)> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; max];
    let mut seen = 0usize;
    while seen < max {
        let n = match tokio::time::timeout_at(deadline, peek_more(stream, &mut buf, seen)).await {
            Ok(r) => r?,
            Err(_elapsed) => break,
        };
        if n == seen {
            break; // end of stream: nothing more will arrive
        }
        seen = n;
        match classify(&buf[..seen]) {
            Peeked::NeedMore => continue,
            decided => return Ok((decided, seen)),
        }
    }
    if seen == 0 {
        return Ok((Peeked::Silent, 0));
    }
    Ok((classify(&buf[..seen]), seen))
}

/// Wait until more than `seen` bytes are queued (returning how many are) or the peer has
/// closed (returning `seen` again).
///
/// Readiness is only ever cleared when the socket truly has nothing queued (`EAGAIN`). While
/// bytes sit unread but nothing new has come, it polls with a short back-off instead: clearing
/// the readiness then would leave the caller's next `readable()` asleep on data already there.
async fn peek_more(stream: &TcpStream, buf: &mut [u8], seen: usize) -> io::Result<usize> {
    let mut backoff = Duration::from_millis(1);
    loop {
        let ready = stream.ready(Interest::READABLE).await?;
        let res = stream.try_io(Interest::READABLE, || {
            recv(stream.as_raw_fd(), buf, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT)
                .map_err(io::Error::from)
        });
        match res {
            // `0` is end of stream with nothing queued; `seen` again after a close is the end too.
            Ok(n) if n > seen || n == 0 || ready.is_read_closed() => return Ok(n.max(seen)),
            Ok(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_POLL_INTERVAL);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}
