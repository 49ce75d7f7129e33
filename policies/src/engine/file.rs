//! `file_rules` compiled for one session: globs expanded once (`${WORKSPACE}`, `${HOME}`, `~`,
//! any `${VAR}` the caller knows), then every file operation gets a [`FileRuling`] naming its
//! rule. First match in file order wins. With no match, paths inside the workspace are allowed
//! ([`DEFAULT_ALLOW_WORKSPACE`]) and every other path is denied ([`DEFAULT_DENY_FILE`]).
//!
//! Operations are finer than the rule vocabulary: a rule's `read` covers reading, `stat`,
//! listing and `readlink`; `write` covers writing, `chmod` and `chown`; `create` covers every
//! way of making a name (files, directories, links, nodes, a rename's destination); `delete`
//! covers unlinking, `rmdir` and a rename's source (moving a file away deletes it at its path).
//! `approve` and `redirect` have no enforcement channel at the file layer, so they deny (fail
//! closed).

use std::borrow::Cow;
use std::path::{Component, Path, PathBuf};

use crate::{
    matchers::path_glob::{self, CompiledGlob, expand},
    model::file::{FileDecision, FileOperation, FileRule},
};

/// Rule name when no rule matches a path inside the workspace.
pub const DEFAULT_ALLOW_WORKSPACE: &str = "default-allow-workspace";
/// Rule name when no rule matches a path outside the workspace.
pub const DEFAULT_DENY_FILE: &str = "default-deny-file";
/// Rule name when the path is not absolute: nothing can be said about it, so it is denied.
pub const INVALID_PATH: &str = "invalid-path";

/// One file operation as an enforcement point sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileOp {
    /// Reading contents (opening for read included).
    Read,
    /// `stat`, `access` and lookups.
    Stat,
    /// Listing a directory.
    List,
    /// Reading a symlink's target.
    Readlink,
    /// Writing contents, truncating included.
    Write,
    /// Changing the mode.
    Chmod,
    /// Changing the owner.
    Chown,
    /// Creating a regular file.
    Create,
    /// Creating a directory.
    Mkdir,
    /// Creating a symlink.
    Symlink,
    /// Creating a hard link (the new name).
    Link,
    /// Creating a device node, FIFO or socket.
    Mknod,
    /// Unlinking a file.
    Delete,
    /// Removing a directory.
    Rmdir,
    /// The old name of a rename.
    RenameFrom,
    /// The new name of a rename.
    RenameTo,
    /// Executing a file.
    Exec,
}

impl FileOp {
    /// Every operation, for tests and tables.
    pub const ALL: [FileOp; 17] = [
        FileOp::Read,
        FileOp::Stat,
        FileOp::List,
        FileOp::Readlink,
        FileOp::Write,
        FileOp::Chmod,
        FileOp::Chown,
        FileOp::Create,
        FileOp::Mkdir,
        FileOp::Symlink,
        FileOp::Link,
        FileOp::Mknod,
        FileOp::Delete,
        FileOp::Rmdir,
        FileOp::RenameFrom,
        FileOp::RenameTo,
        FileOp::Exec,
    ];

    /// Whether a rule listing `rule_op` covers this operation.
    pub fn covered_by(self, rule_op: FileOperation) -> bool {
        use FileOp as O;
        use FileOperation as R;
        match rule_op {
            R::All => true,
            R::Open => matches!(self, O::Read | O::Write),
            R::Read => matches!(self, O::Read | O::Stat | O::List | O::Readlink),
            R::Stat | R::Access => self == O::Stat,
            R::List => self == O::List,
            R::Readlink => self == O::Readlink,
            R::Write => matches!(self, O::Write | O::Chmod | O::Chown),
            R::Chmod => self == O::Chmod,
            R::Chown => self == O::Chown,
            R::Create => {
                matches!(self, O::Create | O::Mkdir | O::Symlink | O::Link | O::Mknod | O::RenameTo)
            }
            R::Mkdir => self == O::Mkdir,
            R::Symlink => self == O::Symlink,
            R::Link => self == O::Link,
            R::Mknod => self == O::Mknod,
            R::Rename => matches!(self, O::RenameFrom | O::RenameTo),
            R::Delete => matches!(self, O::Delete | O::Rmdir | O::RenameFrom),
            R::Rmdir => self == O::Rmdir,
            R::Exec => self == O::Exec,
        }
    }

