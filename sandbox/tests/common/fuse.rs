//! A FUSE workspace mounted for one test: backing dir, mount point and trash under a fresh
//! host directory, events collected in memory; unmounted and removed on drop, even when the
//! test panics.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use policies::engine::file::FileRules;
use sandbox::workspace::{FileEvent, FileEventSink, SymlinkEscape, WorkspaceConfig, WorkspaceMount};

/// Every event, in arrival order.
#[derive(Default)]
pub struct Events(pub Mutex<Vec<FileEvent>>);

impl FileEventSink for Events {
    fn event(&self, event: FileEvent) {
        self.0.lock().unwrap().push(event);
    }
}

impl Events {
    pub fn take(&self) -> Vec<FileEvent> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

pub struct Mounted {
    pub root: PathBuf,
    pub backing: PathBuf,
    pub mnt: PathBuf,
    pub events: Arc<Events>,
    pub mount: Option<WorkspaceMount>,
}

impl Mounted {
    /// Mounts with the `file_rules` of `policy_yaml` (`${WORKSPACE}` is the mount point);
    /// `seed` fills the backing directory first.
    pub fn new(policy_yaml: &str, escape: SymlinkEscape, seed: impl FnOnce(&Path)) -> Mounted {
        Mounted::with_passthrough(policy_yaml, escape, false, seed)
    }

    /// As [`Mounted::new`], asking for kernel passthrough when `passthrough` is set.
    pub fn with_passthrough(
        policy_yaml: &str,
        escape: SymlinkEscape,
        passthrough: bool,
        seed: impl FnOnce(&Path),
    ) -> Mounted {
        Mounted::build(policy_yaml, escape, passthrough, false, seed)
    }

    /// As [`Mounted::new`], serving `user.` extended attributes.
    pub fn with_xattrs(policy_yaml: &str, escape: SymlinkEscape, seed: impl FnOnce(&Path)) -> Mounted {
        Mounted::build(policy_yaml, escape, false, true, seed)
    }

    fn build(
        policy_yaml: &str,
        escape: SymlinkEscape,
        passthrough: bool,
        xattrs: bool,
        seed: impl FnOnce(&Path),
    ) -> Mounted {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let root = PathBuf::from(format!("/tmp/agentsh-fusews-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (backing, mnt) = (root.join("backing"), root.join("mnt"));
        std::fs::create_dir_all(&backing).unwrap();
        std::fs::create_dir_all(&mnt).unwrap();
        seed(&backing);
        let policy = policies::load_policy(policy_yaml, "test.yaml").expect("test policy loads");
        let rules = FileRules::new(&policy.file_rules, &mnt, &|n| (n == "HOME").then(|| "/root".into()));
        let events = Arc::new(Events::default());
        let config = WorkspaceConfig {
            backing: backing.clone(),
            sandbox_path: mnt.clone(),
            rules,
            symlink_escape: escape,
            trash_dir: root.join("trash"),
            events: events.clone(),
            threads: 4,
            passthrough,
            xattrs,
        };
        let mut m = Mounted { root, backing, mnt, events, mount: None };
        m.mount = Some(WorkspaceMount::mount(config, &m.mnt).expect("mount the FUSE workspace"));
        m
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    pub fn mount(&self) -> &WorkspaceMount {
        self.mount.as_ref().unwrap()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take() {
            drop(m);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The errno of a failed IO call, or a panic naming what succeeded unexpectedly.
pub fn errno_of<T: std::fmt::Debug>(r: std::io::Result<T>, what: &str) -> i32 {
    match r {
        Ok(v) => panic!("{what} should have failed, got {v:?}"),
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}
