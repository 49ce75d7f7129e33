//! Which opens of an inode use kernel passthrough. The kernel refuses (`EIO`) to mix, on one
//! inode at one time, passthrough opens with differing backing files or with opens it serves
//! through the daemon; so every open of an inode follows the mode of the opens already there,
//! and passthrough opens share one backing file, opened read-write when possible, until the
//! last is released. A first open chooses passthrough only for files of at least
//! [`PASSTHROUGH_MIN_SIZE`]: registering a backing file costs more than a small file's reads.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex};

use fuser::BackingId;

/// Smallest file a first open serves by passthrough.
pub(crate) const PASSTHROUGH_MIN_SIZE: u64 = 256 << 10;

#[derive(Default)]
struct Entry {
    id: Option<Arc<BackingId>>,
    /// The registered file; the kernel holds its own reference, this keeps the pairing plain.
    _file: Option<File>,
    passthrough: usize,
    served: usize,
}

/// Open modes and backing ids by FUSE inode number.
#[derive(Default)]
pub(crate) struct Backings {
    map: Mutex<HashMap<u64, Entry>>,
}

impl Backings {
    /// Counts one open of `ino` (a regular file of `size` bytes) and returns its backing id
    /// when the open is to use passthrough: registering the file `open_file` gives with
    /// `register` if this is the inode's first passthrough open.
    pub fn acquire(
        &self,
        ino: u64,
        size: u64,
        open_file: impl FnOnce() -> io::Result<File>,
        register: impl FnOnce(&File) -> io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let e = map.entry(ino).or_default();
        if e.passthrough > 0 {
            e.passthrough += 1;
            return e.id.clone();
        }
        if e.served == 0 && size >= PASSTHROUGH_MIN_SIZE {
            let registered = open_file().and_then(|f| register(&f).map(|id| (f, Arc::new(id))));
            if let Ok((file, id)) = registered {
                *e = Entry { id: Some(id.clone()), _file: Some(file), passthrough: 1, served: 0 };
                return Some(id);
            }
        }
        e.served += 1;
        None
    }

    /// One counted open of `ino` was released; `passthrough` says which mode it had.
    pub fn release(&self, ino: u64, passthrough: bool) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = map.get_mut(&ino) {
            let count = if passthrough { &mut e.passthrough } else { &mut e.served };
            *count = count.saturating_sub(1);
            if e.passthrough == 0 && e.served == 0 {
                map.remove(&ino);
            }
        }
    }
}
