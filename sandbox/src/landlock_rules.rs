//! A session's `file_rules` applied to a [`LandlockPlan`]. Landlock can only grant whole trees,
//! so a tree the rules deny whole loses that access (reading, writing, executing), and a tree
//! the rules deny in part is split: the tree itself is no longer granted, each of its children
//! is judged the same way (kept whole, split again, or left out), so `~/.ssh` stays unreachable
//! while the rest of the home is granted. A tree that holds another tree of the plan granted
//! less is split too, or its rule would widen the inner one (a workspace under the home).
//!
//! Splitting lists directories when the plan is made: an entry created later in a split
//! directory is not granted, and nothing can be created directly in a split directory (fail
//! closed). Symbolic links among the children are left out, since granting one would grant its
//! target. Trees that are not split (the workspace, `/tmp`, kernel filesystems) keep a rule
//! that denies only part of them unenforced here.

use std::path::{Path, PathBuf};

use policies::engine::file::{FileOp, FileRules, Subtree};

use crate::landlock_plan::{LandlockAccess, LandlockPath, LandlockPlan, MAX_LANDLOCK_PATHS};

/// How many directory levels below a plan's tree a split may go.
pub const MAX_SPLIT_DEPTH: usize = 6;

/// The operations judged for each class of access.
const READ: &[FileOp] = &[FileOp::Read, FileOp::List];
const WRITE: &[FileOp] = &[FileOp::Write, FileOp::Create];
const EXEC: &[FileOp] = &[FileOp::Exec];

/// The rules' judgement of `ops` over the tree at `path` (over the file alone when `leaf`):
/// denied if any is, mixed if any is.
fn judge<'r>(rules: &'r FileRules, path: &Path, ops: &[FileOp], leaf: bool) -> Subtree<'r> {
    let mut out = Subtree::Clear;
    for op in ops {
        let judged = if leaf { rules.leaf(path, *op) } else { rules.subtree(path, *op) };
        match judged {
            d @ Subtree::Denied(_) => return d,
            Subtree::Mixed => out = Subtree::Mixed,
            Subtree::Clear => {}
        }
    }
    out
}

/// `access` at `path` less what the rules deny over the whole tree (`None`: nothing is left),
/// and whether what is left is denied somewhere below. `leaf`: `path` is a file, judged alone.
fn narrow(
    rules: &FileRules,
    path: &Path,
    access: LandlockAccess,
    leaf: bool,
) -> (Option<LandlockAccess>, bool) {
    use LandlockAccess as A;
    let judge = |ops| judge(rules, path, ops, leaf);
    let read = judge(READ);
    if matches!(read, Subtree::Denied(_)) {
        return (None, false);
    }
    let grants_write = matches!(access, A::ReadWrite | A::ReadWriteExec | A::Devices);
    let grants_exec = matches!(access, A::ReadExec | A::ReadWriteExec);
    let write = if grants_write { judge(WRITE) } else { Subtree::Clear };
    let exec = if grants_exec { judge(EXEC) } else { Subtree::Clear };
    let write_ok = !matches!(write, Subtree::Denied(_));
    let exec_ok = !matches!(exec, Subtree::Denied(_));
    let narrowed = match (access, write_ok, exec_ok) {
        (A::ReadWriteExec, true, true) => A::ReadWriteExec,
        (A::ReadWriteExec | A::ReadWrite, true, _) => A::ReadWrite,
        (A::ReadWriteExec | A::ReadExec, _, true) => A::ReadExec,
        (A::Devices, true, _) => A::Devices,
        _ => A::Read,
    };
    let kept = |class: Subtree, ok: bool| ok && class == Subtree::Mixed;
    let mixed = read == Subtree::Mixed || kept(write, write_ok && grants_write) || kept(exec, exec_ok);
    (Some(narrowed), mixed)
}

