//! The forwarding client: one question to the configured upstream resolvers over UDP, retried
//! over TCP when the answer is truncated. Each query uses an unpredictable ID and a socket of its
//! own for the exchange (each socket on a random source port, reused for a bounded number of
//! queries: see [`crate::sockets`]); an answer is accepted only from the upstream asked (connected UDP
//! socket), with the same ID and the same question. Never falls back to the host's resolver:
//! the gateway passes the upstream list in (see [`nameservers_from_resolv_conf`]).

use std::{
    collections::hash_map::RandomState,
    hash::BuildHasher,
    net::{IpAddr, SocketAddr},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query},
    rr::{RData, RecordType},
};
use policies::{config::DnsConfig, matchers::domain::Hostname};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    time::timeout,
};

use crate::{
    DnsError, Family,
    answer::sanitise,
    sockets::{Pooled, UdpPool},
    wire::{self, EDNS_PAYLOAD, MAX_UDP, name_of},
};

/// Upstream client settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Resolvers, tried in order.
    pub servers: Vec<SocketAddr>,
    /// Time allowed for one exchange (UDP, or TCP after truncation).
    pub timeout: Duration,
    /// Rounds over the server list.
    pub attempts: u32,
}

impl UpstreamConfig {
    /// `servers` with a 2 s timeout and 2 rounds.
    pub fn new(servers: Vec<SocketAddr>) -> Self {
        UpstreamConfig { servers, timeout: Duration::from_secs(2), attempts: 2 }
    }
}

