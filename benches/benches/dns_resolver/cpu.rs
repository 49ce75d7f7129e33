//! CPU accounting from /proc, so each target's cost per query is seen apart from the machine's
//! contention: on-CPU time of chosen threads (schedstat, nanoseconds) and the system's idle share.

use std::{path::Path, time::Duration};

/// On-CPU time of the threads of `pid` whose name starts with `prefix` (every thread for "").
pub fn threads(pid: u32, prefix: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Duration::ZERO };
    let ns: u64 = tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end().starts_with(prefix))
        })
        .filter_map(|t| on_cpu_ns(&t.path()))
        .sum();
    Duration::from_nanos(ns)
}

fn on_cpu_ns(task: &Path) -> Option<u64> {
    std::fs::read_to_string(task.join("schedstat")).ok()?.split_whitespace().next()?.parse().ok()
}

/// Idle and total jiffies of all CPUs since boot (`/proc/stat`'s `cpu` line).
pub fn system() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else { return (0, 0) };
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total = v.iter().take(8).sum();
    (v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0), total)
}

/// A reading of the machine and of the target's and the upstream's threads.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reading {
    /// The server under test.
    pub server: Duration,
    /// The upstream thread.
    pub upstream: Duration,
    /// Idle jiffies, all CPUs.
    pub idle: u64,
    /// All jiffies, all CPUs.
    pub total: u64,
}

/// Where to read a target's CPU: a pid and a thread-name prefix.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// The server's process (this bench for the session resolver).
    pub pid: u32,
    /// Its threads' name prefix ("" for all).
    pub prefix: &'static str,
}

impl Probe {
    /// Read now; `upstream_pid` is this process, the upstream thread is named `dns-upstream`.
    pub fn read(&self) -> Reading {
        let (idle, total) = system();
        Reading {
            server: threads(self.pid, self.prefix),
            upstream: threads(std::process::id(), "dns-upstream"),
            idle,
            total,
        }
    }
}

impl std::ops::Sub for Reading {
    type Output = Reading;
    fn sub(self, o: Reading) -> Reading {
        Reading {
            server: self.server.saturating_sub(o.server),
            upstream: self.upstream.saturating_sub(o.upstream),
            idle: self.idle.saturating_sub(o.idle),
            total: self.total.saturating_sub(o.total),
        }
    }
}

impl std::ops::AddAssign for Reading {
    fn add_assign(&mut self, o: Reading) {
        self.server += o.server;
        self.upstream += o.upstream;
        self.idle += o.idle;
        self.total += o.total;
    }
}
