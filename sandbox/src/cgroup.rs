//! Per-session cgroups on the cgroup v2 (unified) hierarchy.
//!
//! A session's processes live in `<v2 root>/agentsh/<session-id>`. On a hybrid host the v2
//! hierarchy is at `/sys/fs/cgroup/unified` and carries no controllers; it is used for
//! membership (who belongs to the session, for SO_PEERCRED checks), `cgroup.kill`, and as the
//! `CLONE_INTO_CGROUP` target of [`crate::launch`]. Resource limits are not set here.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::SandboxError;

/// Name of the directory under the v2 root that holds all session cgroups.
pub const PARENT_DIR: &str = "agentsh";

/// Checks a session id against `^[a-zA-Z0-9][a-zA-Z0-9_-]{0,127}$`, so it is a safe single path
/// component.
pub fn validate_session_id(id: &str) -> Result<(), SandboxError> {
    let bytes = id.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 128
        && bytes[0].is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-');
    if ok {
        Ok(())
    } else {
        Err(SandboxError::InvalidSpec {
            field: "session id",
            reason: format!("{id:?} is not a valid session id"),
        })
    }
}

/// Finds the cgroup2 mount point in `/proc/self/mountinfo` text; the first one wins.
pub fn find_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // Fields: id parent major:minor root mount-point options [optional...] - fstype source
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        if fstype != "cgroup2" {
            return None;
        }
        let mount_point = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mountinfo(mount_point)))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space and so on).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The v2 cgroup path (`/agentsh/<id>`) in `/proc/<pid>/cgroup` text: the `0::` line.
pub fn v2_path_of(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

/// The cgroup v2 root of this host (`/sys/fs/cgroup/unified` on hybrid hosts).
pub fn unified_root() -> Result<PathBuf, SandboxError> {
    let path = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(path).map_err(|source| SandboxError::Cgroup {
        op: "read",
        path: path.into(),
        source,
    })?;
    find_cgroup2_mount(&text).ok_or_else(|| SandboxError::Cgroup {
        op: "find",
        path: path.into(),
        source: io::Error::new(io::ErrorKind::NotFound, "no cgroup2 mount"),
    })
}

/// One session's cgroup directory. Creating it is the caller's; so is removing it.
#[derive(Debug)]
pub struct SessionCgroup {
    path: PathBuf,
}

fn cg_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SandboxError + 'a {
    move |source| SandboxError::Cgroup { op, path: path.to_path_buf(), source }
}

impl SessionCgroup {
    /// Creates `<v2 root>/agentsh/<id>`; an existing cgroup of that id is an error (a session
    /// must not inherit another's processes).
    pub fn create(id: &str) -> Result<SessionCgroup, SandboxError> {
        SessionCgroup::create_in(&unified_root()?.join(PARENT_DIR), id)
    }

    /// Creates `<parent>/<id>`, creating `parent` if needed.
    pub fn create_in(parent: &Path, id: &str) -> Result<SessionCgroup, SandboxError> {
        validate_session_id(id)?;
        fs::create_dir_all(parent).map_err(cg_err("mkdir", parent))?;
        let path = parent.join(id);
        fs::create_dir(&path).map_err(cg_err("mkdir", &path))?;
        Ok(SessionCgroup { path })
    }

