//! A home a command can create in. Landlock cannot grant a directory without granting all
//! below it, so a home the policy's `file_rules` deny in part (the default policy's `~/.ssh`,
//! `~/.aws`, …) is split into its other parts and has no grant of its own: nothing could be
//! created directly in it (`~/.npm`, `~/.cache`, `git config --global`'s lock file).
//!
//! Instead the sandbox sees, at `HOME`, a directory of the session's own with every part of the
//! real home the plan grants bound back on top of it (read-only where the plan grants no
//! write). Denied parts are not there at all; what a command creates directly in the home, or
//! in a split directory below it, lands in the session's directory: it lasts as long as the
//! session and never reaches the real home. Landlock then grants `HOME` whole: the mounts
//! carry the rules.
//!
//! The session's directory is writable by the command, so the daemon only ever touches it
//! through descriptors, never following a link the command may have left there.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use nix::{
    errno::Errno,
    fcntl::{OFlag, openat, readlinkat},
    sys::stat::{Mode, mkdirat},
    unistd::{Gid, Uid, UnlinkatFlags, fchown, symlinkat, unlinkat},
};
use policies::engine::file::{FileOp, FileRules, Subtree};
use sandbox::{
    BindDir,
    landlock_plan::{LandlockAccess, LandlockPath, LandlockPlan},
};

/// The home as the sandbox sees it: binds in mount order (the session's directory first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeView {
    pub binds: Vec<BindDir>,
}

/// Rewrites `plan` to grant `home` whole and returns the binds that build the view in
/// `view_dir` (made and owned by `owner`), when the plan split the home. `None` (the plan
/// untouched) when it did not: the home is granted whole, not at all, or lies in the
/// workspace; or when a part is granted as a device directory (read and write existing
/// files, create nothing), which a bind cannot express. A part granted without execution is
/// bound `noexec`: stricter than Landlock, which refuses `execve` there but not an executable
/// mapping.
/// Symbolic links in the split directories that no rule names are made again in the view
/// (`rules`: the session's, with the caller's `${HOME}`).
pub fn build(
    plan: &mut LandlockPlan,
    home: &Path,
    workspace: &Path,
    view_dir: &Path,
    owner: (u32, u32),
    rules: &FileRules,
) -> anyhow::Result<Option<HomeView>> {
    let Some(parts) = parts(plan, home, workspace) else { return Ok(None) };
    std::fs::create_dir_all(view_dir).with_context(|| format!("creating {}", view_dir.display()))?;
    let root = open_dir(view_dir)?;
    own(&root, owner)?;
    let mut binds = vec![BindDir {
        host: view_dir.to_path_buf(),
        sandbox: home.to_path_buf(),
        writable: true,
        noexec: false,
    }];
    let mut points: Vec<(PathBuf, bool)> = parts.iter().map(|p| (p.path.clone(), p.path.is_dir())).collect();
    if workspace.starts_with(home) && workspace != home {
        // The workspace is bound after the view, onto a mount point in it.
        points.push((workspace.to_path_buf(), true));
    }
    for (path, dir) in &points {
        let rel = path.strip_prefix(home).context("a part outside the home")?;
        mount_point(&root, rel, *dir, owner).with_context(|| {
            format!("making the mount point of {} in {}", path.display(), view_dir.display())
        })?;
    }
    // The directories the view has of its own: those the plan split (the home among them, and
    // one with nothing granted in it is still there, empty) and those leading to a mount
    // point; not a part holding the workspace, which is bound whole.
    let split: BTreeSet<PathBuf> = points
        .iter()
        .flat_map(|(p, _)| p.ancestors().skip(1).take_while(|a| a.starts_with(home)).map(Path::to_path_buf))
        .chain(plan.split.iter().filter(|d| d.starts_with(home) && !d.starts_with(workspace)).cloned())
        .filter(|d| !parts.iter().any(|p| d.starts_with(&p.path)))
        .collect();
    for dir in &split {
        links(&root, home, dir, rules, owner)
            .with_context(|| format!("making the links of {} in {}", dir.display(), view_dir.display()))?;
    }
    for p in &parts {
        let writable = matches!(p.access, LandlockAccess::ReadWrite | LandlockAccess::ReadWriteExec);
        let noexec = matches!(p.access, LandlockAccess::Read | LandlockAccess::ReadWrite);
        binds.push(BindDir { host: p.path.clone(), sandbox: p.path.clone(), writable, noexec });
    }
    plan.paths.retain(|p| !p.path.starts_with(home) || p.path.starts_with(workspace));
    plan.paths.push(LandlockPath {
        path: home.to_path_buf(),
        access: LandlockAccess::ReadWriteExec,
        required: true,
        split: false,
    });
    Ok(Some(HomeView { binds }))
}

