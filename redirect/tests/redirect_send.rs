//! Datagrams with an explicit destination (`sendto`, `sendmsg`) go through the decider: denied
//! → its errno, redirected → sent by the supervisor to the gateway (nothing recorded), loopback →
//! delivered. A connected UDP socket is redirected like TCP; TCP Fast Open is refused.
//! `redirect_datagram.rs` covers the emulated sends in depth.

mod common;

use std::io::IoSlice;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::{Backend, Routes, TestDecider, supervised, table};
use redirect::Transport;
use redirect::seccomp::Exit;
use redirect::testing::{TraceeExit, child_fail};
use rustix::net::{SendFlags, sendmsg_addr, sendto};

fn errno_of(r: rustix::io::Result<usize>) -> Option<i32> {
    r.err().map(|e| e.raw_os_error())
}

fn sends(dev: SocketAddr) -> Result<(), i32> {
    let expect = |what: &str, got: Option<i32>, want: Option<i32>| {
        if got == want { Ok(()) } else { Err(child_fail(60, &format!("{what}: got {got:?}, want {want:?}"))) }
    };
    let udp = UdpSocket::bind("127.0.0.1:0").map_err(|_| child_fail(61, "bind udp"))?;
    let redirected: SocketAddr = "203.0.113.5:53".parse().unwrap();
    let denied: SocketAddr = "203.0.113.6:53".parse().unwrap();
    let sent = sendto(&udp, b"r1", SendFlags::empty(), &redirected);
    expect("sendto redirected", errno_of(sent), None)?;
    expect("sendto denied", errno_of(sendto(&udp, b"q", SendFlags::empty(), &denied)), Some(libc::EACCES))?;
    expect("sendto loopback", errno_of(sendto(&udp, b"dev", SendFlags::empty(), &dev)), None)?;
    let iov = [IoSlice::new(b"q")];
    let mut ctl = Default::default();
    let r = sendmsg_addr(&udp, &denied, &iov, &mut ctl, SendFlags::empty());
    expect("sendmsg denied", errno_of(r), Some(libc::EACCES))?;
    let r = sendmsg_addr(&udp, &redirected, &[IoSlice::new(b"r2")], &mut ctl, SendFlags::empty());
    expect("sendmsg redirected", errno_of(r), None)?;
    let r = sendmsg_addr(&udp, &dev, &[IoSlice::new(b"msg")], &mut ctl, SendFlags::empty());
    expect("sendmsg loopback", errno_of(r), None)?;
    // A connected UDP socket is redirected like TCP; its datagrams reach the gateway.
    let c = UdpSocket::bind("0.0.0.0:0").map_err(|_| child_fail(62, "bind udp"))?;
    expect("udp connect", c.connect(redirected).err().and_then(|e| e.raw_os_error()), None)?;
    expect("udp send", c.send(b"dns?").err().and_then(|e| e.raw_os_error()), None)?;
    let tcp = rustix::net::socket(rustix::net::AddressFamily::INET, rustix::net::SocketType::STREAM, None)
        .map_err(|_| child_fail(63, "socket"))?;
    let fastopen = SendFlags::from_bits_retain(libc::MSG_FASTOPEN as u32);
    expect("tcp fastopen", errno_of(sendto(&tcp, b"x", fastopen, &redirected)), Some(libc::EOPNOTSUPP))
}

fn datagrams_with_a_destination_are_decided(backend: Backend) {
    let dev = UdpSocket::bind("127.0.0.1:0").unwrap();
    let gw_udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dev_addr = dev.local_addr().unwrap();
    let gw = gw_udp.local_addr().unwrap();
    let routes = Routes { gw4: gw, gw6: "[::1]:9".parse().unwrap() };
    let table = table();
    let body = move || match sends(dev_addr) {
        Ok(()) => 0,
        Err(code) => code,
    };
    let (exit, sup) = supervised(backend, &backend.program(), TestDecider(routes), table.clone(), body);
    assert_eq!(exit, TraceeExit::Code(0));
    assert_eq!(sup, Exit::TraceesGone);

    dev.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = dev.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"dev");
    let (n, _) = dev.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"msg");
    gw_udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for want in [&b"r1"[..], b"r2"] {
        let (n, _) = gw_udp.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], want, "the redirected datagram reaches the gateway");
    }
    let (n, from) = gw_udp.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"dns?");
    assert_eq!(table.len(), 1, "only the connected socket is registered");
    let original = table.take(from).expect("UDP original destination registered");
    assert_eq!(original.dst, "203.0.113.5:53".parse().unwrap());
    assert_eq!(original.transport, Transport::Udp);
}

common::per_backend!(datagrams_with_a_destination_are_decided);
