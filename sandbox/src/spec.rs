//! What a caller asks for: [`LaunchSpec`] and the stdio choices.

use std::ffi::OsString;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use crate::landlock_plan::LandlockPlan;

/// Where one of the command's standard streams comes from.
#[derive(Debug, Default)]
pub enum Stdio {
    /// The launcher's own descriptor with the same number.
    #[default]
    Inherit,
    /// `/dev/null`, opened read-write.
    Null,
    /// A descriptor the caller owns, e.g. the write end of a pipe it reads.
    ///
    /// The sandbox receives a duplicate; the caller should drop its copy of a pipe's write end
    /// after [`crate::launch`] returns, or it will never see end-of-file.
    Fd(OwnedFd),
}

/// Who answers the calls the command's seccomp filter traps, and so how the filter is installed
/// and what [`crate::Launched`] hands over for them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SeccompListener {
    /// A user-notify supervisor: the program's trapping RETs are `SECCOMP_RET_USER_NOTIF`, the
    /// command installs it with `SECCOMP_FILTER_FLAG_NEW_LISTENER`, and the parent takes the
    /// listener ([`crate::Launched::notify_fd`]).
    #[default]
    UserNotify,
    /// A ptrace tracer: the program's trapping RETs are `SECCOMP_RET_TRACE`, the command installs
    /// it with no listener, and the parent gets the command's host pid
    /// ([`crate::Launched::command_pid`]) for the tracer to seize before
    /// [`crate::Launched::resume`]. Until a tracer is attached every trapped call fails with
    /// ENOSYS, so nothing escapes if none ever is.
    Trace,
}

/// A host directory (or regular file) bind-mounted into the sandbox, e.g. the session workspace.
///
/// [`crate::launch`] rejects it unless both paths are absolute without `..`, `host` is an
/// existing directory or regular file, and `sandbox` lies outside `/proc`, `/sys` and
/// `/run/agentsh`. A `sandbox` path inside a sandbox-private tmpfs (`/tmp`, or `/run` when
/// hidden) is created there as needed; any other must already be of the same kind on the host. The bind is not recursive (mounts
/// below `host` are not carried over) and is always `nosuid,nodev`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindDir {
    /// The directory (or regular file) on the host.
    pub host: PathBuf,
    /// Where it appears inside the sandbox.
    pub sandbox: PathBuf,
    /// `false` remounts the bind read-only, which holds even for uid 0 inside.
    pub writable: bool,
    /// `true` remounts the bind `noexec`: nothing on it can be executed or mapped executable,
    /// for uid 0 inside too.
    pub noexec: bool,
}

/// Everything needed to start one command in a fresh sandbox.
///
/// Build it with [`LaunchSpec::new`] and set fields directly; [`crate::launch`] validates it.
#[derive(Debug)]
pub struct LaunchSpec {
    /// The command and its arguments; `argv[0]` is looked up on the `PATH` from `env` unless it
    /// contains a `/`.
    pub argv: Vec<OsString>,
    /// The command's complete environment; nothing of the launcher's leaks in.
    pub env: Vec<(OsString, OsString)>,
    /// Working directory inside the sandbox (entered after the uid change, so it must be
    /// reachable by `uid`).
    pub cwd: PathBuf,
    /// User the command runs as.
    pub uid: u32,
    /// Primary group the command runs as.
    pub gid: u32,
    /// Supplementary groups; empty means none.
    pub groups: Vec<u32>,
    /// Session state dir on the host, bind-mounted read-only at `/run/agentsh`.
    pub state_dir: PathBuf,
    /// Text of the sandbox's `/etc/resolv.conf`; written to `<state_dir>/resolv.conf` and
    /// bind-mounted read-only over `/etc/resolv.conf`. When the host's `/etc/resolv.conf` is a
    /// symlink into a private tmpfs (systemd-resolved's link into `/run`), the copy is bound at
    /// the link's target inside that tmpfs instead, so the link still leads to it.
    pub resolv_conf: String,
    /// Extra read-only bind mounts of single files: `(host_path, sandbox_path)`. The sandbox path
    /// must already exist on the host and must not lie under `/tmp`, `/proc` or `/sys` (nor
    /// `/run` when [`LaunchSpec::hide_run`] is set).
    pub bind_files: Vec<(PathBuf, PathBuf)>,
    /// Directory bind mounts, applied in order after the private `/tmp` and `/run` are mounted,
    /// so a host directory under `/tmp` can appear at the same path inside. See [`BindDir`].
    pub bind_dirs: Vec<BindDir>,
    /// Mount a fresh, empty tmpfs over `/run` (and so `/var/run`) before the state dir is bound
    /// at `/run/agentsh`, so no host socket under `/run` is reachable from the sandbox.
    pub hide_run: bool,
    /// cgroup v2 directory the sandbox starts in (via `clone3(CLONE_INTO_CGROUP)`), normally
    /// [`crate::cgroup::SessionCgroup::path`]; `None` leaves it in the launcher's cgroup.
    pub cgroup: Option<PathBuf>,
    /// Raw classic-BPF program (an array of `struct sock_filter`, 8 bytes each) installed last
    /// before `execve`, as [`Self::seccomp_listener`] says: with a user-notify listener handed to
    /// the parent, or with none, for a tracer.
    pub seccomp: Option<Vec<u8>>,
    /// Who answers the filter's trapped calls (user-notify by default); ignored without
    /// [`Self::seccomp`]. The program must trap with the matching action.
    pub seccomp_listener: SeccompListener,
    /// Landlock ruleset applied by the command just before the seccomp filter and `execve`, at
    /// the best ABI the kernel offers ([`crate::Launched::landlock_abi`] says which). `None`
    /// (the default) applies none; `Some` on a kernel without Landlock fails the launch.
    pub landlock: Option<LandlockPlan>,
    /// Create TCP listeners on `127.0.0.1:0` and `[::1]:0` inside the sandbox's network namespace
    /// and hand them to the parent (the session gateway's listeners).
    pub gateway_listeners: bool,
    /// Stay in the launcher's network namespace instead of a new one (the eBPF redirect backend,
    /// whose programs on the session cgroup do what the private namespace does otherwise).
    /// Every other namespace is still new. Incompatible with [`Self::gateway_listeners`] and
    /// [`Self::self_addresses`], which configure a private namespace.
    pub host_network: bool,
    /// Give `lo` two more addresses, [`SANDBOX_SELF_V4`] (as the alias `lo:agentsh`) and
    /// [`SANDBOX_SELF_V6`], so that `getaddrinfo` with `AI_ADDRCONFIG` finds a configured
    /// address of each family and resolves names (even `localhost`) at all. Default `true`.
    pub self_addresses: bool,
    /// Hostname inside the new UTS namespace; `None` keeps a copy of the host's.
    pub hostname: Option<String>,
    /// The command's standard input.
    pub stdin: Stdio,
    /// The command's standard output.
    pub stdout: Stdio,
    /// The command's standard error.
    pub stderr: Stdio,
}

