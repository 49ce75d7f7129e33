//! The control API between the `agentsh` CLI and the daemon: messages and their framing.
pub mod frame;
pub mod protocol;
