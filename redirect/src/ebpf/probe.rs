//! Probe processes: a forked child that moves itself into a cgroup and performs one socket
//! operation there, reporting what the kernel did. The attach self-test uses it, and so do the
//! real-kernel tests and benchmarks; [`spawn_in_cgroup`] starts a longer-lived one that runs a
//! given body.
//!
//! The child of a multi-threaded parent may only make raw system calls, so every input is plain
//! data prepared before the fork and the child allocates nothing.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use crate::ParsedAddr;
use crate::sockaddr::parse_sockaddr;

mod child;

/// Longest payload or reply a probe carries.
pub const PROBE_DATA_MAX: usize = 64;

/// What the probe child does.
#[derive(Debug, Clone, Copy)]
pub enum ProbeOp {
    /// TCP connect to `dst` (non-blocking, bounded by the probe's timeout); on success send
    /// `payload` (if any) and read one reply (if `want_reply`).
    TcpConnect {
        /// Where the child connects.
        dst: SocketAddr,
        /// Bind the socket to `lo` first (SO_BINDTODEVICE): should the connect not be rewritten,
        /// nothing can leave the machine.
        loopback_only: bool,
        /// Bytes to send after connecting.
        payload: ProbeData,
        /// Read one reply after sending.
        want_reply: bool,
    },
    /// `count` TCP connects to `dst`, one after the other, each closed at once; the report counts
    /// successes, EPERM and other failures.
    TcpConnectLoop {
        /// Where the child connects.
        dst: SocketAddr,
        /// How many connects.
        count: u32,
    },
    /// One raw IP datagram (an empty UDP header) to `dst` from a socket bound to `lo`: no address
    /// hook sees it, so only the cgroup's packet filter stands between it and the network.
    RawSend {
        /// Where the datagram goes (IPv4; the port is ignored).
        dst: SocketAddr,
    },
    /// Listen on `bind`, accept one connection within the timeout and send it `payload`.
    Serve {
        /// The listening address.
        bind: SocketAddr,
        /// Bytes for the accepted connection.
        payload: ProbeData,
    },
    /// Listen on `bind` (port 0: any free port), then connect a second socket to the listener's
    /// own address; with `accept`, wait (within the timeout) for the listener to accept it. The
    /// report's `local` and `peer` are the connecting socket's, `accepted` the peer the listener
    /// accepted.
    ListenConnect {
        /// The listening address.
        bind: SocketAddr,
        /// Set `SO_REUSEPORT` on the listener before binding.
        reuseport: bool,
        /// Wait for the listener to accept the connection.
        accept: bool,
    },
    /// One UDP datagram to `dst` (with `sendto`, or `connect` then `send` when `connected`), then
    /// one reply read with `recvfrom`.
    UdpExchange {
        /// Where the datagram goes.
        dst: SocketAddr,
        /// Use `connect` + `send` instead of `sendto`.
        connected: bool,
        /// The datagram.
        payload: ProbeData,
    },
}

/// Up to [`PROBE_DATA_MAX`] bytes, as plain data.
#[derive(Debug, Clone, Copy)]
pub struct ProbeData {
    len: usize,
    buf: [u8; PROBE_DATA_MAX],
}

impl Default for ProbeData {
    fn default() -> Self {
        Self { len: 0, buf: [0u8; PROBE_DATA_MAX] }
    }
}

impl ProbeData {
    /// `bytes`, cut to [`PROBE_DATA_MAX`].
    pub fn new(bytes: &[u8]) -> Self {
        let mut buf = [0u8; PROBE_DATA_MAX];
        let len = bytes.len().min(PROBE_DATA_MAX);
        buf[..len].copy_from_slice(&bytes[..len]);
        Self { len, buf }
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// What the child wrote back (raw, fixed size).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct RawReport {
    pub errno: i32,
    pub stage: u32,
    pub local: libc::sockaddr_in6,
    pub peer: libc::sockaddr_in6,
    pub reply_from: libc::sockaddr_in6,
    pub accepted: libc::sockaddr_in6,
    pub reply_len: u32,
    pub reply: [u8; PROBE_DATA_MAX],
    pub ok: u32,
    pub eperm: u32,
    pub other: u32,
}

/// What the kernel did to the probe's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// The probe process id (host PID namespace of the caller).
    pub pid: u32,
    /// `None` on success, else the errno of the first step that failed.
    pub errno: Option<i32>,
    /// Which step failed (see the child's `stage` constants) when `errno` is set.
    pub stage: &'static str,
    /// `getsockname` after connecting.
    pub local: Option<SocketAddr>,
    /// `getpeername` after connecting.
    pub peer: Option<SocketAddr>,
    /// Source of the UDP reply, as `recvfrom` reported it.
    pub reply_from: Option<SocketAddr>,
    /// [`ProbeOp::ListenConnect`]: the peer the listener accepted, `None` when nothing reached it.
    pub accepted: Option<SocketAddr>,
    /// The reply bytes.
    pub reply: Vec<u8>,
    /// [`ProbeOp::TcpConnectLoop`]: connects that succeeded.
    pub ok: u32,
    /// [`ProbeOp::TcpConnectLoop`]: connects refused with EPERM.
    pub eperm: u32,
    /// [`ProbeOp::TcpConnectLoop`]: connects that failed otherwise.
    pub other: u32,
}

