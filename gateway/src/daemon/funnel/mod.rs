//! The session gateway's data path: accept a redirected connection inside the sandbox's network
//! namespace, name its original destination from the supervisor's table, peek at the first
//! bytes for a TLS SNI or HTTP Host, decide by policy, dial upstream from the host namespace
//! and splice both ways. Every outcome is one audit event.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

mod refuse;
mod route;
mod terminate;

use dns::SessionResolver;
use netwire::peek::{Peeked, peek_first_bytes};
use policies::{CompiledPolicy, Decision, Policy, matchers::domain::Hostname};
use redirect::{OriginalDst, OriginalDstTable};
use tokio::{net::TcpStream, sync::watch};

use self::{
    refuse::{refuse, reset},
    route::{Route, Target},
};
use super::Recorder;
use crate::events::{Event, millis};

/// How long a client may take to send the bytes that name its destination before the
/// connection is decided without a name. On ports where the client always speaks first (TLS,
/// HTTP) a late hello must not slip past the name check, so the wait is long; elsewhere the
/// server may speak first (SSH, SMTP, databases) and every connection would pay the wait.
const PEEK_TIMEOUT_CLIENT_FIRST: Duration = Duration::from_secs(5);
/// See [`PEEK_TIMEOUT_CLIENT_FIRST`].
const PEEK_TIMEOUT_OTHER: Duration = Duration::from_millis(200);
/// Ports whose protocols always open with the client's bytes.
const CLIENT_FIRST_PORTS: &[u16] = &[80, 443, 853, 8080, 8443];
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
    /// Where each accepted connection was really going.
    pub origins: Arc<dyn Origins>,
    /// The command shares the host's network namespace and every TCP connect of its reaches the
    /// funnel (the eBPF backend), so the funnel also answers what a private namespace serves
    /// on its own loopback: DNS over TCP (any port 53) and the LLM proxy's plain listener.
    pub host_network: bool,
    /// Event sink.
    pub recorder: Arc<Recorder>,
    /// The session resolver (names of synthetic and remembered addresses, real resolution).
    pub resolver: Arc<SessionResolver>,
    /// The session CA, for connections the funnel terminates (`rewrite_sni`).
    pub ca: Arc<llmproxy::ca::SessionCa>,
    /// Trust for the TLS the funnel originates.
    pub upstream_tls: Arc<super::tls::UpstreamTls>,
    /// The session's LLM proxy: TLS to a provider host is terminated and handed to it.
    pub llm: Option<Arc<llmproxy::LlmProxy>>,
    /// The session's database proxies: a connect to a service's upstream is handed to its proxy.
    pub db: Option<Arc<super::db::SessionDb>>,
    /// Where database sessions run.
    pub db_pool: Arc<dbproxy::proxy::SessionPool>,
    /// Connections still being handled.
    pub active: AtomicUsize,
}

/// What the first bytes said about the destination.
pub(super) struct Named {
    host: Option<Hostname>,
    /// ALPN protocols a TLS client offered, in its order.
    alpn: Vec<Vec<u8>>,
    protocol: &'static str,
    note: Option<String>,
}

fn name_from(peeked: Peeked) -> Named {
    let parse = |s: &str| Hostname::parse(s).ok();
    match peeked {
        Peeked::Tls(info) => {
            let host = info.sni.and_then(|n| parse(n.as_str()));
            Named { host, alpn: info.alpn, protocol: "tls", note: None }
        }
        Peeked::Http(head) => {
            let host = match head.host {
                Some(netwire::http::Host::Name(n)) => parse(n.as_str()),
                _ => None,
            };
            Named { host, alpn: Vec::new(), protocol: "http", note: None }
        }
        Peeked::Malformed(e) => {
            Named { host: None, alpn: Vec::new(), protocol: "malformed", note: Some(e.to_string()) }
        }
        Peeked::Raw | Peeked::NeedMore | Peeked::Silent => {
            Named { host: None, alpn: Vec::new(), protocol: "raw", note: None }
        }
    }
}

impl Funnel {
    /// The gateway of one command of `session`, reading original destinations from `origins`.
    pub fn for_session(
        daemon: &super::Daemon,
        session: &super::session::Session,
        command_id: &str,
        origins: Arc<dyn Origins>,
        host_network: bool,
    ) -> Arc<Funnel> {
        Arc::new(Funnel {
            session_id: session.id.clone(),
            command_id: command_id.to_string(),
            policy: session.policy.clone(),
            compiled: session.compiled.clone(),
            origins,
            host_network,
            recorder: daemon.recorder.clone(),
            resolver: session.resolver.clone(),
            ca: session.ca.clone(),
            upstream_tls: daemon.upstream_tls.clone(),
            llm: session.llm.clone(),
            db: session.db.clone(),
            db_pool: daemon.db_pool.clone(),
            active: AtomicUsize::new(0),
        })
    }

