//! Shared pieces of the eBPF backend tests: a loaded backend in a fresh network namespace, a
//! temporary cgroup, loopback stand-ins for the gateway and the resolver, and probe shorthands.

#![allow(dead_code, unsafe_code, missing_docs)]

use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV6, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use redirect::ebpf::probe::{ProbeData, ProbeOp, ProbeReport, run_in_cgroup};
use redirect::ebpf::{Attached, DenyRule, EbpfBackend, Redirected, SessionParams};
use redirect::testing::{rerun_in_fresh_netns, skip};

pub const TIMEOUT: Duration = Duration::from_secs(3);
pub const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

pub fn is_cgroup2(p: &Path) -> bool {
    rustix::fs::statfs(p).is_ok_and(|s| s.f_type == CGROUP2_SUPER_MAGIC)
}

/// The cgroup v2 hierarchy: `/sys/fs/cgroup/unified` on hybrid hosts, else `/sys/fs/cgroup`.
pub fn cgroup2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"].iter().map(PathBuf::from).find(|p| is_cgroup2(p))
}

/// Root, a cgroup v2 hierarchy, then the test body in a fresh netns with a loaded backend.
pub fn setup(test: &str) -> Option<(EbpfBackend, PathBuf)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip(test, "needs root (loading BPF programs, creating cgroups)");
        return None;
    }
    let Some(root) = cgroup2_root() else {
        skip(test, "no cgroup v2 hierarchy mounted");
        return None;
    };
    if rerun_in_fresh_netns(test) {
        return None;
    }
    match EbpfBackend::load() {
        Ok(b) => Some((b, root)),
        Err(e) => {
            skip(test, &format!("kernel refused the eBPF programs: {e}"));
            None
        }
    }
}

/// A loaded backend, a fresh cgroup, and loopback stand-ins for the gateway and the resolver.
pub struct Fixture {
    pub backend: EbpfBackend,
    pub root: PathBuf,
    pub gw: TcpListener,
    pub dns: UdpSocket,
    pub cg: TempCgroup,
}

pub fn fixture(test: &str) -> Option<Fixture> {
    let (backend, root) = setup(test)?;
    let cg = TempCgroup::new(&root, "session");
    let gw = TcpListener::bind("127.0.0.1:0").unwrap();
    let dns = UdpSocket::bind("127.0.0.1:0").unwrap();
    Some(Fixture { backend, root, gw, dns, cg })
}

impl Fixture {
    pub fn params(&self) -> SessionParams {
        params(&self.gw, &self.dns)
    }
}

/// A cgroup created for one test, removed when dropped.
pub struct TempCgroup(pub PathBuf);

impl TempCgroup {
    pub fn new(root: &Path, name: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = root.join(format!("agentsh-test-{}-{name}-{n}", std::process::id()));
        std::fs::create_dir(&dir).expect("create test cgroup");
        Self(dir)
    }
}

impl Drop for TempCgroup {
    fn drop(&mut self) {
        // An exited probe may linger in the cgroup for a moment.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn params(gw4: &TcpListener, dns4: &UdpSocket) -> SessionParams {
    let v4 = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => v4,
        SocketAddr::V6(_) => panic!("want an IPv4 listener"),
    };
    SessionParams {
        gateway_v4: v4(gw4.local_addr().unwrap()),
        gateway_v6: None,
        dns_v4: v4(dns4.local_addr().unwrap()),
        dns_v6: None,
        deny_list: Vec::new(),
    }
}

pub fn v6(a: SocketAddr) -> SocketAddrV6 {
    match a {
        SocketAddr::V6(v6) => v6,
        SocketAddr::V4(_) => panic!("want an IPv6 listener"),
    }
}

/// A connect with nothing sent: for gateways that close what they cannot name.
pub fn connect_only(cg: &Path, dst: &str) -> ProbeReport {
    let op = ProbeOp::TcpConnect {
        dst: dst.parse().unwrap(),
        loopback_only: false,
        payload: ProbeData::default(),
        want_reply: false,
    };
    run_in_cgroup(cg, op, TIMEOUT).expect("run probe")
}

pub fn connect(cg: &Path, dst: &str) -> ProbeReport {
    let op = ProbeOp::TcpConnect {
        dst: dst.parse().unwrap(),
        loopback_only: false,
        payload: ProbeData::new(b"hello"),
        want_reply: true,
    };
    run_in_cgroup(cg, op, TIMEOUT).expect("run probe")
}