fn addr_of(sa: &libc::sockaddr_in6) -> Option<SocketAddr> {
    // SAFETY: sockaddr_in6 is plain data; viewing it as bytes reads initialised memory only.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (sa as *const libc::sockaddr_in6).cast::<u8>(),
            size_of::<libc::sockaddr_in6>(),
        )
    };
    match parse_sockaddr(bytes) {
        Ok(ParsedAddr::Inet(a)) => Some(a),
        _ => None,
    }
}

/// Runs `op` in a child process that first moves itself into the cgroup at `cgroup_dir`
/// (cgroup v2), and returns the report; a child that does not report within `timeout` is killed
/// and the probe fails with `TimedOut`.
pub fn run_in_cgroup(cgroup_dir: &Path, op: ProbeOp, timeout: Duration) -> io::Result<ProbeReport> {
    let procs = CString::new(cgroup_dir.join("cgroup.procs").as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cgroup path holds a NUL byte"))?;
    let plan = child::Plan::new(op, timeout)?;
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let (rd, wr) = (fds[0], fds[1]);
    // SAFETY: the child only makes raw system calls on data prepared above (see child::run) and
    // leaves with _exit, so forking a multi-threaded process is sound.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = io::Error::last_os_error();
        // SAFETY: both fds are ours.
        unsafe {
            libc::close(rd);
            libc::close(wr);
        }
        return Err(e);
    }
    if pid == 0 {
        // SAFETY: in the child; `procs` and `plan` were built before the fork.
        unsafe { child::run(&procs, &plan, wr) }
    }
    // SAFETY: the parent's copy of the write end.
    unsafe { libc::close(wr) };
    let raw = read_report(rd, timeout + Duration::from_secs(2));
    // SAFETY: rd is ours.
    unsafe { libc::close(rd) };
    if raw.is_err() {
        // SAFETY: pid is our child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let mut status = 0;
    // SAFETY: reaps our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let raw = raw?;
    Ok(ProbeReport {
        pid: pid as u32,
        errno: (raw.errno != 0).then_some(raw.errno),
        stage: child::stage_name(raw.stage),
        local: addr_of(&raw.local),
        peer: addr_of(&raw.peer),
        reply_from: addr_of(&raw.reply_from),
        accepted: addr_of(&raw.accepted),
        reply: raw.reply[..(raw.reply_len as usize).min(PROBE_DATA_MAX)].to_vec(),
        ok: raw.ok,
        eperm: raw.eperm,
        other: raw.other,
    })
}

/// A process started by [`spawn_in_cgroup`]; killed and reaped when dropped.
#[derive(Debug)]
pub struct CgroupChild {
    pid: libc::pid_t,
}

impl CgroupChild {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Waits for the child to end and returns its exit code (128 + signal when killed).
    pub fn wait(mut self) -> io::Result<i32> {
        let status = self.reap()?;
        Ok(if libc::WIFSIGNALED(status) { 128 + libc::WTERMSIG(status) } else { libc::WEXITSTATUS(status) })
    }

    fn reap(&mut self) -> io::Result<i32> {
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` lives for the call.
        let rc = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        self.pid = 0;
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(status) }
    }
}

impl Drop for CgroupChild {
    fn drop(&mut self) {
        if self.pid > 0 {
            // SAFETY: `pid` is our child, not reaped yet.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let _ = self.reap();
        }
    }
}

/// Forks a child that moves itself into the cgroup at `cgroup_dir` (cgroup v2), runs `body` and
/// exits with its return value (120 when it cannot join the cgroup, 101 when `body` panics), for
/// benchmarks and tests that need a long-lived process of a session. The child is a fork of a
/// possibly multi-threaded process: keep `body` to plain system calls.
pub fn spawn_in_cgroup<F: FnOnce() -> i32>(cgroup_dir: &Path, body: F) -> io::Result<CgroupChild> {
    let procs = CString::new(cgroup_dir.join("cgroup.procs").as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cgroup path holds a NUL byte"))?;
    // SAFETY: the child joins the cgroup with raw system calls on `procs`, built before the fork,
    // runs `body` (whose contract is stated above) and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: in the child; `procs` was built before the fork.
        let code = if unsafe { child::join_cgroup(&procs) } {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(101)
        } else {
            120
        };
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) }
    }
    Ok(CgroupChild { pid })
}

fn read_report(fd: i32, timeout: Duration) -> io::Result<RawReport> {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one pollfd that lives for the call.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "probe process did not report"));
    }
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: RawReport is plain data; all-zero is a valid value.
    let mut raw: RawReport = unsafe { zeroed() };
    // SAFETY: reads at most size_of::<RawReport>() bytes into `raw`.
    let got = unsafe { libc::read(fd, (&mut raw as *mut RawReport).cast(), size_of::<RawReport>()) };
    if got != size_of::<RawReport>() as isize {
        return Err(io::Error::other("probe process died before reporting"));
    }
    Ok(raw)
}
