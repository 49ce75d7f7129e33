//! `unix_socket_rules`: which AF_UNIX paths and abstract names the agent may use, and how.
//! Field names follow agentsh's so its policies load unchanged.

use serde::Deserialize;

use super::values::{DurationSpec, PathGlob};
use crate::Verdict;

/// A socket operation a Unix-socket rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnixOperation {
    /// `connect(2)` to a path or abstract name.
    Connect,
    /// `bind(2)` to a path or abstract name.
    Bind,
    /// `listen(2)` on a bound socket.
    Listen,
    /// `sendto(2)` with a destination address (datagram sockets).
    Sendto,
    /// Every operation.
    #[serde(rename = "*")]
    All,
}

/// One `unix_socket_rules` entry; first match wins, no match → deny (`default-deny-unix`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnixSocketRule {
    /// Rule name, reported in every decision it makes.
    pub name: String,
    /// Free text for humans.
    #[serde(default)]
    pub description: Option<String>,
    /// Path globs (`/var/run/docker.sock`, `/tmp/.s.PGSQL.*`) or abstract names (`@name`);
    /// empty matches every socket.
    #[serde(default)]
    pub paths: Vec<PathGlob>,
    /// Operations covered; empty matches every operation.
    #[serde(default)]
    pub operations: Vec<UnixOperation>,
    /// The verdict when the rule matches.
    pub decision: Verdict,
    /// Message shown to the agent and written to the audit event.
    #[serde(default)]
    pub message: Option<String>,
    /// How long an `approve` waits.
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
}
