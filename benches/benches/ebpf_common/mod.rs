//! What the eBPF benches share: a session cgroup with the redirect programs attached, and the
//! gateway stand-in that names each accepted connection from the kernel's record, as the gateway
//! does.

use std::io::Write;
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use redirect::ebpf::{Attached, EbpfBackend, SessionParams};

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The cgroup v2 hierarchy: `/sys/fs/cgroup/unified` on hybrid hosts, else `/sys/fs/cgroup`.
pub fn cgroup2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .map(PathBuf::from)
        .find(|p| nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type().0 == CGROUP2_SUPER_MAGIC))
}

/// A cgroup of its own with the redirect programs attached, the gateway being `gw`; the cgroup
/// is removed when this is dropped (after the last [`Attached`] and every process in it).
pub struct Session {
    /// The attached session.
    pub att: Arc<Attached>,
    /// The session cgroup.
    pub cgroup: PathBuf,
    _dns: UdpSocket,
}

impl Session {
    /// Loads the programs and attaches them (with the self-test) to a fresh cgroup named after
    /// `bench`; the error says why the kernel or the host cannot.
    pub fn start(bench: &str, gw: SocketAddrV4) -> Result<Self, String> {
        let root = cgroup2_root().ok_or("no cgroup v2 hierarchy mounted")?;
        let backend = EbpfBackend::load().map_err(|e| format!("loading the eBPF programs: {e}"))?;
        let dns = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let Ok(SocketAddr::V4(dns_v4)) = dns.local_addr() else { return Err("resolver stand-in".into()) };
        let cgroup = root.join(format!("agentsh-bench-{bench}-{}", std::process::id()));
        std::fs::create_dir(&cgroup).map_err(|e| format!("creating {}: {e}", cgroup.display()))?;
        let params =
            SessionParams { gateway_v4: gw, gateway_v6: None, dns_v4, dns_v6: None, deny_list: Vec::new() };
        let started = Instant::now();
        let att = match backend.attach(&cgroup, params) {
            Ok(att) => Arc::new(att),
            Err(e) => {
                let _ = std::fs::remove_dir(&cgroup);
                return Err(format!("attach: {e}"));
            }
        };
        eprintln!("{bench}: eBPF attach with self-test took {:?}", started.elapsed());
        Ok(Self { att, cgroup, _dns: dns })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

/// What a [`StandIn`] saw.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    /// Connections accepted.
    pub accepted: u64,
    /// Of those, the ones the kernel had a record for.
    pub named: u64,
}

/// The gateway stand-in: accept, name the connection with [`Attached::take`] by peer address,
/// write one byte, close.
pub struct StandIn {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Counts>,
}

impl StandIn {
    /// Serves `listener` on a thread of its own until [`Self::finish`].
    pub fn start(listener: TcpListener, att: Arc<Attached>) -> Self {
        let addr = listener.local_addr().expect("stand-in address");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut n = Counts { accepted: 0, named: 0 };
            while let Ok((mut c, peer)) = listener.accept() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                n.accepted += 1;
                n.named += u64::from(att.take(peer).is_some());
                let _ = c.write_all(b"x");
            }
            n
        });
        Self { addr, stop, handle }
    }

    /// Stops serving (one more connect wakes the accept, and is not counted) and says what it saw.
    pub fn finish(self) -> Counts {
        self.stop.store(true, Ordering::Relaxed);
        drop(TcpStream::connect(self.addr));
        self.handle.join().expect("stand-in thread")
    }
}
