//! [`launch`] and [`Launched`], the parent side of starting a sandboxed command.
//!
//! The parent prepares everything, `clone3`s the init into new namespaces and (optionally) the
//! session cgroup with `CLONE_INTO_CGROUP` — so no code of the sandbox ever runs outside the
//! cgroup — then follows the child's progress on two channels: a `SOCK_SEQPACKET` launch socket
//! that carries the gateway listeners, the command's pidfd, the seccomp notify fd's number and
//! the ACK, and a close-on-exec report pipe that yields either one failure [`Report`] or
//! end-of-file once `execve` succeeded. The parent takes the notify fd itself with
//! `pidfd_getfd`, because the command cannot `sendmsg` it once the filter is installed (see
//! `child.rs`). Any failure kills and reaps the child before the error is returned.

use std::fs;
use std::io::{self, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::child::{ChildFds, run_init};
use crate::error::{Errno, SandboxError};
use crate::fdpass::{ACK, Message, TAG_LISTENERS, TAG_NOTIFY, TAG_PIDFD, TAG_TRACEABLE, recv_msg};
use crate::mounts;
use crate::prepare::Prepared;
use crate::report::{REPORT_LEN, Report, Step};
use crate::spec::{LaunchSpec, SANDBOX_STATE_DIR, SeccompListener, Stdio};
use crate::sys;

/// How long the parent waits for any one message from the child during setup.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// `CLONE_INTO_CGROUP` (kernel 5.7); libc declares it as a 32-bit `c_int`, which truncates it.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for the child's listeners / notify fd.
    Starting,
    /// The notify fd was handed over (or the command is ready to be traced); the command waits
    /// for [`Launched::resume`].
    AwaitingAck,
    /// The command has exec'd.
    Running,
    /// The init has been reaped.
    Exited,
}

/// Paths and names used to turn a child [`Report`] into a readable message.
#[derive(Debug)]
struct Labels {
    argv0: String,
    cwd: String,
    binds: Vec<String>,
    late: Vec<String>,
    landlock: Vec<String>,
}

impl Labels {
    fn describe(&self, r: Report) -> SandboxError {
        let base = r.step.label();
        let step = match r.step {
            Step::BindFile => {
                let target = self.binds.get(usize::from(r.index)).map_or("?", String::as_str);
                format!("{base} {target}")
            }
            Step::OpenBindSource | Step::MakeMountPoint | Step::AttachBind | Step::RemountBind => {
                let target = self.late.get(usize::from(r.index)).map_or("?", String::as_str);
                format!("{base} {target}")
            }
            Step::Chdir => format!("{base} {}", self.cwd),
            Step::Landlock => {
                let what = self.landlock.get(usize::from(r.index)).map_or("ruleset", String::as_str);
                format!("{base} {what}")
            }
            Step::ResolveExecutable | Step::Exec => format!("{base} {}", self.argv0),
            _ => base.to_string(),
        };
        SandboxError::Child { step, errno: Errno(r.errno) }
    }
}

/// A running (or finished) sandbox: its init process and what it handed back.
///
/// Dropping it without [`Launched::wait`] kills the whole sandbox and reaps the init.
#[derive(Debug)]
pub struct Launched {
    /// Host pid of the outermost child: the sandbox's init (pid 1 inside).
    pub pid: libc::pid_t,
    /// pidfd of the init, for polling and signalling without pid-reuse races.
    pub pidfd: OwnedFd,
    /// The seccomp user-notify fd, when `spec.seccomp` was given with
    /// [`SeccompListener::UserNotify`] (the default). Start supervising it, then call
    /// [`Launched::resume`].
    pub notify_fd: Option<OwnedFd>,
    /// The command's host pid (pid 2 inside), when `spec.seccomp` was given with
    /// [`SeccompListener::Trace`]: seize it with a tracer (`redirect::ptrace::Tracer::spawn`),
    /// then call [`Launched::resume`]. The command waits, filter installed, until then, so the
    /// pid stays its own unless something outside kills it meanwhile.
    pub command_pid: Option<libc::pid_t>,
    /// The gateway listeners (127.0.0.1 then ::1) living in the sandbox's network namespace,
    /// when `spec.gateway_listeners` was set.
    pub listeners: Vec<TcpListener>,
    /// The Landlock ABI the command's ruleset was built for, when `spec.landlock` was set.
    pub landlock_abi: Option<u32>,
    ctrl: Option<OwnedFd>,
    report: Option<OwnedFd>,
    state: State,
    exit: Option<i32>,
    labels: Labels,
}

