//! One handler per trapped call. Each reads what it needs from the tracee once, asks the decider,
//! acts on the agent's own socket, and returns the [`Reply`]; errors fail closed (an errno, never
//! CONTINUE) and nothing here waits for the tracee.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use super::unix::Refused;
use super::{Call, Pending, Reply, sock, tracee, unix};
use crate::decide::{Action, CallKind, ConnectDecider, SockInfo, sane_errno};
use crate::original_dst::{OriginalDst, OriginalDstTable, ServedTable, Transport};
use crate::sockaddr::{
    ParsedAddr, SOCKADDR_MAX, UnixAddr, canonical, encode_sockaddr, for_family, parse_sockaddr,
};

/// `sizeof(struct msghdr)` and `sizeof(struct mmsghdr)` on 64-bit Linux.
const MSGHDR_LEN: usize = 56;
const MMSGHDR_LEN: usize = 64;
/// The kernel caps `sendmmsg`'s vlen, and `msg_iovlen`, at `UIO_MAXIOV`.
const UIO_MAXIOV: usize = 1024;
/// `sizeof(struct iovec)` on 64-bit Linux.
const IOVEC_LEN: usize = 16;
/// The largest datagram the supervisor sends for the agent. No UDP payload exceeds 65,535
/// bytes (less headers), so a larger one fails with EMSGSIZE exactly as the kernel would.
const DATAGRAM_MAX: usize = 65_535;
/// Payload bytes one emulated `sendmmsg` reads at most; messages past it are left for the
/// agent's retry (`sendmmsg` may send fewer messages than asked).
const BATCH_MAX: usize = 1 << 20;

/// Everything a handler needs for one call: the transport's word on whether the call is still
/// pending, and the state shared by every call of the sandbox.
pub(crate) struct Ctx<'a> {
    pub pending: &'a dyn Pending,
    pub decider: &'a Arc<dyn ConnectDecider>,
    pub table: &'a OriginalDstTable,
    pub served: &'a ServedTable,
}

/// Maps an IO error to the reply the tracee gets: ESRCH means it is gone.
fn fail(e: io::Error) -> Reply {
    match e.raw_os_error() {
        Some(libc::ESRCH) => Reply::Drop,
        Some(n) => Reply::Error(n),
        None => Reply::Error(libc::EIO),
    }
}

