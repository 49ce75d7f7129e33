//! Sockets inside a sandbox's network namespace, made from the host: a short-lived thread joins
//! the namespace with `setns`, binds, and exits. Sockets keep the namespace they were made in,
//! so the gateway serves the sandbox's loopback without the sandbox's cooperation.

use std::{
    fs::File,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket},
};

use anyhow::Context;
use nix::sched::{CloneFlags, setns};

/// The session resolver's sockets on a loopback: port 53 in a sandbox's own namespace, kernel
/// picked ports (the same for UDP and TCP of a family) in a shared one.
pub struct DnsSockets {
    /// UDP on 127.0.0.1.
    pub udp4: UdpSocket,
    /// TCP on 127.0.0.1.
    pub tcp4: TcpListener,
    /// UDP on [::1].
    pub udp6: UdpSocket,
    /// TCP on [::1].
    pub tcp6: TcpListener,
}

impl DnsSockets {
    /// The UDP addresses, IPv4 first.
    pub fn udp_addrs(&self) -> std::io::Result<[SocketAddr; 2]> {
        Ok([self.udp4.local_addr()?, self.udp6.local_addr()?])
    }
}

/// A gateway's sockets on the loopback of a shared network namespace: its listeners and the
/// session resolver, all on ports the kernel picks.
pub struct SharedLoopback {
    /// The gateway's TCP listeners, 127.0.0.1 then [::1].
    pub gateway: [TcpListener; 2],
    /// The session resolver.
    pub dns: DnsSockets,
}

/// Bind [`SharedLoopback`] in the calling thread's network namespace.
pub fn bind_shared_loopback() -> anyhow::Result<SharedLoopback> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, 0));
    let (udp4, tcp4) = dns_pair(v4)?;
    let (udp6, tcp6) = dns_pair(v6)?;
    Ok(SharedLoopback {
        gateway: [TcpListener::bind(v4)?, TcpListener::bind(v6)?],
        dns: DnsSockets { udp4, tcp4, udp6, tcp6 },
    })
}

/// A UDP socket on a port the kernel picks and a TCP listener on the same port (DNS over TCP on
/// the UDP port, as resolvers expect), trying other ports while TCP finds its port taken.
fn dns_pair(addr: SocketAddr) -> anyhow::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..32 {
        let udp = UdpSocket::bind(addr)?;
        match TcpListener::bind(udp.local_addr()?) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(anyhow::Error::new(last.expect("tried"))
        .context(format!("no port on {} free for both UDP and TCP", addr.ip())))
}

/// Run `make` on a short-lived thread inside the network namespace of process `pid`.
pub fn in_netns<T: Send + 'static>(
    pid: i32,
    make: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let ns =
        File::open(format!("/proc/{pid}/ns/net")).with_context(|| format!("opening the netns of {pid}"))?;
    let worker = std::thread::spawn(move || -> anyhow::Result<T> {
        setns(&ns, CloneFlags::CLONE_NEWNET).context("setns into the sandbox network namespace")?;
        make()
    });
    worker.join().map_err(|_| anyhow::anyhow!("netns worker panicked"))?
}

/// Bind the resolver's sockets inside the network namespace of process `pid`.
pub fn bind_dns(pid: i32) -> anyhow::Result<DnsSockets> {
    in_netns(pid, || {
        let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, 53));
        let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, 53));
        Ok(DnsSockets {
            udp4: UdpSocket::bind(v4).context("binding udp 127.0.0.1:53")?,
            tcp4: TcpListener::bind(v4).context("binding tcp 127.0.0.1:53")?,
            udp6: UdpSocket::bind(v6).context("binding udp [::1]:53")?,
            tcp6: TcpListener::bind(v6).context("binding tcp [::1]:53")?,
        })
    })
}

/// Bind a TCP listener at `addr` inside the network namespace of process `pid`.
pub fn bind_tcp(pid: i32, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    in_netns(pid, move || TcpListener::bind(addr).with_context(|| format!("binding tcp {addr}")))
}
