//! Socket operations on the supervisor's duplicate of the agent's socket: what it is, where it is
//! bound, and binding/connecting it to the gateway.

#![allow(unsafe_code)]

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use rustix::net::{self as rnet, sockopt};

use crate::decide::SockInfo;
use crate::sockaddr::canonical;

/// `TCP_CLOSE` in `tcp_info.tcpi_state`: a socket that never connected.
const TCP_CLOSE: u8 = 7;

/// Domain and type of the socket (`SO_DOMAIN`, `SO_TYPE`). ENOTSOCK for anything else.
pub(crate) fn sock_info(fd: BorrowedFd<'_>) -> io::Result<SockInfo> {
    let family = sockopt::socket_domain(fd)?;
    let ty = sockopt::socket_type(fd)?;
    Ok(SockInfo { family: family.as_raw() as i32, sock_type: ty.as_raw() as i32 })
}

/// The socket's local address, if it is an IP socket.
pub(crate) fn local_addr(fd: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    let any = rnet::getsockname(fd)?;
    SocketAddr::try_from(any).map_err(|_| io::Error::from_raw_os_error(libc::EAFNOSUPPORT))
}

/// The socket's peer, or `None` when it is not connected.
pub(crate) fn peer_addr(fd: BorrowedFd<'_>) -> Option<SocketAddr> {
    rnet::getpeername(fd).ok().flatten().and_then(|a| SocketAddr::try_from(a).ok())
}

/// True when a TCP socket has never started connecting (`TCP_CLOSE`).
pub(crate) fn tcp_is_fresh(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // tcp_info begins with the u8 state; the kernel copies min(len, sizeof) bytes.
    let mut buf = [0u8; 8];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `buf`, which lives for the call.
    let rc = unsafe {
        libc::getsockopt(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, buf.as_mut_ptr().cast(), &mut len)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(len >= 1 && buf[0] == TCP_CLOSE)
}

/// True when an AF_INET6 socket refuses IPv4 (`IPV6_V6ONLY`).
pub(crate) fn v6only(fd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(sockopt::ipv6_v6only(fd)?)
}

/// The loopback address the socket binds to before it is connected to `target`, so the kernel
/// picks a port we can see: `127.0.0.1:0`, `[::1]:0`, or `[::ffff:127.0.0.1]:0` when an AF_INET6
/// socket talks to an IPv4 gateway.
pub(crate) fn bind_addr_for(target: SocketAddr) -> SocketAddr {
    match target {
        SocketAddr::V4(_) => (Ipv4Addr::LOCALHOST, 0).into(),
        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some() => {
            (Ipv4Addr::LOCALHOST.to_ipv6_mapped(), 0).into()
        }
        SocketAddr::V6(_) => (Ipv6Addr::LOCALHOST, 0).into(),
    }
}

/// Binds the socket to loopback port 0 if it is not bound yet, and returns the key under which
/// the gateway will see it: its local address, with an unspecified IP replaced by the loopback
/// source the kernel will choose for `target`, in canonical form.
pub(crate) fn ensure_bound(fd: BorrowedFd<'_>, target: SocketAddr) -> io::Result<SocketAddr> {
    let mut local = local_addr(fd)?;
    if local.port() == 0 {
        rnet::bind(fd, &bind_addr_for(target))?;
        local = local_addr(fd)?;
    }
    if local.ip().is_unspecified() {
        local.set_ip(bind_addr_for(target).ip());
    }
    Ok(canonical(local))
}

/// Connects the duplicate to `target`. The duplicate shares O_NONBLOCK with the agent's socket,
/// so a non-blocking socket yields EINPROGRESS exactly as the agent expects.
pub(crate) fn connect(fd: impl AsFd, target: SocketAddr) -> io::Result<()> {
    rnet::connect(fd, &target).map_err(io::Error::from)
}
