//! The DNS codec boundary: bounded decode, size-aware encode, raw error replies for messages that
//! do not decode, and the conversion of wire names into policy [`Hostname`]s. Synchronous, no IO,
//! no policy.

use std::net::IpAddr;

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, ResponseCode},
    rr::{Name, RData, Record},
};
use policies::matchers::domain::Hostname;

use crate::DnsError;

/// Size of the fixed DNS header.
pub const HEADER_LEN: usize = 12;
/// Largest DNS message (the TCP length prefix is 16 bits).
pub const MAX_MESSAGE: usize = 65_535;
/// Largest UDP query we accept and largest UDP answer we send (clients' EDNS sizes are clamped).
pub const MAX_UDP: usize = 4096;
/// The UDP payload size we advertise in EDNS (the DNS-flag-day value: no fragmentation).
pub const EDNS_PAYLOAD: u16 = 1232;
/// Smallest encoding of a resource record (root name, type, class, TTL, rdlength).
const MIN_RECORD: usize = 11;
/// Smallest encoding of a question (root name, type, class).
const MIN_QUESTION: usize = 5;

/// Why bytes were not accepted as a DNS message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than a header or longer than [`MAX_MESSAGE`].
    #[error("message length {0} outside 12..=65535")]
    Length(usize),
    /// The header's section counts cannot fit in the message.
    #[error("section counts exceed the message size")]
    Counts,
    /// More than one question (we answer exactly one per message).
    #[error("{0} questions in one message")]
    Questions(u16),
    /// hickory-proto rejected the message.
    #[error("undecodable message: {0}")]
    Decode(String),
}

fn count(bytes: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([bytes[at], bytes[at + 1]]))
}

/// Check the header of `bytes` before decoding: the length is in range, there is at most one
/// question, and the section counts could fit (so a 12-byte header cannot make the decoder
/// reserve memory for 65,535 records).
pub fn check(bytes: &[u8]) -> Result<(), WireError> {
    if !(HEADER_LEN..=MAX_MESSAGE).contains(&bytes.len()) {
        return Err(WireError::Length(bytes.len()));
    }
    let questions = count(bytes, 4);
    if questions > 1 {
        return Err(WireError::Questions(questions as u16));
    }
    let records = count(bytes, 6) + count(bytes, 8) + count(bytes, 10);
    if HEADER_LEN + questions * MIN_QUESTION + records * MIN_RECORD > bytes.len() {
        return Err(WireError::Counts);
    }
    Ok(())
}

/// [`check`], then decode.
pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
    check(bytes)?;
    Message::from_vec(bytes).map_err(|e| WireError::Decode(e.to_string()))
}

/// Encode `msg`; when it exceeds `max_len`, encode it again with the TC bit set and no records
/// (the question and EDNS kept), so the client retries over TCP.
pub fn encode(msg: &Message, max_len: usize) -> Result<Vec<u8>, DnsError> {
    let bytes = msg.to_vec().map_err(|e| DnsError::Encode(e.to_string()))?;
    if bytes.len() <= max_len {
        return Ok(bytes);
    }
    let mut short = Message::new(msg.metadata.id, msg.metadata.message_type, msg.metadata.op_code);
    short.metadata = msg.metadata;
    short.metadata.truncation = true;
    short.queries = msg.queries.clone();
    short.edns = msg.edns.clone();
    let bytes = short.to_vec().map_err(|e| DnsError::Encode(e.to_string()))?;
    if bytes.len() > max_len {
        return Err(DnsError::Encode(format!("{} bytes even when truncated", bytes.len())));
    }
    Ok(bytes)
}

/// A bare reply with `rcode` to bytes that did not decode: the header's ID, opcode and RD are
/// echoed, every count is zero. `None` when there is no header, or the bytes are a response
/// (answering a response could loop two resolvers into each other).
pub fn header_reply(bytes: &[u8], rcode: ResponseCode) -> Option<Vec<u8>> {
    if bytes.len() < HEADER_LEN || bytes[2] & 0x80 != 0 {
        return None;
    }
    let opcode_rd = bytes[2] & 0x79;
    let low = u16::from(rcode) as u8 & 0x0f;
    let mut out = vec![0u8; HEADER_LEN];
    out[..2].copy_from_slice(&bytes[..2]);
    out[2] = 0x80 | opcode_rd;
    out[3] = 0x80 | low;
    Some(out)
}

