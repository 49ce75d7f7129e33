//! `file_rules`: which paths the agent may read, write, create, delete or execute. First match
//! wins in file order; field names follow agentsh's. The engine is `crate::engine::file`.

use serde::Deserialize;

use super::values::{DurationSpec, PathGlob};

/// A file operation a file rule covers (agentsh's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileOperation {
    /// Opening a file (any mode).
    Open,
    /// Reading contents.
    Read,
    /// `stat` and friends.
    Stat,
    /// Listing a directory.
    List,
    /// Reading a symlink.
    Readlink,
    /// `access(2)` checks.
    Access,
    /// Writing contents.
    Write,
    /// Creating a file.
    Create,
    /// Creating a directory.
    Mkdir,
    /// Changing the mode.
    Chmod,
    /// Changing the owner.
    Chown,
    /// Renaming or moving.
    Rename,
    /// Deleting a file.
    Delete,
    /// Removing a directory.
    Rmdir,
    /// Creating a hard link.
    Link,
    /// Creating a symlink.
    Symlink,
    /// Creating a device node or FIFO.
    Mknod,
    /// Executing a file (or mapping it executable).
    Exec,
    /// Every operation.
    #[serde(rename = "*")]
    All,
}

/// What a file rule says should happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileDecision {
    /// Let it through.
    Allow,
    /// Refuse it.
    Deny,
    /// Ask for approval first.
    Approve,
    /// Let it through and flag it.
    Audit,
    /// Perform it at `redirect_to` instead.
    Redirect,
    /// Deletes move to a per-session trash instead (agentsh; effective allow).
    SoftDelete,
}

/// One `file_rules` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRule {
    /// Rule name, reported in every decision it makes.
    pub name: String,
    /// Free text for humans.
    #[serde(default)]
    pub description: Option<String>,
    /// Path globs (`~/.ssh/**`, `${PROJECT_ROOT}/**`); empty matches every path.
    #[serde(default)]
    pub paths: Vec<PathGlob>,
    /// Operations covered; empty matches every operation.
    #[serde(default)]
    pub operations: Vec<FileOperation>,
    /// The verdict when the rule matches.
    pub decision: FileDecision,
    /// Message shown to the agent and written to the audit event.
    #[serde(default)]
    pub message: Option<String>,
    /// How long an `approve` waits.
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
    /// Target directory of a `redirect` (required with it, refused without it).
    #[serde(default)]
    pub redirect_to: Option<PathGlob>,
    /// With `redirect`: keep the path below the matched prefix under `redirect_to`.
    #[serde(default)]
    pub preserve_tree: bool,
}
