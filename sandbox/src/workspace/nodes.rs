//! The inode table of the FUSE workspace: FUSE inode numbers mapped to paths relative to the
//! backing directory, with the kernel's lookup counts. Numbers are handed out per path and
//! never reused, so a stale number can only miss, never reach another file.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The root's inode number (FUSE's `FUSE_ROOT_ID`).
pub(crate) const ROOT: u64 = 1;

/// What the backing file looked like when the kernel's page cache of an inode was last known
/// to match it: identity, size and change times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp([i64; 7]);

impl Stamp {
    pub fn of(m: &Metadata) -> Stamp {
        Stamp([
            m.dev() as i64,
            m.ino() as i64,
            m.size() as i64,
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        ])
    }
}

#[derive(Debug)]
struct Node {
    /// Relative to the backing root; `None` once unlinked or replaced.
    path: Option<PathBuf>,
    lookups: u64,
    /// Set while the kernel's cached data of this inode matches the backing file as stamped.
    stamp: Option<Stamp>,
}

/// Inode numbers to relative paths and back.
#[derive(Debug)]
pub(crate) struct Nodes {
    by_ino: HashMap<u64, Node>,
    by_path: HashMap<PathBuf, u64>,
    next: u64,
}

impl Nodes {
    pub fn new() -> Nodes {
        let mut by_ino = HashMap::new();
        by_ino.insert(ROOT, Node { path: Some(PathBuf::new()), lookups: 1, stamp: None });
        let mut by_path = HashMap::new();
        by_path.insert(PathBuf::new(), ROOT);
        Nodes { by_ino, by_path, next: ROOT + 1 }
    }

    /// The relative path of `ino`, if it still has one.
    pub fn path(&self, ino: u64) -> Option<PathBuf> {
        self.by_ino.get(&ino).and_then(|n| n.path.clone())
    }

    /// The relative path of `name` in directory `parent`.
    pub fn child(&self, parent: u64, name: &OsStr) -> Option<PathBuf> {
        let name = Path::new(name);
        // One plain component only: the kernel never sends `/`, `.` or `..` as a name here,
        // and a name that is anything else must not walk the backing tree.
        let mut parts = name.components();
        match (parts.next(), parts.next()) {
            (Some(std::path::Component::Normal(_)), None) => {}
            _ => return None,
        }
        self.path(parent).map(|p| p.join(name))
    }

    /// The inode for `path`, created if new; counts one kernel lookup.
    pub fn remember(&mut self, path: &Path) -> u64 {
        if let Some(&ino) = self.by_path.get(path) {
            if let Some(n) = self.by_ino.get_mut(&ino) {
                n.lookups += 1;
            }
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.by_ino.insert(ino, Node { path: Some(path.to_path_buf()), lookups: 1, stamp: None });
        self.by_path.insert(path.to_path_buf(), ino);
        ino
    }

    /// The inode registered for `path`, without counting a lookup.
    pub fn ino_of(&self, path: &Path) -> Option<u64> {
        self.by_path.get(path).copied()
    }

    /// Where the kernel's cached data of `ino` was last known to match the backing file.
    pub fn stamp(&self, ino: u64) -> Option<Stamp> {
        self.by_ino.get(&ino).and_then(|n| n.stamp)
    }

    /// Records (or, with `None`, forgets) that the cached data of `ino` matches `stamp`.
    pub fn set_stamp(&mut self, ino: u64, stamp: Option<Stamp>) {
        if let Some(n) = self.by_ino.get_mut(&ino) {
            n.stamp = stamp;
        }
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT {
            return;
        }
        let Some(node) = self.by_ino.get_mut(&ino) else { return };
        node.lookups = node.lookups.saturating_sub(n);
        if node.lookups == 0 {
            if let Some(p) = &node.path
                && self.by_path.get(p) == Some(&ino)
            {
                self.by_path.remove(p);
            }
            self.by_ino.remove(&ino);
        }
    }

    /// `path` no longer names the file its inode stood for (unlinked, or replaced).
    pub fn detach(&mut self, path: &Path) {
        if let Some(ino) = self.by_path.remove(path)
            && let Some(n) = self.by_ino.get_mut(&ino)
        {
            n.path = None;
        }
    }

    /// `from` was renamed to `to`: it and everything below it move; whatever `to` named is
    /// detached first. Returns the names directly inside the moved node that the kernel knows
    /// (directory inode, name): their cached entries were judged under the old path.
    pub fn rename(&mut self, from: &Path, to: &Path) -> Vec<(u64, OsString)> {
        self.detach(to);
        let moved: Vec<(PathBuf, u64)> =
            self.by_path.iter().filter(|(p, _)| p.starts_with(from)).map(|(p, i)| (p.clone(), *i)).collect();
        let mut children = Vec::new();
        let top = moved.iter().find(|(p, _)| p == from).map(|(_, i)| *i);
        for (old, ino) in moved {
            let Ok(rest) = old.strip_prefix(from) else { continue };
            let new = if rest.as_os_str().is_empty() { to.to_path_buf() } else { to.join(rest) };
            if let (Some(dir), Some(name), 1) = (top, rest.file_name(), rest.components().count()) {
                children.push((dir, name.to_os_string()));
            }
            self.by_path.remove(&old);
            self.detach(&new);
            self.by_path.insert(new.clone(), ino);
            if let Some(n) = self.by_ino.get_mut(&ino) {
                n.path = Some(new);
            }
        }
        children
    }

    /// Two names swapped places (`RENAME_EXCHANGE`); returns what [`Nodes::rename`] does, for
    /// both.
    pub fn exchange(&mut self, a: &Path, b: &Path) -> Vec<(u64, OsString)> {
        let tmp = PathBuf::from("\0exchange");
        let mut children = self.rename(a, &tmp);
        children.extend(self.rename(b, a));
        self.rename(&tmp, b);
        children
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_moves_subtrees_and_detaches_the_target() {
        let mut n = Nodes::new();
        let d = n.remember(Path::new("d"));
        let f = n.remember(Path::new("d/f"));
        let t = n.remember(Path::new("t"));
        n.remember(Path::new("d/e"));
        n.remember(Path::new("d/e/g"));
        let mut children = n.rename(Path::new("d"), Path::new("t"));
        children.sort();
        assert_eq!(children, [(d, "e".into()), (d, "f".into())]);
        assert_eq!(n.path(d).unwrap(), Path::new("t"));
        assert_eq!(n.path(f).unwrap(), Path::new("t/f"));
        assert_eq!(n.path(t), None);
        n.forget(f, 1);
        assert_eq!(n.path(f), None);
        assert_eq!(n.remember(Path::new("t/f")), f + 4);
        assert!(n.child(ROOT, OsStr::new("..")).is_none());
        assert!(n.child(ROOT, OsStr::new("a/b")).is_none());
    }
}
