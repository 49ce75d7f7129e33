//! Launching a session's processes: namespaces, cgroup, mount view, Landlock, FUSE workspace,
//! capability drop, seccomp filter install and notify-fd hand-off; and `detect`.
//! Not implemented yet: see the issue tracker.
