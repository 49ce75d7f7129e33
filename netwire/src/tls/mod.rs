//! TLS ClientHello peeking: record-layer reassembly and the public result types.
//!
//! [`parse_client_hello`] is a pure function over the bytes a client has sent so far. It walks
//! TLS records of content type 22 (handshake), reassembles the first handshake message across
//! as many records as it spans, and parses it once complete ([`hello`] does the body). It
//! answers `Ok(None)` while more bytes are needed, so a caller re-runs it on a longer buffer
//! after each TCP segment. An error is only ever reported from bytes already in the buffer, so
//! once a prefix yields an error every longer buffer yields an error of the same kind.

mod hello;
mod reader;
mod rewrite;

pub use rewrite::{Rewritten, rewrite_sni};

use crate::hostname::{Hostname, HostnameError};

/// Largest ClientHello body accepted (the handshake `length` field), in octets.
pub const MAX_HANDSHAKE_LEN: usize = 64 * 1024;
/// Largest plaintext record fragment allowed by RFC 8446 §5.1.
pub const MAX_RECORD_LEN: usize = 1 << 14;

const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;

/// What a complete ClientHello told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHelloInfo {
    /// The `server_name` host name, validated and lower-cased; `None` if the client sent none.
    pub sni: Option<Hostname>,
    /// ALPN protocol names in the client's order (opaque bytes, usually ASCII such as `h2`).
    pub alpn: Vec<Vec<u8>>,
    /// `legacy_version` of the ClientHello (0x0303 for TLS 1.2 and 1.3 clients).
    pub legacy_version: u16,
    /// The `supported_versions` extension's list, empty when absent.
    pub supported_versions: Vec<u16>,
    /// The client offered Encrypted Client Hello: `sni` is then the outer, public name.
    pub has_ech: bool,
    /// Bytes of the buffer taken by the records that carry the ClientHello.
    pub consumed: usize,
}

/// Why the bytes are not a ClientHello we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// The first bytes are not a TLS handshake record at all.
    #[error("not a TLS handshake record")]
    NotTls,
    /// TLS framing, but broken, oversized or not a ClientHello.
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
    /// A valid ClientHello that [`rewrite_sni`] refuses to alter (ECH, or a result too long).
    #[error("ClientHello cannot be rewritten: {0}")]
    Unrewritable(&'static str),
    /// The `server_name` host name is not a valid host name.
    #[error("invalid SNI host name: {0}")]
    Sni(#[from] HostnameError),
}

/// Parse the ClientHello at the start of `buf`.
///
/// `Ok(None)`: everything so far is consistent, more bytes are needed. `Ok(Some(info))`: the
/// ClientHello is complete; `info.consumed` bytes belong to it and anything after is left
/// alone. `Err(NotTls)`: the first record header is not TLS handshake framing.
pub fn parse_client_hello(buf: &[u8]) -> Result<Option<ClientHelloInfo>, TlsError> {
    let Some((message, consumed)) = reassemble(buf)? else {
        return Ok(None);
    };
    let mut info = hello::parse_body(&message[HANDSHAKE_HEADER_LEN..])?;
    info.consumed = consumed;
    Ok(Some(info))
}

/// Collect the first handshake message (header included) from the records at the start of
/// `buf`, with the number of bytes those records take; `Ok(None)` while it is incomplete.
fn reassemble(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, TlsError> {
    let mut pos = 0;
    let mut message: Vec<u8> = Vec::new();
    // Total message length (header included), known once its first four bytes are in.
    let mut need: Option<usize> = None;
    // Sum of the fragment lengths declared by the record headers seen so far.
    let mut declared = 0usize;
    loop {
        let first = pos == 0;
        let header = &buf[pos..buf.len().min(pos + RECORD_HEADER_LEN)];
        check_record_header(header, first)?;
        if header.len() < RECORD_HEADER_LEN {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 {
            return Err(TlsError::Malformed("empty handshake record"));
        }
        if len > MAX_RECORD_LEN {
            return Err(TlsError::Malformed("record longer than 2^14 octets"));
        }
        declared += len;
        let start = pos + RECORD_HEADER_LEN;
        let available = len.min(buf.len() - start);
        message.extend_from_slice(&buf[start..start + available]);
        if need.is_none() && message.len() >= HANDSHAKE_HEADER_LEN {
            need = Some(handshake_len(&message)?);
        }
        if let Some(need) = need
            && declared > need
        {
            return Err(TlsError::Malformed("record carries data after the ClientHello"));
        }
        if available < len {
            return Ok(None);
        }
        pos = start + len;
        if need == Some(message.len()) {
            return Ok(Some((message, pos)));
        }
    }
}

/// Validate the (possibly partial) record header `h`; `first` is the connection's first record.
fn check_record_header(h: &[u8], first: bool) -> Result<(), TlsError> {
    if let Some(&content_type) = h.first()
        && content_type != CONTENT_HANDSHAKE
    {
        return Err(if first {
            TlsError::NotTls
        } else {
            TlsError::Malformed("non-handshake record before the ClientHello ended")
        });
    }
    // legacy_record_version: 3.0 through 3.4 are the only versions any TLS stack writes.
    let bad_version = h.get(1).is_some_and(|&major| major != 3) || h.get(2).is_some_and(|&minor| minor > 4);
    if bad_version {
        return Err(if first { TlsError::NotTls } else { TlsError::Malformed("bad record version") });
    }
    Ok(())
}

/// Read the handshake header at the start of `message` and return the whole message's length.
fn handshake_len(message: &[u8]) -> Result<usize, TlsError> {
    if message[0] != HANDSHAKE_CLIENT_HELLO {
        return Err(TlsError::Malformed("first handshake message is not a ClientHello"));
    }
    let body = usize::from(message[1]) << 16 | usize::from(message[2]) << 8 | usize::from(message[3]);
    if body > MAX_HANDSHAKE_LEN {
        return Err(TlsError::Malformed("ClientHello longer than 64 KiB"));
    }
    Ok(HANDSHAKE_HEADER_LEN + body)
}