fn stdio_source(s: &Stdio, devnull: Option<&fs::File>) -> RawFd {
    match (s, devnull) {
        (Stdio::Inherit, _) => -1,
        (Stdio::Null, Some(null)) => null.as_raw_fd(),
        (Stdio::Null, None) => -1, // unreachable: /dev/null is opened when any stream is Null
        (Stdio::Fd(fd), _) => fd.as_raw_fd(),
    }
}

fn cloexec_pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(SandboxError::last_os("pipe2"));
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let mut sv = [0; 2];
    let kind = libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC;
    // SAFETY: `sv` has room for the two descriptors socketpair writes.
    if unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, sv.as_mut_ptr()) } < 0 {
        return Err(SandboxError::last_os("socketpair"));
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) })
}

/// Writes `<state_dir>/resolv.conf` atomically (temp file + rename), mode 0644.
fn write_resolv_conf(state_dir: &Path, text: &str) -> Result<PathBuf, SandboxError> {
    let path = state_dir.join("resolv.conf");
    let tmp = state_dir.join(format!(".resolv.conf.{}.tmp", std::process::id()));
    let write = || -> io::Result<()> {
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o644).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.set_permissions(fs::Permissions::from_mode(0o644))?;
        fs::rename(&tmp, &path)
    };
    write().map_err(|e| SandboxError::setup(format!("write {}", path.display()), e))?;
    Ok(path)
}

/// Polls `fds` for readability; returns which are ready, or a protocol error on timeout.
fn poll_readable<const N: usize>(fds: [BorrowedFd<'_>; N], what: &str) -> Result<[bool; N], SandboxError> {
    let mut pfds = fds.map(|fd| libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 });
    let timeout = SETUP_TIMEOUT.as_millis() as libc::c_int;
    loop {
        // SAFETY: `pfds` is a live array of N pollfd entries.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), N as libc::nfds_t, timeout) };
        if n > 0 {
            return Ok(pfds.map(|p| p.revents != 0));
        }
        if n == 0 {
            return Err(SandboxError::Protocol(format!("timed out waiting for {what}")));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(SandboxError::setup("poll", e));
        }
    }
}

/// The error for a launch message other than the one expected.
fn unexpected(m: &Message, what: &str) -> SandboxError {
    let got = format!("tag {:#04x} with {} data bytes and {} fds", m.tag, m.data.len(), m.fds.len());
    SandboxError::Protocol(format!("expected {what}, got {got}"))
}