impl Ctx<'_> {
    /// CONTINUE only while the call is still ours to answer.
    fn continue_if_valid(&self) -> Reply {
        if self.pending.still_pending() { Reply::Continue } else { Reply::Drop }
    }

    /// Reads `len` bytes of sockaddr at `ptr` (bounded) and parses it.
    fn read_sockaddr(&self, n: &Call, ptr: u64, len: u32) -> Result<ParsedAddr, Reply> {
        let len = len as usize;
        if !(2..=SOCKADDR_MAX).contains(&len) {
            return Err(Reply::Error(libc::EINVAL));
        }
        let mut buf = [0u8; SOCKADDR_MAX];
        tracee::read_mem(n.pid, ptr, &mut buf[..len]).map_err(fail)?;
        parse_sockaddr(&buf[..len]).map_err(|e| Reply::Error(e.errno()))
    }

    /// Takes the tracee's `fd`, then checks the call is still pending, so the pidfd (and
    /// therefore the fd) provably belongs to the thread that made the call.
    fn take_socket(&self, n: &Call, fd: u64) -> Result<(OwnedFd, SockInfo), Reply> {
        let pidfd = tracee::open_pidfd(n.pid).map_err(fail)?;
        let dup = tracee::take_fd(&pidfd, fd).map_err(fail)?;
        if !self.pending.still_pending() {
            return Err(Reply::Drop);
        }
        let info = sock::sock_info(dup.as_fd()).map_err(fail)?;
        Ok((dup, info))
    }

    /// `connect(fd, addr, addrlen)`.
    pub(crate) fn on_connect(&self, n: &Call) -> Reply {
        let parsed = match self.read_sockaddr(n, n.args[1], n.args[2] as u32) {
            Ok(p) => p,
            Err(r) => return r,
        };
        let (dup, info) = match self.take_socket(n, n.args[0]) {
            Ok(t) => t,
            Err(r) => return r,
        };
        if info.family == libc::AF_UNIX {
            return self.connect_unix_socket(n, dup.as_fd(), info, &parsed);
        }
        let requested = match parsed {
            ParsedAddr::Inet(a) => a,
            // The kernel rejects these on an IP socket by itself, whatever the bytes become.
            ParsedAddr::Unix(_) | ParsedAddr::Other { .. } => return self.continue_if_valid(),
        };
        if info.family != libc::AF_INET && info.family != libc::AF_INET6 {
            // The kernel rejects an IP address on a non-IP socket by itself.
            return self.continue_if_valid();
        }
        let dst = canonical(requested);
        match self.decider.decide_call(CallKind::Connect, dst, info, n.pid) {
            Action::Continue => self.continue_if_valid(),
            Action::Deny(e) => {
                tracing::info!(peer.pid = n.pid, dst = %dst, errno = e, "connect denied");
                Reply::Error(sane_errno(e))
            }
            Action::Redirect(gw) => self.redirect(n, dup.as_fd(), info, requested, gw),
            // Meaningless for an IP destination: fail closed.
            Action::ConnectUnixPinned => Reply::Error(libc::EACCES),
        }
    }

    /// `connect` on an AF_UNIX socket. Nothing but an unnamed address (whose length, a
    /// register, leaves no name to swap in) or a decider's explicit `Continue` reaches the
    /// kernel as the agent wrote it: the kernel would re-read the bytes, and a sibling thread
    /// could have turned them into another path by then.
    fn connect_unix_socket(
        &self,
        n: &Call,
        fd: BorrowedFd<'_>,
        info: SockInfo,
        parsed: &ParsedAddr,
    ) -> Reply {
        let addr = match parsed {
            ParsedAddr::Unix(UnixAddr::Unnamed) => return self.continue_if_valid(),
            ParsedAddr::Unix(addr) => addr,
            // AF_UNSPEC dissolves a datagram socket's association; done here, not re-read.
            ParsedAddr::Other { family } if *family == libc::AF_UNSPEC as u16 => {
                return connect_reply(rustix::net::connect_unspec(fd).map_err(io::Error::from));
            }
            // What the kernel answers for any other family on an AF_UNIX socket.
            ParsedAddr::Inet(_) | ParsedAddr::Other { .. } => return Reply::Error(libc::EINVAL),
        };
        match self.decider.decide_unix(addr, info, n.pid) {
            Action::Continue => self.continue_if_valid(),
            Action::Deny(e) => Reply::Error(sane_errno(e)),
            Action::Redirect(_) => Reply::Error(libc::EACCES),
            Action::ConnectUnixPinned => match addr {
                UnixAddr::Pathname(path) => match self.pin_unix(n, addr, path) {
                    Ok(target) => connect_reply(self.connect_pinned_or_fallback(fd, &target)),
                    Err(r) => r,
                },
                UnixAddr::Abstract(name) => connect_reply(unix::connect_abstract(fd, name)),
                UnixAddr::Unnamed => self.continue_if_valid(),
            },
        }
    }

    /// Connects `fd` to the pinned socket `target`; when that refuses the connection, to the
    /// decider's [`ConnectDecider::fallback_socket`] for it, if any.
    fn connect_pinned_or_fallback(&self, fd: BorrowedFd<'_>, target: &OwnedFd) -> io::Result<()> {
        let first = unix::connect_pinned(fd, target);
        if !matches!(&first, Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED)) {
            return first;
        }
        let Ok(st) = rustix::fs::fstat(target) else { return first };
        match self.decider.fallback_socket(st.st_dev, st.st_ino) {
            Some(other) => unix::connect_pinned(fd, &other),
            None => first,
        }
    }

    /// Resolves an allowed pathname from the tracee's root or cwd to an `O_PATH` handle on the
    /// socket it names. Refusals by design are logged and told to the decider.
    fn pin_unix(&self, n: &Call, addr: &UnixAddr, path: &[u8]) -> Result<OwnedFd, Reply> {
        let start = unix::open_start(n.pid, path.first() != Some(&b'/')).map_err(fail)?;
        // The handles came from /proc/<pid>: they are this tracee's only while it still waits.
        if !self.pending.still_pending() {
            return Err(Reply::Drop);
        }
        match unix::resolve(&start, path) {
            Ok(target) => Ok(target),
            Err(Refused::Policy(why)) => {
                let shown = String::from_utf8_lossy(path);
                tracing::info!(peer.pid = n.pid, path = %shown, refusal = ?why, "unix socket refused");
                self.decider.unix_refused(addr, why, n.pid);
                Err(Reply::Error(why.errno()))
            }
            Err(Refused::Errno(libc::ESRCH)) => Err(Reply::Drop),
            Err(Refused::Errno(e)) => Err(Reply::Error(sane_errno(e))),
        }
    }

    /// Binds (if needed), registers, then connects the agent's socket to the gateway.
    fn redirect(
        &self,
        n: &Call,
        fd: BorrowedFd<'_>,
        info: SockInfo,
        requested: SocketAddr,
        gw: SocketAddr,
    ) -> Reply {
        let transport = if info.is_stream() {
            Transport::Tcp
        } else if info.is_datagram() {
            Transport::Udp
        } else {
            return Reply::Error(libc::ENETUNREACH);
        };
        let target = match self.target_for(fd, info, gw) {
            Ok(t) => t,
            Err(r) => return r,
        };
        if transport == Transport::Tcp {
            match sock::tcp_is_fresh(fd) {
                // Already connected or connecting: let the kernel say so (EISCONN/EALREADY)
                // without touching the table.
                Ok(false) => return connect_reply(sock::connect(fd, target)),
                Ok(true) => {}
                Err(e) => return fail(e),
            }
        }
        let local = match sock::ensure_bound(fd, target) {
            Ok(l) => l,
            Err(e) => return fail(e),
        };
        let dst = canonical(requested);
        let entry =
            OriginalDst { dst, requested, gateway: gw, pid: n.pid, transport, registered_at: Instant::now() };
        if let Err(e) = self.table.insert(local, entry) {
            tracing::warn!(peer.pid = n.pid, error = %e, "cannot register original destination");
            return Reply::Error(libc::EAGAIN);
        }
        self.served.insert(local, entry);
        let result = sock::connect(fd, target);
        if result.as_ref().is_err_and(|e| e.raw_os_error() != Some(libc::EINPROGRESS)) {
            self.table.take(local);
            self.served.remove(local);
        }
        tracing::debug!(peer.pid = n.pid, dst = %dst, local = %local, gateway = %gw, "connect redirected");
        connect_reply(result)
    }

    /// `sendto(fd, buf, len, flags, addr, addrlen)`, `sendmsg(fd, msg, flags)` and
    /// `sendmmsg(fd, vec, vlen, flags)`: every explicit destination is decided. Nothing
    /// redirected: the kernel sends (CONTINUE). A datagram socket sending to a redirected
    /// destination: the supervisor sends instead ([`emulate_send`](Self::emulate_send)).
    pub(crate) fn on_send(&self, n: &Call) -> Reply {
        let (flags, msgs) = match self.send_messages(n) {
            Ok(v) => v,
            Err(r) => return r,
        };
        if msgs.iter().all(|m| m.name.is_none()) {
            return self.continue_if_valid();
        }
        let mut parsed = Vec::with_capacity(msgs.len());
        for m in &msgs {
            match m.name.map(|(ptr, len)| self.read_sockaddr(n, ptr, len)).transpose() {
                Ok(p) => parsed.push(p),
                Err(r) => return r,
            }
        }
        let (dup, info) = match self.take_socket(n, n.args[0]) {
            Ok(t) => t,
            Err(r) => return r,
        };
        // Every destination is decided before anything is sent: one denial fails the call.
        let mut routes = Vec::with_capacity(parsed.len());
        for p in &parsed {
            match p.as_ref().map(|p| self.decide_send(n, flags, info, p)).transpose() {
                Ok(route) => routes.push(route.flatten()),
                Err(r) => return r,
            }
        }
        if routes.iter().all(Option::is_none) {
            return self.continue_if_valid();
        }
        // Where each message goes: the redirect target, the address as read, or (no name) the
        // socket's peer. Only IP datagram sockets get here (see decide_send).
        let mut dests = Vec::with_capacity(parsed.len());
        for (p, route) in parsed.iter().zip(&routes) {
            let dest = match (p, route) {
                (_, Some(gw)) => match self.target_for(dup.as_fd(), info, *gw) {
                    Ok(t) => Some(t),
                    Err(r) => return r,
                },
                (Some(ParsedAddr::Inet(a)), None) => Some(*a),
                (None, None) => None,
                // A non-IP name beside a redirected one (sendmmsg): not emulated.
                (Some(_), None) => return Reply::Error(libc::EOPNOTSUPP),
            };
            dests.push(dest);
        }
        self.emulate_send(n, dup.as_fd(), flags, &msgs, &dests)
    }

    /// One destination of a send: `Ok(None)` lets it through as written, `Ok(Some(gw))`
    /// redirects it (IP datagram sockets only), `Err` is the denial's reply.
    fn decide_send(
        &self,
        n: &Call,
        flags: u32,
        info: SockInfo,
        p: &ParsedAddr,
    ) -> Result<Option<SocketAddr>, Reply> {
        let action = match p {
            ParsedAddr::Other { .. } => Action::Continue,
            ParsedAddr::Unix(addr) => match self.decider.decide_unix(addr, info, n.pid) {
                Action::Redirect(_) => Action::Deny(libc::EACCES),
                Action::ConnectUnixPinned => match addr {
                    // Only a datagram socket sends to the name. The checks run, but the
                    // kernel re-reads the path when it sends (documented on the action).
                    UnixAddr::Pathname(path) if info.is_datagram() => {
                        self.pin_unix(n, addr, path)?;
                        Action::Continue
                    }
                    _ => Action::Continue,
                },
                a => a,
            },
            ParsedAddr::Inet(_) if info.is_stream() && flags & libc::MSG_FASTOPEN as u32 != 0 => {
                Action::Deny(libc::EOPNOTSUPP)
            }
            // A stream socket ignores the address unless MSG_FASTOPEN (a register, so it
            // cannot change under us) asks to connect.
            ParsedAddr::Inet(_) if info.is_stream() => Action::Continue,
            ParsedAddr::Inet(_) if info.family != libc::AF_INET && info.family != libc::AF_INET6 => {
                Action::Continue
            }
            ParsedAddr::Inet(a) => {
                let dst = canonical(*a);
                match self.decider.decide_call(CallKind::Send, dst, info, n.pid) {
                    Action::Redirect(gw) if info.is_datagram() => {
                        tracing::debug!(peer.pid = n.pid, dst = %dst, gateway = %gw, "datagram redirected");
                        return Ok(Some(gw));
                    }
                    // Raw and other non-UDP datagrams are not re-sent by the supervisor.
                    Action::Redirect(_) => Action::Deny(libc::ENETUNREACH),
                    Action::ConnectUnixPinned => Action::Deny(libc::EACCES),
                    a => a,
                }
            }
        };
        match action {
            Action::Deny(e) => {
                tracing::info!(peer.pid = n.pid, errno = e, "send denied");
                Err(Reply::Error(sane_errno(e)))
            }
            _ => Ok(None),
        }
    }

    /// The gateway address as the socket's family spells it; ENETUNREACH when the socket
    /// cannot reach it (an IPv6 gateway for an AF_INET socket, IPv4 on a V6ONLY socket).
    fn target_for(&self, fd: BorrowedFd<'_>, info: SockInfo, gw: SocketAddr) -> Result<SocketAddr, Reply> {
        let Some(target) = for_family(gw, info.family) else { return Err(Reply::Error(libc::ENETUNREACH)) };
        if info.family == libc::AF_INET6 && target.ip().to_canonical().is_ipv4() {
            match sock::v6only(fd) {
                Ok(false) => {}
                Ok(true) => return Err(Reply::Error(libc::ENETUNREACH)),
                Err(e) => return Err(fail(e)),
            }
        }
        Ok(target)
    }

    /// Sends the agent's datagrams from the supervisor, on its own socket (the duplicate shares
    /// the open file description), to `dests`, so the kernel never re-reads the agent's memory.
    ///
    /// Each payload is read once (bounded by [`DATAGRAM_MAX`]), the call is checked
    /// still pending (so the bytes came from the caller), then `sendto` runs with the agent's
    /// flags plus `MSG_DONTWAIT` (the supervisor never blocks; see [`datagram_flags`]), and the
    /// reply is the byte count, or for `sendmmsg` the number of messages sent, each `msg_len`
    /// written back. Nothing goes into the OriginalDst table: no connection follows a datagram,
    /// and the resolver answers on the question alone.
    fn emulate_send(
        &self,
        n: &Call,
        fd: BorrowedFd<'_>,
        flags: u32,
        msgs: &[SendMsg],
        dests: &[Option<SocketAddr>],
    ) -> Reply {
        let send_flags = match datagram_flags(flags) {
            Ok(f) => f,
            Err(e) => return Reply::Error(e),
        };
        let batch = n.nr as libc::c_long == libc::SYS_sendmmsg;
        let mut payloads: Vec<Vec<u8>> = Vec::with_capacity(msgs.len());
        let mut total = 0;
        for m in msgs {
            match read_payload(n.pid, m, BATCH_MAX - total) {
                Ok(p) => {
                    total += p.len();
                    payloads.push(p);
                }
                Err(Reply::Drop) => return Reply::Drop,
                Err(r) if payloads.is_empty() => return r,
                // sendmmsg stops at its first failing message and reports those before it;
                // the agent's retry then meets the error.
                Err(_) => break,
            }
        }
        let mem = match batch.then(|| tracee::open_mem_for_write(n.pid)).transpose() {
            Ok(m) => m,
            Err(e) => return fail(e),
        };
        // The reads above used a pid: only a still-pending call proves it was the caller.
        if !self.pending.still_pending() {
            return Reply::Drop;
        }
        let nonblocking = flags & libc::MSG_DONTWAIT as u32 != 0
            || rustix::fs::fcntl_getfl(fd).is_ok_and(|f| f.contains(rustix::fs::OFlags::NONBLOCK));
        let Some(mem) = mem else {
            return match send_one(fd, &payloads[0], send_flags, dests[0]) {
                Ok(len) => Reply::Value(len as i64),
                Err(e) => send_error(e, nonblocking),
            };
        };
        let mut sent = 0usize;
        for (i, payload) in payloads.iter().enumerate() {
            let result = send_one(fd, payload, send_flags, dests[i]);
            let len = match result {
                Ok(len) => len,
                Err(e) if sent == 0 => return send_error(e, nonblocking),
                Err(_) => break,
            };
            let at = n.args[1] + (i * MMSGHDR_LEN + MSGHDR_LEN) as u64;
            if let Err(e) = tracee::write_mem(&mem, at, &(len as u32).to_ne_bytes()) {
                if sent == 0 {
                    return fail(e);
                }
                break;
            }
            sent += 1;
        }
        Reply::Value(sent as i64)
    }

    /// The flags and every message: its optional `(msg_name, msg_namelen)`, where its bytes
    /// are, and its `msg_controllen`. Headers are read once.
    fn send_messages(&self, n: &Call) -> Result<(u32, Vec<SendMsg>), Reply> {
        let a = n.args;
        match n.nr as libc::c_long {
            libc::SYS_sendto => {
                let name = (a[4] != 0).then_some((a[4], a[5] as u32));
                Ok((
                    a[3] as u32,
                    vec![SendMsg { name, data: Data::Buf { ptr: a[1], len: a[2] }, control_len: 0 }],
                ))
            }
            libc::SYS_sendmsg => {
                let mut hdr = [0u8; MSGHDR_LEN];
                tracee::read_mem(n.pid, a[1], &mut hdr).map_err(fail)?;
                Ok((a[2] as u32, vec![SendMsg::from_msghdr(&hdr)]))
            }
            libc::SYS_sendmmsg => {
                let vlen = (a[2] as u32 as usize).min(UIO_MAXIOV);
                let mut vec = vec![0u8; vlen * MMSGHDR_LEN];
                tracee::read_mem(n.pid, a[1], &mut vec).map_err(fail)?;
                Ok((a[3] as u32, vec.chunks_exact(MMSGHDR_LEN).map(SendMsg::from_msghdr).collect()))
            }
            _ => Err(Reply::Error(libc::ENOSYS)),
        }
    }

    /// `getpeername(fd, addr, addrlen)`: redirected sockets report the original destination.
    pub(crate) fn on_getpeername(&self, n: &Call) -> Reply {
        let (dup, info) = match self.take_socket(n, n.args[0]) {
            Ok(t) => t,
            Err(Reply::Error(_)) => return self.continue_if_valid(),
            Err(r) => return r,
        };
        let fd = dup.as_fd();
        let Ok(local) = sock::local_addr(fd) else { return self.continue_if_valid() };
        let Some(entry) = self.served.get(local) else { return self.continue_if_valid() };
        let still_ours = sock::peer_addr(fd).is_some_and(|p| canonical(p) == canonical(entry.gateway));
        let Some(answer) = for_family(entry.requested, info.family).filter(|_| still_ours) else {
            return self.continue_if_valid();
        };
        let bytes = encode_sockaddr(answer);
        let mut len_buf = [0u8; 4];
        if let Err(e) = tracee::read_mem(n.pid, n.args[2], &mut len_buf) {
            return fail(e);
        }
        let room = i32::from_ne_bytes(len_buf);
        if room < 0 {
            return Reply::Error(libc::EINVAL);
        }
        let mem = match tracee::open_mem_for_write(n.pid) {
            Ok(m) => m,
            Err(e) => return fail(e),
        };
        if !self.pending.still_pending() {
            return Reply::Drop;
        }
        let copy = bytes.len().min(room as usize);
        let written = tracee::write_mem(&mem, n.args[1], &bytes[..copy])
            .and_then(|()| tracee::write_mem(&mem, n.args[2], &(bytes.len() as u32).to_ne_bytes()));
        match written {
            Ok(()) => Reply::Value(0),
            Err(e) => fail(e),
        }
    }
}

