//! Turning a [`LaunchSpec`] into everything the child needs, allocated before the fork.
//!
//! The child runs between `clone3` and `execve` in a copy of a possibly multi-threaded process,
//! where another thread may have held the allocator lock; so every string, pointer array and the
//! BPF program is built here, and the child only reads them.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::SandboxError;
use crate::landlock_plan::PreparedLandlock;
use crate::mounts::{self, LateBind};
use crate::spec::{DEFAULT_PATH, LaunchSpec, SeccompListener};

/// Largest classic-BPF program the kernel accepts (`BPF_MAXINSNS`).
pub const MAX_BPF_INSNS: usize = 4096;

/// Size of one `struct sock_filter`.
pub const SOCK_FILTER_LEN: usize = 8;

/// The spec in the form the child consumes: C strings, NULL-terminated pointer arrays.
pub(crate) struct Prepared {
    _argv: Vec<CString>,
    pub argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    pub envp_ptrs: Vec<*const libc::c_char>,
    /// Absolute or cwd-relative paths to try, in order, for the executable.
    pub candidates: Vec<CString>,
    pub cwd: CString,
    pub hostname: Option<CString>,
    pub resolv_src: CString,
    /// Bind `resolv_src` over `/etc/resolv.conf` with the early binds; otherwise it is late.
    pub resolv_early: bool,
    pub binds: Vec<(CString, CString)>,
    /// Mount an empty tmpfs over `/run`.
    pub hide_run: bool,
    /// Captured before the tmpfs mounts, attached after them; at most `MAX_LATE_BINDS`.
    pub late_binds: Vec<PreparedBind>,
    /// How errors name each of `late_binds`.
    pub late_labels: Vec<String>,
    pub filter: Option<Vec<libc::sock_filter>>,
    /// The filter is installed with no listener, for a tracer ([`SeccompListener::Trace`]).
    pub traced: bool,
    /// The Landlock ruleset the command applies before the seccomp filter.
    pub landlock: Option<PreparedLandlock>,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub groups: Vec<libc::gid_t>,
    pub listeners: bool,
    /// Add `SANDBOX_SELF_V4`/`SANDBOX_SELF_V6` to `lo`.
    pub self_addresses: bool,
    /// The launcher's network namespace is kept: `lo` is not touched.
    pub host_network: bool,
}

/// A [`LateBind`] as C strings.
pub(crate) struct PreparedBind {
    pub source: CString,
    pub target: CString,
    pub mkdirs: Vec<CString>,
    pub create_file: bool,
    pub writable: bool,
    pub noexec: bool,
}

impl PreparedBind {
    fn new(b: &LateBind) -> Result<PreparedBind, SandboxError> {
        let c = |p: &Path| cstring("bind_dirs", p.as_os_str().as_bytes());
        Ok(PreparedBind {
            source: c(&b.source)?,
            target: c(&b.target)?,
            mkdirs: b.mkdirs.iter().map(|d| c(d)).collect::<Result<_, _>>()?,
            create_file: b.create_file,
            writable: b.writable,
            noexec: b.noexec,
        })
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> SandboxError {
    SandboxError::InvalidSpec { field, reason: reason.into() }
}

fn cstring(field: &'static str, bytes: &[u8]) -> Result<CString, SandboxError> {
    CString::new(bytes).map_err(|_| invalid(field, "contains a NUL byte"))
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect()
}

/// The `KEY=VALUE` strings of an environment, rejecting keys that `execve` cannot carry.
pub fn env_strings(env: &[(impl AsRef<OsStr>, impl AsRef<OsStr>)]) -> Result<Vec<CString>, SandboxError> {
    env.iter()
        .map(|(k, v)| {
            let k = k.as_ref().as_bytes();
            if k.is_empty() || k.contains(&b'=') {
                return Err(invalid("env", format!("bad variable name {:?}", String::from_utf8_lossy(k))));
            }
            let mut kv = Vec::with_capacity(k.len() + 1 + v.as_ref().len());
            kv.extend_from_slice(k);
            kv.push(b'=');
            kv.extend_from_slice(v.as_ref().as_bytes());
            cstring("env", &kv)
        })
        .collect()
}

/// The paths to try for `program`, like a shell's `PATH` search: a name containing `/` is used
/// as is; otherwise each non-empty `PATH` entry is joined with it (empty entries, which mean the
/// current directory, are skipped on purpose).
pub fn exec_candidates(program: &[u8], path_var: Option<&[u8]>) -> Vec<Vec<u8>> {
    if program.contains(&b'/') {
        return vec![program.to_vec()];
    }
    let path_var = path_var.unwrap_or(DEFAULT_PATH.as_bytes());
    path_var
        .split(|b| *b == b':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| {
            let mut p = dir.to_vec();
            if !p.ends_with(b"/") {
                p.push(b'/');
            }
            p.extend_from_slice(program);
            p
        })
        .collect()
}

/// Checks a raw seccomp program and converts it to `sock_filter`s: non-empty, a whole number of
/// 8-byte instructions, at most [`MAX_BPF_INSNS`], and ending in a `RET` so it cannot fall off.
pub fn check_program(bytes: &[u8]) -> Result<Vec<libc::sock_filter>, SandboxError> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(SOCK_FILTER_LEN) {
        return Err(invalid(
            "seccomp",
            format!("{} bytes is not a whole number of instructions", bytes.len()),
        ));
    }
    let n = bytes.len() / SOCK_FILTER_LEN;
    if n > MAX_BPF_INSNS {
        return Err(invalid("seccomp", format!("{n} instructions exceed the kernel limit {MAX_BPF_INSNS}")));
    }
    let prog: Vec<libc::sock_filter> = bytes
        .chunks_exact(SOCK_FILTER_LEN)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    // BPF_CLASS(code) == BPF_RET
    let last = prog[n - 1].code;
    if last & 0x07 != 0x06 {
        return Err(invalid("seccomp", "the last instruction is not a RET"));
    }
    Ok(prog)
}

