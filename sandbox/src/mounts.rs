//! The mount plan: which host paths the sandbox's private tmpfs hide, where each directory bind
//! lands, and which mount points the init must create inside those tmpfs.
//!
//! Binds whose source or target a private tmpfs would hide are "late": the init captures the
//! source with `open_tree` while the host's mounts are still visible, mounts the tmpfs, then
//! creates the mount point and attaches the captured tree. Everything here runs in the launcher
//! before the fork; the child only replays the plan.

use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::error::SandboxError;
use crate::spec::{BindDir, LaunchSpec, SANDBOX_STATE_DIR};

/// The sandbox's own `/tmp`, always a fresh tmpfs.
pub(crate) const PRIVATE_TMP: &str = "/tmp";

/// The sandbox's own `/run`, a fresh tmpfs when [`LaunchSpec::hide_run`] is set.
pub(crate) const PRIVATE_RUN: &str = "/run";

/// Kernel filesystems mounted fresh in the sandbox; nothing may be bound under them.
const KERNEL_FS: [&str; 2] = ["/proc", "/sys"];

/// Most `bind_dirs` one spec may carry; the init keeps their source fds in a fixed array. A
/// home rebuilt from the parts a policy allows takes one per part.
pub const MAX_BIND_DIRS: usize = 256;

/// Most late binds: the state dir, resolv.conf and every bind dir.
pub(crate) const MAX_LATE_BINDS: usize = MAX_BIND_DIRS + 2;

/// The sandbox-private tmpfs `path` lies in (or is), judged lexically.
pub(crate) fn private_root(path: &Path, hide_run: bool) -> Option<&'static str> {
    let roots: &[&'static str] = if hide_run { &[PRIVATE_TMP, PRIVATE_RUN] } else { &[PRIVATE_TMP] };
    roots.iter().copied().find(|root| path.starts_with(root))
}

/// Absolute and free of `..`, so the lexical checks below mean what they say.
pub(crate) fn is_clean_absolute(path: &Path) -> bool {
    path.is_absolute() && !path.components().any(|c| c == Component::ParentDir)
}

/// A bind attached after the private tmpfs are mounted, in plan order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LateBind {
    /// Host path, captured before any tmpfs covers it.
    pub source: PathBuf,
    /// Mount point inside the sandbox (symlinks already resolved).
    pub target: PathBuf,
    /// `false` remounts it read-only.
    pub writable: bool,
    /// `true` remounts it noexec.
    pub noexec: bool,
    /// Directories to create inside a private tmpfs before attaching, outermost first.
    pub mkdirs: Vec<PathBuf>,
    /// Create `target` as an empty file (a file bind whose mount point lies in a private tmpfs).
    pub create_file: bool,
    /// How errors name this bind.
    pub label: String,
}

/// A bind the plan is asked for, before mount points are worked out.
#[derive(Clone, Debug)]
pub(crate) struct Wanted {
    pub source: PathBuf,
    pub target: PathBuf,
    /// The source is a single file rather than a directory.
    pub file: bool,
    pub writable: bool,
    pub noexec: bool,
    pub label: String,
}

/// The directories between `root` (excluded) and `target` that must be created, outermost
/// first; `target` itself is left out for a file. Nothing at or below an earlier bind is
/// created: that would write through the bind into the host's directory.
pub(crate) fn dirs_to_create(target: &Path, root: &Path, file: bool, earlier: &[&Path]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = target
        .ancestors()
        .skip(usize::from(file))
        .take_while(|a| *a != root && a.starts_with(root))
        .filter(|a| !earlier.iter().any(|e| a.starts_with(e)))
        .map(Path::to_path_buf)
        .collect();
    dirs.reverse();
    dirs
}

/// Orders and completes the late binds. Fails when a bind would cover an earlier one, which
/// would silently hide it.
pub(crate) fn plan(wanted: Vec<Wanted>, hide_run: bool) -> Result<Vec<LateBind>, String> {
    let mut out: Vec<LateBind> = Vec::with_capacity(wanted.len());
    for w in wanted {
        if let Some(hidden) = out.iter().find(|e| e.target.starts_with(&w.target)) {
            return Err(format!("{} would hide the earlier mount {}", w.label, hidden.label));
        }
        let earlier: Vec<&Path> = out.iter().map(|e| e.target.as_path()).collect();
        let under_earlier = earlier.iter().any(|e| w.target.starts_with(e));
        let (mkdirs, create_file) = match private_root(&w.target, hide_run) {
            Some(root) => {
                (dirs_to_create(&w.target, Path::new(root), w.file, &earlier), w.file && !under_earlier)
            }
            None => (Vec::new(), false),
        };
        out.push(LateBind {
            source: w.source,
            target: w.target,
            writable: w.writable,
            noexec: w.noexec,
            mkdirs,
            create_file,
            label: w.label,
        });
    }
    Ok(out)
}