    /// The lower-case name used in events.
    pub fn as_str(self) -> &'static str {
        match self {
            FileOp::Read => "read",
            FileOp::Stat => "stat",
            FileOp::List => "list",
            FileOp::Readlink => "readlink",
            FileOp::Write => "write",
            FileOp::Chmod => "chmod",
            FileOp::Chown => "chown",
            FileOp::Create => "create",
            FileOp::Mkdir => "mkdir",
            FileOp::Symlink => "symlink",
            FileOp::Link => "link",
            FileOp::Mknod => "mknod",
            FileOp::Delete => "delete",
            FileOp::Rmdir => "rmdir",
            FileOp::RenameFrom => "rename_from",
            FileOp::RenameTo => "rename_to",
            FileOp::Exec => "exec",
        }
    }
}

/// What the enforcement point does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileVerdict {
    /// Let it through.
    Allow,
    /// Refuse it (`EACCES`).
    Deny,
    /// Let it through and flag it.
    Audit,
    /// A delete: move the file to the session's trash instead of unlinking it.
    SoftDelete,
}

impl FileVerdict {
    /// Whether the operation proceeds (a soft delete proceeds, differently).
    pub fn permits(self) -> bool {
        self != FileVerdict::Deny
    }

    /// The lower-case name used in events.
    pub fn as_str(self) -> &'static str {
        match self {
            FileVerdict::Allow => "allow",
            FileVerdict::Deny => "deny",
            FileVerdict::Audit => "audit",
            FileVerdict::SoftDelete => "soft_delete",
        }
    }

    /// The verdict a rule's `decision` gives `op`.
    pub fn of(decision: FileDecision, op: FileOp) -> FileVerdict {
        match decision {
            FileDecision::Allow => FileVerdict::Allow,
            FileDecision::Audit => FileVerdict::Audit,
            FileDecision::Deny | FileDecision::Approve | FileDecision::Redirect => FileVerdict::Deny,
            // An empty directory carries no data: rmdir goes through; renames are not deletes.
            FileDecision::SoftDelete if op == FileOp::Delete => FileVerdict::SoftDelete,
            FileDecision::SoftDelete => FileVerdict::Allow,
        }
    }
}

/// A decision about one file operation; borrows the rule's name and message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileRuling<'a> {
    /// What happens.
    pub verdict: FileVerdict,
    /// The deciding rule (or a built-in default name).
    pub rule: &'a str,
    /// The rule's message, if any.
    pub message: Option<&'a str>,
}

#[derive(Debug, Clone)]
struct Compiled {
    name: String,
    message: Option<String>,
    /// The segments of each expanded glob, kept for subtree analysis.
    patterns: Vec<Vec<Vec<u8>>>,
    globs: Vec<CompiledGlob>,
    any_path: bool,
    ops: Vec<FileOperation>,
    decision: FileDecision,
}

impl Compiled {
    fn covers(&self, op: FileOp) -> bool {
        self.ops.is_empty() || self.ops.iter().any(|o| op.covered_by(*o))
    }

    fn ruling(&self, op: FileOp) -> FileRuling<'_> {
        FileRuling {
            verdict: FileVerdict::of(self.decision, op),
            rule: &self.name,
            message: self.message.as_deref(),
        }
    }
}

/// The compiled `file_rules` of one session.
#[derive(Debug, Clone)]
pub struct FileRules {
    rules: Vec<Compiled>,
    workspace: PathBuf,
    unapplied: Vec<Unapplied>,
}

/// A rule's path that matches nothing in a session (see [`FileRules::unapplied`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unapplied {
    /// The rule's name.
    pub rule: String,
    /// The path as the policy writes it.
    pub path: String,
    /// The variable in it that is unset (with no default); `None` when it expands to a path
    /// that is not absolute.
    pub unset: Option<String>,
}

/// `path` without `.` and `..` (lexically), or `None` when it is not absolute.
pub fn normalise(path: &Path) -> Option<Cow<'_, Path>> {
    if !path.is_absolute() {
        return None;
    }
    let clean = path.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if clean {
        return Some(Cow::Borrowed(path));
    }
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(Cow::Owned(out))
}

