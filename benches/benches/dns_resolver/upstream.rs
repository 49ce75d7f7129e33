//! The fast local upstream every forwarding target asks: a small authoritative responder for
//! [`ZONE`] on 127.0.0.1, decoding and encoding with hickory-proto on one blocking thread.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    str::FromStr,
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::{Name, RData, Record, RecordType, rdata::A},
};

/// The zone the upstream is authoritative for (and the policy allows).
pub const ZONE: &str = "bench.example.";
/// TTL of every answer (long, so a caching forwarder keeps them for the whole run).
const TTL: u32 = 300;

/// The answer to one query's bytes: A 203.0.113.x for names in the zone (x from the name's
/// length, so answers differ a little), NODATA for other types in the zone, REFUSED outside.
/// `None` for bytes that are not a query.
fn answer(bytes: &[u8], zone: &Name) -> Option<Vec<u8>> {
    let q = Message::from_vec(bytes).ok()?;
    if q.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut r = Message::response(q.metadata.id, OpCode::Query);
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.authoritative = true;
    r.queries = q.queries.clone();
    r.edns = q.edns.clone();
    match q.queries.first() {
        Some(first) if zone.zone_of(&first.name) => {
            if first.query_type == RecordType::A {
                let last = (first.name.len() % 250) as u8 + 1;
                let data = RData::A(A(Ipv4Addr::new(203, 0, 113, last)));
                r.answers.push(Record::from_rdata(first.name.clone(), TTL, data));
            }
        }
        _ => r.metadata.response_code = ResponseCode::Refused,
    }
    r.to_vec().ok()
}

/// Start the upstream on an ephemeral port of 127.0.0.1; its thread lives as long as the bench.
pub fn start() -> std::io::Result<SocketAddr> {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = sock.local_addr()?;
    let zone = Name::from_str(ZONE).map_err(std::io::Error::other)?;
    std::thread::Builder::new().name("dns-upstream".into()).spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            let Ok((len, peer)) = sock.recv_from(&mut buf) else { continue };
            if let Some(reply) = answer(&buf[..len], &zone) {
                let _ = sock.send_to(&reply, peer);
            }
        }
    })?;
    Ok(addr)
}
