//! The session gateway's data path: accept a redirected connection inside the sandbox's network
//! namespace, name its original destination from the supervisor's table, peek at the first
//! bytes for a TLS SNI or HTTP Host, decide by policy, dial upstream from the host namespace
//! and splice both ways. Every outcome is one audit event.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use netwire::peek::{Peeked, peek_first_bytes};
use policies::{CompiledPolicy, ConnectRequest, Decision, Policy, Verdict, matchers::domain::Hostname};
use redirect::{OriginalDst, OriginalDstTable};
use tokio::{net::TcpStream, sync::watch};

use super::Recorder;
use crate::events::{Event, millis};

/// How long a client may take to send the bytes that name its destination before the
/// connection is decided without a name (server-speaks-first protocols).
const PEEK_TIMEOUT: Duration = Duration::from_millis(500);
/// Most bytes peeked for a ClientHello or an HTTP head.
const PEEK_MAX: usize = 16 * 1024;
/// Upstream connect timeout.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// A relay with no traffic either way for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Everything one command's gateway needs.
pub struct Funnel {
    /// Session id, for events.
    pub session_id: String,
    /// Command id, for events.
    pub command_id: String,
    /// The policy as loaded.
    pub policy: Arc<Policy>,
    /// The compiled policy.
    pub compiled: Arc<CompiledPolicy>,
    /// Original destinations registered by the supervisor.
    pub table: Arc<OriginalDstTable>,
    /// Event sink.
    pub recorder: Arc<Recorder>,
    /// Connections still being handled.
    pub active: AtomicUsize,
}

/// What the first bytes said about the destination.
struct Named {
    host: Option<Hostname>,
    protocol: &'static str,
    note: Option<String>,
}

fn name_from(peeked: Peeked) -> Named {
    let parse = |s: &str| Hostname::parse(s).ok();
    match peeked {
        Peeked::Tls(info) => {
            Named { host: info.sni.and_then(|n| parse(n.as_str())), protocol: "tls", note: None }
        }
        Peeked::Http(head) => {
            let host = match head.host {
                Some(netwire::http::Host::Name(n)) => parse(n.as_str()),
                _ => None,
            };
            Named { host, protocol: "http", note: None }
        }
        Peeked::Malformed(e) => Named { host: None, protocol: "malformed", note: Some(e.to_string()) },
        Peeked::Raw | Peeked::NeedMore | Peeked::Silent => Named { host: None, protocol: "raw", note: None },
    }
}

/// TLS alert record: fatal `access_denied` (49), which clients report as such.
const TLS_ACCESS_DENIED: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 49];