/// Why `target` may not receive a directory bind, if it may not.
fn forbidden_target(target: &Path) -> Option<String> {
    if let Some(fs) = KERNEL_FS.iter().find(|fs| target.starts_with(fs)) {
        return Some(format!("{} lies under {fs}", target.display()));
    }
    let state = Path::new(SANDBOX_STATE_DIR);
    if target.starts_with(state) || state.starts_with(target) {
        return Some(format!("{} overlaps the state dir mount {SANDBOX_STATE_DIR}", target.display()));
    }
    None
}

fn invalid_dir(index: usize, reason: String) -> SandboxError {
    SandboxError::InvalidSpec { field: "bind_dirs", reason: format!("[{index}] {reason}") }
}

/// Checks `bind_dirs[index]` against the host and returns its mount point inside the sandbox (the
/// path as given when it lies in a private tmpfs, else the host's canonical path: mount(2)
/// would follow the same symlinks inside, e.g. `/var/run` to `/run`), and whether it binds a
/// single file.
pub(crate) fn resolve_bind_dir(
    index: usize,
    d: &BindDir,
    hide_run: bool,
) -> Result<(PathBuf, bool), SandboxError> {
    for (name, path) in [("host", &d.host), ("sandbox", &d.sandbox)] {
        if !is_clean_absolute(path) {
            let reason = format!("{name} path {} must be absolute without `..`", path.display());
            return Err(invalid_dir(index, reason));
        }
    }
    let file = match fs::metadata(&d.host) {
        Ok(m) if m.is_dir() => false,
        Ok(m) if m.is_file() => true,
        Ok(_) => {
            let reason = format!("host path {} is neither a directory nor a regular file", d.host.display());
            return Err(invalid_dir(index, reason));
        }
        Err(e) => return Err(invalid_dir(index, format!("host path {}: {e}", d.host.display()))),
    };
    if let Some(reason) = forbidden_target(&d.sandbox) {
        return Err(invalid_dir(index, format!("sandbox path {reason}")));
    }
    if private_root(&d.sandbox, hide_run).is_some() {
        return Ok((d.sandbox.clone(), file));
    }
    let kind = if file { "regular file" } else { "directory" };
    let not_found = |e: std::io::Error| {
        let reason = format!(
            "sandbox path {} is outside the sandbox's private tmpfs, so it must be a {kind} on the host: {e}",
            d.sandbox.display()
        );
        invalid_dir(index, reason)
    };
    let resolved = fs::canonicalize(&d.sandbox).map_err(not_found)?;
    if (file && !resolved.is_file()) || (!file && !resolved.is_dir()) {
        return Err(not_found(std::io::Error::other(format!("not a {kind}"))));
    }
    if let Some(reason) = forbidden_target(&resolved) {
        let reason = format!("sandbox path {} resolves to {reason}", d.sandbox.display());
        return Err(invalid_dir(index, reason));
    }
    Ok((resolved, file))
}

/// Lexically removes `.` and `..` from an absolute path.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Where a bind over `path` really lands on the host. mount(2) follows symlinks, so with
/// systemd-resolved `/etc/resolv.conf` lands on `/run/systemd/resolve/stub-resolv.conf`, which
/// the private `/run` would hide. A dangling link (resolved not up yet) is followed one hop.
pub(crate) fn bind_landing(path: &Path) -> PathBuf {
    if let Ok(resolved) = fs::canonicalize(path) {
        return resolved;
    }
    match fs::read_link(path) {
        Ok(link) => normalize(&path.parent().unwrap_or(Path::new("/")).join(link)),
        Err(_) => path.to_path_buf(),
    }
}

/// The sandbox's mount view beyond the fixed tmpfs and kernel filesystems.
#[derive(Debug)]
pub(crate) struct MountView {
    /// Bind the resolv.conf copy over `/etc/resolv.conf` before any tmpfs is mounted; `false`
    /// when it lands in a private tmpfs and is one of `late` instead.
    pub resolv_early: bool,
    /// State dir, then resolv.conf when late, then `spec.bind_dirs` in order.
    pub late: Vec<LateBind>,
}