impl FileRules {
    /// Compile `rules` for a session whose workspace is `workspace` (absolute). `${WORKSPACE}`
    /// and `${PROJECT_ROOT}` expand to it; `~`, `${HOME}` and other variables come from `vars`.
    /// A glob with an unset variable matches nothing (see [`FileRules::unapplied`]).
    pub fn new(rules: &[FileRule], workspace: &Path, vars: &dyn Fn(&str) -> Option<String>) -> FileRules {
        let workspace = normalise(workspace).map_or_else(|| PathBuf::from("/nonexistent"), Cow::into_owned);
        let ws = workspace.to_string_lossy().into_owned();
        let lookup = |name: &str| match name {
            "WORKSPACE" | "PROJECT_ROOT" => Some(ws.clone()),
            _ => vars(name),
        };
        let mut unapplied = Vec::new();
        let rules = rules
            .iter()
            .map(|r| {
                let globs: Vec<CompiledGlob> = r
                    .paths
                    .iter()
                    .filter_map(|g| {
                        let c = CompiledGlob::compile(g.as_str(), &lookup);
                        if c.is_none() {
                            let unset = path_glob::try_expand(g.as_str(), &lookup).err().flatten();
                            unapplied.push(Unapplied {
                                rule: r.name.clone(),
                                path: g.as_str().to_string(),
                                unset,
                            });
                        }
                        c
                    })
                    .collect();
                let patterns = r
                    .paths
                    .iter()
                    .filter_map(|g| expand(g.as_str(), &lookup))
                    .map(|t| segments(t.as_bytes()).map(<[u8]>::to_vec).collect())
                    .collect();
                Compiled {
                    name: r.name.clone(),
                    message: r.message.clone(),
                    globs,
                    patterns,
                    any_path: r.paths.is_empty(),
                    ops: r.operations.clone(),
                    decision: r.decision,
                }
            })
            .collect();
        FileRules { rules, workspace, unapplied }
    }

    /// The rules' paths that match nothing in this session: a variable in them is unset (and
    /// has no `${VAR:-default}`), or they are not absolute once expanded. Worth a warning: a
    /// `deny` that names such a path protects nothing.
    pub fn unapplied(&self) -> &[Unapplied] {
        &self.unapplied
    }

    /// The workspace the defaults are relative to.
    pub fn workspace(&self) -> &Path {
        &self.workspace
    }

    /// The ruling for `op` on the absolute `path` (normalised lexically first).
    pub fn decide(&self, path: &Path, op: FileOp) -> FileRuling<'_> {
        let Some(path) = normalise(path) else {
            return FileRuling { verdict: FileVerdict::Deny, rule: INVALID_PATH, message: None };
        };
        match self.first_match(&path, op) {
            Some(rule) => rule.ruling(op),
            None if path.starts_with(&self.workspace) => {
                FileRuling { verdict: FileVerdict::Allow, rule: DEFAULT_ALLOW_WORKSPACE, message: None }
            }
            None => FileRuling { verdict: FileVerdict::Deny, rule: DEFAULT_DENY_FILE, message: None },
        }
    }

    /// The first rule deciding `op` on the (normalised) `path`.
    fn first_match(&self, path: &Path, op: FileOp) -> Option<&Compiled> {
        self.rules
            .iter()
            .find(|r| r.covers(op) && (r.any_path || r.globs.iter().any(|g| g.matches_path(path))))
    }

    /// How the explicit rules judge `op` on `path` alone, for a path with nothing below it (a
    /// file), which [`FileRules::subtree`] cannot settle when a rule names the path exactly:
    /// denied by the first rule matching it if that rule denies, else clear (the defaults are
    /// not consulted).
    pub fn leaf(&self, path: &Path, op: FileOp) -> Subtree<'_> {
        let Some(path) = normalise(path) else {
            return Subtree::Mixed;
        };
        match self.first_match(&path, op) {
            Some(rule) if FileVerdict::of(rule.decision, op) == FileVerdict::Deny => {
                Subtree::Denied(&rule.name)
            }
            _ => Subtree::Clear,
        }
    }

    /// The rule that denies `op` on `root` and on every path below it, if the explicit rules
    /// settle that (the defaults are not consulted). A coarse layer such as Landlock uses it to
    /// leave out whole trees; `None` means some path below may be allowed.
    pub fn denies_subtree(&self, root: &Path, op: FileOp) -> Option<&str> {
        match self.subtree(root, op) {
            Subtree::Denied(rule) => Some(rule),
            Subtree::Mixed | Subtree::Clear => None,
        }
    }

    /// How the explicit rules judge `op` on `root` and every path below it (the defaults are
    /// not consulted): all denied, some denied, or none denied. A layer that can only grant
    /// whole trees (Landlock) leaves out a denied tree and splits a mixed one into its children.
    pub fn subtree(&self, root: &Path, op: FileOp) -> Subtree<'_> {
        match self.over_tree(root, op, |v| v == FileVerdict::Deny) {
            Over::All(rule) => Subtree::Denied(rule),
            Over::Some(_) => Subtree::Mixed,
            Over::None => Subtree::Clear,
        }
    }

    /// The first rule that, for some operation, decides something other than a plain allow
    /// (a deny, an audit, a soft delete) on a path at or below `root`, unless an earlier rule
    /// settles those paths first. A layer that applies rules per operation (the FUSE
    /// workspace) must serve `root` for this rule to hold; `None` means no rule needs it.
    pub fn rule_within(&self, root: &Path) -> Option<&str> {
        FileOp::ALL.iter().find_map(|op| match self.over_tree(root, *op, |v| v != FileVerdict::Allow) {
            Over::All(rule) | Over::Some(rule) => Some(rule),
            Over::None => None,
        })
    }

    /// How the explicit rules decide `op` over the tree at `root`, for the verdicts `wanted`
    /// picks: on every path (by this rule), on some (the first such rule), or on none.
    fn over_tree(&self, root: &Path, op: FileOp, wanted: impl Fn(FileVerdict) -> bool) -> Over<'_> {
        let Some(root) = normalise(root) else {
            return Over::Some(INVALID_PATH);
        };
        let segs: Vec<&[u8]> = segments(root.as_os_str().as_encoded_bytes()).collect();
        // Whether an earlier rule may decide some path below (so a later covering rule does
        // not decide them all), and the first rule so far wanted for some path below.
        let (mut touched, mut some): (bool, Option<&str>) = (false, None);
        for rule in self.rules.iter().filter(|r| r.covers(op)) {
            let hit = wanted(FileVerdict::of(rule.decision, op));
            let reach = if rule.any_path {
                Reach::Covers
            } else {
                rule.patterns.iter().map(|p| reach(p, &segs)).min().unwrap_or(Reach::Disjoint)
            };
            match reach {
                Reach::Disjoint => {}
                Reach::Touches => {
                    touched = true;
                    if hit {
                        some = some.or(Some(&rule.name));
                    }
                }
                Reach::Covers if hit && !touched => return Over::All(&rule.name),
                Reach::Covers => {
                    let first = some.or(hit.then_some(rule.name.as_str()));
                    return first.map_or(Over::None, Over::Some);
                }
            }
        }
        some.map_or(Over::None, Over::Some)
    }
}

