//! The child's failure report: which setup step failed and with what errno.
//!
//! The child writes one fixed-size record on a `O_CLOEXEC` pipe and exits; a successful `execve`
//! closes the pipe instead, so the parent reads either exactly one record or end-of-file. The
//! record is 8 bytes (below `PIPE_BUF`, so the write is atomic) and is built on the stack:
//! the child must not allocate between fork and exec.

/// One step of the child's setup sequence, in the order the child runs them.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Closing descriptors inherited from the launcher that the sandbox must not hold.
    CloseFds = 1,
    /// Making the init non-dumpable so the command cannot ptrace or read it.
    NotDumpable,
    /// `mount --make-rprivate /`.
    MountPrivate,
    /// `sethostname` in the new UTS namespace.
    Hostname,
    /// Capturing the source of a late bind (state dir, resolv.conf or a bind dir) with
    /// `open_tree` before any tmpfs hides it (the record's index says which).
    OpenBindSource,
    /// Bind-mounting the resolv.conf copy at `/etc/resolv.conf`.
    BindResolvConf,
    /// Bind-mounting one of `spec.bind_files` (the record's index says which).
    BindFile,
    /// Mounting a fresh procfs on `/proc`.
    MountProc,
    /// Mounting a fresh sysfs on `/sys` (it shows the mounter's network namespace).
    MountSys,
    /// Mounting a private tmpfs on `/tmp`.
    MountTmp,
    /// Mounting an empty tmpfs over `/run`.
    MountRun,
    /// Creating a late bind's mount point inside a private tmpfs.
    MakeMountPoint,
    /// Attaching a captured late bind at its mount point.
    AttachBind,
    /// Setting a late bind's nosuid, nodev and read-only flags.
    RemountBind,
    /// Setting `IFF_UP` on `lo`.
    LoopbackUp,
    /// Adding `SANDBOX_SELF_V4` to `lo` as the alias `lo:agentsh` (`SIOCSIFADDR`).
    SelfAddress4,
    /// Narrowing `lo:agentsh` to a /32 (`SIOCSIFNETMASK`).
    SelfNetmask4,
    /// Setting `IFF_UP` through `lo:agentsh`.
    SelfAliasUp,
    /// Looking up `lo`'s interface index for the IPv6 address (`SIOCGIFINDEX`).
    SelfIndex6,
    /// Adding `SANDBOX_SELF_V6/128` to `lo` (`SIOCSIFADDR` on an `AF_INET6` socket).
    SelfAddress6,
    /// Creating the 127.0.0.1:0 gateway listener.
    Listener4,
    /// Creating the `[::1]:0` gateway listener.
    Listener6,
    /// Sending the listeners to the parent.
    SendListeners,
    /// Blocking signals in the init so none is lost before it waits for them.
    BlockSignals,
    /// Forking the command process from the init.
    ForkCommand,
    /// Restoring default signal dispositions and an empty mask for the command.
    ResetSignals,
    /// Installing the command's stdin, stdout and stderr.
    Stdio,
    /// Marking every other inherited descriptor close-on-exec.
    CloseExtraFds,
    /// Locking the securebits so uid 0 gains no capabilities at exec.
    SecureBits,
    /// Emptying the capability bounding set.
    DropBounding,
    /// Clearing the ambient capability set.
    ClearAmbient,
    /// `setgroups` to `spec.groups`.
    SetGroups,
    /// `setresgid` to `spec.gid`.
    SetGid,
    /// `setresuid` to `spec.uid`.
    SetUid,
    /// Emptying the effective, permitted and inheritable capability sets.
    DropCaps,
    /// `chdir` to `spec.cwd`.
    Chdir,
    /// `PR_SET_NO_NEW_PRIVS`.
    NoNewPrivs,
    /// Finding the executable on `PATH`.
    ResolveExecutable,
    /// Opening a pidfd of the command itself, for the parent to take the notify fd with.
    OpenPidfd,
    /// Sending that pidfd to the parent (before the filter, which traps `sendmsg`).
    SendPidfd,
    /// Installing the seccomp filter, with a user-notify listener unless a tracer takes its calls.
    InstallSeccomp,
    /// Telling the parent the notify fd's number (with `write`, which the filter lets through).
    SendNotifyFd,
    /// Waiting for the parent's go-ahead after it started supervising.
    WaitAck,
    /// `execve` itself.
    Exec,
    /// Building and applying the Landlock ruleset (the record's index names the path).
    Landlock,
    /// Telling the parent the filter is installed, for a tracer to seize the command (with
    /// `write`, as for the notify fd's number).
    SendTraceable,
}

impl Step {
    const ALL: [Step; 46] = [
        Step::CloseFds,
        Step::NotDumpable,
        Step::MountPrivate,
        Step::Hostname,
        Step::OpenBindSource,
        Step::BindResolvConf,
        Step::BindFile,
        Step::MountProc,
        Step::MountSys,
        Step::MountTmp,
        Step::MountRun,
        Step::MakeMountPoint,
        Step::AttachBind,
        Step::RemountBind,
        Step::LoopbackUp,
        Step::SelfAddress4,
        Step::SelfNetmask4,
        Step::SelfAliasUp,
        Step::SelfIndex6,
        Step::SelfAddress6,
        Step::Listener4,
        Step::Listener6,
        Step::SendListeners,
        Step::BlockSignals,
        Step::ForkCommand,
        Step::ResetSignals,
        Step::Stdio,
        Step::CloseExtraFds,
        Step::SecureBits,
        Step::DropBounding,
        Step::ClearAmbient,
        Step::SetGroups,
        Step::SetGid,
        Step::SetUid,
        Step::DropCaps,
        Step::Chdir,
        Step::NoNewPrivs,
        Step::ResolveExecutable,
        Step::OpenPidfd,
        Step::SendPidfd,
        Step::InstallSeccomp,
        Step::SendNotifyFd,
        Step::WaitAck,
        Step::Exec,
        Step::Landlock,
        Step::SendTraceable,
    ];