/// Refuse in the protocol's own terms where the first bytes told us the protocol: a TLS
/// `access_denied` alert, or an HTTP 403 with a JSON body naming the rule; otherwise a reset.
async fn refuse(mut agent: TcpStream, protocol: &str, d: &Decision) {
    use tokio::io::AsyncWriteExt;
    let reply = match protocol {
        "tls" => TLS_ACCESS_DENIED.to_vec(),
        "http" => {
            let body = serde_json::json!({
                "error": "blocked by agentsh policy",
                "rule": d.rule,
                "message": d.message,
            })
            .to_string();
            format!(
                "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        }
        _ => return reset(agent),
    };
    let write = async {
        agent.write_all(&reply).await?;
        agent.shutdown().await
    };
    if tokio::time::timeout(Duration::from_secs(2), write).await.is_err() {
        return reset(agent);
    }
    // Unread request bytes would turn the close into a reset and lose the reply: drain briefly.
    let mut sink = [0u8; 4096];
    let drain = async {
        use tokio::io::AsyncReadExt;
        while matches!(agent.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    let _ = tokio::time::timeout(Duration::from_millis(200), drain).await;
}

/// Abort a connection so the peer sees a reset, not a clean close.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

impl Funnel {
    fn event(&self, kind: &str, dst: &OriginalDst, named: &Named, d: &Decision) -> Event {
        let mut e = Event::new(kind, &self.session_id);
        e.command_id = Some(self.command_id.clone());
        e.pid = i32::try_from(dst.pid).ok();
        e.domain = named.host.as_ref().map(|h| h.to_string());
        e.remote = Some(dst.dst.to_string());
        e.policy = Some(d.into());
        e = e.field("protocol", named.protocol);
        if let Some(h) = &named.host {
            e = e.field(if named.protocol == "tls" { "sni" } else { "host" }, h.to_string());
        }
        if let Some(n) = &named.note {
            e = e.field("peek_error", n.clone());
        }
        e
    }

    /// A name is only trusted for a rule that matched by name when the name really points at the
    /// address the agent dialled: otherwise any allowed SNI would carry traffic anywhere.
    async fn name_matches_address(&self, host: &Hostname, ip: IpAddr, port: u16) -> bool {
        let lookup = tokio::net::lookup_host((host.as_str(), port));
        match tokio::time::timeout(Duration::from_secs(3), lookup).await {
            Ok(Ok(addrs)) => addrs.map(|a| policies::matchers::cidr::canonical_ip(a.ip())).any(|a| a == ip),
            _ => false,
        }
    }

    async fn decide(&self, dst: &OriginalDst, named: &Named) -> Decision {
        // Bytes that claim TLS or HTTP but do not parse may still be accepted upstream: relaying
        // them unnamed would let a broken ClientHello slip past every name rule.
        if named.protocol == "malformed" {
            return Decision {
                verdict: Verdict::Deny,
                rule: "malformed-first-bytes".into(),
                message: Some("the first bytes claim TLS or HTTP but do not parse".into()),
            };
        }
        let d = self.compiled.decide_connect(&ConnectRequest::new(
            named.host.clone(),
            Some(dst.ip()),
            dst.port(),
        ));
        let by_name_only = self
            .policy
            .network_rules
            .iter()
            .find(|r| r.name == d.rule)
            .is_some_and(|r| !r.domains.is_empty() && r.cidrs.is_empty());
        if d.verdict.permits()
            && by_name_only
            && !dst.ip().is_loopback()
            && let Some(host) = &named.host
            && !self.name_matches_address(host, dst.ip(), dst.port()).await
        {
            return Decision {
                verdict: Verdict::Deny,
                rule: "name-address-mismatch".into(),
                message: Some(format!("{host} does not resolve to {}", dst.ip())),
            };
        }
        d
    }

    /// Handle one accepted connection whose peer (the agent's socket) is `peer`.
    pub async fn handle(self: Arc<Self>, agent: TcpStream, peer: SocketAddr) {
        let Some(dst) = self.table.take(peer) else {
            let mut e = Event::new("net_connect_blocked", &self.session_id);
            e.command_id = Some(self.command_id.clone());
            e.remote = Some(peer.to_string());
            e.policy = Some((&Decision::default_deny("unregistered-connection")).into());
            self.recorder
                .record(e.field("reason", "no original destination: the gateway was dialled directly"));
            reset(agent);
            return;
        };
        let named = match peek_first_bytes(&agent, PEEK_MAX, PEEK_TIMEOUT).await {
            Ok((peeked, _)) => name_from(peeked),
            Err(e) => Named { host: None, protocol: "raw", note: Some(e.to_string()) },
        };
        let d = self.decide(&dst, &named).await;
        if !d.verdict.permits() {
            tracing::info!(session.id = %self.session_id, rule = %d.rule, remote = %dst.dst, "connect denied");
            self.recorder.record(self.event("net_connect_blocked", &dst, &named, &d));
            refuse(agent, named.protocol, &d).await;
            return;
        }
        let start = Instant::now();
        let upstream = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(dst.dst)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return self.dial_failed(agent, &dst, &named, &d, e.to_string()),
            Err(_) => return self.dial_failed(agent, &dst, &named, &d, "connect timed out".into()),
        };
        let _ = upstream.set_nodelay(true);
        let _ = agent.set_nodelay(true);
        let stats = netwire::relay::relay(agent, upstream, IDLE_TIMEOUT).await;
        let mut e = self.event("net_connect", &dst, &named, &d);
        match stats {
            Ok(s) => {
                e = e
                    .field("bytes_sent", s.a_to_b)
                    .field("bytes_received", s.b_to_a)
                    .field("end", format!("{:?}", s.end).to_lowercase())
                    .field("spliced", s.spliced);
            }
            Err(err) => e = e.field("error", err.to_string()),
        }
        self.recorder.record(e.field("duration_ms", millis(start.elapsed())));
    }

    fn dial_failed(&self, agent: TcpStream, dst: &OriginalDst, named: &Named, d: &Decision, error: String) {
        self.recorder.record(self.event("net_connect", dst, named, d).field("error", error));
        reset(agent);
    }
}

/// Accept on `listener` until `stop` flips, handing each connection to the funnel.
pub async fn serve(listener: tokio::net::TcpListener, funnel: Arc<Funnel>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    funnel.active.fetch_add(1, Ordering::SeqCst);
                    let f = funnel.clone();
                    tokio::spawn(async move {
                        f.clone().handle(stream, peer).await;
                        f.active.fetch_sub(1, Ordering::SeqCst);
                    });
                }
                Err(e) => {
                    eprintln!("agentsh: gateway accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => return,
        }
    }
}