/// Builds the narrowed plan's paths within [`MAX_LANDLOCK_PATHS`].
struct Splitter<'a> {
    rules: &'a FileRules,
    /// Every tree of the plan, narrowed at its own root.
    roots: Vec<(PathBuf, LandlockAccess)>,
    out: Vec<LandlockPath>,
    left_out: Vec<PathBuf>,
    granted_whole: Vec<PathBuf>,
    split: Vec<PathBuf>,
}

impl Splitter<'_> {
    /// Whether the tree at `path`, granted `access`, holds another tree of the plan that must
    /// not get that much.
    fn holds_narrower(&self, path: &Path, access: LandlockAccess) -> bool {
        self.roots.iter().any(|(r, a)| r != path && r.starts_with(path) && !access.within(*a))
    }

    fn is_root(&self, path: &Path) -> bool {
        self.roots.iter().any(|(r, _)| r == path)
    }

    fn push(&mut self, path: &Path, access: LandlockAccess, template: &LandlockPath, depth: usize) {
        if self.out.len() >= MAX_LANDLOCK_PATHS {
            self.left_out.push(path.to_path_buf());
            return;
        }
        // A child found by a split may be gone by the launch: only the plan's own trees can
        // be required.
        let required = template.required && depth == 0;
        self.out.push(LandlockPath { path: path.to_path_buf(), access, required, split: template.split });
    }

    /// Grant, split or leave out the tree at `path` (`depth` levels below `template`'s).
    fn resolve(&mut self, path: &Path, access: LandlockAccess, template: &LandlockPath, depth: usize) {
        let (Some(access), mixed) = narrow(self.rules, path, access, false) else {
            return;
        };
        if !template.split || !(mixed || self.holds_narrower(path, access)) {
            if mixed {
                self.granted_whole.push(path.to_path_buf());
            }
            self.push(path, access, template, depth);
            return;
        }
        // The plan's own trees are followed if they are links (`/bin` to `usr/bin`); below
        // them a link is not (see the module docs).
        let meta = if depth == 0 { std::fs::metadata(path) } else { std::fs::symlink_metadata(path) };
        match meta {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            // A file has nothing below it: the rules naming it settle what it gets. A link
            // is left out.
            Ok(m) if m.is_file() => {
                if let (Some(access), false) = narrow(self.rules, path, access, true) {
                    self.push(path, access, template, depth);
                }
                return;
            }
            Ok(m) if !m.is_dir() => return,
            Ok(_) if depth < MAX_SPLIT_DEPTH => {}
            Ok(_) | Err(_) => return self.left_out.push(path.to_path_buf()),
        }
        let Ok(entries) = std::fs::read_dir(path) else {
            return self.left_out.push(path.to_path_buf());
        };
        self.split.push(path.to_path_buf());
        let mut children: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| !t.is_symlink()))
            .map(|e| e.path())
            .collect();
        children.sort();
        for child in children {
            // Another tree of the plan has a rule of its own.
            if !self.is_root(&child) {
                self.resolve(&child, access, template, depth + 1);
            }
        }
    }
}

impl LandlockPlan {
    /// This plan narrowed by `rules`: a tree whose every path the rules deny reading is left
    /// out, likewise writing and executing lose their access; a tree of which the rules deny a
    /// part, or that holds another tree granted less, is split (see the module docs). Trees
    /// that could not be split are in [`LandlockPlan::left_out`].
    pub fn narrowed(self, rules: &FileRules) -> LandlockPlan {
        let roots = self
            .paths
            .iter()
            .filter_map(|p| narrow(rules, &p.path, p.access, false).0.map(|a| (p.path.clone(), a)))
            .collect();
        let mut s = Splitter {
            rules,
            roots,
            out: Vec::new(),
            left_out: self.left_out,
            granted_whole: self.granted_whole,
            split: self.split,
        };
        for p in &self.paths {
            s.resolve(&p.path, p.access, p, 0);
        }
        LandlockPlan {
            paths: s.out,
            connect_tcp_ports: self.connect_tcp_ports,
            left_out: s.left_out,
            granted_whole: s.granted_whole,
            split: s.split,
        }
    }