/// The `nameserver` lines of a resolv.conf text, as port-53 socket addresses (the gateway reads
/// the file; this stays pure). Scoped IPv6 (`fe80::1%eth0`) is skipped.
pub fn nameservers_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next()).flatten()
        })
        .filter_map(|w| w.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Unpredictable 16-bit IDs: SipHash, keyed at random per process, of a counter.
#[derive(Debug)]
struct IdGen {
    keys: RandomState,
    counter: AtomicU64,
}

impl IdGen {
    fn next(&self) -> u16 {
        (self.keys.hash_one(self.counter.fetch_add(1, Ordering::Relaxed)) & 0xffff) as u16
    }
}

/// The forwarding client (see the module docs). Cheap to share; all methods take `&self`.
#[derive(Debug)]
pub struct Upstream {
    config: UpstreamConfig,
    ids: IdGen,
    sockets: UdpPool,
}

impl Upstream {
    /// A client for `config`.
    pub fn new(config: UpstreamConfig) -> Self {
        Upstream {
            config,
            ids: IdGen { keys: RandomState::new(), counter: AtomicU64::new(0) },
            sockets: UdpPool::default(),
        }
    }

    /// A client for the server config's `dns.upstream`; an empty list is an error here (the
    /// gateway decides whether to fall back to the host's resolv.conf).
    pub fn from_dns_config(dns: &DnsConfig) -> Result<Self, DnsError> {
        if dns.upstream.is_empty() {
            return Err(DnsError::NoUpstream);
        }
        Ok(Self::new(UpstreamConfig::new(dns.upstream.iter().map(|u| u.0).collect())))
    }

    /// The settings in use.
    pub fn config(&self) -> &UpstreamConfig {
        &self.config
    }

    /// Ask `name`/`qtype`; returns the verified answer and the upstream that gave it.
    pub async fn query(&self, name: &Hostname, qtype: RecordType) -> Result<(Message, SocketAddr), DnsError> {
        let qname = name_of(name).ok_or(DnsError::Encode(format!("name {name}")))?;
        let mut last = DnsError::NoUpstream;
        for _ in 0..self.config.attempts.max(1) {
            for &server in &self.config.servers {
                let id = self.ids.next();
                let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
                msg.metadata.recursion_desired = true;
                msg.add_query(Query::query(qname.clone(), qtype));
                let mut edns = Edns::new();
                edns.set_max_payload(EDNS_PAYLOAD);
                msg.edns = Some(edns);
                match self.exchange(server, &msg).await {
                    Ok(answer) => return Ok((answer, server)),
                    Err(e) => last = e,
                }
            }
        }
        Err(last)
    }

    async fn exchange(&self, server: SocketAddr, msg: &Message) -> Result<Message, DnsError> {
        let bytes = msg.to_vec().map_err(|e| DnsError::Encode(e.to_string()))?;
        let limit = self.config.timeout;
        let timed_out = || DnsError::Timeout { upstream: server, timeout_ms: limit.as_millis() as u64 };
        let udp = timeout(limit, self.udp_exchange(server, &bytes, msg)).await.map_err(|_| timed_out())??;
        if !udp.metadata.truncation {
            return Ok(udp);
        }
        timeout(limit, tcp_exchange(server, &bytes, msg)).await.map_err(|_| timed_out())?
    }

    /// The real addresses of `name` for `family` (the gateway's connect-time resolution in
    /// synthetic mode). An NXDOMAIN or NODATA answer is an empty list; the caller applies
    /// [`crate::check_resolved`] before use.
    pub async fn resolve_real(&self, name: &Hostname, family: Family) -> Result<Vec<IpAddr>, DnsError> {
        let qtype = match family {
            Family::V4 => RecordType::A,
            Family::V6 => RecordType::AAAA,
        };
        let (answer, server) = self.query(name, qtype).await?;
        let clean = sanitise(name, qtype, &answer, false);
        if clean.rcode == hickory_proto::op::ResponseCode::ServFail {
            return Err(DnsError::BadAnswer { upstream: server, reason: "upstream failure rcode" });
        }
        Ok(clean
            .answers
            .iter()
            .filter_map(|r| match r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect())
    }
}

/// Whether `answer` answers `query`: a response, same ID and the same single question.
fn matches(query: &Message, answer: &Message) -> bool {
    answer.metadata.message_type == MessageType::Response
        && answer.metadata.id == query.metadata.id
        && answer.queries.len() == 1
        && query.queries.first().is_some_and(|q| {
            let a = &answer.queries[0];
            a.query_type == q.query_type
                && a.query_class == q.query_class
                && a.name.eq_ignore_root_case(&q.name) // exact spelling, as sent
        })
}

impl Upstream {
    /// One UDP exchange on a kept socket, or a fresh one. A kept socket that fails (an ICMP
    /// error left from an earlier query, a reactor that is gone) is closed and the exchange
    /// retried once on a fresh socket. The caller's timeout drops the socket with the future.
    async fn udp_exchange(
        &self,
        server: SocketAddr,
        bytes: &[u8],
        query: &Message,
    ) -> Result<Message, DnsError> {
        let io = |source| DnsError::Io { upstream: server, source };
        if let Some(kept) = self.sockets.take(server)
            && let Ok(answer) = exchange_on(&kept.sock, bytes, query).await
        {
            self.sockets.give_back(server, kept);
            return Ok(answer);
        }
        let fresh = Pooled::fresh(server).await.map_err(io)?;
        let answer = exchange_on(&fresh.sock, bytes, query).await.map_err(io)?;
        self.sockets.give_back(server, fresh);
        Ok(answer)
    }
}

/// Send `bytes` on the connected `sock` and wait for the answer to `query`.
async fn exchange_on(sock: &UdpSocket, bytes: &[u8], query: &Message) -> std::io::Result<Message> {
    sock.send(bytes).await?;
    let mut buf = vec![0u8; MAX_UDP];
    loop {
        let n = sock.recv(&mut buf).await?;
        // Anything that is not our answer (late, spoofed, garbled) is ignored until the timeout.
        if let Ok(answer) = wire::decode(&buf[..n])
            && matches(query, &answer)
        {
            return Ok(answer);
        }
    }
}

async fn tcp_exchange(server: SocketAddr, bytes: &[u8], query: &Message) -> Result<Message, DnsError> {
    let io = |source| DnsError::Io { upstream: server, source };
    let mut stream = TcpStream::connect(server).await.map_err(io)?;
    let len = u16::try_from(bytes.len()).map_err(|_| DnsError::Encode("query over 64 KiB".into()))?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await.map_err(io)?;
    loop {
        let len = usize::from(stream.read_u16().await.map_err(io)?);
        let mut buf = vec![0u8; len];
        stream.read_exact(&mut buf).await.map_err(io)?;
        let answer = wire::decode(&buf)
            .map_err(|_| DnsError::BadAnswer { upstream: server, reason: "undecodable" })?;
        if matches(query, &answer) {
            return Ok(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let text =
            "# c\nsearch x\nnameserver 127.0.0.53\nnameserver ::1\nnameserver fe80::1%eth0\noptions edns0\n";
        let got = nameservers_from_resolv_conf(text);
        assert_eq!(got, vec!["127.0.0.53:53".parse().expect("sa"), "[::1]:53".parse().expect("sa")]);
    }
}
