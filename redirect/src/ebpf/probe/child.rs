//! The probe child's side: raw system calls only, on a [`Plan`] built before the fork.

#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::time::Duration;

use super::{ProbeData, ProbeOp, RawReport};
use crate::sockaddr::encode_sockaddr;

const STAGE_NONE: u32 = 0;
const STAGE_CGROUP: u32 = 1;
const STAGE_SOCKET: u32 = 2;
const STAGE_BIND_DEVICE: u32 = 3;
const STAGE_CONNECT: u32 = 4;
const STAGE_SEND: u32 = 5;
const STAGE_RECV: u32 = 6;
const STAGE_BIND: u32 = 7;
const STAGE_ACCEPT: u32 = 8;

/// The name of a failing step, for reports and errors.
pub(super) fn stage_name(stage: u32) -> &'static str {
    match stage {
        STAGE_CGROUP => "join cgroup",
        STAGE_SOCKET => "socket",
        STAGE_BIND_DEVICE => "SO_BINDTODEVICE lo",
        STAGE_CONNECT => "connect",
        STAGE_SEND => "send",
        STAGE_RECV => "receive",
        STAGE_BIND => "bind",
        STAGE_ACCEPT => "accept",
        _ => "none",
    }
}

/// Everything the child needs, as plain data.
pub(super) struct Plan {
    op: ProbeOp,
    family: i32,
    dst: libc::sockaddr_in6,
    dst_len: libc::socklen_t,
    timeout_ms: i32,
}

impl Plan {
    pub(super) fn new(op: ProbeOp, timeout: Duration) -> io::Result<Self> {
        let dst = match op {
            ProbeOp::TcpConnect { dst, .. }
            | ProbeOp::TcpConnectLoop { dst, .. }
            | ProbeOp::UdpExchange { dst, .. }
            | ProbeOp::RawSend { dst }
            | ProbeOp::Serve { bind: dst, .. }
            | ProbeOp::ListenConnect { bind: dst, .. } => dst,
        };
        let bytes = encode_sockaddr(dst);
        // SAFETY: sockaddr_in6 is plain data; all-zero is valid.
        let mut sa: libc::sockaddr_in6 = unsafe { zeroed() };
        // SAFETY: `bytes` is at most size_of::<sockaddr_in6>() long (16 or 28 bytes).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                (&mut sa as *mut libc::sockaddr_in6).cast::<u8>(),
                bytes.len(),
            )
        };
        let family = if matches!(dst, SocketAddr::V4(_)) { libc::AF_INET } else { libc::AF_INET6 };
        Ok(Self {
            op,
            family,
            dst: sa,
            dst_len: bytes.len() as libc::socklen_t,
            timeout_ms: i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX),
        })
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// The child's body: join the cgroup, run the op, write the report to `out`, `_exit`.
///
/// # Safety
/// Only to be called in a freshly forked child; never returns.
pub(super) unsafe fn run(procs: &CStr, plan: &Plan, out: i32) -> ! {
    // SAFETY: RawReport is plain data; all-zero is a valid value.
    let mut r: RawReport = unsafe { zeroed() };
    // SAFETY: raw system calls on buffers that live for each call.
    unsafe {
        if join_cgroup(procs) {
            run_op(plan, &mut r);
        } else {
            r.errno = errno();
            r.stage = STAGE_CGROUP;
        }
        libc::write(out, (&r as *const RawReport).cast(), size_of::<RawReport>());
        libc::_exit(0)
    }
}

/// Writing "0" to `cgroup.procs` moves the writing process.
pub(super) unsafe fn join_cgroup(procs: &CStr) -> bool {
    // SAFETY: `procs` is a valid C string; the fd is closed before returning.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
        libc::close(fd);
        ok
    }
}

unsafe fn run_op(plan: &Plan, r: &mut RawReport) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match plan.op {
            ProbeOp::TcpConnect { loopback_only, payload, want_reply, .. } => {
                tcp_connect(plan, loopback_only, &payload, want_reply, r)
            }
            ProbeOp::TcpConnectLoop { count, .. } => {
                for _ in 0..count {
                    let fd = libc::socket(plan.family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                    if fd < 0 {
                        r.other += 1;
                        continue;
                    }
                    if connect_within(fd, plan) == 0 {
                        r.ok += 1;
                    } else if errno() == libc::EPERM {
                        r.eperm += 1;
                    } else {
                        r.other += 1;
                    }
                    libc::close(fd);
                }
            }
            ProbeOp::UdpExchange { connected, payload, .. } => udp_exchange(plan, connected, &payload, r),
            ProbeOp::RawSend { .. } => raw_send(plan, r),
            ProbeOp::Serve { payload, .. } => serve(plan, &payload, r),
            ProbeOp::ListenConnect { reuseport, accept, .. } => listen_connect(plan, reuseport, accept, r),
        }
    }
}