/// Validates `spec.bind_dirs` against the host and plans every late bind. `resolv_src` is the
/// host path of the resolv.conf copy; `resolv_landing` is [`bind_landing`] of `/etc/resolv.conf`.
pub(crate) fn view(
    spec: &LaunchSpec,
    resolv_src: &Path,
    resolv_landing: &Path,
) -> Result<MountView, SandboxError> {
    if spec.bind_dirs.len() > MAX_BIND_DIRS {
        let reason = format!("{} entries exceed the limit of {MAX_BIND_DIRS}", spec.bind_dirs.len());
        return Err(SandboxError::InvalidSpec { field: "bind_dirs", reason });
    }
    let mut wanted = vec![Wanted {
        source: spec.state_dir.clone(),
        target: PathBuf::from(SANDBOX_STATE_DIR),
        file: false,
        writable: false,
        noexec: true,
        label: format!("{SANDBOX_STATE_DIR} (state dir)"),
    }];
    let resolv_early = private_root(resolv_landing, spec.hide_run).is_none();
    if !resolv_early {
        wanted.push(Wanted {
            source: resolv_src.to_path_buf(),
            target: resolv_landing.to_path_buf(),
            file: true,
            writable: false,
            noexec: true,
            label: format!("{} (/etc/resolv.conf)", resolv_landing.display()),
        });
    }
    for (i, d) in spec.bind_dirs.iter().enumerate() {
        let (target, file) = resolve_bind_dir(i, d, spec.hide_run)?;
        let label = target.display().to_string();
        let (writable, noexec) = (d.writable, d.noexec);
        wanted.push(Wanted { source: d.host.clone(), target, file, writable, noexec, label });
    }
    let late = plan(wanted, spec.hide_run)
        .map_err(|reason| SandboxError::InvalidSpec { field: "bind_dirs", reason })?;
    Ok(MountView { resolv_early, late })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(target: &str, file: bool) -> Wanted {
        Wanted {
            source: PathBuf::from("/host"),
            target: PathBuf::from(target),
            file,
            writable: true,
            noexec: false,
            label: target.to_string(),
        }
    }

    fn paths(v: &[PathBuf]) -> Vec<&str> {
        v.iter().map(|p| p.to_str().unwrap()).collect()
    }

    #[test]
    fn private_roots_follow_hide_run() {
        assert_eq!(private_root(Path::new("/tmp/ws"), false), Some("/tmp"));
        assert_eq!(private_root(Path::new("/run/x"), true), Some("/run"));
        assert_eq!(private_root(Path::new("/run/x"), false), None);
        assert_eq!(private_root(Path::new("/tmpfoo"), true), None);
    }

    #[test]
    fn mount_points_are_created_below_the_tmpfs_root() {
        let d = dirs_to_create(Path::new("/tmp/a/ws"), Path::new("/tmp"), false, &[]);
        assert_eq!(paths(&d), ["/tmp/a", "/tmp/a/ws"]);
        assert!(dirs_to_create(Path::new("/tmp"), Path::new("/tmp"), false, &[]).is_empty());
    }

    #[test]
    fn a_file_mount_point_gets_its_parents_only() {
        let target = Path::new("/run/systemd/resolve/stub-resolv.conf");
        let d = dirs_to_create(target, Path::new("/run"), true, &[]);
        assert_eq!(paths(&d), ["/run/systemd", "/run/systemd/resolve"]);
    }

    #[test]
    fn nothing_is_created_through_an_earlier_bind() {
        let d =
            dirs_to_create(Path::new("/tmp/ws/cache/x"), Path::new("/tmp"), false, &[Path::new("/tmp/ws")]);
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn the_plan_keeps_order_and_marks_file_creation() {
        let p = plan(vec![wanted("/run/agentsh", false), wanted("/run/r/resolv.conf", true)], true).unwrap();
        assert_eq!(paths(&p[0].mkdirs), ["/run/agentsh"]);
        assert_eq!(paths(&p[1].mkdirs), ["/run/r"]);
        assert!(p[1].create_file && !p[0].create_file);
        // Without a private /run the mount points must already exist.
        let p = plan(vec![wanted("/run/agentsh", false)], false).unwrap();
        assert!(p[0].mkdirs.is_empty());
    }

    #[test]
    fn a_bind_that_would_hide_an_earlier_one_is_rejected() {
        let err = plan(vec![wanted("/tmp/ws/sub", false), wanted("/tmp/ws", false)], true).unwrap_err();
        assert_eq!(err, "/tmp/ws would hide the earlier mount /tmp/ws/sub");
        assert!(plan(vec![wanted("/tmp/ws", false), wanted("/tmp/ws", false)], true).is_err());
        assert!(plan(vec![wanted("/tmp/ws", false), wanted("/tmp/ws/sub", false)], true).is_ok());
    }

    #[test]
    fn forbidden_targets_are_named() {
        assert_eq!(forbidden_target(Path::new("/proc/1")).unwrap(), "/proc/1 lies under /proc");
        assert!(forbidden_target(Path::new("/sys")).is_some());
        assert!(forbidden_target(Path::new("/run/agentsh/x")).is_some());
        assert!(forbidden_target(Path::new("/run")).is_some());
        assert!(forbidden_target(Path::new("/")).is_some());
        assert!(forbidden_target(Path::new("/run/ws")).is_none());
        assert!(forbidden_target(Path::new("/processes")).is_none());
    }

    #[test]
    fn paths_with_dotdot_or_relative_are_unclean() {
        assert!(is_clean_absolute(Path::new("/tmp/ws")));
        assert!(!is_clean_absolute(Path::new("/tmp/../etc")));
        assert!(!is_clean_absolute(Path::new("tmp/ws")));
    }

    #[test]
    fn dangling_links_are_followed_lexically() {
        assert_eq!(normalize(Path::new("/etc/../run/./systemd/x")), PathBuf::from("/run/systemd/x"));
    }
}