/// [`FileRules::over_tree`]'s answer.
enum Over<'a> {
    All(&'a str),
    Some(&'a str),
    None,
}

/// How the explicit rules judge one operation over a whole tree ([`FileRules::subtree`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subtree<'a> {
    /// Denied on the root and everything below it, by this rule.
    Denied(&'a str),
    /// Denied on some paths at or below the root, maybe not on others.
    Mixed,
    /// No explicit rule denies it anywhere at or below the root.
    Clear,
}

fn segments(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes.split(|&b| b == b'/').filter(|s| !s.is_empty())
}

/// How a glob relates to the tree below a root (ordered widest first).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Reach {
    /// Matches the root and every path below it.
    Covers,
    /// May match some path at or below the root.
    Touches,
    /// Matches no path at or below the root.
    Disjoint,
}

fn reach(pat: &[Vec<u8>], root: &[&[u8]]) -> Reach {
    for (i, p) in pat.iter().enumerate() {
        if p == b"**" {
            let rest_deep = pat[i..].iter().all(|p| p == b"**");
            return if rest_deep { Reach::Covers } else { Reach::Touches };
        }
        match root.get(i) {
            Some(seg) if path_glob::segment_matches(p, seg) => {}
            Some(_) => return Reach::Disjoint,
            // The root is a prefix of the pattern: something below it may match.
            None => return Reach::Touches,
        }
    }
    if pat.len() == root.len() {
        // Matches exactly the root, not what is below it.
        Reach::Touches
    } else {
        Reach::Disjoint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reach_classifies_globs_against_a_root() {
        let root: Vec<&[u8]> = vec![b"home", b"a"];
        let reach = |glob: &str, root: &[&[u8]]| {
            let pat: Vec<Vec<u8>> = segments(glob.as_bytes()).map(<[u8]>::to_vec).collect();
            reach(&pat, root)
        };
        assert_eq!(reach("/home/a/**", &root), Reach::Covers);
        assert_eq!(reach("/home/*/**", &root), Reach::Covers);
        assert_eq!(reach("/**", &root), Reach::Covers);
        assert_eq!(reach("/home/a/.ssh/**", &root), Reach::Touches);
        assert_eq!(reach("/home/a", &root), Reach::Touches);
        assert_eq!(reach("/home/b/**", &root), Reach::Disjoint);
        assert_eq!(reach("/home", &root), Reach::Disjoint);
        assert_eq!(reach("/**/x", &root), Reach::Touches);
    }

    #[test]
    fn normalise_is_lexical() {
        assert_eq!(normalise(Path::new("/a/./b/../c")).unwrap(), Path::new("/a/c"));
        assert_eq!(normalise(Path::new("/../..")).unwrap(), Path::new("/"));
        assert!(normalise(Path::new("a/b")).is_none());
    }
}