    /// [`LandlockPlan::for_workspace`] narrowed by `rules`.
    pub fn from_file_rules(workspace: &Path, rules: &FileRules) -> LandlockPlan {
        LandlockPlan::for_workspace(workspace).narrowed(rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory tree removed on drop.
    struct Tree(PathBuf);

    impl Tree {
        fn new(tag: &str) -> Tree {
            // Not under /tmp: a home there is the sandbox's private /tmp, never granted.
            let root = PathBuf::from(format!("/var/tmp/agentsh-ll-rules-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&root).unwrap();
            Tree(root)
        }

        fn add(&self, rel: &str) -> PathBuf {
            let p = self.0.join(rel);
            if let Some(dir) = rel.strip_suffix('/') {
                std::fs::create_dir_all(self.0.join(dir)).unwrap();
            } else {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, "x").unwrap();
            }
            p
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn rules(yaml: &str, ws: &Path, home: &Path) -> FileRules {
        let policy = policies::load_policy(yaml, "t.yaml").unwrap();
        let home = home.display().to_string();
        FileRules::new(&policy.file_rules, ws, &move |v| (v == "HOME").then(|| home.clone()))
    }

    fn default_rules(ws: &Path, home: &Path) -> FileRules {
        rules(policies::embedded::source("default").unwrap(), ws, home)
    }

    fn access(plan: &LandlockPlan, path: &Path) -> Option<LandlockAccess> {
        plan.paths.iter().find(|p| p.path == path).map(|p| p.access)
    }

    #[test]
    fn file_rules_narrow_the_plan() {
        let r = rules(
            "file_rules:\n  \
             - {name: no-opt, paths: ['/opt/**'], operations: [read], decision: deny}\n  \
             - {name: no-exec-ws, paths: ['${WORKSPACE}/**'], operations: [exec], decision: deny}\n",
            Path::new("/w"),
            Path::new("/nonexistent"),
        );
        let plan = LandlockPlan::from_file_rules(Path::new("/w"), &r);
        assert_eq!(access(&plan, Path::new("/opt")), None);
        assert_eq!(access(&plan, Path::new("/w")), Some(LandlockAccess::ReadWrite));
        assert_eq!(access(&plan, Path::new("/usr")), Some(LandlockAccess::ReadExec));
        assert!(plan.left_out.is_empty() && plan.granted_whole.is_empty(), "{plan:#?}");
    }

    #[test]
    fn trees_granted_whole_despite_a_denied_part_are_named() {
        let r = rules(
            "file_rules:\n  \
             - {name: no-tmp-keys, paths: ['/tmp/keys/**'], decision: deny}\n  \
             - {name: no-ws-secrets, paths: ['${WORKSPACE}/secrets/**'], decision: deny}\n",
            Path::new("/w"),
            Path::new("/nonexistent"),
        );
        let plan = LandlockPlan::from_file_rules(Path::new("/w"), &r);
        assert_eq!(plan.granted_whole, [PathBuf::from("/tmp"), PathBuf::from("/w")]);
        assert_eq!(access(&plan, Path::new("/tmp")), Some(LandlockAccess::ReadWriteExec));
    }

    #[test]
    fn the_default_policy_splits_the_home_around_its_denied_trees() {
        let t = Tree::new("home");
        let home = t.0.join("home");
        for rel in [
            "home/.ssh/id_rsa",
            "home/.aws/credentials",
            "home/.kube/config",
            "home/.config/gcloud/credentials.db",
            "home/.config/git/config",
            "home/.docker/run/docker.sock",
            "home/.docker/config.json",
            "home/.cargo/bin/cargo",
            "home/.gitconfig",
            "home/.bashrc",
            "home/.config/systemd/user/default.target.wants/",
            "home/project/",
        ] {
            t.add(rel);
        }
        std::os::unix::fs::symlink(home.join(".ssh"), home.join("keys")).unwrap();
        let ws = home.join("project");
        let plan = LandlockPlan::for_session(&ws, Some(&home), &[]).narrowed(&default_rules(&ws, &home));

        let rwx = Some(LandlockAccess::ReadWriteExec);
        for kept in [".cargo", ".docker/config.json", "project"] {
            assert_eq!(access(&plan, &home.join(kept)), rwx, "{kept}: {plan:#?}");
        }
        // Start-up files are readable and cannot be changed (nor, their directory being split,
        // replaced).
        for read_only in [".gitconfig", ".bashrc", ".config/git", ".config/systemd/user"] {
            assert_eq!(access(&plan, &home.join(read_only)), Some(LandlockAccess::ReadExec), "{read_only}");
        }
        let granted = |p: &Path| plan.paths.iter().any(|g| p.starts_with(&g.path));
        for denied in [".ssh/id_rsa", ".aws", ".kube", ".config/gcloud", ".docker/run/docker.sock", "keys"] {
            assert!(!granted(&home.join(denied)), "{denied} is granted: {plan:#?}");
        }
        // The split trees themselves have no rule (nothing can be created in them), and are
        // named as split.
        for split in ["", ".config", ".docker", ".docker/run"] {
            assert_eq!(access(&plan, &home.join(split)), None, "{split}");
            assert!(plan.split.contains(&home.join(split)), "{split}: {:#?}", plan.split);
        }
        assert!(plan.paths.iter().filter(|p| p.path.starts_with(&home) && p.path != ws).all(|p| !p.required));
        assert_eq!(access(&plan, Path::new("/usr")), Some(LandlockAccess::ReadExec));
        assert!(plan.left_out.is_empty());
    }

    #[test]
    fn a_home_that_overlaps_the_system_trees_is_not_granted() {
        let ws = Path::new("/w");
        for home in ["/", "/usr", "/usr/local/agent", "/tmp/home", "/w/home", "/run", "relative"] {
            let plan = LandlockPlan::for_session(ws, Some(Path::new(home)), &[]);
            assert!(
                !plan
                    .paths
                    .iter()
                    .any(|p| p.access == LandlockAccess::ReadWriteExec && p.path == Path::new(home)),
                "{home}"
            );
        }
        let plan = LandlockPlan::for_session(ws, Some(Path::new("/home/agent")), &[]);
        assert_eq!(access(&plan, Path::new("/home/agent")), Some(LandlockAccess::ReadWriteExec));
    }

    #[test]
    fn a_tree_holding_a_narrower_tree_is_split_around_it() {
        let t = Tree::new("narrower");
        let home = t.0.join("home");
        t.add("home/.cargo/config.toml");
        t.add("home/ws/src/main.rs");
        let ws = home.join("ws");
        let r = rules(
            "file_rules:\n  - {name: no-exec-ws, paths: ['${WORKSPACE}/**'], operations: [exec], decision: deny}\n",
            &ws,
            &home,
        );
        let plan = LandlockPlan::for_session(&ws, Some(&home), &[]).narrowed(&r);
        assert_eq!(access(&plan, &ws), Some(LandlockAccess::ReadWrite), "{plan:#?}");
        assert_eq!(access(&plan, &home), None, "{plan:#?}");
        assert_eq!(access(&plan, &home.join(".cargo")), Some(LandlockAccess::ReadWriteExec));
    }

    #[test]
    fn a_tree_too_large_to_split_is_left_out() {
        let t = Tree::new("large");
        let home = t.0.join("home");
        for i in 0..MAX_LANDLOCK_PATHS {
            t.add(&format!("home/d{i:03}/f"));
        }
        t.add("home/.ssh/id_rsa");
        let ws = Path::new("/w");
        let plan = LandlockPlan::for_session(ws, Some(&home), &[]).narrowed(&default_rules(ws, &home));
        assert_eq!(plan.paths.len(), MAX_LANDLOCK_PATHS);
        assert!(!plan.left_out.is_empty());
        assert!(!plan.paths.iter().any(|p| home.join(".ssh").starts_with(&p.path)));
    }
}