/// The plan's grants below a split `home` (outside the workspace), when a view can stand in.
fn parts(plan: &LandlockPlan, home: &Path, workspace: &Path) -> Option<Vec<LandlockPath>> {
    if home.starts_with(workspace) || plan.paths.iter().any(|p| p.path == home) {
        return None;
    }
    let parts: Vec<LandlockPath> = plan
        .paths
        .iter()
        .filter(|p| p.path.starts_with(home) && !p.path.starts_with(workspace))
        .cloned()
        .collect();
    if parts.is_empty() {
        // Not granted, or denied whole.
        return None;
    }
    if let Some(p) = parts.iter().find(|p| p.access == LandlockAccess::Devices) {
        tracing::debug!(path = %p.path.display(), "home left split: a part is granted as devices");
        return None;
    }
    Some(parts)
}

fn open_dir(path: &Path) -> anyhow::Result<OwnedFd> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY;
    nix::fcntl::open(path, flags, Mode::empty()).with_context(|| format!("opening {}", path.display()))
}

fn own(fd: &OwnedFd, (uid, gid): (u32, u32)) -> anyhow::Result<()> {
    fchown(fd.as_fd(), Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).context("chown")
}

/// Opens the directory `name` in `parent`, making it (owned by `owner`) if absent; a link or
/// file of that name (left by a command) is removed first.
fn dir_at(parent: &OwnedFd, name: &OsStr, owner: (u32, u32)) -> anyhow::Result<OwnedFd> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY;
    for _ in 0..2 {
        match openat(parent.as_fd(), name, flags, Mode::empty()) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => {}
            Err(Errno::ENOTDIR | Errno::ELOOP) => remove_entry(parent, name)?,
            Err(e) => return Err(e.into()),
        }
        match mkdirat(parent.as_fd(), name, Mode::from_bits_truncate(0o755)) {
            Ok(()) => {
                let fd = openat(parent.as_fd(), name, flags, Mode::empty())?;
                own(&fd, owner)?;
                return Ok(fd);
            }
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    bail!("{} keeps changing", Path::new(name).display())
}

/// The names of the plain relative path `rel`.
fn names(rel: &Path) -> anyhow::Result<Vec<&OsStr>> {
    rel.components()
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(anyhow::anyhow!("{} is not a plain relative path", rel.display())),
        })
        .collect()
}

/// Opens (making as needed) the directory `names` below `root`; `None` is `root` itself.
fn dirs_at(root: &OwnedFd, names: &[&OsStr], owner: (u32, u32)) -> anyhow::Result<Option<OwnedFd>> {
    let mut at: Option<OwnedFd> = None;
    for name in names {
        let next = dir_at(at.as_ref().unwrap_or(root), name, owner)?;
        at = Some(next);
    }
    Ok(at)
}