/// What the gateway stand-in saw for one named connection.
#[derive(Debug)]
pub struct Seen {
    pub peer: SocketAddr,
    pub rec: Redirected,
    pub greeting: Vec<u8>,
}

/// Stops the gateway stand-ins when the test body ends, panicking or not, so the scope can join.
pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A gateway stand-in on `listener`: names each accepted connection with `att.take`, answers
/// "ok" to named ones and closes unnamed ones (the self-test's sentinel among them), until `stop`.
pub fn serve<'s>(
    s: &'s std::thread::Scope<'s, '_>,
    listener: &'s TcpListener,
    att: &'s Attached,
    stop: &'s AtomicBool,
) -> mpsc::Receiver<Seen> {
    let (tx, rx) = mpsc::channel();
    listener.set_nonblocking(true).unwrap();
    s.spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok((mut conn, peer)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            };
            let Some(rec) = att.take(peer) else { continue };
            conn.set_nonblocking(false).unwrap();
            conn.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut greeting = vec![0u8; 5];
            let _ = conn.read_exact(&mut greeting);
            let _ = conn.write_all(b"ok");
            let _ = tx.send(Seen { peer, rec, greeting });
        }
    });
    rx
}

pub fn assert_landed(r: &ProbeReport, seen: &Seen, requested: &str, dst: &str) {
    assert_eq!(r.errno, None, "probe failed at {}: {r:?}", r.stage);
    assert_eq!(r.reply, b"ok", "{r:?}");
    assert_eq!(seen.greeting, b"hello");
    let local = r.local.expect("probe local address");
    let canonical = SocketAddr::new(local.ip().to_canonical(), local.port());
    assert_eq!(seen.peer, canonical, "the gateway accepted the probe's own socket");
    assert!(local.ip().to_canonical().is_loopback(), "rewritten to loopback, local {local}");
    assert_eq!(r.peer, Some(requested.parse().unwrap()), "getpeername names the original");
    assert_eq!(seen.rec.original.requested, requested.parse::<SocketAddr>().unwrap());
    assert_eq!(seen.rec.original.dst, dst.parse::<SocketAddr>().unwrap());
    assert_eq!(seen.rec.tgid, r.pid);
    assert_eq!(seen.rec.original.pid, r.pid, "single-threaded probe: tid == pid");
    assert_ne!(seen.rec.cookie, 0);
}

pub fn deny(net: &str, port: Option<u16>) -> DenyRule {
    DenyRule { net: net.parse().unwrap(), port }
}

/// A resolver stand-in: answers each datagram with "answer:" + the query, and reports its source.
pub fn resolver(dns: &UdpSocket) -> std::thread::JoinHandle<SocketAddr> {
    let dns = dns.try_clone().unwrap();
    dns.set_read_timeout(Some(TIMEOUT)).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let (n, from) = dns.recv_from(&mut buf).expect("resolver got the query");
        let mut reply = b"answer:".to_vec();
        reply.extend_from_slice(&buf[..n]);
        dns.send_to(&reply, from).unwrap();
        from
    })
}

/// Connects from outside the cgroup to `addr`, retrying while the probe starts listening, and
/// reads what it sends.
pub fn fetch(addr: SocketAddr, within: Duration) -> std::io::Result<Vec<u8>> {
    let deadline = std::time::Instant::now() + within;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(mut c) => {
                c.set_read_timeout(Some(TIMEOUT))?;
                let mut got = Vec::new();
                c.read_to_end(&mut got)?;
                return Ok(got);
            }
            Err(e) if std::time::Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A TCP port nothing in this namespace uses now (the tests run in a namespace of their own).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until a socket of this namespace listens on TCP `port` (`/proc/net/tcp` and `tcp6`).
pub fn wait_listening(port: u16) {
    let suffix = format!(":{port:04X}");
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let listening = ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
            std::fs::read_to_string(f).unwrap_or_default().lines().skip(1).any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() > 3 && cols[1].ends_with(&suffix) && cols[3] == "0A"
            })
        });
        if listening {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A probe in `cg` serving `payload` to one connection on `bind`, listening once this returns.
pub fn serve_in(
    cg: &Path,
    bind: SocketAddr,
    payload: &[u8],
    within: Duration,
) -> std::thread::JoinHandle<ProbeReport> {
    let cg = cg.to_owned();
    let op = ProbeOp::Serve { bind, payload: ProbeData::new(payload) };
    let server = std::thread::spawn(move || run_in_cgroup(&cg, op, within).expect("run serving probe"));
    wait_listening(bind.port());
    server
}
