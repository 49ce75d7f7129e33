//! The hook through which policy answers the supervisor: what to do with one destination.
//!
//! The supervisor owns the IO; a [`ConnectDecider`] only decides, from plain values, and must not
//! block (it runs on the supervisor's thread for every trapped call).

use std::net::SocketAddr;

use crate::sockaddr::UnixAddr;

/// What kind of socket the trapped call was made on, read from the agent's own socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SockInfo {
    /// The socket's domain (`AF_INET`, `AF_INET6`, `AF_UNIX`, ...), from `SO_DOMAIN`.
    pub family: i32,
    /// The socket's type (`SOCK_STREAM`, `SOCK_DGRAM`, ...), from `SO_TYPE`.
    pub sock_type: i32,
}

impl SockInfo {
    /// True for TCP-like sockets (`SOCK_STREAM`).
    pub fn is_stream(&self) -> bool {
        self.sock_type == libc::SOCK_STREAM
    }

    /// True for UDP-like sockets (`SOCK_DGRAM`).
    pub fn is_datagram(&self) -> bool {
        self.sock_type == libc::SOCK_DGRAM
    }
}

/// Which trapped call carried the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallKind {
    /// `connect(2)`.
    Connect,
    /// `sendto(2)`, `sendmsg(2)` or `sendmmsg(2)` with an explicit destination.
    Send,
}

/// The verdict for one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Let the kernel perform the call as the agent wrote it (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`).
    ///
    /// The kernel re-reads the agent's memory, so a sibling thread may change the address after
    /// the decision; this is safe only because the session's network namespace has nothing but
    /// loopback, so a swapped destination has nowhere to go.
    Continue,
    /// Fail the call with this (positive) errno, e.g. `libc::EACCES`.
    Deny(i32),
    /// Connect the agent's own socket to this gateway address instead (loopback, inside the
    /// session's network namespace) and record the original destination.
    ///
    /// For `sendto`/`sendmsg`/`sendmmsg` with a destination on a UDP (`SOCK_DGRAM`) socket the
    /// supervisor sends the datagram itself, from the agent's socket, to this address, and
    /// nothing is recorded (no connection follows). The payload is read once (at most 65,535
    /// bytes, else `EMSGSIZE`); control messages (`msg_controllen` != 0) and flags other than
    /// `MSG_DONTWAIT`/`MSG_CONFIRM`/`MSG_DONTROUTE`/`MSG_NOSIGNAL` are refused with
    /// `EOPNOTSUPP`. Replies arrive on the agent's socket from this address, not from the one the
    /// agent asked for: a client that checks the source of replies on an unconnected socket will
    /// drop them (glibc connects its UDP socket first, so it is redirected at `connect` instead).
    /// Other datagram sockets (raw, ...) get `ENETUNREACH`.
    Redirect(SocketAddr),
    /// AF_UNIX only: the supervisor connects the agent's socket itself, to the socket file the
    /// path names, resolved inside the agent's root (or from its cwd) with no symlink followed;
    /// an abstract name is connected as read (in the socket's own network namespace).
    ///
    /// The path is read once and the connect goes through an `O_PATH` handle on the very inode
    /// that was checked, so neither a sibling thread rewriting the path nor a directory swapped
    /// for a symlink can change where it lands. Sockets reached through a symlink (`ELOOP`) or
    /// with more than one name (hard links, `EACCES`) are refused by design, and reported through
    /// [`ConnectDecider::unix_refused`]. The listener sees the supervisor's process as its peer
    /// (`SO_PEERCRED`), not the agent's.
    ///
    /// For `sendto`/`sendmsg` on datagram sockets the same checks run, then the kernel sends
    /// (CONTINUE): it re-reads the path, so a racing thread can still swap it after the check;
    /// the sandbox's private `/run` and `/tmp` limit what such a swap can reach.
    ConnectUnixPinned,
}

/// Why the supervisor refused an AF_UNIX path the decider allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnixRefusal {
    /// A symlink (or a `/proc` magic link) lies on the path; the agent gets `ELOOP`.
    Symlink,
    /// The socket has more than one name (a hard link, possibly to a socket outside the allowed
    /// paths); the agent gets `EACCES`.
    HardLink,
}

impl UnixRefusal {
    /// The errno the agent gets.
    pub fn errno(self) -> i32 {
        match self {
            Self::Symlink => libc::ELOOP,
            Self::HardLink => libc::EACCES,
        }
    }
}

