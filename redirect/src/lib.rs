//! Connect redirection backends behind one trait, and the `OriginalDst` table.
//!
//! Today this crate provides the seccomp user-notify, ptrace and eBPF backends of DESIGN.md §2:
//! - [`filter`]: the sandbox's seccomp filter, from a pure [`filter::FilterSpec`] to raw BPF;
//! - [`seccomp::Supervisor`]: the loop that answers the filter's notifications;
//! - [`ptrace::Tracer`]: the same answers as the filter's tracer, where user-notify is missing;
//! - [`OriginalDstTable`]: where each redirected connection really was going;
//! - [`handoff`]: passing the notify fd over a Unix socket with SCM_RIGHTS;
//! - [`ebpf`]: the eBPF cgroup/sock_addr backend, for sessions in the host network namespace.

pub mod decide;
pub mod ebpf;
pub mod filter;
pub mod handoff;
pub mod original_dst;
pub mod ptrace;
pub mod seccomp;
pub mod sockaddr;
#[doc(hidden)]
pub mod testing;
mod trap;

pub use decide::{Action, CallKind, ConnectDecider, SockInfo};
pub use original_dst::{OriginalDst, OriginalDstTable, TableError, Transport};
pub use sockaddr::{ParsedAddr, SockaddrError, UnixAddr, parse_sockaddr};
pub use trap::{Call, Exit, Reply};
