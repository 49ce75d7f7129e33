//! Telling the kernel to drop names it caches. The mount lets the kernel keep names, their
//! absence and attributes for a while ([`super::fs::TTL`]); when the daemon itself changes
//! what a cached name stands for outside a request that the kernel sees (a directory renamed,
//! so the names below it were judged under another path; a trash restore), it queues the name
//! here. From a FUSE worker the notification is sent by a thread of its own: the worker must
//! never send it itself, as the kernel may hold the directory's lock while it waits for that
//! very worker. Other threads (a trash restore) send it at once, so the name is fresh when the
//! call returns.

use std::ffi::{OsStr, OsString};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Mutex, OnceLock, PoisonError};

use fuser::{INodeNo, Notifier};

/// Something the kernel caches that no longer holds.
#[derive(Debug)]
enum Stale {
    /// A name in a directory.
    Entry(u64, OsString),
    /// An inode's attributes.
    Attributes(u64),
}

/// The queue of what to invalidate; the sending thread starts once the session has a
/// notifier, and what was queued before is sent then.
pub(crate) struct Invalidator {
    tx: Mutex<Sender<Stale>>,
    rx: Mutex<Option<Receiver<Stale>>>,
    notifier: OnceLock<Notifier>,
}

fn send(notifier: &Notifier, stale: &Stale) {
    let sent = match stale {
        Stale::Entry(parent, name) => notifier.inval_entry(INodeNo(*parent), name),
        // A negative offset: the attributes only, no cached pages.
        Stale::Attributes(ino) => notifier.inval_inode(INodeNo(*ino), -1, 0),
    };
    // ENOENT: the kernel holds no such name or inode (any more); nothing to drop.
    if let Err(e) = sent
        && e.raw_os_error() != Some(libc::ENOENT)
    {
        tracing::debug!(error = %e, ?stale, "FUSE cache invalidation failed");
    }
}

impl Invalidator {
    pub fn new() -> Invalidator {
        let (tx, rx) = mpsc::channel();
        Invalidator { tx: Mutex::new(tx), rx: Mutex::new(Some(rx)), notifier: OnceLock::new() }
    }

    /// Drops `name` in directory `parent` now. Never from a FUSE worker (see the module).
    pub fn entry_now(&self, parent: u64, name: &OsStr) {
        if let Some(notifier) = self.notifier.get() {
            send(notifier, &Stale::Entry(parent, name.to_os_string()));
        }
    }

    /// Queues `name` in directory `parent` (a FUSE inode number).
    pub fn entry(&self, parent: u64, name: OsString) {
        self.queue(Stale::Entry(parent, name));
    }

    /// Queues the attributes of inode `ino`.
    pub fn attributes(&self, ino: u64) {
        self.queue(Stale::Attributes(ino));
    }

    fn queue(&self, stale: Stale) {
        let tx = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
        // Fails only once the sender thread is gone, i.e. the session has ended.
        let _ = tx.send(stale);
    }

    /// Starts sending through `notifier`; the thread ends with the filesystem (the last
    /// sender). A second call does nothing.
    pub fn start(&self, notifier: Notifier) -> std::io::Result<()> {
        let Some(rx) = self.rx.lock().unwrap_or_else(PoisonError::into_inner).take() else { return Ok(()) };
        let _ = self.notifier.set(notifier.clone());
        std::thread::Builder::new().name("fuse-inval".into()).spawn(move || {
            for stale in rx {
                send(&notifier, &stale);
            }
        })?;
        Ok(())
    }
}
