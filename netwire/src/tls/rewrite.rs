//! ClientHello SNI rewriting: re-encode the client's first handshake message with another
//! `server_name`, fixing every length field and re-framing it into records.
//!
//! What the function guarantees is wire correctness: the output is a ClientHello that
//! [`parse_client_hello`](super::parse_client_hello) accepts, naming `new_sni`, with every other
//! field and extension byte-identical and in the client's order. What it cannot give is a
//! handshake that completes between an unmodified client and a real TLS server: both ends hash
//! the ClientHello *as each of them saw it* into the handshake transcript (RFC 8446 §4.4.1; the
//! TLS 1.2 `Finished` likewise), so the client's and the server's keys disagree right after
//! `ServerHello`. `netwire/tests/sni_rewrite.rs` shows both halves against rustls. The rewrite
//! is therefore only useful towards a peer that routes on the SNI and does not terminate TLS
//! with the original client (an SNI router in front of a TLS-terminating gateway, a capture).
//!
//! Choices, and why:
//! - **PSK.** `pre_shared_key` binders are MACs over the ClientHello up to the binders, so a
//!   rewritten hello that kept them would make the server abort (RFC 8446 §4.2.11 says a bad
//!   binder is fatal, not a fallback). The rewriter drops `pre_shared_key`, leaving a hello that
//!   asks for a full handshake. `psk_key_exchange_modes` stays: every fresh TLS 1.3 client sends
//!   it without a PSK (it only permits the server to issue tickets), so removing it would change
//!   more than needed. `early_data` stays too: a server that sees it without an accepted PSK
//!   takes the RFC 8446 §4.2.10 "reject" path and skips the 0-RTT records that follow, where
//!   dropping it would make those records a fatal decryption error.
//! - **ECH.** The outer ClientHello is authenticated as the AAD of the inner one, so altering it
//!   only produces a hello the server must reject; [`TlsError::Unrewritable`] instead.
//! - **Framing.** Records are re-cut at 2^14 octets regardless of how the client split them, all
//!   carrying the first record's `legacy_record_version`.

use super::hello::{self, EXT_SERVER_NAME, NAME_TYPE_HOST_NAME};
use super::reader::Reader;
use super::{
    CONTENT_HANDSHAKE, HANDSHAKE_CLIENT_HELLO, HANDSHAKE_HEADER_LEN, MAX_HANDSHAKE_LEN, MAX_RECORD_LEN,
    RECORD_HEADER_LEN, TlsError, reassemble,
};
use crate::hostname::Hostname;

const EXT_PRE_SHARED_KEY: u16 = 41;

/// A ClientHello re-encoded by [`rewrite_sni`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The new handshake records, to be sent in place of the first `consumed` input bytes.
    pub bytes: Vec<u8>,
    /// How many bytes at the start of the input the original ClientHello records took; bytes
    /// after them (early data, later records) are the caller's to relay unchanged.
    pub consumed: usize,
    /// The `server_name` the client asked for, `None` if it sent none.
    pub old_sni: Option<Hostname>,
    /// `pre_shared_key` was removed: the client's resumption attempt becomes a full handshake.
    pub stripped_psk: bool,
}

/// Rewrite the `server_name` of the ClientHello at the start of `input` to `new_sni`.
///
/// `Ok(None)`: more bytes are needed (exactly when `parse_client_hello` says so). Otherwise the
/// hello is fully validated first, so every error of `parse_client_hello` is reported here
/// too, plus [`TlsError::Unrewritable`] for ECH and for a result over 64 KiB. A hello without
/// `server_name` gets one, as its first extension. See the module docs for PSK handling and
/// for why the result cannot complete a handshake with the original client.
pub fn rewrite_sni(input: &[u8], new_sni: &Hostname) -> Result<Option<Rewritten>, TlsError> {
    let Some((message, consumed)) = reassemble(input)? else {
        return Ok(None);
    };
    let body = &message[HANDSHAKE_HEADER_LEN..];
    let info = hello::parse_body(body)?;
    if info.has_ech {
        return Err(TlsError::Unrewritable("the hello offers Encrypted Client Hello"));
    }
    let (new_body, stripped_psk) = rewrite_body(body, new_sni, info.sni.is_some())?;
    if new_body.len() > MAX_HANDSHAKE_LEN {
        return Err(TlsError::Unrewritable("rewritten ClientHello longer than 64 KiB"));
    }
    // `reassemble` returned a message, so the first record header is complete.
    let version = [input[1], input[2]];
    Ok(Some(Rewritten { bytes: frame(&new_body, version), consumed, old_sni: info.sni, stripped_psk }))
}

