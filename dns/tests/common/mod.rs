//! Test support: a fake upstream DNS server on 127.0.0.1 that logs every question it receives,
//! a session resolver wired to it and served on loopback, and raw query helpers. No test here
//! talks to any resolver but these.
#![allow(dead_code)]

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    str::FromStr,
    sync::{Arc, Mutex},
    time::Duration,
};

use dns::{
    AddressGuard, DnsEvent, ResolverConfig, SessionResolver, Upstream, UpstreamConfig, serve_tcp, serve_udp,
};
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{
            A, AAAA, CNAME, HTTPS, MX, SOA, TXT,
            svcb::{Alpn, IpHint, SVCB, SvcParamKey, SvcParamValue},
        },
    },
};
use policies::{CompiledPolicy, config::DnsMode};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::oneshot,
    time::timeout,
};

/// The test policy: a deny, an allow by domain, CIDR allows, two redirects.
pub const POLICY: &str = r#"
version: 1
name: dns-tests
network_rules:
  - {name: deny-evil, domains: [evil.example, "**.evil.example"], decision: deny}
  - {name: web, domains: ["**.example.com", "**.allowed.test"], ports: [443], decision: allow}
  - {name: lab, domains: [lab.allowed.test], cidrs: [10.0.0.0/8], decision: allow}
dns_redirects:
  - {name: internal, match: '(^|\.)corp\.example$', resolve_to: 10.1.2.3, ttl: 42}
  - {name: internal6, match: '(^|\.)corp6\.example$', resolve_to: 'fd00::42'}
"#;

/// One question as the fake upstream saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// Lower-case name without the trailing dot.
    pub name: String,
    /// Question type.
    pub qtype: RecordType,
    /// Whether it came over TCP.
    pub tcp: bool,
}

/// The fake upstream: UDP and TCP on the same loopback port.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<Logged>>>,
}

impl FakeUpstream {
    pub fn questions(&self) -> Vec<Logged> {
        self.log.lock().expect("log").clone()
    }

    pub fn saw(&self, name: &str) -> bool {
        self.questions().iter().any(|l| l.name == name)
    }
}

fn n(s: &str) -> Name {
    Name::from_str(s).expect("test name")
}

/// The fake upstream's answers (see each branch).
fn respond(query: &Message, tcp: bool) -> Message {
    let mut r = Message::response(query.metadata.id, OpCode::Query);
    r.metadata.message_type = MessageType::Response;
    r.metadata.recursion_desired = query.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    r.queries = query.queries.clone();
    let q = &query.queries[0];
    let name = q.name.clone();
    let text = name.to_ascii().trim_end_matches('.').to_ascii_lowercase();
    let rec = |data| Record::from_rdata(name.clone(), 120, data);
    if text.starts_with("nx.") {
        r.metadata.response_code = ResponseCode::NXDomain;
        let soa = SOA::new(n("ns.example.com."), n("h.example.com."), 1, 60, 60, 60, 60);
        r.authorities.push(Record::from_rdata(n("example.com."), 300, RData::SOA(soa)));
        return r;
    }
    match q.query_type {
        RecordType::A if text.starts_with("big.") => {
            if !tcp {
                r.metadata.truncation = true;
            } else {
                for i in 1..=60u8 {
                    r.answers.push(rec(RData::A(A(Ipv4Addr::new(203, 0, 113, i)))));
                }
            }
        }
        RecordType::A if text.starts_with("rebind.") => {
            r.answers.push(rec(RData::A(A(Ipv4Addr::LOCALHOST))));
            r.answers.push(rec(RData::A(A(Ipv4Addr::new(203, 0, 113, 8)))));
        }
        RecordType::A if text.starts_with("lab.") => {
            r.answers.push(rec(RData::A(A(Ipv4Addr::new(10, 9, 9, 9)))))
        }
        RecordType::A if text.starts_with("cname.") => {
            r.answers.push(rec(RData::CNAME(CNAME(n("target.example.net.")))));
            let target =
                Record::from_rdata(n("target.example.net."), 60, RData::A(A(Ipv4Addr::new(203, 0, 113, 9))));
            r.answers.push(target);
            // Not on the chain: must be dropped by the resolver.
            r.answers.push(Record::from_rdata(
                n("evil.example."),
                60,
                RData::A(A(Ipv4Addr::new(6, 6, 6, 6))),
            ));
        }
        RecordType::A => r.answers.push(rec(RData::A(A(Ipv4Addr::new(203, 0, 113, 7))))),
        RecordType::AAAA => r.answers.push(rec(RData::AAAA(AAAA("2001:db8::7".parse().expect("ip"))))),
        RecordType::HTTPS => {
            let params = vec![
                (SvcParamKey::Mandatory, SvcParamValue::Mandatory(dns_mandatory())),
                (SvcParamKey::Alpn, SvcParamValue::Alpn(Alpn(vec!["h2".into(), "h3".into()]))),
                (
                    SvcParamKey::Ipv4Hint,
                    SvcParamValue::Ipv4Hint(IpHint(vec![A(Ipv4Addr::new(203, 0, 113, 7))])),
                ),
                (
                    SvcParamKey::Ipv6Hint,
                    SvcParamValue::Ipv6Hint(IpHint(vec![AAAA("2001:db8::7".parse().expect("ip"))])),
                ),
            ];
            r.answers.push(rec(RData::HTTPS(HTTPS(SVCB::new(1, Name::root(), params)))));
            r.additionals.push(rec(RData::A(A(Ipv4Addr::new(203, 0, 113, 7)))));
        }
        RecordType::MX => {
            r.answers.push(rec(RData::MX(MX::new(10, n("mail.example.com.")))));
            let glue =
                Record::from_rdata(n("mail.example.com."), 60, RData::A(A(Ipv4Addr::new(203, 0, 113, 25))));
            r.additionals.push(glue);
        }
        RecordType::TXT => r.answers.push(rec(RData::TXT(TXT::new(vec!["hello".into()])))),
        _ => {}
    }
    r
}