/// The policy name of a wire name: every label must be 1-63 bytes of ASCII letters, digits, `-`
/// or `_` (no escapes, dots or raw UTF-8 inside a label), then [`Hostname::parse`] lower-cases
/// it. `None` for the root and for anything else.
pub fn hostname_of(name: &Name) -> Option<Hostname> {
    let mut text = String::with_capacity(name.len());
    for label in name.iter() {
        if label.is_empty() || !label.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_') {
            return None;
        }
        if !text.is_empty() {
            text.push('.');
        }
        text.extend(label.iter().map(|&b| char::from(b)));
    }
    Hostname::parse(&text).ok()
}

/// The fully qualified wire name of a policy host name.
pub fn name_of(host: &Hostname) -> Option<Name> {
    let mut name = Name::from_ascii(host.as_str()).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// The response skeleton for `query`: same ID, opcode, question, RD and CD; RA set; an EDNS
/// record of our own when the query had one.
pub fn response_to(query: &Message) -> Message {
    let mut resp = Message::response(query.metadata.id, OpCode::Query);
    resp.metadata.message_type = MessageType::Response;
    resp.metadata.recursion_desired = query.metadata.recursion_desired;
    resp.metadata.checking_disabled = query.metadata.checking_disabled;
    resp.metadata.recursion_available = true;
    resp.queries = query.queries.clone();
    if query.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        resp.edns = Some(edns);
    }
    resp
}

/// The largest UDP answer `query`'s sender accepts: 512 without EDNS, its EDNS size otherwise,
/// clamped to [`MAX_UDP`].
pub fn udp_limit(query: &Message) -> usize {
    usize::from(query.max_payload()).clamp(512, MAX_UDP)
}

/// An answer in presentation form for events: the address for A/AAAA, `TYPE data` otherwise.
pub fn present(record: &Record) -> String {
    match &record.data {
        RData::A(a) => IpAddr::V4(a.0).to_string(),
        RData::AAAA(a) => IpAddr::V6(a.0).to_string(),
        other => format!("{} {other}", record.record_type()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_bounds_counts_before_decoding() {
        assert_eq!(check(&[0; 11]), Err(WireError::Length(11)));
        let mut h = [0u8; 12];
        h[5] = 2;
        assert_eq!(check(&h), Err(WireError::Questions(2)));
        let mut h = [0u8; 12];
        h[6] = 0xff;
        assert_eq!(check(&h), Err(WireError::Counts));
    }

    #[test]
    fn header_reply_echoes_id_opcode_rd_and_ignores_responses() {
        let q = [0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xff];
        let r = header_reply(&q, ResponseCode::FormErr).expect("reply");
        assert_eq!(r, vec![0xab, 0xcd, 0x81, 0x81, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(header_reply(&[0x00, 0x01, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0], ResponseCode::FormErr), None);
        assert_eq!(header_reply(&[0; 5], ResponseCode::FormErr), None);
    }

    #[test]
    fn hostnames_are_verified_label_by_label() {
        let ok = Name::from_ascii("API.Example.COM.").expect("name");
        assert_eq!(hostname_of(&ok).map(|h| h.as_str().to_string()), Some("api.example.com".into()));
        let dotted = Name::from_labels(vec![&b"a.b"[..], &b"com"[..]]).expect("name");
        assert_eq!(hostname_of(&dotted), None, "a dot inside a label is not a label boundary");
        let space = Name::from_labels(vec![&b"a b"[..], &b"com"[..]]).expect("name");
        assert_eq!(hostname_of(&space), None);
        assert_eq!(hostname_of(&Name::root()), None);
    }
}
