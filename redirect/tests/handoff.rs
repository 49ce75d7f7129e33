//! The notify fd travels from a launcher to the test over SCM_RIGHTS and is a working seccomp
//! listener there: the test's supervisor answers the tracee's connect and ends on POLLHUP.

mod common;

use std::net::TcpStream;

use common::{Routes, TestDecider, program, table};
use redirect::seccomp::{Exit, Supervisor, notif};
use redirect::testing::{
    TraceeExit, child_fail, require_root_and_notify, rerun_in_fresh_netns, spawn_tracee,
};
use std::sync::Arc;

#[test]
fn notify_fd_handed_over_scm_rights_works() {
    let name = "notify_fd_handed_over_scm_rights_works";
    if !require_root_and_notify(name) || rerun_in_fresh_netns(name) {
        return;
    }
    let routes = Routes { gw4: "127.0.0.1:9".parse().unwrap(), gw6: "[::1]:9".parse().unwrap() };
    // Denied connects prove the answer came from our supervisor, not the kernel.
    let mut tracee = spawn_tracee(&program(), || match TcpStream::connect("203.0.113.6:443") {
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => 0,
        other => child_fail(70, &format!("connect gave {other:?}")),
    })
    .unwrap();
    let fd = tracee.notify_fd().expect("notify fd received");
    // A seccomp listener answers ID_VALID for an unknown id with ENOENT, anything else EINVAL/ENOTTY.
    assert!(!notif::id_valid(fd, 12345));
    // Synchronous wake-ups (the supervisor's default) are taken where the kernel has them.
    match notif::set_sync_wake_up(fd) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) && !kernel_at_least(6, 6) => {}
        Err(e) => panic!("SECCOMP_IOCTL_NOTIF_SET_FLAGS: {e}"),
    }
    let handle =
        Supervisor::new(tracee.take_notify(), Arc::new(TestDecider(routes)), table()).spawn().unwrap();
    tracee.release().unwrap();
    assert_eq!(tracee.wait().unwrap(), TraceeExit::Code(0));
    assert_eq!(handle.join().unwrap(), Exit::TraceesGone);
}

/// Whether the running kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}