/// Makes the real directory `dir` (in the home) in the view, and the links in it that no rule
/// names again at the same place: the rules of a link's own path could otherwise be passed by
/// reaching its target through it. A link resolves inside the sandbox, where what the rules
/// deny is not there.
fn links(
    root: &OwnedFd,
    home: &Path,
    dir: &Path,
    rules: &FileRules,
    owner: (u32, u32),
) -> anyhow::Result<()> {
    let rel = dir.strip_prefix(home).context("a directory outside the home")?;
    let at = dirs_at(root, &names(rel)?, owner)?;
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    let parent = at.as_ref().unwrap_or(root);
    for e in entries.flatten() {
        let path = e.path();
        if !e.file_type().is_ok_and(|t| t.is_symlink())
            || FileOp::ALL.iter().any(|op| rules.leaf(&path, *op) != Subtree::Clear)
        {
            continue;
        }
        let Ok(target) = std::fs::read_link(&path) else { continue };
        let name = e.file_name();
        // Commands of the session may launch at once: whatever another launch did first is
        // fine (a link made, an entry removed).
        match readlinkat(parent.as_fd(), name.as_os_str()) {
            Ok(held) if held == target.as_os_str() => continue,
            // Made by a command, or an old link: replaced; a directory is left alone.
            Ok(_) | Err(Errno::EINVAL) => {
                match unlinkat(parent.as_fd(), name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    Err(_) => continue,
                }
            }
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
        match symlinkat(target.as_os_str(), parent.as_fd(), name.as_os_str()) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Makes the mount point `rel` (a directory, or an empty file) below `root`.
fn mount_point(root: &OwnedFd, rel: &Path, dir: bool, owner: (u32, u32)) -> anyhow::Result<()> {
    let names = names(rel)?;
    let Some((last, parents)) = names.split_last() else { bail!("an empty mount point") };
    let at = dirs_at(root, parents, owner)?;
    let parent = at.as_ref().unwrap_or(root);
    if dir {
        dir_at(parent, last, owner)?;
        return Ok(());
    }
    let flags = OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    for _ in 0..2 {
        match openat(parent.as_fd(), *last, flags, Mode::from_bits_truncate(0o644)) {
            Ok(fd) => return own(&fd, owner),
            // A link a command left: removed, then made again.
            Err(Errno::ELOOP) => remove_entry(parent, last)?,
            Err(Errno::EISDIR) => {
                bail!(
                    "the session's home has a directory where the home has a file; remove it to use the file"
                )
            }
            Err(e) => return Err(e.into()),
        }
    }
    bail!("{} keeps changing", rel.display())
}

/// Removes the non-directory `name` from `parent`; gone already is fine (another launch of
/// the session's commands may have removed it first).
fn remove_entry(parent: &OwnedFd, name: &OsStr) -> anyhow::Result<()> {
    match unlinkat(parent.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    /// A fresh tree under /var/tmp (a home under /tmp is never granted) holding `files` (a
    /// trailing `/` makes a directory), for `body`; removed afterwards.
    fn with_tree(tag: &str, files: &[&str], body: impl FnOnce(&Path)) {
        let root = PathBuf::from(format!("/var/tmp/agentsh-home-view-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for f in files {
            let p = root.join(f.trim_end_matches('/'));
            let dir = if f.ends_with('/') { p.as_path() } else { p.parent().unwrap() };
            std::fs::create_dir_all(dir).unwrap();
            if !f.ends_with('/') {
                std::fs::write(&p, "x").unwrap();
            }
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&root)));
        let _ = std::fs::remove_dir_all(&root);
        if let Err(p) = outcome {
            std::panic::resume_unwind(p);
        }
    }

    fn default_rules(ws: &Path, home: &Path) -> FileRules {
        let policy =
            policies::load_policy(policies::embedded::source("default").unwrap(), "default").unwrap();
        let h = home.display().to_string();
        FileRules::new(&policy.file_rules, ws, &move |v| (v == "HOME").then(|| h.clone()))
    }

    fn default_plan(ws: &Path, home: &Path) -> LandlockPlan {
        LandlockPlan::for_session(ws, Some(home), &[]).narrowed(&default_rules(ws, home))
    }

    #[test]
    fn a_split_home_becomes_a_view_of_its_granted_parts() {
        let files =
            ["home/.ssh/id_rsa", "home/.cargo/bin/cargo", "home/.bashrc", "home/.config/gcloud/creds"];
        // `.docker/run` holds only what the rules deny: split, with nothing granted in it.
        let more = ["home/.config/fish/config.fish", "home/.docker/run/docker.sock", "home/project/"];
        with_tree("split", &[&files[..], &more[..]].concat(), |t| {
            let (home, view) = (t.join("home"), t.join("view"));
            let ws = home.join("project");
            let mut plan = default_plan(&ws, &home);
            let rules = default_rules(&ws, &home);
            let v = build(&mut plan, &home, &ws, &view, (65534, 65534), &rules).unwrap().expect("a view");

            let bind = |rel: &str| v.binds.iter().find(|b| b.sandbox == home.join(rel)).map(|b| b.writable);
            assert_eq!(
                v.binds[0],
                BindDir { host: view.clone(), sandbox: home.clone(), writable: true, noexec: false }
            );
            assert_eq!(bind(".cargo"), Some(true));
            // Start-up files and the fish config are read-only parts; denied ones are absent.
            assert_eq!(bind(".bashrc"), Some(false));
            assert_eq!(bind(".config/fish"), Some(false));
            for absent in [".ssh", ".config/gcloud", ".config", "project"] {
                assert_eq!(bind(absent), None, "{absent}: {v:#?}");
            }
            // Mount points exist in the view, owned by the command's user; nothing is copied.
            for (rel, dir) in
                [(".cargo", true), (".bashrc", false), (".config/fish", true), ("project", true)]
            {
                let m = std::fs::symlink_metadata(view.join(rel)).unwrap();
                assert_eq!((m.is_dir(), m.uid()), (dir, 65534), "{rel}");
            }
            assert!(!view.join(".ssh").exists() && !view.join(".config/gcloud").exists());
            // A split directory with nothing granted in it is there, empty.
            assert_eq!(std::fs::read_dir(view.join(".docker/run")).map(|d| d.count()).ok(), Some(0));
            assert_eq!(std::fs::read_dir(view.join(".cargo")).unwrap().count(), 0);
            // Landlock grants the home whole and keeps the workspace's own grant.
            let granted: Vec<_> = plan.paths.iter().filter(|p| p.path.starts_with(&home)).collect();
            assert_eq!(granted.len(), 2, "{granted:#?}");
            assert!(granted.iter().any(|p| p.path == home && p.access == LandlockAccess::ReadWriteExec));
            assert!(granted.iter().any(|p| p.path == ws));
        });
    }

    #[test]
    fn a_part_granted_without_execution_is_bound_noexec() {
        let files = ["home/.ssh/id_rsa", "home/tools/run.sh", "home/notes/todo.txt", "ws/"];
        with_tree("noexec", &files, |t| {
            let (home, view, ws) = (t.join("home"), t.join("view"), t.join("ws"));
            let mut policy =
                policies::load_policy(policies::embedded::source("default").unwrap(), "default").unwrap();
            let extra = policies::load_policy(
                "file_rules:\n\
                 \x20 - {name: tools-read, paths: [\"${HOME}/tools/**\"], operations: [read], decision: allow}\n\
                 \x20 - {name: notes-edit, paths: [\"${HOME}/notes/**\"], operations: [read, write, create, delete], decision: allow}\n\
                 \x20 - {name: no-more, paths: [\"${HOME}/tools/**\", \"${HOME}/notes/**\"], operations: [\"*\"], decision: deny}\n",
                "extra.yaml",
            )
            .unwrap();
            policy.file_rules.splice(0..0, extra.file_rules);
            let h = home.display().to_string();
            let rules = FileRules::new(&policy.file_rules, &ws, &move |v| (v == "HOME").then(|| h.clone()));
            let mut plan = LandlockPlan::for_session(&ws, Some(&home), &[]).narrowed(&rules);
            let v = build(&mut plan, &home, &ws, &view, (65534, 65534), &rules).unwrap().expect("a view");
            let bind = |rel: &str| {
                v.binds.iter().find(|b| b.sandbox == home.join(rel)).map(|b| (b.writable, b.noexec))
            };
            assert_eq!(bind("tools"), Some((false, true)), "{v:#?}");
            assert_eq!(bind("notes"), Some((true, true)), "{v:#?}");
            assert_eq!(bind(".ssh"), None);
            assert!(plan.paths.iter().any(|p| p.path == home && p.access == LandlockAccess::ReadWriteExec));
        });
    }

    #[test]
    fn links_no_rule_names_are_made_again_in_the_view() {
        let files = ["home/.ssh/id_rsa", "home/dotfiles/vimrc", "home/.config/fish/config.fish", "ws/"];
        with_tree("made-links", &files, |t| {
            let (home, view, ws) = (t.join("home"), t.join("view"), t.join("ws"));
            let link = |target: &str, at: &str| std::os::unix::fs::symlink(target, home.join(at)).unwrap();
            link("dotfiles/vimrc", ".vimrc");
            link("../dotfiles", ".config/dots");
            // Named by rules: through them the rules of their own path could be passed.
            link("dotfiles/vimrc", ".profile");
            link("/nonexistent/aws", ".aws");
            let mut plan = default_plan(&ws, &home);
            let rules = default_rules(&ws, &home);
            build(&mut plan, &home, &ws, &view, (65534, 65534), &rules).unwrap().expect("a view");
            let read = |rel: &str| std::fs::read_link(view.join(rel)).ok();
            assert_eq!(read(".vimrc"), Some(PathBuf::from("dotfiles/vimrc")));
            assert_eq!(read(".config/dots"), Some(PathBuf::from("../dotfiles")));
            assert_eq!(read(".profile"), None);
            assert_eq!(read(".aws"), None);
            // A second launch finds them in place; one a command replaced is made again.
            std::fs::remove_file(view.join(".vimrc")).unwrap();
            std::fs::write(view.join(".vimrc"), "mine").unwrap();
            let mut plan = default_plan(&ws, &home);
            build(&mut plan, &home, &ws, &view, (65534, 65534), &rules).unwrap().expect("a view");
            assert_eq!(read(".vimrc"), Some(PathBuf::from("dotfiles/vimrc")));
        });
    }

    #[test]
    fn a_workspace_inside_a_granted_part_is_bound_over_it() {
        let files = ["home/.ssh/id_rsa", "home/src/project/", "home/src/other/notes"];
        with_tree("ws-in-part", &files, |t| {
            let (home, view) = (t.join("home"), t.join("view"));
            std::os::unix::fs::symlink("other", home.join("src/link")).unwrap();
            let ws = home.join("src/project");
            let mut plan = default_plan(&ws, &home);
            let rules = default_rules(&ws, &home);
            let v = build(&mut plan, &home, &ws, &view, (65534, 65534), &rules).unwrap().expect("a view");
            let targets: Vec<&Path> = v.binds.iter().map(|b| b.sandbox.as_path()).collect();
            assert_eq!(targets, [home.as_path(), home.join("src").as_path()], "{v:#?}");
            assert!(plan.paths.iter().any(|p| p.path == ws), "the workspace keeps its grant");
            // `src` is bound whole: its links are its own, none is made under its mount point.
            assert!(std::fs::symlink_metadata(view.join("src/link")).is_err());
        });
    }

    #[test]
    fn launches_at_once_build_the_same_view() {
        let files = ["home/.ssh/id_rsa", "home/.cargo/config.toml", "home/.bashrc", "home/dots/vimrc", "ws/"];
        with_tree("at-once", &files, |t| {
            let (home, view, ws) = (t.join("home"), t.join("view"), t.join("ws"));
            std::os::unix::fs::symlink("dots/vimrc", home.join(".vimrc")).unwrap();
            let rules = default_rules(&ws, &home);
            let (rounds, threads) = (30, 8);
            let start = std::sync::Barrier::new(threads + 1);
            let failures = std::sync::Mutex::new(Vec::new());
            std::thread::scope(|scope| {
                for _ in 0..threads {
                    scope.spawn(|| {
                        for _ in 0..rounds {
                            start.wait();
                            let mut plan = default_plan(&ws, &home);
                            match build(&mut plan, &home, &ws, &view, (65534, 65534), &rules) {
                                Ok(Some(_)) => {}
                                Ok(None) => failures.lock().unwrap().push("no view".to_string()),
                                Err(e) => failures.lock().unwrap().push(format!("{e:#}")),
                            }
                            start.wait();
                        }
                    });
                }
                // Each round from an empty view, every launch at once.
                for _ in 0..rounds {
                    let _ = std::fs::remove_dir_all(&view);
                    start.wait();
                    start.wait();
                }
            });
            assert_eq!(failures.into_inner().unwrap(), Vec::<String>::new());
            assert_eq!(std::fs::read_link(view.join(".vimrc")).unwrap(), PathBuf::from("dots/vimrc"));
            assert!(std::fs::symlink_metadata(view.join(".bashrc")).unwrap().is_file());
        });
    }

    #[test]
    fn links_left_in_the_view_are_replaced_not_followed() {
        let files =
            ["home/.ssh/id_rsa", "home/.cargo/config.toml", "home/.bashrc", "outside/", "view/", "ws/"];
        with_tree("links", &files, |t| {
            let (home, view, outside) = (t.join("home"), t.join("view"), t.join("outside"));
            // A command made its mount points links out of the view between two launches.
            std::os::unix::fs::symlink(&outside, view.join(".cargo")).unwrap();
            std::os::unix::fs::symlink(outside.join("bashrc"), view.join(".bashrc")).unwrap();
            let ws = t.join("ws");
            let mut plan = default_plan(&ws, &home);
            let rules = default_rules(&ws, &home);
            build(&mut plan, &home, &ws, &view, (65534, 65534), &rules).unwrap().expect("a view");
            assert!(std::fs::symlink_metadata(view.join(".cargo")).unwrap().is_dir());
            assert!(std::fs::symlink_metadata(view.join(".bashrc")).unwrap().is_file());
            assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "nothing made through a link");
            assert_eq!(std::fs::metadata(&outside).unwrap().uid(), 0, "nothing chowned through a link");
        });
    }

    #[test]
    fn a_home_granted_whole_or_not_at_all_needs_no_view() {
        with_tree("whole", &["home/.cargo/config.toml", "ws/"], |t| {
            let (home, ws) = (t.join("home"), t.join("ws"));
            // No rule touches the home: granted whole.
            let mut plan = LandlockPlan::for_session(&ws, Some(&home), &[]);
            let before = plan.clone();
            let rules = default_rules(&ws, &home);
            assert_eq!(build(&mut plan, &home, &ws, &t.join("view"), (0, 0), &rules).unwrap(), None);
            assert_eq!(plan, before);
            // A home in the workspace is the workspace's.
            let mut plan = default_plan(t, &home);
            assert_eq!(build(&mut plan, &home, t, &t.join("view"), (0, 0), &rules).unwrap(), None);
            assert!(!t.join("view").exists());
        });
    }
}
