//! What one `waitpid` status of a seized tracee means, as a pure function of the status word.

/// One state change of a tracee, as `waitpid(.., __WALL)` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The task exited or was killed; it is no longer traced.
    Gone,
    /// `PTRACE_EVENT_SECCOMP`: the filter trapped a call, which waits for our answer.
    Seccomp,
    /// `PTRACE_EVENT_FORK`, `VFORK` or `CLONE`: a new task, already attached, whose id
    /// `PTRACE_GETEVENTMSG` gives.
    NewTask,
    /// `PTRACE_EVENT_EXEC`: the task exec'd; `PTRACE_GETEVENTMSG` gives the id it had before
    /// (another thread's, when a non-leader thread exec'd).
    Exec,
    /// `PTRACE_EVENT_STOP` for a stop signal: the task is in a group-stop, to be left stopped
    /// with `PTRACE_LISTEN` until `SIGCONT`.
    Group,
    /// Any other `PTRACE_EVENT_STOP` (a new task's first stop, the end of a group-stop) or
    /// event: resume with no signal.
    Event,
    /// Signal-delivery-stop: the task is about to receive this signal, which must be passed on.
    Signal(i32),
}

/// Classifies a `waitpid` status.
pub(crate) fn classify(status: i32) -> Stop {
    if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
        return Stop::Gone;
    }
    if !libc::WIFSTOPPED(status) {
        // WIFCONTINUED is not asked for (no WCONTINUED); anything else is nothing to act on.
        return Stop::Event;
    }
    let signal = libc::WSTOPSIG(status);
    match status >> 16 {
        0 => Stop::Signal(signal),
        libc::PTRACE_EVENT_SECCOMP => Stop::Seccomp,
        libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE => Stop::NewTask,
        libc::PTRACE_EVENT_EXEC => Stop::Exec,
        PTRACE_EVENT_STOP if is_stop_signal(signal) => Stop::Group,
        _ => Stop::Event,
    }
}

/// `PTRACE_EVENT_STOP` (not in libc for glibc targets).
const PTRACE_EVENT_STOP: i32 = 128;

fn is_stop_signal(signal: i32) -> bool {
    matches!(signal, libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status word of a ptrace stop: `signal`, with `event` above it.
    fn stopped(signal: i32, event: i32) -> i32 {
        0x7f | (signal << 8) | (event << 16)
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify(3 << 8), Stop::Gone, "exit(3)");
        assert_eq!(classify(libc::SIGKILL), Stop::Gone, "killed");
        assert_eq!(classify(stopped(libc::SIGTRAP, libc::PTRACE_EVENT_SECCOMP)), Stop::Seccomp);
        for e in [libc::PTRACE_EVENT_FORK, libc::PTRACE_EVENT_VFORK, libc::PTRACE_EVENT_CLONE] {
            assert_eq!(classify(stopped(libc::SIGTRAP, e)), Stop::NewTask);
        }
        assert_eq!(classify(stopped(libc::SIGTRAP, libc::PTRACE_EVENT_EXEC)), Stop::Exec);
        assert_eq!(classify(stopped(libc::SIGSTOP, PTRACE_EVENT_STOP)), Stop::Group);
        assert_eq!(classify(stopped(libc::SIGTTIN, PTRACE_EVENT_STOP)), Stop::Group);
        assert_eq!(classify(stopped(libc::SIGTRAP, PTRACE_EVENT_STOP)), Stop::Event, "first stop");
        assert_eq!(classify(stopped(libc::SIGTERM, 0)), Stop::Signal(libc::SIGTERM));
        assert_eq!(
            classify(stopped(libc::SIGSTOP, 0)),
            Stop::Signal(libc::SIGSTOP),
            "delivery, not yet a stop"
        );
    }
}
