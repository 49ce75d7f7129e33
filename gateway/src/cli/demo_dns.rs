//! The demo's stand-in for the outside world's DNS: a tiny authoritative server on 127.0.0.1
//! that answers A for names under `demo.test` with 127.0.0.1 and logs every question it gets,
//! so the demo can show which names left the sandbox and which never did.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
};

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{RData, Record, RecordType, rdata::A},
};

/// The running server: its address and the questions it has seen.
pub struct DemoDns {
    /// Where it listens (UDP).
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl DemoDns {
    /// Names asked so far, as `name TYPE`, in order.
    pub fn questions(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn answer(query: &Message) -> Message {
    let mut resp = dns::wire::response_to(query);
    let Some(q) = query.queries.first() else {
        resp.metadata.response_code = ResponseCode::FormErr;
        return resp;
    };
    let name = q.name.to_ascii().to_ascii_lowercase();
    if !name.trim_end_matches('.').ends_with("demo.test") {
        resp.metadata.response_code = ResponseCode::NXDomain;
    } else if q.query_type == RecordType::A {
        resp.answers.push(Record::from_rdata(q.name.clone(), 60, RData::A(A(Ipv4Addr::LOCALHOST))));
    }
    resp
}

/// Start the server on a background thread.
pub fn start() -> anyhow::Result<DemoDns> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let addr = sock.local_addr()?;
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            let Ok(query) = dns::wire::decode(&buf[..n]) else { continue };
            if let Some(q) = query.queries.first() {
                let entry = format!("{} {}", q.name.to_ascii().trim_end_matches('.'), q.query_type);
                seen.lock().unwrap_or_else(|p| p.into_inner()).push(entry);
            }
            if let Ok(bytes) = dns::wire::encode(&answer(&query), 512) {
                let _ = sock.send_to(&bytes, peer);
            }
        }
    });
    Ok(DemoDns { addr, log })
}
