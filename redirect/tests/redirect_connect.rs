//! A filtered tracee connects to 203.0.113.5:443 (and IPv6 / v4-mapped forms); the supervisor
//! lands it on a loopback listener in the same fresh network namespace, registers the original
//! destination under the accepted peer address, and answers `getpeername` with the original.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::{Accepted, Backend, Routes, TestDecider, gateway, supervised, table};
use redirect::Transport;
use redirect::seccomp::Exit;
use redirect::testing::{TraceeExit, child_fail};
use rustix::event::{PollFd, PollFlags, poll};
use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};

fn check(cond: bool, code: i32, msg: &str) -> Result<(), i32> {
    if cond { Ok(()) } else { Err(child_fail(code, msg)) }
}

/// The agent's view: a plain blocking connect, then getpeername, TCP_NODELAY, and a round trip.
fn blocking_client(dst: SocketAddr) -> Result<(), i32> {
    let mut s = TcpStream::connect(dst).map_err(|e| child_fail(10, &format!("connect {dst}: {e}")))?;
    let peer = s.peer_addr().map_err(|e| child_fail(11, &format!("getpeername: {e}")))?;
    check(peer == dst, 12, &format!("getpeername says {peer}, want {dst}"))?;
    let local = s.local_addr().map_err(|_| child_fail(13, "getsockname"))?;
    check(local.ip().to_canonical().is_loopback(), 14, &format!("local address {local} is not loopback"))?;
    s.set_nodelay(true).map_err(|e| child_fail(15, &format!("TCP_NODELAY: {e}")))?;
    check(s.nodelay().unwrap_or(false), 16, "TCP_NODELAY did not stick")?;
    s.write_all(b"hello").map_err(|_| child_fail(17, "write"))?;
    let mut ok = [0u8; 2];
    s.read_exact(&mut ok).map_err(|_| child_fail(18, "read"))?;
    check(&ok == b"ok", 19, "gateway answer")
}

/// A non-blocking connect: EINPROGRESS, POLLOUT, SO_ERROR 0, then getpeername.
fn nonblocking_client(dst: SocketAddr) -> Result<(), i32> {
    let fam = if dst.is_ipv4() { AddressFamily::INET } else { AddressFamily::INET6 };
    let fd =
        rustix::net::socket_with(fam, SocketType::STREAM, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC, None)
            .map_err(|_| child_fail(20, "socket"))?;
    match rustix::net::connect(&fd, &dst) {
        Err(rustix::io::Errno::INPROGRESS) | Ok(()) => {}
        Err(e) => return Err(child_fail(21, &format!("non-blocking connect: {e}"))),
    }
    let mut pfd = [PollFd::new(&fd, PollFlags::OUT)];
    let ts = rustix::event::Timespec { tv_sec: 10, tv_nsec: 0 };
    let n = poll(&mut pfd, Some(&ts)).map_err(|_| child_fail(22, "poll"))?;
    check(n == 1 && pfd[0].revents().contains(PollFlags::OUT), 23, "no POLLOUT")?;
    check(matches!(sockopt::socket_error(&fd), Ok(Ok(()))), 24, "SO_ERROR not 0")?;
    let peer = rustix::net::getpeername(&fd).ok().flatten().and_then(|a| SocketAddr::try_from(a).ok());
    check(peer == Some(dst), 25, &format!("getpeername says {peer:?}, want {dst}"))?;
    sockopt::set_tcp_nodelay(&fd, true).map_err(|_| child_fail(26, "TCP_NODELAY"))?;
    let mut s = TcpStream::from(fd);
    s.set_nonblocking(false).map_err(|_| child_fail(27, "set blocking"))?;
    s.write_all(b"hello").map_err(|_| child_fail(28, "write"))?;
    let mut ok = [0u8; 2];
    s.read_exact(&mut ok).map_err(|_| child_fail(29, "read"))?;
    Ok(())
}