impl LaunchSpec {
    /// A spec for `argv` with conservative defaults: uid/gid 65534 (nobody), no groups, cwd `/`,
    /// `PATH=/usr/local/bin:/usr/bin:/bin` only, an empty resolv.conf, no extra binds, `/run`
    /// hidden, no cgroup, no seccomp, no Landlock, no listeners, a private network namespace with the
    /// self addresses on `lo`, inherited stdio.
    pub fn new<I, S>(argv: I, state_dir: impl Into<PathBuf>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        LaunchSpec {
            argv: argv.into_iter().map(Into::into).collect(),
            env: vec![("PATH".into(), DEFAULT_PATH.into())],
            cwd: PathBuf::from("/"),
            uid: 65534,
            gid: 65534,
            groups: Vec::new(),
            state_dir: state_dir.into(),
            resolv_conf: String::new(),
            bind_files: Vec::new(),
            bind_dirs: Vec::new(),
            hide_run: true,
            cgroup: None,
            seccomp: None,
            seccomp_listener: SeccompListener::UserNotify,
            landlock: None,
            gateway_listeners: false,
            host_network: false,
            self_addresses: true,
            hostname: None,
            stdin: Stdio::Inherit,
            stdout: Stdio::Inherit,
            stderr: Stdio::Inherit,
        }
    }
}

/// `PATH` used when the spec's environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Where the session state dir appears inside the sandbox.
pub const SANDBOX_STATE_DIR: &str = "/run/agentsh";

/// The sandbox's own IPv4 address, on `lo` (label `lo:agentsh`) next to 127.0.0.1, when
/// [`LaunchSpec::self_addresses`] is set.
///
/// Why it exists: glibc's `getaddrinfo` with `AI_ADDRCONFIG` (used by `getent ahosts`, many
/// runtimes and libraries) returns IPv4 results only when some interface has an IPv4 address
/// other than a loopback one, and with only `lo` it answers `EAI_NONAME` even for `localhost`.
/// This address makes it see one. It is link-local (169.254.0.0/16), a /32 on `lo` and so never
/// routed anywhere: a connection to it stays inside the sandbox's network namespace, and the
/// gateway lets it through there instead of redirecting it.
pub const SANDBOX_SELF_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 255, 254);

/// The sandbox's own IPv6 address, on `lo` as a /128 next to `::1`, when
/// [`LaunchSpec::self_addresses`] is set.
///
/// The IPv6 counterpart of [`SANDBOX_SELF_V4`]: `AI_ADDRCONFIG` ignores `::1` and link-local
/// addresses, so this is a unique local address (fd00::/8, ULA), which is never routed on the
/// internet and here has no route beyond `lo` either.
pub const SANDBOX_SELF_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0x5e55, 0xffff, 0, 0, 0, 0xfffe);