/// `msg_name`/`msg_namelen` of one `struct msghdr`, when a name is given.
fn msg_name(hdr: &[u8]) -> Option<(u64, u32)> {
    let ptr = u64::from_ne_bytes(hdr[0..8].try_into().ok()?);
    let len = u32::from_ne_bytes(hdr[8..12].try_into().ok()?);
    (ptr != 0 && len != 0).then_some((ptr, len))
}

/// Where one message's bytes are in the tracee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Data {
    /// `sendto`'s flat buffer.
    Buf { ptr: u64, len: u64 },
    /// `msg_iov`/`msg_iovlen`.
    Iov { ptr: u64, count: u64 },
}

/// One message of a trapped send, from the registers or its `struct msghdr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SendMsg {
    name: Option<(u64, u32)>,
    data: Data,
    control_len: u64,
}

impl SendMsg {
    /// Reads the fields of a 64-bit `struct msghdr` (the first 56 bytes of `hdr`).
    fn from_msghdr(hdr: &[u8]) -> SendMsg {
        let word =
            |at: usize| hdr.get(at..at + 8).map_or(0, |b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])));
        SendMsg {
            name: msg_name(hdr),
            data: Data::Iov { ptr: word(16), count: word(24) },
            control_len: word(40),
        }
    }
}

