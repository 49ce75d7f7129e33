//! The servers under test: the session resolver (`dns::serve_udp` over a [`SessionResolver`],
//! passthrough and synthetic, on a two-worker runtime like the gateway's) and dnsmasq child
//! processes, all on 127.0.0.1 and all forwarding to the same upstream.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use dns::{AddressGuard, ResolverConfig, SessionResolver, Upstream, UpstreamConfig, serve_udp};
use policies::{CompiledPolicy, config::DnsMode};
use tokio::runtime::Runtime;

use crate::load::{Prober, Result};

/// The session's policy: the upstream's zone allowed, a denied zone and a redirect beside it so
/// the decision walks more than one rule.
const POLICY: &str = r#"
version: 1
name: dns-resolver-bench
network_rules:
  - {name: deny-evil, domains: ["**.evil.example"], decision: deny}
  - {name: bench-zone, domains: ["**.bench.example"], ports: [443], decision: allow}
dns_redirects:
  - {name: internal, match: '(^|\.)corp\.example$', resolve_to: 10.1.2.3, ttl: 42}
"#;

/// The first of `names` on `bin`'s search path (plus the sbin directories, where dnsmasq lives).
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Name prefix of the session resolvers' runtime threads (for CPU accounting).
pub const WORKER: &str = "dns-resolver";

/// Both session resolvers, served until the bench exits.
pub struct Resolvers {
    _runtime: Runtime,
    /// Passthrough mode: every allowed question forwarded to the upstream.
    pub passthrough: SocketAddr,
    /// Synthetic mode: A answered from the session's pool.
    pub synthetic: SocketAddr,
}

fn resolver(mode: DnsMode, upstream: SocketAddr) -> Result<Arc<SessionResolver>> {
    let p = policies::load_policy(POLICY, "dns-resolver-bench.yaml").map_err(|e| e.to_string())?;
    let mut up = UpstreamConfig::new(vec![upstream]);
    up.timeout = Duration::from_secs(1);
    // Default limits and event rate: what a session gets; the sink stands in for the audit log.
    let config = ResolverConfig { mode, ..ResolverConfig::default() };
    Ok(Arc::new(SessionResolver::new(
        Arc::new(CompiledPolicy::new(&p)),
        AddressGuard::new(&p),
        Upstream::new(up),
        config,
        Arc::new(|e| {
            std::hint::black_box(e);
        }),
    )))
}

impl Resolvers {
    /// Start both on ephemeral ports of 127.0.0.1, forwarding to `upstream`.
    pub fn start(upstream: SocketAddr) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(WORKER)
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        let mut addrs = Vec::new();
        for mode in [DnsMode::Passthrough, DnsMode::Synthetic] {
            let r = resolver(mode, upstream)?;
            let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
            sock.set_nonblocking(true).map_err(|e| e.to_string())?;
            addrs.push(sock.local_addr().map_err(|e| e.to_string())?);
            let _guard = runtime.enter();
            let sock = tokio::net::UdpSocket::from_std(sock).map_err(|e| e.to_string())?;
            runtime.spawn(async move {
                if let Err(e) = serve_udp(sock, r, std::future::pending()).await {
                    eprintln!("dns_resolver: serve_udp: {e}");
                }
            });
        }
        Ok(Resolvers { _runtime: runtime, passthrough: addrs[0], synthetic: addrs[1] })
    }
}

/// A dnsmasq child forwarding to the upstream; killed when dropped.
pub struct Dnsmasq {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// A port free for both UDP and TCP on 127.0.0.1 right now (dnsmasq listens on both).
fn free_port() -> Result<u16> {
    let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
    let port = udp.local_addr().map_err(|e| e.to_string())?.port();
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).map_err(|e| format!("port {port}: {e}"))?;
    Ok(port)
}

impl Dnsmasq {
    /// Start `bin` forwarding to `upstream`, with `cache_size` entries (`None`: its default),
    /// and wait until it answers a question about `probe_name`.
    pub fn start(
        bin: &Path,
        upstream: SocketAddr,
        cache_size: Option<u32>,
        probe_name: &str,
    ) -> Result<Self> {
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port()?;
            let mut cmd = Command::new(bin);
            cmd.args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--pid-file=",
            ])
            .arg(format!("--server=127.0.0.1#{}", upstream.port()))
            .arg(format!("--port={port}"));
            if let Some(n) = cache_size {
                cmd.arg(format!("--cache-size={n}"));
            }
            let child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting {}: {e}", bin.display()))?;
            let mut d = Dnsmasq { child, addr: (Ipv4Addr::LOCALHOST, port).into() };
            match d.wait_ready(probe_name) {
                Ok(()) => return Ok(d),
                Err(e) => last = e,
            }
        }
        Err(format!("dnsmasq did not start: {last}"))
    }

    fn wait_ready(&mut self, probe_name: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut prober = Prober::new(self.addr, &[probe_name.to_string()])?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}"));
            }
            if matches!(prober.once(), Ok(Some(_))) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("no answer within 5 s".into())
    }

    /// dnsmasq's pid, for `perf record -p`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
