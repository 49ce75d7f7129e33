//! Kernel passthrough ids, one per inode: the kernel refuses (`EIO`) a second open of an inode
//! with a different backing file while one is in use, so every open of an inode shares one
//! backing file, opened read-write when possible, until the last handle is released.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex};

use fuser::BackingId;

struct Entry {
    id: Arc<BackingId>,
    refs: usize,
    /// The registered file; the kernel holds its own reference, this keeps the pairing plain.
    _file: File,
}

/// Backing ids by FUSE inode number.
#[derive(Default)]
pub(crate) struct Backings {
    map: Mutex<HashMap<u64, Entry>>,
}

impl Backings {
    /// The backing id of `ino`, registering the file `open_file` gives with `register` the
    /// first time; `None` when either fails (the open is then served by the daemon).
    pub fn acquire(
        &self,
        ino: u64,
        open_file: impl FnOnce() -> io::Result<File>,
        register: impl FnOnce(&File) -> io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = map.get_mut(&ino) {
            e.refs += 1;
            return Some(e.id.clone());
        }
        let file = open_file().ok()?;
        let id = Arc::new(register(&file).ok()?);
        map.insert(ino, Entry { id: id.clone(), refs: 1, _file: file });
        Some(id)
    }

    /// One handle of `ino` that had a backing id was released.
    pub fn release(&self, ino: u64) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = map.get_mut(&ino) {
            e.refs -= 1;
            if e.refs == 0 {
                map.remove(&ino);
            }
        }
    }
}
