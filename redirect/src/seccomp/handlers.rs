//! One handler per trapped call. Each reads what it needs from the tracee once, asks the decider,
//! acts on the agent's own socket, and returns the [`Reply`]; errors fail closed (an errno, never
//! CONTINUE) and nothing here waits for the tracee.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use super::notif::{Notification, Reply, id_valid};
use super::unix::Refused;
use super::{sock, tracee, unix};
use crate::decide::{Action, CallKind, ConnectDecider, SockInfo, sane_errno};
use crate::original_dst::{OriginalDst, OriginalDstTable, ServedTable, Transport};
use crate::sockaddr::{
    ParsedAddr, SOCKADDR_MAX, UnixAddr, canonical, encode_sockaddr, for_family, parse_sockaddr,
};

/// `sizeof(struct msghdr)` and `sizeof(struct mmsghdr)` on 64-bit Linux.
const MSGHDR_LEN: usize = 56;
const MMSGHDR_LEN: usize = 64;
/// The kernel caps `sendmmsg`'s vlen at `UIO_MAXIOV`.
const UIO_MAXIOV: usize = 1024;

/// Everything a handler needs; shared by the supervisor thread.
pub(crate) struct Ctx<'a> {
    pub notify: BorrowedFd<'a>,
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
    /// CONTINUE only while the notification is still ours to answer.
    fn continue_if_valid(&self, n: &Notification) -> Reply {
        if id_valid(self.notify, n.id) { Reply::Continue } else { Reply::Drop }
    }

    /// Reads `len` bytes of sockaddr at `ptr` (bounded) and parses it.
    fn read_sockaddr(&self, n: &Notification, ptr: u64, len: u32) -> Result<ParsedAddr, Reply> {
        let len = len as usize;
        if !(2..=SOCKADDR_MAX).contains(&len) {
            return Err(Reply::Error(libc::EINVAL));
        }
        let mut buf = [0u8; SOCKADDR_MAX];
        tracee::read_mem(n.pid, ptr, &mut buf[..len]).map_err(fail)?;
        parse_sockaddr(&buf[..len]).map_err(|e| Reply::Error(e.errno()))
    }

    /// Takes the tracee's `fd`, then checks the notification is still valid, so the pidfd (and
    /// therefore the fd) provably belongs to the thread that made the call.
    fn take_socket(&self, n: &Notification, fd: u64) -> Result<(OwnedFd, SockInfo), Reply> {
        let pidfd = tracee::open_pidfd(n.pid).map_err(fail)?;
        let dup = tracee::take_fd(&pidfd, fd).map_err(fail)?;
        if !id_valid(self.notify, n.id) {
            return Err(Reply::Drop);
        }
        let info = sock::sock_info(dup.as_fd()).map_err(fail)?;
        Ok((dup, info))
    }

    /// `connect(fd, addr, addrlen)`.
    pub(crate) fn on_connect(&self, n: &Notification) -> Reply {
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
            ParsedAddr::Unix(_) | ParsedAddr::Other { .. } => return self.continue_if_valid(n),
        };
        if info.family != libc::AF_INET && info.family != libc::AF_INET6 {
            // The kernel rejects an IP address on a non-IP socket by itself.
            return self.continue_if_valid(n);
        }
        let dst = canonical(requested);
        match self.decider.decide_call(CallKind::Connect, dst, info, n.pid) {
            Action::Continue => self.continue_if_valid(n),
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
        n: &Notification,
        fd: BorrowedFd<'_>,
        info: SockInfo,
        parsed: &ParsedAddr,
    ) -> Reply {
        let addr = match parsed {
            ParsedAddr::Unix(UnixAddr::Unnamed) => return self.continue_if_valid(n),
            ParsedAddr::Unix(addr) => addr,
            // AF_UNSPEC dissolves a datagram socket's association; done here, not re-read.
            ParsedAddr::Other { family } if *family == libc::AF_UNSPEC as u16 => {
                return connect_reply(rustix::net::connect_unspec(fd).map_err(io::Error::from));
            }
            // What the kernel answers for any other family on an AF_UNIX socket.
            ParsedAddr::Inet(_) | ParsedAddr::Other { .. } => return Reply::Error(libc::EINVAL),
        };
        match self.decider.decide_unix(addr, info, n.pid) {
            Action::Continue => self.continue_if_valid(n),
            Action::Deny(e) => Reply::Error(sane_errno(e)),
            Action::Redirect(_) => Reply::Error(libc::EACCES),
            Action::ConnectUnixPinned => match addr {
                UnixAddr::Pathname(path) => match self.pin_unix(n, addr, path) {
                    Ok(target) => connect_reply(unix::connect_pinned(fd, &target)),
                    Err(r) => r,
                },
                UnixAddr::Abstract(name) => connect_reply(unix::connect_abstract(fd, name)),
                UnixAddr::Unnamed => self.continue_if_valid(n),
            },
        }
    }

    /// Resolves an allowed pathname from the tracee's root or cwd to an `O_PATH` handle on the
    /// socket it names. Refusals by design are logged and told to the decider.
    fn pin_unix(&self, n: &Notification, addr: &UnixAddr, path: &[u8]) -> Result<OwnedFd, Reply> {
        let start = unix::open_start(n.pid, path.first() != Some(&b'/')).map_err(fail)?;
        // The handles came from /proc/<pid>: they are this tracee's only while it still waits.
        if !id_valid(self.notify, n.id) {
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
        n: &Notification,
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
        let Some(target) = for_family(gw, info.family) else { return Reply::Error(libc::ENETUNREACH) };
        if info.family == libc::AF_INET6 && target.ip().to_canonical().is_ipv4() {
            match sock::v6only(fd) {
                Ok(false) => {}
                Ok(true) => return Reply::Error(libc::ENETUNREACH),
                Err(e) => return fail(e),
            }
        }
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
    /// `sendmmsg(fd, vec, vlen, flags)`: every explicit destination is decided.
    pub(crate) fn on_send(&self, n: &Notification) -> Reply {
        let (flags, names) = match self.send_destinations(n) {
            Ok(v) => v,
            Err(r) => return r,
        };
        if names.is_empty() {
            return self.continue_if_valid(n);
        }
        let mut parsed = Vec::with_capacity(names.len());
        for (ptr, len) in names {
            match self.read_sockaddr(n, ptr, len) {
                Ok(p) => parsed.push(p),
                Err(r) => return r,
            }
        }
        let (_dup, info) = match self.take_socket(n, n.args[0]) {
            Ok(t) => t,
            Err(r) => return r,
        };
        for p in &parsed {
            let action = match p {
                ParsedAddr::Other { .. } => Action::Continue,
                ParsedAddr::Unix(addr) => match self.decider.decide_unix(addr, info, n.pid) {
                    Action::Redirect(_) => Action::Deny(libc::EACCES),
                    Action::ConnectUnixPinned => match addr {
                        // Only a datagram socket sends to the name. The checks run, but the
                        // kernel re-reads the path when it sends (documented on the action).
                        UnixAddr::Pathname(path) if info.is_datagram() => {
                            match self.pin_unix(n, addr, path) {
                                Ok(_) => Action::Continue,
                                Err(r) => return r,
                            }
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
                        // Datagram redirection (DNS to the session resolver) is not built yet.
                        Action::Redirect(_) => Action::Deny(libc::ENETUNREACH),
                        Action::ConnectUnixPinned => Action::Deny(libc::EACCES),
                        a => a,
                    }
                }
            };
            if let Action::Deny(e) = action {
                tracing::info!(peer.pid = n.pid, errno = e, "send denied");
                return Reply::Error(sane_errno(e));
            }
        }
        self.continue_if_valid(n)
    }

    /// The flags and every `(msg_name, msg_namelen)` with a non-NULL name.
    fn send_destinations(&self, n: &Notification) -> Result<(u32, Vec<(u64, u32)>), Reply> {
        let a = n.args;
        match n.nr as libc::c_long {
            libc::SYS_sendto => Ok((a[3] as u32, if a[4] == 0 { vec![] } else { vec![(a[4], a[5] as u32)] })),
            libc::SYS_sendmsg => {
                let mut hdr = [0u8; MSGHDR_LEN];
                tracee::read_mem(n.pid, a[1], &mut hdr).map_err(fail)?;
                Ok((a[2] as u32, msg_name(&hdr).into_iter().collect()))
            }
            libc::SYS_sendmmsg => {
                let vlen = (a[2] as u32 as usize).min(UIO_MAXIOV);
                let mut vec = vec![0u8; vlen * MMSGHDR_LEN];
                tracee::read_mem(n.pid, a[1], &mut vec).map_err(fail)?;
                Ok((a[3] as u32, vec.chunks_exact(MMSGHDR_LEN).filter_map(msg_name).collect()))
            }
            _ => Err(Reply::Error(libc::ENOSYS)),
        }
    }

    /// `getpeername(fd, addr, addrlen)`: redirected sockets report the original destination.
    pub(crate) fn on_getpeername(&self, n: &Notification) -> Reply {
        let (dup, info) = match self.take_socket(n, n.args[0]) {
            Ok(t) => t,
            Err(Reply::Error(_)) => return self.continue_if_valid(n),
            Err(r) => return r,
        };
        let fd = dup.as_fd();
        let Ok(local) = sock::local_addr(fd) else { return self.continue_if_valid(n) };
        let Some(entry) = self.served.get(local) else { return self.continue_if_valid(n) };
        let still_ours = sock::peer_addr(fd).is_some_and(|p| canonical(p) == canonical(entry.gateway));
        let Some(answer) = for_family(entry.requested, info.family).filter(|_| still_ours) else {
            return self.continue_if_valid(n);
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
        if !id_valid(self.notify, n.id) {
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
    fn connect_results_map_to_replies() {
        assert_eq!(connect_reply(Ok(())), Reply::Value(0));
        let e = io::Error::from_raw_os_error(libc::EINPROGRESS);
        assert_eq!(connect_reply(Err(e)), Reply::Error(libc::EINPROGRESS));
        assert_eq!(fail(io::Error::from_raw_os_error(libc::ESRCH)), Reply::Drop);
        assert_eq!(fail(io::Error::other("x")), Reply::Error(libc::EIO));
    }
}