/// Non-blocking connect to the plan's destination bounded by its timeout; 0 or -1 with errno set.
unsafe fn connect_within(fd: i32, plan: &Plan) -> i32 {
    // SAFETY: forwarded from the caller; `plan.dst` lives for the call.
    unsafe { connect_to_within(fd, &plan.dst, plan.dst_len, plan.timeout_ms) }
}

/// Non-blocking connect to `dst` bounded by `timeout_ms`; 0 or -1 with errno set.
unsafe fn connect_to_within(
    fd: i32,
    dst: &libc::sockaddr_in6,
    dst_len: libc::socklen_t,
    timeout_ms: i32,
) -> i32 {
    // SAFETY: fd is a socket we own; `dst` lives for the call.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        let rc = libc::connect(fd, (dst as *const libc::sockaddr_in6).cast(), dst_len);
        if rc != 0 && errno() != libc::EINPROGRESS {
            return -1;
        }
        if rc != 0 {
            let mut pfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
            if libc::poll(&mut pfd, 1, timeout_ms) != 1 {
                *libc::__errno_location() = libc::ETIMEDOUT;
                return -1;
            }
            let mut err = 0i32;
            let mut len = size_of::<i32>() as libc::socklen_t;
            libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, (&mut err as *mut i32).cast(), &mut len);
            if err != 0 {
                *libc::__errno_location() = err;
                return -1;
            }
        }
        libc::fcntl(fd, libc::F_SETFL, flags);
        0
    }
}

unsafe fn set_timeouts(fd: i32, ms: i32) {
    let tv = libc::timeval {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_usec: ((ms % 1000) * 1000) as libc::suseconds_t,
    };
    // SAFETY: `tv` lives for the calls.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as u32,
        );
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as u32,
        );
    }
}

unsafe fn names(fd: i32, r: &mut RawReport) {
    let mut len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    // SAFETY: the report's sockaddr buffers are large enough for either family.
    unsafe {
        libc::getsockname(fd, (&mut r.local as *mut libc::sockaddr_in6).cast(), &mut len);
        len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        libc::getpeername(fd, (&mut r.peer as *mut libc::sockaddr_in6).cast(), &mut len);
    }
}

unsafe fn fail(r: &mut RawReport, stage: u32) {
    r.errno = errno();
    r.stage = stage;
}

unsafe fn tcp_connect(
    plan: &Plan,
    loopback_only: bool,
    payload: &ProbeData,
    want_reply: bool,
    r: &mut RawReport,
) {
    // SAFETY: raw calls on a socket we own and buffers that outlive each call.
    unsafe {
        let fd = libc::socket(plan.family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return fail(r, STAGE_SOCKET);
        }
        if loopback_only
            && libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_BINDTODEVICE, c"lo".as_ptr().cast(), 3) != 0
        {
            return fail(r, STAGE_BIND_DEVICE);
        }
        if connect_within(fd, plan) != 0 {
            return fail(r, STAGE_CONNECT);
        }
        names(fd, r);
        set_timeouts(fd, plan.timeout_ms);
        let data = payload.as_bytes();
        if !data.is_empty()
            && libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) != data.len() as isize
        {
            return fail(r, STAGE_SEND);
        }
        if want_reply {
            let n = libc::recv(fd, r.reply.as_mut_ptr().cast(), r.reply.len(), 0);
            if n < 0 {
                return fail(r, STAGE_RECV);
            }
            r.reply_len = n as u32;
        }
        libc::close(fd);
        r.stage = STAGE_NONE;
    }
}

unsafe fn udp_exchange(plan: &Plan, connected: bool, payload: &ProbeData, r: &mut RawReport) {
    // SAFETY: raw calls on a socket we own and buffers that outlive each call.
    unsafe {
        let fd = libc::socket(plan.family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return fail(r, STAGE_SOCKET);
        }
        set_timeouts(fd, plan.timeout_ms);
        let data = payload.as_bytes();
        let sent = if connected {
            if libc::connect(fd, (&plan.dst as *const libc::sockaddr_in6).cast(), plan.dst_len) != 0 {
                return fail(r, STAGE_CONNECT);
            }
            names(fd, r);
            libc::send(fd, data.as_ptr().cast(), data.len(), 0)
        } else {
            let dst = (&plan.dst as *const libc::sockaddr_in6).cast();
            libc::sendto(fd, data.as_ptr().cast(), data.len(), 0, dst, plan.dst_len)
        };
        if sent != data.len() as isize {
            return fail(r, STAGE_SEND);
        }
        let mut len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        let from = (&mut r.reply_from as *mut libc::sockaddr_in6).cast();
        let n = libc::recvfrom(fd, r.reply.as_mut_ptr().cast(), r.reply.len(), 0, from, &mut len);
        if n < 0 {
            return fail(r, STAGE_RECV);
        }
        r.reply_len = n as u32;
        if !connected {
            names(fd, r);
        }
        libc::close(fd);
    }
}