    /// Serve `listeners` (std, bound) on the daemon's runtime until `stop` flips.
    pub fn serve_all(
        self: &Arc<Self>,
        daemon: &super::Daemon,
        listeners: impl IntoIterator<Item = std::net::TcpListener>,
        stop: &watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        let _rt = daemon.runtime.enter();
        for l in listeners {
            l.set_nonblocking(true)?;
            let l = tokio::net::TcpListener::from_std(l)?;
            daemon.runtime.spawn(serve(l, self.clone(), stop.clone()));
        }
        Ok(())
    }

    fn event(&self, kind: &str, dst: &OriginalDst, named: &Named, route: &Route) -> Event {
        let d = &route.decision;
        let mut e = Event::new(kind, &self.session_id);
        e.command_id = Some(self.command_id.clone());
        e.pid = i32::try_from(dst.pid).ok();
        e.domain = route.name.as_ref().or(named.host.as_ref()).map(|h| h.to_string());
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

    /// Handle one accepted connection whose peer (the agent's socket) is `peer`.
    pub async fn handle(self: Arc<Self>, agent: TcpStream, peer: SocketAddr) {
        let Some(dst) = self.origins.take(peer) else {
            let mut e = Event::new("net_connect_blocked", &self.session_id);
            e.command_id = Some(self.command_id.clone());
            e.remote = Some(peer.to_string());
            e.policy = Some((&Decision::default_deny("unregistered-connection")).into());
            self.recorder
                .record(e.field("reason", "no original destination: the gateway was dialled directly"));
            reset(agent);
            return;
        };
        if self.host_network && self.serves_locally(&dst) {
            return self.serve_loopback_service(agent, peer, &dst).await;
        }
        if let Some(db) = &self.db
            && let Some(entry) = db.for_connect(dst.dst, self.resolver.name_for(dst.ip()).as_ref())
        {
            return self.intercept_db(agent, &dst, entry.clone()).await;
        }
        let timeout = if CLIENT_FIRST_PORTS.contains(&dst.port()) {
            PEEK_TIMEOUT_CLIENT_FIRST
        } else {
            PEEK_TIMEOUT_OTHER
        };
        let (named, early) = if self.name_can_matter(&dst) {
            (peek(&agent, timeout).await, None)
        } else {
            // The address alone decides: dial now, and stop waiting for the client's first bytes
            // as soon as the server speaks (SSH, SMTP, databases pay no peek timeout).
            let (named, dialled) = peek_while_dialling(&agent, dst.dst, timeout).await;
            (named, Some(dialled))
        };
        let route = self.route(&dst, &named).await;
        if !route.decision.verdict.permits() {
            let d = &route.decision;
            tracing::info!(session.id = %self.session_id, rule = %d.rule, remote = %dst.dst, "connect denied");
            self.recorder.record(self.event("net_connect_blocked", &dst, &named, &route));
            refuse(agent, named.protocol, d).await;
            return;
        }
        if let Some(r) = route.redirect.as_ref().filter(|r| r.visible) {
            let mut e =
                self.event("connect_redirect", &dst, &named, &route).field("redirect_to", r.to.clone());
            if let Some(m) = &r.message {
                e = e.field("message", m.clone());
            }
            self.recorder.record(e);
        }
        if route.redirect.is_none()
            && let Some(llm) = self.llm_for(&named)
        {
            return self.intercept_llm(agent, peer, &dst, &named, &route, llm).await;
        }
        let start = Instant::now();
        let _ = agent.set_nodelay(true);
        let (result, upstream_addr) = match &route.target {
            Target::Tcp(addrs) => match match early {
                Some(dialled) => dialled,
                None => dial(addrs).await,
            } {
                Ok((upstream, addr)) if route.redirect.as_ref().is_some_and(|r| r.rewrite_sni.is_some()) => {
                    let _ = upstream.set_nodelay(true);
                    let sni =
                        route.redirect.as_ref().and_then(|r| r.rewrite_sni.as_deref()).unwrap_or_default();
                    let upstream = match terminate::connect_upstream(
                        upstream,
                        sni,
                        named.alpn.clone(),
                        &self.upstream_tls,
                    )
                    .await
                    {
                        Ok(s) => s,
                        Err(e) => return self.dial_failed(agent, &dst, &named, &route, e),
                    };
                    let relayed = terminate::relay_terminated(agent, upstream, &self.ca).await;
                    (relayed, format!("{addr} (tls as {sni})"))
                }
                Ok((upstream, addr)) => {
                    let _ = upstream.set_nodelay(true);
                    (
                        netwire::relay::relay_with(agent, upstream, relay_config())
                            .await
                            .map_err(|e| e.to_string()),
                        addr.to_string(),
                    )
                }
                Err(e) => return self.dial_failed(agent, &dst, &named, &route, e),
            },
            Target::Unix(path) => match tokio::net::UnixStream::connect(path).await {
                Ok(upstream) => (relay_streams(agent, upstream).await, format!("unix:{}", path.display())),
                Err(e) => return self.dial_failed(agent, &dst, &named, &route, e.to_string()),
            },
        };
        let mut e = self.event("net_connect", &dst, &named, &route).field("upstream", upstream_addr);
        match result {
            Ok(s) => {
                e = e
                    .field("bytes_sent", s.a_to_b)
                    .field("bytes_received", s.b_to_a)
                    .field("end", format!("{:?}", s.end).to_lowercase())
                    .field("spliced", s.spliced);
            }
            Err(err) => e = e.field("error", err),
        }
        self.recorder.record(e.field("duration_ms", millis(start.elapsed())));
    }

    /// Whether a host-network connection is for a service the sandbox would find on its own
    /// loopback in a private namespace: DNS over TCP, or the LLM proxy's plain listener.
    fn serves_locally(&self, dst: &OriginalDst) -> bool {
        dst.port() == 53 || (self.llm.is_some() && dst.dst == super::llm::LISTEN)
    }

    /// Serve a connection [`Self::serves_locally`] picked: DNS over TCP by the session resolver
    /// (whose own events record the queries), or HTTP by the LLM proxy.
    async fn serve_loopback_service(&self, agent: TcpStream, peer: SocketAddr, dst: &OriginalDst) {
        if dst.port() == 53 {
            if let Err(e) = dns::serve_tcp_stream(agent, self.resolver.clone()).await {
                tracing::debug!(session.id = %self.session_id, error = %e, "dns over tcp");
            }
            return;
        }
        let Some(llm) = self.llm.clone() else { return };
        let _ = agent.set_nodelay(true);
        if let Err(e) = llm.serve_connection(agent, llmproxy::ConnInfo { peer: Some(peer), sni: None }).await
        {
            tracing::debug!(session.id = %self.session_id, error = %e, "llm proxy connection");
        }
    }

    /// Whether the first bytes could change where this connection may go: a name bound by the
    /// session resolver (checked against the SNI), connect redirects, or a name rule that could
    /// match before the rule deciding on the address alone.
    fn name_can_matter(&self, dst: &OriginalDst) -> bool {
        if self.resolver.name_for(dst.ip()).is_some()
            || !self.policy.connect_redirects.is_empty()
            || self.llm.is_some()
        {
            return true;
        }
        let d = self.compiled.decide_connect(&policies::ConnectRequest::by_ip(dst.ip(), dst.port()));
        !super::decider::final_on_address(&self.policy, &d)
    }

    /// The LLM proxy, when this is TLS to one of its provider hosts.
    fn llm_for(&self, named: &Named) -> Option<Arc<llmproxy::LlmProxy>> {
        let llm = self.llm.as_ref()?;
        let host = named.host.as_ref().filter(|_| named.protocol == "tls")?;
        llm.config().providers.iter().any(|p| p.serves_host(host.as_str())).then(|| llm.clone())
    }

    /// Terminate the agent's TLS with the session CA (a leaf for its SNI) and let the LLM proxy
    /// serve the requests inside; the proxy makes its own upstream connections.
    async fn intercept_llm(
        &self,
        agent: TcpStream,
        peer: SocketAddr,
        dst: &OriginalDst,
        named: &Named,
        route: &Route,
        llm: Arc<llmproxy::LlmProxy>,
    ) {
        let start = Instant::now();
        let _ = agent.set_nodelay(true);
        let config = self.ca.server_config(vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        let conn = llmproxy::ConnInfo { peer: Some(peer), sni: None };
        let served = llm.serve_tls(agent, config, conn).await;
        let mut e = self
            .event("net_connect", dst, named, route)
            .field("upstream", "llm-proxy")
            .field("intercepted", "llm");
        if let Err(err) = served {
            e = e.field("error", err.to_string());
        }
        self.recorder.record(e.field("duration_ms", millis(start.elapsed())));
    }

    /// Hand a connect to a database service's upstream to its proxy: the only route there.
    async fn intercept_db(&self, agent: TcpStream, dst: &OriginalDst, entry: Arc<super::db::DbEntry>) {
        let start = Instant::now();
        let _ = agent.set_nodelay(true);
        let ctx = dbproxy::ClientCtx {
            session_id: Some(self.session_id.clone()),
            client_identity: super::db::identity_of(dst.pid),
            peer_pid: i32::try_from(dst.pid).ok(),
        };
        // On the database session thread (see `Daemon::db_pool`); the stream moves there
        // unregistered.
        let served = match agent.into_std() {
            Ok(agent) => {
                match self.db_pool.serve(entry.proxy.clone(), move || TcpStream::from_std(agent), ctx).await {
                    Ok(r) => r.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(format!("database session thread: {e}")),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        let mut e = Event::new("net_connect", &self.session_id);
        e.command_id = Some(self.command_id.clone());
        e.pid = i32::try_from(dst.pid).ok();
        e.domain = self.resolver.name_for(dst.ip()).map(|h| h.to_string());
        e.remote = Some(dst.dst.to_string());
        let mut e = e
            .field("protocol", "postgres")
            .field("intercepted", format!("db:{}", entry.proxy.service_name()))
            .field("upstream", "db-proxy");
        if let Err(err) = served {
            e = e.field("error", err);
        }
        self.recorder.record(e.field("duration_ms", millis(start.elapsed())));
    }

    fn dial_failed(&self, agent: TcpStream, dst: &OriginalDst, named: &Named, route: &Route, error: String) {
        self.recorder.record(self.event("net_connect", dst, named, route).field("error", error));
        reset(agent);
    }
}

/// The first bytes of the client, named, within `timeout`.
async fn peek(agent: &TcpStream, timeout: Duration) -> Named {
    match peek_first_bytes(agent, PEEK_MAX, timeout).await {
        Ok((peeked, _)) => name_from(peeked),
        Err(e) => Named { host: None, alpn: Vec::new(), protocol: "raw", note: Some(e.to_string()) },
    }
}

/// Dial `dst` while peeking at the client's first bytes; the peek ends early when the dial
/// fails or the server sends first (nothing is read from it here).
async fn peek_while_dialling(
    agent: &TcpStream,
    dst: SocketAddr,
    timeout: Duration,
) -> (Named, Result<(TcpStream, SocketAddr), String>) {
    let target = [dst];
    let peeking = peek(agent, timeout);
    let dialling = dial(&target);
    tokio::pin!(peeking, dialling);
    let dialled = tokio::select! {
        named = &mut peeking => return (named, dialling.await),
        dialled = &mut dialling => dialled,
    };
    let named = match &dialled {
        Ok((upstream, _)) => tokio::select! {
            named = &mut peeking => named,
            _ = upstream.readable() => Named { host: None, alpn: Vec::new(), protocol: "raw", note: None },
        },
        Err(_) => Named { host: None, alpn: Vec::new(), protocol: "raw", note: None },
    };
    (named, dialled)
}

/// The relay of TCP connections: a user-space copy through a 1 MiB buffer per direction.
/// Measured on loopback with the funnel bench (1 GiB one way), the copy beat `splice(2)` through
/// a 256 KiB pipe, and a 1 MiB buffer beat 256 KiB: fewer, larger reads and writes.
fn relay_config() -> netwire::relay::RelayConfig {
    netwire::relay::RelayConfig {
        mode: netwire::relay::RelayMode::Copy,
        pipe_size: 1 << 20,
        ..netwire::relay::RelayConfig::new(IDLE_TIMEOUT)
    }
}

/// Dial the first address that answers.
async fn dial(addrs: &[SocketAddr]) -> Result<(TcpStream, SocketAddr), String> {
    let mut last = "no address to dial".to_string();
    for &addr in addrs {
        match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => return Ok((s, addr)),
            Ok(Err(e)) => last = format!("{addr}: {e}"),
            Err(_) => last = format!("{addr}: connect timed out"),
        }
    }
    Err(last)
}

/// Relay between two byte streams that are not plain sockets (a Unix-socket upstream, or the
/// two ends of a terminated TLS connection): a plain copy, stats as for TCP.
async fn relay_streams<A, B>(mut agent: A, mut upstream: B) -> Result<netwire::relay::RelayStats, String>
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let start = Instant::now();
    let copy = tokio::io::copy_bidirectional(&mut agent, &mut upstream);
    match tokio::time::timeout(IDLE_TIMEOUT, copy).await {
        Ok(Ok((a_to_b, b_to_a))) => Ok(netwire::relay::RelayStats {
            a_to_b,
            b_to_a,
            duration: start.elapsed(),
            end: netwire::relay::RelayEnd::Closed,
            spliced: false,
        }),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Where the funnel learns each accepted connection's original destination: the supervisor's
/// table (seccomp), or the kernel's record (eBPF).
pub trait Origins: Send + Sync {
    /// The original destination of the connection accepted from `peer`, removed from the
    /// record; `None` when no redirect made it (the gateway was dialled directly).
    fn take(&self, peer: SocketAddr) -> Option<OriginalDst>;
}

impl Origins for OriginalDstTable {
    fn take(&self, peer: SocketAddr) -> Option<OriginalDst> {
        OriginalDstTable::take(self, peer)
    }
}

impl Origins for redirect::ebpf::Attached {
    fn take(&self, peer: SocketAddr) -> Option<OriginalDst> {
        redirect::ebpf::Attached::take(self, peer).map(|r| r.original)
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
