//! Launching a session's processes into a sandbox: new mount, PID, network, UTS, IPC and cgroup
//! namespaces, a per-session cgroup v2, a private mount view (`/tmp`, an empty `/run`,
//! `/run/agentsh`, `/etc/resolv.conf`, read-only extra files, directory binds), capabilities dropped, `no_new_privs`, and a
//! seccomp filter whose user-notify listener fd is handed to the parent (or, in
//! [`SeccompListener::Trace`] mode, whose command a ptrace tracer seizes by its host pid).
//!
//! Entry point: [`launch`] with a [`LaunchSpec`], giving a [`Launched`]. The sandbox is an init
//! (pid 1, host pid [`Launched::pid`]) that forks the command as pid 2; see `child.rs` for the
//! exact child sequence and why it allocates nothing between fork and exec.
//!
//! [`detect`] finds what this machine can enforce, by trying.
//!
//! [`LandlockPlan`] (set [`LaunchSpec::landlock`]) has the kernel confine the command to the
//! system trees, the workspace, its private `/tmp` and the caller's home, narrowed and split by
//! `file_rules` ([`landlock_rules`]). [`workspace::WorkspaceMount`] serves
//! the workspace through FUSE with `file_rules` applied per operation.

// Namespaces, clone3, mounts and SCM_RIGHTS need raw syscalls; every block says why it is sound.
#![allow(unsafe_code)]

pub mod cgroup;
mod child;
pub mod detect;
pub mod error;
mod fdpass;
pub mod landlock_plan;
pub mod landlock_rules;
mod launch;
mod mounts;
pub mod prepare;
pub mod report;
pub mod spec;
mod sys;
pub mod workspace;
pub mod wrap;

pub use child::encode_wait_status;
pub use error::{Errno, SandboxError};
pub use landlock_plan::{LandlockAccess, LandlockPath, LandlockPlan};
pub use launch::{Launched, launch};
pub use spec::{
    BindDir, DEFAULT_PATH, LaunchSpec, SANDBOX_SELF_V4, SANDBOX_SELF_V6, SANDBOX_STATE_DIR, SeccompListener,
    Stdio,
};
