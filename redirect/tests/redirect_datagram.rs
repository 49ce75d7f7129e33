//! Unconnected datagrams to a redirected destination are sent by the supervisor: `sendto`,
//! `sendmsg` (several iovecs) and `sendmmsg` to 203.0.113.53:53 or 127.0.0.53:53 land on a UDP
//! "resolver" at 127.0.0.1:53 inside a fresh network namespace with their exact payload, the
//! byte counts (or message count and `msg_len`s) are right, and the reply arrives on the agent's
//! socket from 127.0.0.1:53. Payloads above the bound, control messages and `MSG_MORE` fail
//! cleanly; nothing is recorded in the OriginalDst table.

#![allow(unsafe_code)]

mod common;

use std::io::IoSlice;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Backend, supervised, sys, table};
use redirect::seccomp::Exit;
use redirect::testing::{TraceeExit, child_fail};
use redirect::{Action, ConnectDecider, SockInfo};
use rustix::net::{AddressFamily, SendFlags, SocketType, sendmsg_addr, sendto, socket};

const RESOLVER: &str = "127.0.0.1:53";

/// Like the session decider: port 53 anywhere but the resolver itself goes to the resolver;
/// other loopback continues; everything else is unreachable.
struct DnsDecider;

impl ConnectDecider for DnsDecider {
    fn decide(&self, dst: SocketAddr, _sock: SockInfo, _pid: u32) -> Action {
        let resolver: SocketAddr = RESOLVER.parse().unwrap();
        if dst.port() == 53 && dst != resolver {
            Action::Redirect(resolver)
        } else if dst.ip().is_loopback() {
            Action::Continue
        } else {
            Action::Deny(libc::ENETUNREACH)
        }
    }
}

/// What the resolver answers: `re:` and the payload, or `re:<len>` for a large one.
fn answer(payload: &[u8]) -> Vec<u8> {
    if payload.len() <= 64 {
        [b"re:", payload].concat()
    } else {
        format!("re:{}", payload.len()).into_bytes()
    }
}

fn check<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), i32> {
    if got == want { Ok(()) } else { Err(child_fail(70, &format!("{what}: got {got:?}, want {want:?}"))) }
}

fn errno<T>(r: rustix::io::Result<T>) -> Result<T, i32> {
    r.map_err(|e| e.raw_os_error())
}

/// The next reply on `s` and where it came from.
fn reply(s: &UdpSocket) -> Result<(Vec<u8>, SocketAddr), i32> {
    let mut buf = [0u8; 128];
    let (n, from) = s.recv_from(&mut buf).map_err(|e| child_fail(71, &format!("no reply: {e}")))?;
    Ok((buf[..n].to_vec(), from))
}

/// An unbound UDP socket of `family` (the kernel binds it on the first send).
fn udp(family: AddressFamily) -> Result<UdpSocket, i32> {
    let fd = socket(family, SocketType::DGRAM, None).map_err(|_| child_fail(72, "socket"))?;
    let s = UdpSocket::from(fd);
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|_| child_fail(72, "timeout"))?;
    Ok(s)
}

/// A `struct msghdr` naming `name` (its bytes live in the returned buffer, whose heap storage
/// does not move) and carrying `iov`.
fn msghdr(name: SocketAddr, iov: &mut [libc::iovec]) -> (libc::msghdr, Vec<u8>) {
    let mut sa = redirect::sockaddr::encode_sockaddr(name);
    // SAFETY: all-zero is a valid msghdr.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_name = sa.as_mut_ptr().cast();
    m.msg_namelen = sa.len() as u32;
    m.msg_iov = iov.as_mut_ptr();
    m.msg_iovlen = iov.len();
    (m, sa)
}

fn iovec(b: &[u8]) -> libc::iovec {
    libc::iovec { iov_base: b.as_ptr() as *mut _, iov_len: b.len() }
}

