//! A fake upstream resolver on the host's 127.0.0.1, owned by one test: it answers UDP and TCP
//! (RFC 7766 framing) on the same port and logs every question it receives, so a test can prove
//! which names left the sandbox and which never did.
//!
//! Answers: for names under `.test`, A is 127.0.0.1 (TTL 60), TXT is [`TXT_ANSWER`], every other
//! type is NODATA; any other name is NXDOMAIN.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, ResponseCode},
    rr::{
        RData, Record, RecordType,
        rdata::{A, TXT},
    },
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
};

/// The TXT string the fake upstream answers for `.test` names.
pub const TXT_ANSWER: &str = "from-the-fake-upstream";

/// One question the upstream received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Lower-case, no trailing dot.
    pub name: String,
    /// `A`, `AAAA`, `TXT`, …
    pub qtype: String,
    /// `udp` or `tcp`.
    pub transport: &'static str,
}

type Log = Arc<Mutex<Vec<Question>>>;

/// The running fake upstream; stops when dropped.
pub struct FakeDns {
    /// Where it listens, UDP and TCP.
    pub addr: SocketAddr,
    log: Log,
    _rt: tokio::runtime::Runtime,
}

impl FakeDns {
    /// Bind UDP and TCP on one free port of 127.0.0.1 and serve on a private runtime.
    pub fn start() -> FakeDns {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("dns runtime");
        let (udp, tcp) = rt.block_on(async {
            for _ in 0..50 {
                let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind fake dns udp");
                let addr = udp.local_addr().expect("udp addr");
                if let Ok(tcp) = TcpListener::bind(addr).await {
                    return (udp, tcp);
                }
            }
            panic!("no port free for both UDP and TCP on 127.0.0.1");
        });
        let addr = udp.local_addr().expect("fake dns addr");
        let log: Log = Arc::default();
        rt.spawn(serve_udp(udp, log.clone()));
        rt.spawn(serve_tcp(tcp, log.clone()));
        FakeDns { addr, log, _rt: rt }
    }

    /// Every question so far, in arrival order.
    pub fn questions(&self) -> Vec<Question> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The distinct names asked so far, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.questions().into_iter().map(|q| q.name).collect();
        names.sort();
        names.dedup();
        names
    }

    /// Whether `name` was ever asked (any type).
    pub fn asked(&self, name: &str) -> bool {
        self.questions().iter().any(|q| q.name == name)
    }

    /// A server config whose only DNS upstream is this server, in `mode` (`synthetic` or
    /// `passthrough`).
    pub fn server_config(&self, mode: &str) -> String {
        format!("dns:\n  upstream: [\"{}\"]\n  mode: {mode}\n", self.addr)
    }
}

fn answer(query: &Message) -> Message {
    let mut resp = Message::response(query.metadata.id, OpCode::Query);
    resp.metadata.message_type = MessageType::Response;
    resp.metadata.recursion_desired = query.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.queries = query.queries.clone();
    if query.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        resp.edns = Some(edns);
    }
    let Some(q) = query.queries.first() else {
        resp.metadata.response_code = ResponseCode::FormErr;
        return resp;
    };
    let name = q.name.to_ascii().trim_end_matches('.').to_ascii_lowercase();
    if !name.ends_with(".test") {
        resp.metadata.response_code = ResponseCode::NXDomain;
        return resp;
    }
    let data = match q.query_type {
        RecordType::A => Some(RData::A(A(Ipv4Addr::LOCALHOST))),
        RecordType::TXT => Some(RData::TXT(TXT::new(vec![TXT_ANSWER.to_string()]))),
        _ => None,
    };
    if let Some(data) = data {
        resp.answers.push(Record::from_rdata(q.name.clone(), 60, data));
    }
    resp
}

/// Log the question of `bytes` and encode the answer (`None` for what does not decode).
fn handle(bytes: &[u8], log: &Log, transport: &'static str) -> Option<Vec<u8>> {
    let query = Message::from_vec(bytes).ok()?;
    if let Some(q) = query.queries.first() {
        log.lock().unwrap_or_else(PoisonError::into_inner).push(Question {
            name: q.name.to_ascii().trim_end_matches('.').to_ascii_lowercase(),
            qtype: q.query_type.to_string(),
            transport,
        });
    }
    answer(&query).to_vec().ok()
}

async fn serve_udp(sock: UdpSocket, log: Log) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else { continue };
        if let Some(reply) = handle(&buf[..n], &log, "udp") {
            let _ = sock.send_to(&reply, peer).await;
        }
    }
}

async fn serve_tcp(listener: TcpListener, log: Log) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(serve_tcp_conn(stream, log.clone()));
    }
}

async fn serve_tcp_conn(mut stream: TcpStream, log: Log) {
    while let Ok(len) = stream.read_u16().await {
        let mut query = vec![0u8; usize::from(len)];
        if stream.read_exact(&mut query).await.is_err() {
            return;
        }
        let Some(reply) = handle(&query, &log, "tcp") else { return };
        let Ok(len) = u16::try_from(reply.len()) else { return };
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}