unsafe fn raw_send(plan: &Plan, r: &mut RawReport) {
    // SAFETY: raw calls on a socket we own and buffers that outlive each call.
    unsafe {
        let fd = libc::socket(plan.family, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_UDP);
        if fd < 0 {
            return fail(r, STAGE_SOCKET);
        }
        if libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_BINDTODEVICE, c"lo".as_ptr().cast(), 3) != 0 {
            return fail(r, STAGE_BIND_DEVICE);
        }
        let udp_header = [0u8; 8];
        let dst = (&plan.dst as *const libc::sockaddr_in6).cast();
        if libc::sendto(fd, udp_header.as_ptr().cast(), udp_header.len(), 0, dst, plan.dst_len) < 0 {
            return fail(r, STAGE_SEND);
        }
        libc::close(fd);
    }
}

unsafe fn serve(plan: &Plan, payload: &ProbeData, r: &mut RawReport) {
    // SAFETY: raw calls on sockets we own and buffers that outlive each call.
    unsafe {
        let fd = libc::socket(plan.family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return fail(r, STAGE_SOCKET);
        }
        let one = 1i32;
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, (&one as *const i32).cast(), 4);
        if libc::bind(fd, (&plan.dst as *const libc::sockaddr_in6).cast(), plan.dst_len) != 0
            || libc::listen(fd, 8) != 0
        {
            return fail(r, STAGE_BIND);
        }
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        if libc::poll(&mut pfd, 1, plan.timeout_ms) != 1 {
            *libc::__errno_location() = libc::ETIMEDOUT;
            return fail(r, STAGE_ACCEPT);
        }
        let c = libc::accept4(fd, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC);
        if c < 0 {
            return fail(r, STAGE_ACCEPT);
        }
        names(c, r);
        set_timeouts(c, plan.timeout_ms);
        let data = payload.as_bytes();
        if libc::send(c, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) != data.len() as isize {
            return fail(r, STAGE_SEND);
        }
        libc::close(c);
        libc::close(fd);
    }
}

unsafe fn listen_connect(plan: &Plan, reuseport: bool, accept: bool, r: &mut RawReport) {
    // SAFETY: raw calls on sockets we own and buffers that outlive each call.
    unsafe {
        let l = libc::socket(plan.family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if l < 0 {
            return fail(r, STAGE_SOCKET);
        }
        let one = 1i32;
        if reuseport
            && libc::setsockopt(l, libc::SOL_SOCKET, libc::SO_REUSEPORT, (&one as *const i32).cast(), 4) != 0
        {
            return fail(r, STAGE_BIND);
        }
        if libc::bind(l, (&plan.dst as *const libc::sockaddr_in6).cast(), plan.dst_len) != 0
            || libc::listen(l, 8) != 0
        {
            return fail(r, STAGE_BIND);
        }
        // SAFETY: sockaddr_in6 is plain data; all-zero is valid.
        let mut at: libc::sockaddr_in6 = zeroed();
        let mut at_len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        if libc::getsockname(l, (&mut at as *mut libc::sockaddr_in6).cast(), &mut at_len) != 0 {
            return fail(r, STAGE_BIND);
        }
        let c = libc::socket(plan.family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if c < 0 {
            return fail(r, STAGE_SOCKET);
        }
        if connect_to_within(c, &at, at_len, plan.timeout_ms) != 0 {
            return fail(r, STAGE_CONNECT);
        }
        names(c, r);
        if accept {
            let mut pfd = libc::pollfd { fd: l, events: libc::POLLIN, revents: 0 };
            if libc::poll(&mut pfd, 1, plan.timeout_ms) != 1 {
                *libc::__errno_location() = libc::ETIMEDOUT;
                return fail(r, STAGE_ACCEPT);
            }
            let mut len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            let from = (&mut r.accepted as *mut libc::sockaddr_in6).cast();
            let a = libc::accept4(l, from, &mut len, libc::SOCK_CLOEXEC);
            if a < 0 {
                return fail(r, STAGE_ACCEPT);
            }
            libc::close(a);
        }
        libc::close(c);
        libc::close(l);
    }
}
