//! The crate's error type and a printable errno.

use std::fmt;
use std::path::PathBuf;

/// An `errno` value that prints as its symbolic name, e.g. `EPERM (Operation not permitted)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// The symbolic name of this errno (`"EPERM"`), or `None` for values this crate does not name.
    pub fn name(self) -> Option<&'static str> {
        let name = match self.0 {
            libc::EPERM => "EPERM",
            libc::ENOENT => "ENOENT",
            libc::ESRCH => "ESRCH",
            libc::EINTR => "EINTR",
            libc::EIO => "EIO",
            libc::ENXIO => "ENXIO",
            libc::E2BIG => "E2BIG",
            libc::ENOEXEC => "ENOEXEC",
            libc::EBADF => "EBADF",
            libc::ECHILD => "ECHILD",
            libc::EAGAIN => "EAGAIN",
            libc::ENOMEM => "ENOMEM",
            libc::EACCES => "EACCES",
            libc::EFAULT => "EFAULT",
            libc::EBUSY => "EBUSY",
            libc::EEXIST => "EEXIST",
            libc::ENODEV => "ENODEV",
            libc::ENOTDIR => "ENOTDIR",
            libc::EISDIR => "EISDIR",
            libc::EINVAL => "EINVAL",
            libc::EMFILE => "EMFILE",
            libc::ETXTBSY => "ETXTBSY",
            libc::ENOSPC => "ENOSPC",
            libc::EROFS => "EROFS",
            libc::EPIPE => "EPIPE",
            libc::ENAMETOOLONG => "ENAMETOOLONG",
            libc::ENOSYS => "ENOSYS",
            libc::ELOOP => "ELOOP",
            libc::EOPNOTSUPP => "EOPNOTSUPP",
            libc::EAFNOSUPPORT => "EAFNOSUPPORT",
            libc::EADDRINUSE => "EADDRINUSE",
            libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
            libc::ENETUNREACH => "ENETUNREACH",
            libc::ECONNREFUSED => "ECONNREFUSED",
            libc::ETIMEDOUT => "ETIMEDOUT",
            _ => return None,
        };
        Some(name)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = std::io::Error::from_raw_os_error(self.0);
        // `io::Error` appends " (os error N)"; keep only the human text after the symbol.
        let text = text.to_string();
        let text = text.split(" (os error").next().unwrap_or("");
        match self.name() {
            Some(name) => write!(f, "{name} ({text})"),
            None => write!(f, "errno {} ({text})", self.0),
        }
    }
}

/// Everything that can make [`crate::launch`] or [`crate::cgroup::SessionCgroup`] fail.
///
/// A launch that fails leaves nothing running: the child is killed and reaped first.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The spec was rejected before anything was started.
    #[error("invalid launch spec: {field}: {reason}")]
    InvalidSpec {
        /// The offending `LaunchSpec` field.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// A step of the sandboxed child's setup failed; `step` names it, e.g. `mount /tmp`.
    #[error("{step}: {errno}")]
    Child {
        /// The child step that failed, with its path where one applies.
        step: String,
        /// The errno the kernel returned for it.
        errno: Errno,
    },
    /// A step the launching process itself performs failed.
    #[error("{step}: {source}")]
    Setup {
        /// What the parent was doing, e.g. `clone3` or `write resolv.conf`.
        step: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The child broke the launch protocol (died without a report, sent the wrong message, timed out).
    #[error("launch protocol: {0}")]
    Protocol(String),
    /// A cgroup operation failed.
    #[error("cgroup {op} {}: {source}", path.display())]
    Cgroup {
        /// The operation, e.g. `mkdir` or `write cgroup.kill`.
        op: &'static str,
        /// The cgroup file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl SandboxError {
    /// Builds a [`SandboxError::Setup`] from the last OS error.
    pub(crate) fn last_os(step: impl Into<String>) -> Self {
        SandboxError::Setup { step: step.into(), source: std::io::Error::last_os_error() }
    }

    /// Builds a [`SandboxError::Setup`] from an io error.
    pub(crate) fn setup(step: impl Into<String>, source: std::io::Error) -> Self {
        SandboxError::Setup { step: step.into(), source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_prints_symbol_and_text() {
        assert_eq!(Errno(libc::EPERM).to_string(), "EPERM (Operation not permitted)");
        assert!(Errno(4095).to_string().starts_with("errno 4095 ("));
    }

    #[test]
    fn child_error_reads_like_a_shell_message() {
        let e = SandboxError::Child { step: "mount /tmp".into(), errno: Errno(libc::EPERM) };
        assert_eq!(e.to_string(), "mount /tmp: EPERM (Operation not permitted)");
    }
}