/// Reads one message's payload from the tracee, once: EMSGSIZE above [`DATAGRAM_MAX`] (what
/// the kernel says for an oversized UDP datagram) or above `budget`, EMSGSIZE for more than
/// `UIO_MAXIOV` iovecs, EINVAL for a negative iovec length, EOPNOTSUPP for control messages
/// (`msg_controllen` != 0: ancillary data such as `IP_PKTINFO` or `UDP_SEGMENT` is not carried
/// over to the supervisor's send).
fn read_payload(pid: u32, m: &SendMsg, budget: usize) -> Result<Vec<u8>, Reply> {
    if m.control_len != 0 {
        return Err(Reply::Error(libc::EOPNOTSUPP));
    }
    let limit = DATAGRAM_MAX.min(budget) as u64;
    let segments = match m.data {
        Data::Buf { ptr, len } => vec![(ptr, len)],
        Data::Iov { ptr, count } => {
            if count > UIO_MAXIOV as u64 {
                return Err(Reply::Error(libc::EMSGSIZE));
            }
            let mut raw = vec![0u8; count as usize * IOVEC_LEN];
            tracee::read_mem(pid, ptr, &mut raw).map_err(fail)?;
            raw.chunks_exact(IOVEC_LEN)
                .map(|c| {
                    let (base, len) = c.split_at(8);
                    (
                        u64::from_ne_bytes(base.try_into().unwrap_or([0; 8])),
                        u64::from_ne_bytes(len.try_into().unwrap_or([0; 8])),
                    )
                })
                .collect()
        }
    };
    let mut total = 0u64;
    for &(_, len) in &segments {
        // A negative `ssize_t` iovec length is EINVAL; `sendto`'s length is clamped instead.
        if len > isize::MAX as u64 && matches!(m.data, Data::Iov { .. }) {
            return Err(Reply::Error(libc::EINVAL));
        }
        total = total.saturating_add(len);
    }
    if total > limit {
        return Err(Reply::Error(libc::EMSGSIZE));
    }
    let segments: Vec<(u64, usize)> = segments.into_iter().map(|(p, l)| (p, l as usize)).collect();
    tracee::read_gather(pid, &segments, total as usize).map_err(fail)
}