/// Re-encode a ClientHello body that `parse_body` accepted. `has_sni`: it has `server_name`.
fn rewrite_body(body: &[u8], name: &Hostname, has_sni: bool) -> Result<(Vec<u8>, bool), TlsError> {
    let mut r = Reader::new(body);
    r.take(2 + 32, "truncated random")?;
    r.vec8("truncated legacy_session_id")?;
    r.vec16("truncated cipher_suites")?;
    r.vec8("truncated legacy_compression_methods")?;
    let fixed = body.len() - r.len();
    // No extensions block at all (pre-TLS-1.2 style): one is added to carry the name.
    let block = if r.is_empty() { &[][..] } else { r.vec16("truncated extensions")? };

    let mut out = Vec::with_capacity(body.len() + name.as_str().len() + 11);
    out.extend_from_slice(&body[..fixed]);
    let block_len_at = out.len();
    out.extend_from_slice(&[0, 0]);
    if !has_sni {
        put_server_name(&mut out, name);
    }
    let mut stripped_psk = false;
    let mut exts = Reader::new(block);
    while !exts.is_empty() {
        let start = block.len() - exts.len();
        let ext_type = exts.u16("truncated extension header")?;
        exts.vec16("truncated extension data")?;
        let whole = &block[start..block.len() - exts.len()];
        match ext_type {
            EXT_SERVER_NAME => put_server_name(&mut out, name),
            EXT_PRE_SHARED_KEY => stripped_psk = true,
            _ => out.extend_from_slice(whole),
        }
    }
    let block_len = u16::try_from(out.len() - block_len_at - 2)
        .map_err(|_| TlsError::Unrewritable("rewritten extensions block longer than 65535 octets"))?;
    out[block_len_at..block_len_at + 2].copy_from_slice(&block_len.to_be_bytes());
    Ok((out, stripped_psk))
}

/// Append a whole `server_name` extension (RFC 6066 §3) holding one `host_name`.
fn put_server_name(out: &mut Vec<u8>, name: &Hostname) {
    // A `Hostname` is at most 253 octets, so none of these lengths can overflow a u16.
    let name = name.as_str().as_bytes();
    let name_len = name.len() as u16;
    out.extend_from_slice(&EXT_SERVER_NAME.to_be_bytes());
    out.extend_from_slice(&(name_len + 5).to_be_bytes()); // extension data
    out.extend_from_slice(&(name_len + 3).to_be_bytes()); // server_name_list
    out.push(NAME_TYPE_HOST_NAME);
    out.extend_from_slice(&name_len.to_be_bytes());
    out.extend_from_slice(name);
}

/// Wrap `body` in a ClientHello header and cut it into handshake records of at most 2^14
/// octets, each carrying `version` as its `legacy_record_version`.
fn frame(body: &[u8], version: [u8; 2]) -> Vec<u8> {
    let len = (body.len() as u32).to_be_bytes(); // at most 64 KiB: checked by the caller
    let mut message = Vec::with_capacity(HANDSHAKE_HEADER_LEN + body.len());
    message.extend_from_slice(&[HANDSHAKE_CLIENT_HELLO, len[1], len[2], len[3]]);
    message.extend_from_slice(body);
    let records = message.len().div_ceil(MAX_RECORD_LEN);
    let mut out = Vec::with_capacity(message.len() + records * RECORD_HEADER_LEN);
    for chunk in message.chunks(MAX_RECORD_LEN) {
        out.extend_from_slice(&[CONTENT_HANDSHAKE, version[0], version[1]]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}
