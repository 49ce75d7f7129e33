//! `agentsh detect`: what this machine can enforce, found by trying. Every probe does the real
//! thing (installs a seccomp user-notify filter and answers a trapped call, creates a Landlock
//! ruleset, loads and attaches a BPF program to a throwaway cgroup, mounts FUSE, seizes a child
//! with ptrace, creates namespaces) in a process of its own, so a probe that crashes or hangs
//! costs nothing but its own answer. [`probe::run`] is the probe side, [`report`] turns the
//! results into the weighted score, tips and the config snippet (pure).

pub mod probe;
mod report;

use std::collections::BTreeMap;

pub use report::{Backend, Capabilities, Domain, Report, Summary, Tip, config_snippet, report};
use serde::{Deserialize, Serialize};

/// One probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeName {
    /// `SECCOMP_GET_ACTION_AVAIL` for `SECCOMP_RET_USER_NOTIF`.
    SeccompBasic,
    /// Install a user-notify filter and answer a trapped call through its listener.
    SeccompNotify,
    /// Create a Landlock ruleset at the best ABI.
    Landlock,
    /// Mount a FUSE file system in a private mount namespace.
    Fuse,
    /// `PTRACE_SEIZE` a child.
    Ptrace,
    /// Load a `cgroup/connect4` program and attach it to a throwaway cgroup.
    Ebpf,
    /// Create a network namespace.
    NetworkNamespace,
    /// Create a PID namespace.
    PidNamespace,
    /// Find the cgroup v2 hierarchy, its controllers, and create a child cgroup.
    CgroupV2,
    /// Drop a capability from the bounding set.
    CapabilityDrop,
}

impl ProbeName {
    /// Every probe, in the order they run.
    pub const ALL: [ProbeName; 10] = [
        ProbeName::SeccompBasic,
        ProbeName::SeccompNotify,
        ProbeName::Landlock,
        ProbeName::Fuse,
        ProbeName::Ptrace,
        ProbeName::Ebpf,
        ProbeName::NetworkNamespace,
        ProbeName::PidNamespace,
        ProbeName::CgroupV2,
        ProbeName::CapabilityDrop,
    ];

    /// The probe's name on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeName::SeccompBasic => "seccomp_basic",
            ProbeName::SeccompNotify => "seccomp_notify",
            ProbeName::Landlock => "landlock",
            ProbeName::Fuse => "fuse",
            ProbeName::Ptrace => "ptrace",
            ProbeName::Ebpf => "ebpf",
            ProbeName::NetworkNamespace => "network_namespace",
            ProbeName::PidNamespace => "pid_namespace",
            ProbeName::CgroupV2 => "cgroup_v2",
            ProbeName::CapabilityDrop => "capability_drop",
        }
    }

    /// The probe called `s`.
    pub fn parse(s: &str) -> Option<ProbeName> {
        ProbeName::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProbeResult {
    /// The feature works here, for this user.
    pub available: bool,
    /// What was tried and what happened (the errno when it failed).
    pub detail: String,
    /// Facts the probe read on the way (`abi` for Landlock; `mount`, `controllers`, `writable`
    /// for cgroup v2).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub facts: BTreeMap<String, String>,
}

impl ProbeResult {
    /// Available, with `detail`.
    pub fn ok(detail: impl Into<String>) -> Self {
        ProbeResult { available: true, detail: detail.into(), facts: BTreeMap::new() }
    }

    /// Unavailable, with `detail`.
    pub fn no(detail: impl Into<String>) -> Self {
        ProbeResult { available: false, detail: detail.into(), facts: BTreeMap::new() }
    }

    /// The same, with one more fact.
    pub fn fact(mut self, key: &str, value: impl Into<String>) -> Self {
        self.facts.insert(key.into(), value.into());
        self
    }
}
