//! The per-session trash behind `soft_delete`: a deleted file is renamed into the trash
//! directory as `<id>` with `<id>.path` holding its path relative to the workspace, so the
//! trash can be listed and restored by another process (the CLI) as well as by the mount.

use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// One soft-deleted file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrashEntry {
    /// Identifier to restore it by.
    pub id: String,
    /// Where it was, relative to the workspace.
    pub original: PathBuf,
    /// Its size in bytes.
    pub size: u64,
}

/// Told each path (relative to the workspace) a restore puts back.
type RestoreHook = Box<dyn Fn(&Path) + Send + Sync>;

/// A trash directory for one workspace.
pub struct Trash {
    dir: PathBuf,
    workspace: PathBuf,
    seq: AtomicU64,
    restored: OnceLock<RestoreHook>,
}

impl std::fmt::Debug for Trash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trash")
            .field("dir", &self.dir)
            .field("workspace", &self.workspace)
            .finish_non_exhaustive()
    }
}

const META: &str = "path";

impl Trash {
    /// The trash at `dir` (created if missing, mode 0700) for the backing directory
    /// `workspace`. Keep it outside the workspace, ideally on the same filesystem (moves are
    /// renames; across filesystems they are copies).
    pub fn open(dir: &Path, workspace: &Path) -> io::Result<Trash> {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        Ok(Trash {
            dir: dir.to_path_buf(),
            workspace: workspace.to_path_buf(),
            seq: AtomicU64::new(0),
            restored: OnceLock::new(),
        })
    }

    /// Has `hook` told of every restored path (the mount drops the kernel's cached absence of
    /// it). Set once.
    pub(crate) fn on_restore(&self, hook: impl Fn(&Path) + Send + Sync + 'static) {
        let _ = self.restored.set(Box::new(hook));
    }

    /// The trash directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves the file at `relative` (inside the workspace) into the trash; returns its id.
    pub fn put(&self, relative: &Path) -> io::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let id =
            format!("{}-{}-{}", now.as_nanos(), std::process::id(), self.seq.fetch_add(1, Ordering::Relaxed));
        let target = self.dir.join(&id);
        fs::write(self.dir.join(format!("{id}.{META}")), relative.as_os_str().as_bytes())?;
        let source = self.workspace.join(relative);
        if let Err(e) = move_file(&source, &target) {
            let _ = fs::remove_file(self.dir.join(format!("{id}.{META}")));
            return Err(e);
        }
        Ok(id)
    }

    /// Everything in the trash, oldest first.
    pub fn list(&self) -> io::Result<Vec<TrashEntry>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(&format!(".{META}"))) else { continue };
            let Ok(meta) = fs::symlink_metadata(self.dir.join(id)) else { continue };
            let original = PathBuf::from(std::ffi::OsString::from_vec(fs::read(entry.path())?));
            out.push(TrashEntry { id: id.to_string(), original, size: meta.len() });
        }
        out.sort_by_key(|e| natural_key(&e.id));
        Ok(out)
    }

    /// Puts entry `id` back where it was; refuses (`AlreadyExists`) when something is there
    /// now, and recreates missing parent directories. Returns the restored relative path.
    pub fn restore(&self, id: &str) -> io::Result<PathBuf> {
        if id.is_empty() || id.contains('/') || id.contains('.') {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a trash id"));
        }
        let meta = self.dir.join(format!("{id}.{META}"));
        let original = PathBuf::from(std::ffi::OsString::from_vec(fs::read(&meta)?));
        if original.is_absolute()
            || original.components().any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "trash entry names a path outside the workspace",
            ));
        }
        let target = self.workspace.join(&original);
        // The restore runs with the daemon's rights: never through a directory that became a
        // symlink since the delete (it could lead anywhere).
        let mut dir = self.workspace.clone();
        for part in original.parent().into_iter().flat_map(Path::components) {
            dir.push(part);
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.file_type().is_symlink() => {
                    let what = format!("{} is a symlink", dir.display());
                    return Err(io::Error::new(io::ErrorKind::InvalidData, what));
                }
                _ => {}
            }
        }
        if fs::symlink_metadata(&target).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", original.display()),
            ));
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        move_file(&self.dir.join(id), &target)?;
        fs::remove_file(meta)?;
        if let Some(hook) = self.restored.get() {
            hook(&original);
        }
        Ok(original)
    }
}

fn natural_key(id: &str) -> Vec<u128> {
    id.split('-').map(|p| p.parse().unwrap_or(u128::MAX)).collect()
}

/// `rename`, or copy-and-unlink across filesystems.
fn move_file(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            fs::copy(from, to)?;
            fs::remove_file(from)
        }
        other => other,
    }
}