/// Starts `spec.argv` in a new sandbox (see the crate docs for what that comprises).
///
/// Returns once the command has exec'd — or, when `spec.seccomp` is set, once the notify fd has
/// arrived (in [`SeccompListener::Trace`] mode: once the filter is installed and
/// [`Launched::command_pid`] is known): the command then waits, filter installed, until
/// [`Launched::resume`] is called.
/// The notify fd is taken from the command with `pidfd_getfd`, so the caller needs
/// ptrace-attach rights over it (`CAP_SYS_PTRACE`, which a root launcher has; a Yama
/// `ptrace_scope` of 3 forbids it outright), as the supervisor does for its redirects.
/// On any failure nothing is left running and the error names the step, e.g.
/// `mount /tmp: EPERM (Operation not permitted)`.
pub fn launch(spec: &LaunchSpec) -> Result<Launched, SandboxError> {
    let resolv_path = spec.state_dir.join("resolv.conf");
    let resolv_landing = mounts::bind_landing(Path::new("/etc/resolv.conf"));
    let prep = Prepared::new(spec, &resolv_path, &resolv_landing)?;
    if !spec.state_dir.is_dir() {
        let e = io::Error::from(io::ErrorKind::NotFound);
        return Err(SandboxError::setup(format!("state dir {}", spec.state_dir.display()), e));
    }
    write_resolv_conf(&spec.state_dir, &spec.resolv_conf)?;
    // Without a private /run the mount point must exist on the host; /run/agentsh is also the
    // default state root.
    fs::create_dir_all(SANDBOX_STATE_DIR)
        .map_err(|e| SandboxError::setup(format!("create {SANDBOX_STATE_DIR}"), e))?;

    let streams = [&spec.stdin, &spec.stdout, &spec.stderr];
    let devnull = if streams.iter().any(|s| matches!(s, Stdio::Null)) {
        let f = fs::OpenOptions::new().read(true).write(true).open("/dev/null");
        Some(f.map_err(|e| SandboxError::setup("open /dev/null", e))?)
    } else {
        None
    };
    let (parent_sock, child_sock) = seqpacket_pair()?;
    let (report_r, report_w) = cloexec_pipe()?;
    let cgroup = match &spec.cgroup {
        Some(dir) => Some(
            fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
                .open(dir)
                .map_err(|e| SandboxError::setup(format!("open cgroup {}", dir.display()), e))?,
        ),
        None => None,
    };
    let fds = ChildFds {
        ctrl: child_sock.as_raw_fd(),
        report: report_w.as_raw_fd(),
        stdio: streams.map(|s| stdio_source(s, devnull.as_ref())),
    };

    let mut pidfd: RawFd = -1;
    // SAFETY: clone_args is plain old data; all-zero is valid and fields are set below.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    let network = if spec.host_network { 0 } else { libc::CLONE_NEWNET };
    let namespaces = libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | network
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWCGROUP
        | libc::CLONE_PIDFD;
    args.flags = namespaces as u64;
    args.pidfd = &mut pidfd as *mut RawFd as u64;
    args.exit_signal = libc::SIGCHLD as u64;
    if let Some(dir) = &cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = dir.as_raw_fd() as u64;
    }
    // SAFETY: the child branch runs `run_init`, which only uses pre-built data and never
    // returns; the parent branch continues normally.
    let pid = match unsafe { sys::clone3(&mut args) } {
        Ok(0) => run_init(&prep, &fds),
        Ok(pid) => pid,
        Err(e) => return Err(SandboxError::setup("clone3", io::Error::from_raw_os_error(e))),
    };
    drop((child_sock, report_w, cgroup, devnull));
    // SAFETY: clone3 with CLONE_PIDFD stored a fresh pidfd that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };

    let mut launched = Launched {
        pid,
        pidfd,
        notify_fd: None,
        command_pid: None,
        listeners: Vec::new(),
        landlock_abi: prep.landlock.as_ref().map(|l| l.abi),
        ctrl: Some(parent_sock),
        report: Some(report_r),
        state: State::Starting,
        exit: None,
        labels: Labels {
            argv0: spec.argv[0].to_string_lossy().into_owned(),
            cwd: spec.cwd.display().to_string(),
            binds: spec.bind_files.iter().map(|(_, t)| t.display().to_string()).collect(),
            late: prep.late_labels.clone(),
            landlock: prep.landlock.as_ref().map_or_else(Vec::new, |l| l.labels()),
        },
    };
    if spec.gateway_listeners {
        let fds = launched.expect(TAG_LISTENERS, 2, "gateway listeners")?;
        launched.listeners = fds.into_iter().map(TcpListener::from).collect();
    }
    if prep.filter.is_some() {
        match spec.seccomp_listener {
            SeccompListener::UserNotify => launched.notify_fd = Some(launched.take_notify_fd()?),
            SeccompListener::Trace => launched.command_pid = Some(launched.await_traceable()?),
        }
        launched.state = State::AwaitingAck;
        return Ok(launched);
    }
    launched.await_exec()?;
    Ok(launched)
}