/// The flags the supervisor's `sendto` uses: the agent's `MSG_DONTWAIT`, `MSG_CONFIRM`,
/// `MSG_DONTROUTE` and `MSG_NOSIGNAL`, plus `MSG_DONTWAIT` and `MSG_NOSIGNAL` always. Any other
/// flag is EOPNOTSUPP: `MSG_MORE` would cork the datagram on the agent's socket for a later
/// send the supervisor does not see, `MSG_OOB` is refused by UDP anyway, and the rest
/// (`MSG_ZEROCOPY`, `MSG_PROBE`, ...) would change what the agent observes.
fn datagram_flags(flags: u32) -> Result<rustix::net::SendFlags, i32> {
    let passed = (libc::MSG_DONTWAIT | libc::MSG_CONFIRM | libc::MSG_DONTROUTE | libc::MSG_NOSIGNAL) as u32;
    if flags & !passed != 0 {
        return Err(libc::EOPNOTSUPP);
    }
    let always = (libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) as u32;
    Ok(rustix::net::SendFlags::from_bits_retain(flags | always))
}

/// One `sendto` (or, for a message without a name, `send` to the socket's peer).
fn send_one(
    fd: BorrowedFd<'_>,
    payload: &[u8],
    flags: rustix::net::SendFlags,
    dest: Option<SocketAddr>,
) -> io::Result<usize> {
    match dest {
        Some(addr) => rustix::net::sendto(fd, payload, flags, &addr),
        None => rustix::net::send(fd, payload, flags),
    }
    .map_err(io::Error::from)
}