/// Policy's answer to "where may this socket go". Implementations are pure and fast.
pub trait ConnectDecider: Send + Sync + 'static {
    /// Decides an AF_INET/AF_INET6 destination. `dst` is canonical: a v4-mapped IPv6 address is
    /// given as the IPv4 address. Loopback destinations are decided here too; nothing is
    /// hard-coded in the supervisor.
    fn decide(&self, dst: SocketAddr, sock: SockInfo, pid: u32) -> Action;

    /// Like [`decide`](Self::decide), knowing which call carried the destination. The default
    /// forwards to `decide`.
    fn decide_call(&self, call: CallKind, dst: SocketAddr, sock: SockInfo, pid: u32) -> Action {
        let _ = call;
        self.decide(dst, sock, pid)
    }

    /// Decides an AF_UNIX destination (`unix_socket_rules`). The default lets it through;
    /// `Redirect` is treated as `Deny(EACCES)` because a Unix socket cannot be re-pointed here.
    ///
    /// Return [`Action::ConnectUnixPinned`] for an allowed name: `Continue` lets the kernel
    /// re-read and re-resolve the address after the decision, so a racing thread may change it.
    fn decide_unix(&self, path: &UnixAddr, sock: SockInfo, pid: u32) -> Action {
        let _ = (path, sock, pid);
        Action::Continue
    }

    /// Told when the supervisor refuses a path that [`decide_unix`](Self::decide_unix) allowed
    /// with [`Action::ConnectUnixPinned`]; for auditing only (the call has already failed).
    fn unix_refused(&self, path: &UnixAddr, why: UnixRefusal, pid: u32) {
        let _ = (path, why, pid);
    }

    /// Another socket to try when the one a pinned AF_UNIX connect resolved to (the inode
    /// `ino` on device `dev`, as the agent sees it) refused the connection: an `O_PATH`
    /// handle on a socket with one name. A layer that presents a directory under other inodes
    /// (the FUSE workspace) names the socket file behind its own, where a listener bound on
    /// the host side waits. The default has none.
    fn fallback_socket(&self, dev: u64, ino: u64) -> Option<std::os::fd::OwnedFd> {
        let _ = (dev, ino);
        None
    }
}

impl<F> ConnectDecider for F
where
    F: Fn(SocketAddr, SockInfo, u32) -> Action + Send + Sync + 'static,
{
    fn decide(&self, dst: SocketAddr, sock: SockInfo, pid: u32) -> Action {
        self(dst, sock, pid)
    }
}

/// Clamps a decider's errno into the range the kernel accepts in a notification reply; anything
/// outside it becomes `EPERM` so a bad decider still fails closed.
pub(crate) fn sane_errno(errno: i32) -> i32 {
    if (1..4096).contains(&errno) { errno } else { libc::EPERM }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closures_are_deciders_and_unix_defaults_to_continue() {
        let d = |dst: SocketAddr, _s: SockInfo, _p: u32| {
            if dst.port() == 443 {
                Action::Redirect("127.0.0.1:9".parse().unwrap())
            } else {
                Action::Deny(13)
            }
        };
        let tcp = SockInfo { family: libc::AF_INET, sock_type: libc::SOCK_STREAM };
        assert!(tcp.is_stream() && !tcp.is_datagram());
        let a = d.decide_call(CallKind::Connect, "1.2.3.4:443".parse().unwrap(), tcp, 1);
        assert_eq!(a, Action::Redirect("127.0.0.1:9".parse().unwrap()));
        assert_eq!(d.decide("1.2.3.4:80".parse().unwrap(), tcp, 1), Action::Deny(13));
        assert_eq!(d.decide_unix(&UnixAddr::Unnamed, tcp, 1), Action::Continue);
    }

    #[test]
    fn errno_is_clamped() {
        assert_eq!(sane_errno(libc::EACCES), libc::EACCES);
        assert_eq!(sane_errno(0), libc::EPERM);
        assert_eq!(sane_errno(-5), libc::EPERM);
        assert_eq!(sane_errno(5000), libc::EPERM);
    }

    #[test]
    fn unix_refusals_have_their_errno() {
        assert_eq!(UnixRefusal::Symlink.errno(), libc::ELOOP);
        assert_eq!(UnixRefusal::HardLink.errno(), libc::EACCES);
    }
}