impl Launched {
    /// Receives the next launch message, announced as `what`; if the child stops talking
    /// instead, returns the failure it reported.
    fn next_message(&mut self, what: &str) -> Result<Message, SandboxError> {
        let (Some(ctrl), Some(report)) = (&self.ctrl, &self.report) else {
            return Err(SandboxError::Protocol(format!("launch channel closed before {what}")));
        };
        let [ctrl_ready, _] = poll_readable([ctrl.as_fd(), report.as_fd()], what)?;
        if ctrl_ready
            && let Some(m) =
                recv_msg(ctrl.as_fd()).map_err(|e| SandboxError::setup(format!("receive {what}"), e))?
        {
            return Ok(m);
        }
        match self.read_report()? {
            Some(err) => Err(err),
            None => Err(SandboxError::Protocol(format!("child went away before sending {what}"))),
        }
    }

    /// Receives the next launch message, which must be `tag` with `n` descriptors and no data.
    fn expect(&mut self, tag: u8, n: usize, what: &str) -> Result<Vec<OwnedFd>, SandboxError> {
        let m = self.next_message(what)?;
        if m.tag == tag && m.fds.len() == n && m.data.is_empty() {
            return Ok(m.fds);
        }
        Err(unexpected(&m, what))
    }

    /// Receives the next launch message, which must be a `tag` number message.
    fn expect_number(&mut self, tag: u8, what: &str) -> Result<i32, SandboxError> {
        let m = self.next_message(what)?;
        match m.number() {
            Some(n) if m.tag == tag => Ok(n),
            _ => Err(unexpected(&m, what)),
        }
    }

    /// The hand-off of `child.rs`: the command's pidfd, then its notify fd's number, then
    /// `pidfd_getfd`. The command stays parked (its fd open) until [`Launched::resume`].
    fn take_notify_fd(&mut self) -> Result<OwnedFd, SandboxError> {
        let command = self.expect(TAG_PIDFD, 1, "the command's pidfd")?.remove(0);
        let number = self.expect_number(TAG_NOTIFY, "seccomp notify fd number")?;
        if number < 0 {
            return Err(SandboxError::Protocol(format!("invalid notify fd number {number}")));
        }
        let fd = sys::pidfd_getfd(command.as_raw_fd(), number).map_err(|e| {
            SandboxError::setup("pidfd_getfd of the notify fd", io::Error::from_raw_os_error(e))
        })?;
        // SAFETY: pidfd_getfd returned a fresh descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// The trace-mode hand-off of `child.rs`: the command's pidfd, then word that its filter is
    /// installed; returns the command's host pid, read from the pidfd.
    fn await_traceable(&mut self) -> Result<libc::pid_t, SandboxError> {
        let command = self.expect(TAG_PIDFD, 1, "the command's pidfd")?.remove(0);
        let n = self.expect_number(TAG_TRACEABLE, "word that the filter is installed")?;
        if n != 0 {
            return Err(SandboxError::Protocol(format!("unexpected traceable message {n}")));
        }
        pidfd_pid(&command)
    }

    /// Reads the report pipe to its end: `None` means every write end closed without a report,
    /// i.e. the command exec'd.
    fn read_report(&mut self) -> Result<Option<SandboxError>, SandboxError> {
        let Some(report) = &self.report else { return Ok(None) };
        let mut buf = [0u8; REPORT_LEN];
        let mut got = 0;
        while got < REPORT_LEN {
            poll_readable([report.as_fd()], "the command to exec")?;
            let rest = &mut buf[got..];
            // SAFETY: reads into the live remainder of `buf`.
            let n = unsafe { libc::read(report.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(SandboxError::setup("read child report", e));
            }
            if n == 0 {
                break;
            }
            got += n as usize;
        }
        match got {
            0 => Ok(None),
            REPORT_LEN => match Report::decode(&buf) {
                Some(r) => Ok(Some(self.labels.describe(r))),
                None => Err(SandboxError::Protocol("unknown step in child report".into())),
            },
            _ => Err(SandboxError::Protocol(format!("short child report ({got} bytes)"))),
        }
    }

    fn await_exec(&mut self) -> Result<(), SandboxError> {
        if let Some(err) = self.read_report()? {
            return Err(err);
        }
        self.state = State::Running;
        self.ctrl = None;
        self.report = None;
        Ok(())
    }

    /// Lets a command parked after handing over its notify fd go on to `execve`; call it once
    /// the supervisor reads `notify_fd` (in trace mode: once the tracer has seized
    /// [`Launched::command_pid`]). Returns when the command has exec'd, or its failure.
    pub fn resume(&mut self) -> Result<(), SandboxError> {
        if self.state != State::AwaitingAck {
            return Err(SandboxError::Protocol("resume: the command is not waiting for an ACK".into()));
        }
        let Some(ctrl) = &self.ctrl else {
            return Err(SandboxError::Protocol("resume: launch channel closed".into()));
        };
        sys::write_all(ctrl.as_raw_fd(), &[ACK])
            .map_err(|e| SandboxError::setup("send ACK", io::Error::from_raw_os_error(e)))?;
        self.await_exec()
    }

    /// Waits for the sandbox to end and returns the command's status like a shell: the exit
    /// code, or 128 + the signal that killed it (137 when the sandbox was killed). A command
    /// still waiting for [`Launched::resume`] is aborted first (fail closed).
    pub fn wait(&mut self) -> Result<i32, SandboxError> {
        if let Some(code) = self.exit {
            return Ok(code);
        }
        // Closing our end makes a parked command's ACK read fail, so it exits without exec.
        self.ctrl = None;
        // SAFETY: siginfo_t is plain old data; waitid fills it for the pidfd we own.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        loop {
            let fd = self.pidfd.as_raw_fd() as libc::id_t;
            // SAFETY: `info` is a live siginfo_t; P_PIDFD takes the pidfd as the id.
            let ret = unsafe { libc::waitid(libc::P_PIDFD, fd, &mut info, libc::WEXITED) };
            if ret == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(SandboxError::setup("waitid", e));
            }
        }
        // SAFETY: waitid succeeded with WEXITED, so si_status holds the exit data.
        let status = unsafe { info.si_status() };
        let code = match info.si_code {
            libc::CLD_EXITED => status,
            libc::CLD_KILLED | libc::CLD_DUMPED => 128 + status,
            _ => 255,
        };
        self.exit = Some(code);
        self.state = State::Exited;
        Ok(code)
    }