/// The reply for a failed emulated send. EAGAIN stands as is when the agent asked not to block
/// (`O_NONBLOCK` or `MSG_DONTWAIT`); a socket the agent left blocking gets ENOBUFS instead (the
/// supervisor does not wait for buffer space), which UDP senders already treat as transient.
fn send_error(e: io::Error, nonblocking: bool) -> Reply {
    match e.raw_os_error() {
        Some(libc::EAGAIN) if !nonblocking => Reply::Error(libc::ENOBUFS),
        Some(n) => Reply::Error(n),
        None => Reply::Error(libc::EIO),
    }
}

fn connect_reply(result: io::Result<()>) -> Reply {
    match result {
        Ok(()) => Reply::Value(0),
        Err(e) => Reply::Error(e.raw_os_error().unwrap_or(libc::ECONNREFUSED)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_name_reads_pointer_and_length() {
        let mut hdr = [0u8; MSGHDR_LEN];
        assert_eq!(msg_name(&hdr), None);
        hdr[0..8].copy_from_slice(&0x7fff_0000_1000u64.to_ne_bytes());
        assert_eq!(msg_name(&hdr), None, "zero length means no name");
        hdr[8..12].copy_from_slice(&16u32.to_ne_bytes());
        assert_eq!(msg_name(&hdr), Some((0x7fff_0000_1000, 16)));
    }

    #[test]
    fn msghdr_fields_are_read() {
        let mut hdr = [0u8; MSGHDR_LEN];
        hdr[0..8].copy_from_slice(&0x1000u64.to_ne_bytes());
        hdr[8..12].copy_from_slice(&16u32.to_ne_bytes());
        hdr[16..24].copy_from_slice(&0x2000u64.to_ne_bytes());
        hdr[24..32].copy_from_slice(&3u64.to_ne_bytes());
        hdr[40..48].copy_from_slice(&24u64.to_ne_bytes());
        let m = SendMsg::from_msghdr(&hdr);
        assert_eq!(m.name, Some((0x1000, 16)));
        assert_eq!(m.data, Data::Iov { ptr: 0x2000, count: 3 });
        assert_eq!(m.control_len, 24);
    }

    #[test]
    fn payloads_are_gathered_and_bounded() {
        let me = std::process::id();
        let (a, b) = (*b"dns ", *b"question");
        let mut iov = Vec::new();
        for (p, l) in [(a.as_ptr() as u64, a.len() as u64), (0, 0), (b.as_ptr() as u64, b.len() as u64)] {
            iov.extend_from_slice(&p.to_ne_bytes());
            iov.extend_from_slice(&l.to_ne_bytes());
        }
        let m =
            SendMsg { name: None, data: Data::Iov { ptr: iov.as_ptr() as u64, count: 3 }, control_len: 0 };
        assert_eq!(read_payload(me, &m, BATCH_MAX).unwrap(), b"dns question");
        assert_eq!(read_payload(me, &m, 5), Err(Reply::Error(libc::EMSGSIZE)), "over the batch budget");
        let ctl = SendMsg { control_len: 24, ..m };
        assert_eq!(read_payload(me, &ctl, BATCH_MAX), Err(Reply::Error(libc::EOPNOTSUPP)));
        let many = SendMsg { data: Data::Iov { ptr: iov.as_ptr() as u64, count: 1025 }, ..m };
        assert_eq!(read_payload(me, &many, BATCH_MAX), Err(Reply::Error(libc::EMSGSIZE)));
        let big = vec![1u8; DATAGRAM_MAX + 1];
        let flat = SendMsg {
            name: None,
            data: Data::Buf { ptr: big.as_ptr() as u64, len: big.len() as u64 },
            control_len: 0,
        };
        assert_eq!(read_payload(me, &flat, BATCH_MAX), Err(Reply::Error(libc::EMSGSIZE)));
        let fits = SendMsg { data: Data::Buf { ptr: big.as_ptr() as u64, len: DATAGRAM_MAX as u64 }, ..flat };
        assert_eq!(read_payload(me, &fits, BATCH_MAX).unwrap().len(), DATAGRAM_MAX);
        let huge = SendMsg { data: Data::Buf { ptr: big.as_ptr() as u64, len: u64::MAX }, ..flat };
        assert_eq!(read_payload(me, &huge, BATCH_MAX), Err(Reply::Error(libc::EMSGSIZE)));
        let mut neg = iov.clone();
        neg[8..16].copy_from_slice(&u64::MAX.to_ne_bytes());
        let neg = SendMsg { data: Data::Iov { ptr: neg.as_ptr() as u64, count: 3 }, ..m };
        assert_eq!(read_payload(me, &neg, BATCH_MAX), Err(Reply::Error(libc::EINVAL)));
        let null = SendMsg { data: Data::Buf { ptr: 0, len: 4 }, ..flat };
        assert_eq!(read_payload(me, &null, BATCH_MAX), Err(Reply::Error(libc::EFAULT)));
    }

    #[test]
    fn datagram_flags_are_sanitised() {
        use rustix::net::SendFlags;
        let always = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
        assert_eq!(datagram_flags(0), Ok(always));
        assert_eq!(datagram_flags(libc::MSG_CONFIRM as u32), Ok(always | SendFlags::CONFIRM));
        for refused in [libc::MSG_MORE, libc::MSG_OOB, libc::MSG_ZEROCOPY, libc::MSG_EOR, libc::MSG_FASTOPEN]
        {
            assert_eq!(datagram_flags(refused as u32), Err(libc::EOPNOTSUPP), "{refused:#x}");
        }
    }

    #[test]
    fn send_errors_keep_eagain_only_for_nonblocking_callers() {
        let eagain = || io::Error::from_raw_os_error(libc::EAGAIN);
        assert_eq!(send_error(eagain(), true), Reply::Error(libc::EAGAIN));
        assert_eq!(send_error(eagain(), false), Reply::Error(libc::ENOBUFS));
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(send_error(refused, false), Reply::Error(libc::ECONNREFUSED));
    }

    #[test]
    fn connect_results_map_to_replies() {
        assert_eq!(connect_reply(Ok(())), Reply::Value(0));
        let e = io::Error::from_raw_os_error(libc::EINPROGRESS);
        assert_eq!(connect_reply(Err(e)), Reply::Error(libc::EINPROGRESS));
        assert_eq!(fail(io::Error::from_raw_os_error(libc::ESRCH)), Reply::Drop);
        assert_eq!(fail(io::Error::other("x")), Reply::Error(libc::EIO));
    }
}