/// A v4-mapped destination on an AF_INET6 socket, connected by hand so the family is IPv6.
fn mapped_client(dst: SocketAddr) -> Result<(), i32> {
    let fd = rustix::net::socket_with(AddressFamily::INET6, SocketType::STREAM, SocketFlags::CLOEXEC, None)
        .map_err(|_| child_fail(30, "socket"))?;
    rustix::net::connect(&fd, &dst).map_err(|e| child_fail(31, &format!("connect {dst}: {e}")))?;
    let peer = rustix::net::getpeername(&fd).ok().flatten().and_then(|a| SocketAddr::try_from(a).ok());
    check(peer == Some(dst), 32, &format!("getpeername says {peer:?}, want {dst}"))?;
    let mut s = TcpStream::from(fd);
    s.write_all(b"hello").map_err(|_| child_fail(33, "write"))?;
    let mut ok = [0u8; 2];
    s.read_exact(&mut ok).map_err(|_| child_fail(34, "read"))?;
    Ok(())
}

fn denied_client() -> Result<(), i32> {
    let err = TcpStream::connect("203.0.113.6:443").err().and_then(|e| e.raw_os_error());
    check(err == Some(libc::EACCES), 40, &format!("denied connect gave {err:?}, want EACCES"))
}

/// A loopback connect the decider lets through keeps its real peer.
fn loopback_client(dev_server: SocketAddr) -> Result<(), i32> {
    let s = TcpStream::connect(dev_server).map_err(|e| child_fail(50, &format!("loopback connect: {e}")))?;
    check(s.peer_addr().ok() == Some(dev_server), 51, "loopback getpeername")
}

fn connects_are_redirected_to_the_gateway(backend: Backend) {
    let gw4 = TcpListener::bind("127.0.0.1:0").unwrap();
    let gw6 = TcpListener::bind("[::1]:0").unwrap();
    let dev = TcpListener::bind("127.0.0.1:0").unwrap();
    let dev_addr = dev.local_addr().unwrap();
    let routes = Routes { gw4: gw4.local_addr().unwrap(), gw6: gw6.local_addr().unwrap() };
    let table = table();
    let seen4 = gateway(gw4, table.clone(), 3);
    let seen6 = gateway(gw6, table.clone(), 1);
    let v4: SocketAddr = "203.0.113.5:443".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::5]:443".parse().unwrap();
    let mapped: SocketAddr = "[::ffff:203.0.113.5]:443".parse().unwrap();
    let body = move || {
        let steps = [
            blocking_client(v4),
            nonblocking_client(v4),
            mapped_client(mapped),
            blocking_client(v6),
            denied_client(),
            loopback_client(dev_addr),
        ];
        steps.into_iter().find_map(Result::err).unwrap_or(0)
    };
    let (exit, sup) = supervised(backend, &backend.program(), TestDecider(routes), table.clone(), body);
    assert_eq!(exit, TraceeExit::Code(0));
    assert_eq!(sup, Exit::TraceesGone);

    let got4: Vec<Accepted> = seen4.iter().take(3).collect();
    for a in &got4 {
        let o = a.original.unwrap_or_else(|| panic!("no original destination for {}", a.peer));
        assert_eq!(o.dst, v4, "canonical destination");
        assert_eq!(o.port(), 443);
        assert_eq!(o.gateway.port(), routes.gw4.port());
        assert_eq!(o.transport, Transport::Tcp);
        assert!(o.pid > 0);
        assert_eq!(a.greeting, b"hello");
        assert!(a.peer.ip().is_loopback());
    }
    let requested: Vec<SocketAddr> = got4.iter().map(|a| a.original.unwrap().requested).collect();
    assert_eq!(requested, vec![v4, v4, mapped]);
    let a6 = seen6.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(a6.original.map(|o| o.dst), Some(v6));
    assert_eq!(a6.peer.ip(), std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST));
    assert!(table.is_empty(), "every entry was taken exactly once");
    drop(dev);
}

common::per_backend!(connects_are_redirected_to_the_gateway);