fn dns_mandatory() -> hickory_proto::rr::rdata::svcb::Mandatory {
    hickory_proto::rr::rdata::svcb::Mandatory(vec![SvcParamKey::Alpn, SvcParamKey::Ipv4Hint])
}

fn log_query(log: &Mutex<Vec<Logged>>, msg: &Message, tcp: bool) {
    if let Some(q) = msg.queries.first() {
        let name = q.name.to_ascii().trim_end_matches('.').to_ascii_lowercase();
        log.lock().expect("log").push(Logged { name, qtype: q.query_type, tcp });
    }
}

/// Start the fake upstream on 127.0.0.1 (UDP and TCP on one ephemeral port).
pub async fn fake_upstream() -> FakeUpstream {
    let (udp, tcp) = loop {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let addr = udp.local_addr().expect("addr");
        if let Ok(tcp) = TcpListener::bind(addr).await {
            break (udp, tcp);
        }
    };
    let addr = udp.local_addr().expect("addr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let udp_log = log.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((len, peer)) = udp.recv_from(&mut buf).await {
            let Ok(msg) = Message::from_vec(&buf[..len]) else { continue };
            log_query(&udp_log, &msg, false);
            let reply = respond(&msg, false).to_vec().expect("encode");
            let _ = udp.send_to(&reply, peer).await;
        }
    });
    let tcp_log = log.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = tcp.accept().await {
            let log = tcp_log.clone();
            tokio::spawn(async move {
                while let Ok(len) = s.read_u16().await {
                    let mut buf = vec![0u8; usize::from(len)];
                    if s.read_exact(&mut buf).await.is_err() {
                        return;
                    }
                    let Ok(msg) = Message::from_vec(&buf) else { return };
                    log_query(&log, &msg, true);
                    let reply = respond(&msg, true).to_vec().expect("encode");
                    let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&reply);
                    if s.write_all(&framed).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    FakeUpstream { addr, log }
}

/// A session resolver served on loopback UDP and TCP, with its fake upstream and event log.
pub struct Harness {
    pub upstream: FakeUpstream,
    pub resolver: Arc<SessionResolver>,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub events: Arc<Mutex<Vec<DnsEvent>>>,
    stop: Vec<oneshot::Sender<()>>,
}

impl Harness {
    pub async fn start(mode: DnsMode) -> Harness {
        Self::with_config(ResolverConfig { mode, ..ResolverConfig::default() }).await
    }

    pub async fn with_config(config: ResolverConfig) -> Harness {
        let upstream = fake_upstream().await;
        let policy = policies::load_policy(POLICY, "dns-tests.yaml").expect("policy");
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let mut up = UpstreamConfig::new(vec![upstream.addr]);
        up.timeout = Duration::from_millis(500);
        let resolver = Arc::new(SessionResolver::new(
            Arc::new(CompiledPolicy::new(&policy)),
            AddressGuard::new(&policy),
            Upstream::new(up),
            config,
            Arc::new(move |e| sink.lock().expect("events").push(e)),
        ));
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (udp, tcp) = (sock.local_addr().expect("addr"), listener.local_addr().expect("addr"));
        let (s1, r1) = oneshot::channel::<()>();
        let (s2, r2) = oneshot::channel::<()>();
        tokio::spawn(serve_udp(sock, resolver.clone(), async move {
            let _ = r1.await;
        }));
        tokio::spawn(serve_tcp(listener, resolver.clone(), async move {
            let _ = r2.await;
        }));
        Harness { upstream, resolver, udp, tcp, events, stop: vec![s1, s2] }
    }

    pub fn events(&self) -> Vec<DnsEvent> {
        self.events.lock().expect("events").clone()
    }

    /// Ask over UDP; panics on no answer within 2 s.
    pub async fn ask(&self, name: &str, qtype: RecordType) -> Message {
        let bytes = udp_exchange(self.udp, &query(7, name, qtype)).await.expect("an answer");
        Message::from_vec(&bytes).expect("answer decodes")
    }
}

/// A standard query with RD set.
pub fn query(id: u16, name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(n(name), qtype));
    m.to_vec().expect("encode")
}

/// Send raw bytes over UDP and wait up to 2 s for a reply.
pub async fn udp_exchange(server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    sock.send_to(bytes, server).await.expect("send");
    let mut buf = vec![0u8; 65_535];
    let (len, _) = timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await.ok()?.ok()?;
    buf.truncate(len);
    Some(buf)
}

/// Open a TCP connection to the resolver.
pub async fn tcp_connect(server: SocketAddr) -> TcpStream {
    TcpStream::connect(server).await.expect("connect")
}

/// Read one length-prefixed message (2 s limit).
pub async fn tcp_read(s: &mut TcpStream) -> Message {
    timeout(Duration::from_secs(2), async {
        let len = s.read_u16().await.expect("length");
        let mut buf = vec![0u8; usize::from(len)];
        s.read_exact(&mut buf).await.expect("body");
        Message::from_vec(&buf).expect("decodes")
    })
    .await
    .expect("answer within 2 s")
}

/// Frame `bytes` with the TCP length prefix.
pub fn framed(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// The addresses in an answer section.
pub fn addresses(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}
