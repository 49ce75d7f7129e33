//! The inode table of the FUSE workspace: FUSE inode numbers mapped to paths relative to the
//! backing directory, with the kernel's lookup counts. Numbers are handed out per path and
//! never reused, so a stale number can only miss, never reach another file.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The root's inode number (FUSE's `FUSE_ROOT_ID`).
pub(crate) const ROOT: u64 = 1;

#[derive(Debug)]
struct Node {
    /// Relative to the backing root; `None` once unlinked or replaced.
    path: Option<PathBuf>,
    lookups: u64,
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
        by_ino.insert(ROOT, Node { path: Some(PathBuf::new()), lookups: 1 });
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
        self.by_ino.insert(ino, Node { path: Some(path.to_path_buf()), lookups: 1 });
        self.by_path.insert(path.to_path_buf(), ino);
        ino
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
    /// detached first.
    pub fn rename(&mut self, from: &Path, to: &Path) {
        self.detach(to);
        let moved: Vec<(PathBuf, u64)> =
            self.by_path.iter().filter(|(p, _)| p.starts_with(from)).map(|(p, i)| (p.clone(), *i)).collect();
        for (old, ino) in moved {
            let Ok(rest) = old.strip_prefix(from) else { continue };
            let new = if rest.as_os_str().is_empty() { to.to_path_buf() } else { to.join(rest) };
            self.by_path.remove(&old);
            self.detach(&new);
            self.by_path.insert(new.clone(), ino);
            if let Some(n) = self.by_ino.get_mut(&ino) {
                n.path = Some(new);
            }
        }
    }

    /// Two names swapped places (`RENAME_EXCHANGE`).
    pub fn exchange(&mut self, a: &Path, b: &Path) {
        let tmp = PathBuf::from("\0exchange");
        self.rename(a, &tmp);
        self.rename(b, a);
        self.rename(&tmp, b);
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
        n.rename(Path::new("d"), Path::new("t"));
        assert_eq!(n.path(d).unwrap(), Path::new("t"));
        assert_eq!(n.path(f).unwrap(), Path::new("t/f"));
        assert_eq!(n.path(t), None);
        n.forget(f, 1);
        assert_eq!(n.path(f), None);
        assert_eq!(n.remember(Path::new("t/f")), f + 2);
        assert!(n.child(ROOT, OsStr::new("..")).is_none());
        assert!(n.child(ROOT, OsStr::new("a/b")).is_none());
    }
}
