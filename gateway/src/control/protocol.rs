//! The control API's messages: one JSON request line per connection, answered by one JSON
//! response line. `exec` in human mode also carries the client's stdin, stdout and stderr as
//! SCM_RIGHTS file descriptors, so the command streams straight to the caller's terminal.

use std::{collections::BTreeMap, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::events::Event;

/// Where a session's policy comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PolicySpec {
    /// An embedded policy by name.
    Embedded {
        /// `default`, `strict` or `audit`.
        name: String,
    },
    /// A policy file's text, read by the client (so the server never opens caller paths).
    Inline {
        /// The file name, for error messages.
        file: String,
        /// The YAML text.
        text: String,
        /// The detached signature (`<file>.sig`), when there is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
    },
}

/// Which events `exec` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum EventsMode {
    /// No events.
    #[default]
    None,
    /// Blocked events only, at most 25.
    Summary,
    /// Every event.
    All,
}

/// A request to the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Create a session.
    SessionCreate {
        /// The agent's working directory (absolute).
        workspace: PathBuf,
        /// The policy.
        policy: PolicySpec,
        /// The creator's environment: the FUSE layer's rules expand `${VAR}` (other than
        /// `HOME` and `WORKSPACE`) from it. Absent from older clients: no variable is set.
        #[serde(default)]
        env: BTreeMap<String, String>,
    },
    /// List sessions.
    SessionList,
    /// Show one session.
    SessionShow {
        /// Session id.
        id: String,
    },
    /// Destroy a session, killing every process in it.
    SessionDestroy {
        /// Session id.
        id: String,
    },
    /// Run a command in a session and wait for it.
    Exec(ExecRequest),
    /// Destroy every session and stop the daemon.
    Shutdown,
    /// List a session's soft-deleted files, or restore one.
    SessionTrash {
        /// Session id.
        id: String,
        /// Restore the file with this trash id instead of listing.
        #[serde(default)]
        restore: Option<String>,
    },
    /// Stream audit events: the recorded ones that match, then (with `follow`) new ones as
    /// they happen, one [`Response::Event`] each; [`Response::Done`] ends a non-follow stream.
    Events {
        /// Only this session's events.
        #[serde(default)]
        session: Option<String>,
        /// Only events of these types.
        #[serde(default)]
        kinds: Vec<String>,
        /// Keep streaming new events until the client hangs up.
        #[serde(default)]
        follow: bool,
    },
}

/// The body of an `exec` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Session id.
    pub session_id: String,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// The command's environment (the client's, as sent).
    pub env: BTreeMap<String, String>,
    /// Kill the command after this many milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Capture stdout and stderr into the response instead of using the passed descriptors.
    pub capture: bool,
    /// Which events to return.
    #[serde(default)]
    pub events: EventsMode,
}

/// What the daemon knows about a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Session id.
    pub id: String,
    /// Workspace directory.
    pub workspace: PathBuf,
    /// Policy name.
    pub policy: String,
    /// The redirect backend in use (`seccomp`).
    pub backend: String,
    /// The Landlock ABI commands run under (`files.landlock`), when the layer is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landlock_abi: Option<u32>,
    /// Why commands run without Landlock, when the layer is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landlock_off: Option<String>,
    /// Whether the workspace is served by the FUSE layer, and why: "on (…)" or "off (…)".
    #[serde(default)]
    pub fuse_workspace: String,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Commands run so far.
    pub commands: u64,
    /// Commands running now.
    pub running: u64,
}

/// The result of `exec` (DESIGN.md §6 `--output json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecResult {
    /// Session id.
    pub session_id: String,
    /// Command id (`cmd-<uuid>`).
    pub command_id: String,
    /// Exit code; 128+N when killed by signal N.
    pub exit_code: i32,
    /// Captured stdout (empty unless captured).
    pub stdout: String,
    /// Captured stderr (empty unless captured).
    pub stderr: String,
    /// Wall time.
    pub duration_ms: u64,
    /// Events, per the request's `events` mode.
    pub events: Vec<Event>,
}

/// A response from the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Response {
    /// The request failed; `error` says why.
    Error {
        /// Human-readable reason.
        error: String,
    },
    /// A session was created.
    Created {
        /// The new session.
        session: SessionInfo,
    },
    /// Sessions.
    Sessions {
        /// All sessions.
        sessions: Vec<SessionInfo>,
    },
    /// One session.
    Session {
        /// The session.
        session: SessionInfo,
    },
    /// Done, nothing to report.
    Done,
    /// A command finished.
    Exited(ExecResult),
    /// One audit event of an `events` stream.
    Event(Box<crate::events::Event>),
    /// A session's trash.
    Trash {
        /// `(trash id, original path relative to the workspace, size in bytes)`.
        entries: Vec<(String, PathBuf, u64)>,
    },
    /// A file put back from the trash.
    Restored {
        /// Where it is again.
        path: PathBuf,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_one_json_line() {
        let req = Request::Exec(ExecRequest {
            session_id: "session-1".into(),
            argv: vec!["curl".into(), "https://example.com".into()],
            env: BTreeMap::from([("PATH".into(), "/usr/bin".into())]),
            timeout_ms: Some(5000),
            capture: true,
            events: EventsMode::All,
        });
        let line = serde_json::to_string(&req).unwrap();
        assert!(!line.contains('\n'));
        assert!(line.starts_with(r#"{"op":"exec""#), "{line}");
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), req);
    }
}