    /// The cgroup's directory (pass it as `LaunchSpec::cgroup`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Host pids of the processes in this cgroup (not its descendants).
    pub fn procs(&self) -> Result<Vec<libc::pid_t>, SandboxError> {
        let file = self.path.join("cgroup.procs");
        let text = fs::read_to_string(&file).map_err(cg_err("read", &file))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Whether any process is in this cgroup or below, from `cgroup.events`.
    pub fn populated(&self) -> Result<bool, SandboxError> {
        let file = self.path.join("cgroup.events");
        let text = fs::read_to_string(&file).map_err(cg_err("read", &file))?;
        Ok(text.lines().any(|l| l.trim() == "populated 1"))
    }

    /// Whether `pid` is in this cgroup or below it, from `/proc/<pid>/cgroup` as seen from the
    /// caller's cgroup namespace (the host's, for the gateway): used to check that a Unix-socket
    /// peer (SO_PEERCRED) belongs to this session.
    pub fn contains(&self, pid: libc::pid_t) -> Result<bool, SandboxError> {
        let root = unified_root()?;
        let Ok(rel) = self.path.strip_prefix(&root) else {
            return Ok(false);
        };
        let file = PathBuf::from(format!("/proc/{pid}/cgroup"));
        let text = fs::read_to_string(&file).map_err(cg_err("read", &file))?;
        let Some(theirs) = v2_path_of(&text) else { return Ok(false) };
        Ok(Path::new(theirs).strip_prefix("/").is_ok_and(|p| p.starts_with(rel)))
    }

    /// Moves `pid` into this cgroup (for processes not started by [`crate::launch`]).
    pub fn add_pid(&self, pid: libc::pid_t) -> Result<(), SandboxError> {
        let file = self.path.join("cgroup.procs");
        fs::write(&file, pid.to_string()).map_err(cg_err("write", &file))
    }

    /// SIGKILLs every process in the cgroup: `cgroup.kill` (kernel 5.14), or else repeated
    /// passes over `cgroup.procs` until it is empty (forks racing the pass are caught by the
    /// next one).
    pub fn kill_all(&self) -> Result<(), SandboxError> {
        let kill_file = self.path.join("cgroup.kill");
        match fs::write(&kill_file, "1") {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(cg_err("write", &kill_file)(e)),
        }
        for _ in 0..100 {
            let pids = self.procs()?;
            if pids.is_empty() {
                return Ok(());
            }
            for pid in pids {
                // SAFETY: kill takes plain values; a pid that is gone yields ESRCH, ignored.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(SandboxError::Cgroup {
            op: "kill",
            path: self.path.clone(),
            source: io::Error::other("processes kept appearing"),
        })
    }

    /// Polls `cgroup.events` until the cgroup is empty; `false` on timeout.
    pub fn wait_empty(&self, timeout: Duration) -> Result<bool, SandboxError> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.populated()? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Removes the (empty) cgroup directory and the cgroups below it (a command's own, under
    /// the eBPF backend), deepest first; fails with `EBUSY` while processes remain.
    pub fn remove(self) -> Result<(), SandboxError> {
        remove_tree(&self.path)
    }
}

/// `rmdir` of `dir` after every cgroup below it. A cgroup directory holds only the kernel's
/// files, which go with it, so only subdirectories are walked.
fn remove_tree(dir: &Path) -> Result<(), SandboxError> {
    let entries = fs::read_dir(dir).map_err(cg_err("read", dir))?;
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    // A task killed a moment ago may still be leaving (EBUSY) after `populated` went to 0.
    for _ in 0..100 {
        match fs::remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => std::thread::sleep(Duration::from_millis(10)),
            done => return done.map_err(cg_err("rmdir", dir)),
        }
    }
    fs::remove_dir(dir).map_err(cg_err("rmdir", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_single_safe_components() {
        assert!(validate_session_id("session-1_a").is_ok());
        assert!(validate_session_id("").is_err());
        assert!(validate_session_id("-x").is_err());
        assert!(validate_session_id("../etc").is_err());
        assert!(validate_session_id("a/b").is_err());
        assert!(validate_session_id(&"a".repeat(129)).is_err());
        assert!(validate_session_id(&"a".repeat(128)).is_ok());
    }

    #[test]
    fn hybrid_mountinfo_yields_the_unified_mount() {
        let text = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
        assert_eq!(find_cgroup2_mount(text), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(find_cgroup2_mount("1 0 0:1 / / rw - ext4 /dev/sda rw\n"), None);
    }

    #[test]
    fn the_v2_line_is_picked_from_a_hybrid_listing() {
        let text = "9:name=systemd:/\n4:memory:/x\n0::/agentsh/s1\n";
        assert_eq!(v2_path_of(text), Some("/agentsh/s1"));
        assert_eq!(v2_path_of("4:memory:/x\n"), None);
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/x\"), r"/x\");
    }
}