fn datagram_sends() -> Result<(), i32> {
    let resolver: SocketAddr = RESOLVER.parse().unwrap();
    let far: SocketAddr = "203.0.113.53:53".parse().unwrap();
    let stub: SocketAddr = "127.0.0.53:53".parse().unwrap();
    let none = SendFlags::empty();
    let s = udp(AddressFamily::INET)?;

    check("sendto", errno(sendto(&s, b"one", none, &far)), Ok(3))?;
    check("sendto reply", reply(&s)?, (b"re:one".to_vec(), resolver))?;

    let iov = [IoSlice::new(b"tw"), IoSlice::new(b""), IoSlice::new(b"o-parts")];
    check("sendmsg", errno(sendmsg_addr(&s, &stub, &iov, &mut Default::default(), none)), Ok(9))?;
    check("sendmsg reply", reply(&s)?, (b"re:two-parts".to_vec(), resolver))?;

    check("MSG_DONTWAIT", errno(sendto(&s, b"three", SendFlags::DONTWAIT, &far)), Ok(5))?;
    check("MSG_DONTWAIT reply", reply(&s)?.0, b"re:three".to_vec())?;

    // sendmmsg: one message to each resolver address; the count and each msg_len come back.
    let (four, five) = (*b"four", *b"fifth");
    let (mut iov4, mut iov5) = ([iovec(&four)], [iovec(&five)]);
    let (h4, _sa4) = msghdr(far, &mut iov4);
    let (h5, _sa5) = msghdr(stub, &mut iov5);
    let mut vec = [libc::mmsghdr { msg_hdr: h4, msg_len: 0 }, libc::mmsghdr { msg_hdr: h5, msg_len: 0 }];
    let fd = s.as_raw_fd() as u64;
    check("sendmmsg", sys(libc::SYS_sendmmsg, [fd, vec.as_mut_ptr() as u64, 2, 0, 0]), Ok(2))?;
    check("sendmmsg msg_len", (vec[0].msg_len, vec[1].msg_len), (4, 5))?;
    check("sendmmsg reply 1", reply(&s)?.0, b"re:four".to_vec())?;
    check("sendmmsg reply 2", reply(&s)?.0, b"re:fifth".to_vec())?;

    // Large datagrams within the bound go through; above it, EMSGSIZE and nothing is sent.
    let big = vec![0x5a_u8; 60_000];
    check("60000 bytes", errno(sendto(&s, &big, none, &far)), Ok(60_000))?;
    check("60000 bytes reply", reply(&s)?.0, b"re:60000".to_vec())?;
    let huge = vec![0xa5_u8; 65_536];
    check("65536 bytes", errno(sendto(&s, &huge, none, &far)), Err(libc::EMSGSIZE))?;
    let halves = [IoSlice::new(&huge[..40_000]), IoSlice::new(&huge[40_000..])];
    let r = sendmsg_addr(&s, &far, &halves, &mut Default::default(), none);
    check("65536 bytes in two iovecs", errno(r), Err(libc::EMSGSIZE))?;

    // Control messages and MSG_MORE are refused, not half-done.
    let mut iov = [iovec(b"ctl")];
    let (mut h, _sa) = msghdr(far, &mut iov);
    let mut cbuf = [0u64; 4];
    // SAFETY: CMSG_SPACE is a pure computation.
    h.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as usize;
    h.msg_control = cbuf.as_mut_ptr().cast();
    // SAFETY: the control buffer holds CMSG_SPACE(4) bytes, so the first header fits.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&h);
        (*c).cmsg_level = libc::IPPROTO_IP;
        (*c).cmsg_type = libc::IP_TTL;
        (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), 9);
    }
    check(
        "control message",
        sys(libc::SYS_sendmsg, [fd, &h as *const _ as u64, 0, 0, 0]),
        Err(libc::EOPNOTSUPP),
    )?;
    let more = SendFlags::MORE;
    check("MSG_MORE", errno(sendto(&s, b"more", more, &far)), Err(libc::EOPNOTSUPP))?;

    // A dual-stack IPv6 socket asking for a v4-mapped resolver reaches the v4 resolver.
    let s6 = udp(AddressFamily::INET6)?;
    let mapped: SocketAddr = "[::ffff:203.0.113.53]:53".parse().unwrap();
    check("v6 sendto", errno(sendto(&s6, b"six", none, &mapped)), Ok(3))?;
    let from: SocketAddr = "[::ffff:127.0.0.1]:53".parse().unwrap();
    check("v6 reply", reply(&s6)?, (b"re:six".to_vec(), from))?;
    // ... but not from a V6ONLY socket.
    let only = udp(AddressFamily::INET6)?;
    rustix::net::sockopt::set_ipv6_v6only(&only, true).map_err(|_| child_fail(73, "v6only"))?;
    check("v6only", errno(sendto(&only, b"x", none, &mapped)), Err(libc::ENETUNREACH))?;

    // Loopback that is not redirected is sent by the kernel as written.
    check("stop", errno(sendto(&s, b"stop", none, &resolver)), Ok(4))
}

fn unconnected_datagrams_land_on_the_redirect_target(backend: Backend) {
    let server = UdpSocket::bind(RESOLVER).expect("bind 127.0.0.1:53 in the fresh netns");
    server.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let heard = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let log = heard.clone();
    let resolver = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = server.recv_from(&mut buf) {
            let payload = buf[..n].to_vec();
            let stop = payload == b"stop";
            server.send_to(&answer(&payload), from).unwrap();
            log.lock().unwrap().push(payload);
            if stop {
                break;
            }
        }
    });
    let table = table();
    let body = || match datagram_sends() {
        Ok(()) => 0,
        Err(code) => code,
    };
    let (exit, sup) = supervised(backend, &backend.program(), DnsDecider, table.clone(), body);
    assert_eq!(exit, TraceeExit::Code(0));
    assert_eq!(sup, Exit::TraceesGone);
    resolver.join().unwrap();

    let heard = heard.lock().unwrap();
    let want: Vec<Vec<u8>> = [&b"one"[..], b"two-parts", b"three", b"four", b"fifth"]
        .iter()
        .map(|p| p.to_vec())
        .chain([vec![0x5a; 60_000], b"six".to_vec(), b"stop".to_vec()])
        .collect();
    assert_eq!(heard.len(), want.len(), "every datagram once, nothing refused sent");
    assert!(heard.iter().zip(&want).all(|(a, b)| a == b), "exact payloads, in order");
    assert!(table.is_empty(), "emulated datagrams record nothing");
}

common::per_backend!(unconnected_datagrams_land_on_the_redirect_target);