fn check_bind_target(target: &Path, hide_run: bool) -> Result<(), SandboxError> {
    if !target.is_absolute() {
        return Err(invalid("bind_files", format!("{} is not absolute", target.display())));
    }
    // These are mounted over after the file binds, which would hide them.
    if let Some(root) = mounts::private_root(target, hide_run) {
        return Err(invalid("bind_files", format!("{} lies under {root}", target.display())));
    }
    for covered in ["/proc", "/sys"] {
        if target.starts_with(covered) {
            return Err(invalid("bind_files", format!("{} lies under {covered}", target.display())));
        }
    }
    Ok(())
}

impl Prepared {
    /// Validates `spec` and builds the child's view of it. `resolv_src` is the host path of the
    /// resolv.conf copy the parent wrote; `resolv_landing` is where a bind over the host's
    /// `/etc/resolv.conf` lands (see [`mounts::bind_landing`]). Checks `bind_dirs` against the
    /// host's filesystem.
    pub(crate) fn new(
        spec: &LaunchSpec,
        resolv_src: &Path,
        resolv_landing: &Path,
    ) -> Result<Prepared, SandboxError> {
        let Some(program) = spec.argv.first() else {
            return Err(invalid("argv", "is empty"));
        };
        if program.is_empty() {
            return Err(invalid("argv", "argv[0] is empty"));
        }
        let argv: Vec<CString> =
            spec.argv.iter().map(|a| cstring("argv", a.as_bytes())).collect::<Result<_, _>>()?;
        let envp = env_strings(&spec.env)?;
        let path_var = spec.env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_bytes());
        let candidates = exec_candidates(program.as_bytes(), path_var)
            .into_iter()
            .map(|c| cstring("argv", &c))
            .collect::<Result<Vec<_>, _>>()?;
        if candidates.is_empty() {
            return Err(invalid("env", "PATH has no entries"));
        }
        if !spec.cwd.is_absolute() {
            return Err(invalid("cwd", format!("{} is not absolute", spec.cwd.display())));
        }
        if !spec.state_dir.is_absolute() {
            return Err(invalid("state_dir", format!("{} is not absolute", spec.state_dir.display())));
        }
        let mut binds = Vec::with_capacity(spec.bind_files.len());
        for (host, inside) in &spec.bind_files {
            check_bind_target(inside, spec.hide_run)?;
            binds.push((
                cstring("bind_files", host.as_os_str().as_bytes())?,
                cstring("bind_files", inside.as_os_str().as_bytes())?,
            ));
        }
        if binds.len() > usize::from(u16::MAX) {
            return Err(invalid("bind_files", "too many entries"));
        }
        let hostname = match &spec.hostname {
            Some(h) if h.is_empty() || h.len() > 64 => {
                return Err(invalid("hostname", "must be 1 to 64 bytes"));
            }
            Some(h) => Some(cstring("hostname", h.as_bytes())?),
            None => None,
        };
        if spec.host_network && (spec.gateway_listeners || spec.self_addresses) {
            return Err(invalid(
                "host_network",
                "the launcher's network namespace cannot take gateway listeners or self addresses",
            ));
        }
        let filter = spec.seccomp.as_deref().map(check_program).transpose()?;
        let landlock = spec.landlock.as_ref().map(PreparedLandlock::new).transpose()?;
        let view = mounts::view(spec, resolv_src, resolv_landing)?;
        let late_binds = view.late.iter().map(PreparedBind::new).collect::<Result<Vec<_>, _>>()?;
        let argv_ptrs = null_terminated(&argv);
        let envp_ptrs = null_terminated(&envp);
        Ok(Prepared {
            _argv: argv,
            argv_ptrs,
            _envp: envp,
            envp_ptrs,
            candidates,
            cwd: cstring("cwd", spec.cwd.as_os_str().as_bytes())?,
            hostname,
            resolv_src: cstring("state_dir", resolv_src.as_os_str().as_bytes())?,
            resolv_early: view.resolv_early,
            binds,
            hide_run: spec.hide_run,
            late_binds,
            late_labels: view.late.into_iter().map(|b| b.label).collect(),
            filter,
            traced: spec.seccomp_listener == SeccompListener::Trace,
            landlock,
            uid: spec.uid,
            gid: spec.gid,
            groups: spec.groups.clone(),
            listeners: spec.gateway_listeners,
            self_addresses: spec.self_addresses,
            host_network: spec.host_network,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slash_names_are_not_searched() {
        assert_eq!(exec_candidates(b"./run.sh", Some(b"/bin")), vec![b"./run.sh".to_vec()]);
    }

    #[test]
    fn path_entries_are_joined_in_order_and_empty_ones_skipped() {
        let c = exec_candidates(b"sh", Some(b"/usr/bin::/bin/"));
        assert_eq!(c, vec![b"/usr/bin/sh".to_vec(), b"/bin/sh".to_vec()]);
    }

    #[test]
    fn missing_path_uses_the_default() {
        assert_eq!(exec_candidates(b"ls", None).len(), 3);
    }

    #[test]
    fn env_is_rendered_exactly() {
        let env = env_strings(&[("A", "1"), ("B", "x=y")]).unwrap();
        assert_eq!(env, vec![CString::new("A=1").unwrap(), CString::new("B=x=y").unwrap()]);
        assert!(env_strings(&[("A=B", "1")]).is_err());
        assert!(env_strings(&[("", "1")]).is_err());
    }

    #[test]
    fn allow_all_program_is_accepted() {
        // BPF_RET | BPF_K, SECCOMP_RET_ALLOW
        let mut insn = 0x06u16.to_ne_bytes().to_vec();
        insn.extend_from_slice(&[0, 0]);
        insn.extend_from_slice(&0x7fff_0000u32.to_ne_bytes());
        let prog = check_program(&insn).unwrap();
        assert_eq!(prog.len(), 1);
        assert_eq!(prog[0].k, 0x7fff_0000);
    }

    #[test]
    fn malformed_programs_are_rejected() {
        assert!(check_program(&[]).is_err());
        assert!(check_program(&[0; 7]).is_err());
        // BPF_LD as the last instruction could fall off the end.
        assert!(check_program(&[0; 8]).is_err());
        assert!(check_program(&vec![0; 8 * (MAX_BPF_INSNS + 1)]).is_err());
    }

    #[test]
    fn bind_targets_under_covered_mounts_are_rejected() {
        assert!(check_bind_target(Path::new("/tmp/x"), false).is_err());
        assert!(check_bind_target(Path::new("/proc/x"), false).is_err());
        assert!(check_bind_target(Path::new("relative"), false).is_err());
        assert!(check_bind_target(Path::new("/etc/ssl/certs/ca.pem"), true).is_ok());
        assert!(check_bind_target(Path::new("/run/x"), true).is_err());
        assert!(check_bind_target(Path::new("/run/x"), false).is_ok());
    }
}
