//! Connect redirection backends (seccomp user-notify, eBPF cgroup/sock_addr, ptrace) behind one
//! trait, and the `OriginalDst` table that names each redirected connection.
//! Not implemented yet: see the issue tracker.