    /// Like [`Launched::wait`] but gives up after `timeout`, returning `Ok(None)`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<i32>, SandboxError> {
        if self.exit.is_some() {
            return self.wait().map(Some);
        }
        // As in `wait`: a command parked for its ACK is aborted rather than waited on forever.
        self.ctrl = None;
        let mut pfd = libc::pollfd { fd: self.pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one live pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            return Err(SandboxError::last_os("poll pidfd"));
        }
        if n == 0 { Ok(None) } else { self.wait().map(Some) }
    }

    /// Sends `signal` to the init, which forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and
    /// SIGUSR2 to the command. A sandbox that already ended is not an error.
    pub fn signal(&self, signal: libc::c_int) -> Result<(), SandboxError> {
        if self.exit.is_some() {
            return Ok(());
        }
        // SAFETY: a pidfd we own, a NULL siginfo and no flags.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal,
                std::ptr::null::<u8>(),
                0,
            )
        };
        if ret < 0 && sys::errno() != libc::ESRCH {
            return Err(SandboxError::last_os("pidfd_send_signal"));
        }
        Ok(())
    }

    /// SIGKILLs the init; the kernel then kills every process in the sandbox's PID namespace.
    pub fn kill(&self) -> Result<(), SandboxError> {
        self.signal(libc::SIGKILL)
    }
}

/// The host pid behind a pidfd: the `Pid:` line of its fdinfo (in this process's pid namespace).
fn pidfd_pid(pidfd: &OwnedFd) -> Result<libc::pid_t, SandboxError> {
    let path = format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd());
    let info = fs::read_to_string(&path).map_err(|e| SandboxError::setup(format!("read {path}"), e))?;
    match info.lines().find_map(|l| l.strip_prefix("Pid:")).map(|v| v.trim().parse::<libc::pid_t>()) {
        Some(Ok(pid)) if pid > 0 => Ok(pid),
        _ => Err(SandboxError::Protocol(format!("no live pid in {path}"))),
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.kill();
            let _ = self.wait();
        }
    }
}