    /// The step's wire code.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The step for a wire code, if the code is known.
    pub fn from_code(code: u16) -> Option<Step> {
        Step::ALL.iter().copied().find(|s| s.code() == code)
    }

    /// A short description used in error messages; paths are appended by the caller.
    pub fn label(self) -> &'static str {
        match self {
            Step::CloseFds => "close inherited fds",
            Step::NotDumpable => "make init non-dumpable",
            Step::MountPrivate => "make / rprivate",
            Step::Hostname => "sethostname",
            Step::OpenBindSource => "open bind source for",
            Step::BindResolvConf => "bind /etc/resolv.conf",
            Step::BindFile => "bind file",
            Step::MountProc => "mount /proc",
            Step::MountSys => "mount /sys",
            Step::MountTmp => "mount /tmp",
            Step::MountRun => "mount /run",
            Step::MakeMountPoint => "create mount point",
            Step::AttachBind => "attach bind",
            Step::RemountBind => "remount bind",
            Step::LoopbackUp => "bring up lo",
            Step::SelfAddress4 => "add 169.254.255.254 to lo as lo:agentsh (SIOCSIFADDR)",
            Step::SelfNetmask4 => "set the netmask of lo:agentsh to 255.255.255.255 (SIOCSIFNETMASK)",
            Step::SelfAliasUp => "bring up lo:agentsh (SIOCSIFFLAGS)",
            Step::SelfIndex6 => "get the interface index of lo (SIOCGIFINDEX)",
            Step::SelfAddress6 => "add fd00:0:5e55:ffff::fffe/128 to lo (SIOCSIFADDR, AF_INET6)",
            Step::Listener4 => "listen 127.0.0.1:0",
            Step::Listener6 => "listen [::1]:0",
            Step::SendListeners => "send listeners",
            Step::BlockSignals => "block signals in init",
            Step::ForkCommand => "fork command",
            Step::ResetSignals => "reset signals",
            Step::Stdio => "set up stdio",
            Step::CloseExtraFds => "mark fds close-on-exec",
            Step::SecureBits => "set securebits",
            Step::DropBounding => "drop bounding set",
            Step::ClearAmbient => "clear ambient capabilities",
            Step::SetGroups => "setgroups",
            Step::SetGid => "setresgid",
            Step::SetUid => "setresuid",
            Step::DropCaps => "capset",
            Step::Chdir => "chdir",
            Step::NoNewPrivs => "set no_new_privs",
            Step::ResolveExecutable => "find executable",
            Step::OpenPidfd => "open the command's pidfd",
            Step::SendPidfd => "send the command's pidfd",
            Step::InstallSeccomp => "install seccomp filter",
            Step::SendNotifyFd => "send notify fd number",
            Step::SendTraceable => "report the filter installed for the tracer",
            Step::WaitAck => "wait for supervisor ack",
            Step::Exec => "execve",
            Step::Landlock => "landlock",
        }
    }
}

/// A decoded child failure: step, an index for per-item steps (bind files, late binds), and the
/// errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    /// The step that failed.
    pub step: Step,
    /// Which item of a list the step was working on (0 when the step has no list).
    pub index: u16,
    /// The errno the step failed with.
    pub errno: i32,
}

/// Size in bytes of one encoded [`Report`].
pub const REPORT_LEN: usize = 8;

impl Report {
    /// Encodes the report on the stack (little-endian step, index, errno).
    pub fn encode(self) -> [u8; REPORT_LEN] {
        let mut out = [0u8; REPORT_LEN];
        out[0..2].copy_from_slice(&self.step.code().to_le_bytes());
        out[2..4].copy_from_slice(&self.index.to_le_bytes());
        out[4..8].copy_from_slice(&self.errno.to_le_bytes());
        out
    }

    /// Decodes a report; `None` when the step code is unknown.
    pub fn decode(buf: &[u8; REPORT_LEN]) -> Option<Report> {
        let step = Step::from_code(u16::from_le_bytes([buf[0], buf[1]]))?;
        let index = u16::from_le_bytes([buf[2], buf[3]]);
        let errno = i32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
        Some(Report { step, index, errno })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_round_trips() {
        for step in Step::ALL {
            let r = Report { step, index: 7, errno: libc::EPERM };
            assert_eq!(Report::decode(&r.encode()), Some(r));
        }
    }

    #[test]
    fn codes_are_dense_and_unique() {
        for (i, step) in Step::ALL.iter().enumerate() {
            assert_eq!(usize::from(step.code()), i + 1);
        }
    }

    #[test]
    fn self_address_labels_name_the_addresses() {
        use crate::spec::{SANDBOX_SELF_V4, SANDBOX_SELF_V6};
        assert!(Step::SelfAddress4.label().contains(&SANDBOX_SELF_V4.to_string()));
        assert!(Step::SelfAddress6.label().contains(&SANDBOX_SELF_V6.to_string()));
    }

    #[test]
    fn unknown_code_is_rejected() {
        let mut buf = Report { step: Step::Exec, index: 0, errno: 1 }.encode();
        buf[0] = 0xff;
        buf[1] = 0xff;
        assert_eq!(Report::decode(&buf), None);
    }
}
