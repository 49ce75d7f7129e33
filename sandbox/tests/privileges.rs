//! Identity and privilege tests: uid/gid/groups, every capability set empty, no_new_privs,
//! the seccomp filter and its notify fd, exact environment, cwd, exit statuses.
mod common;

use std::time::Duration;

use common::{StateDir, privileged, run, run_with, sh};

/// A one-instruction classic-BPF program: `RET SECCOMP_RET_ALLOW`.
fn allow_all() -> Vec<u8> {
    let mut insn = 0x06u16.to_ne_bytes().to_vec(); // BPF_RET | BPF_K
    insn.extend_from_slice(&[0, 0]);
    insn.extend_from_slice(&0x7fff_0000u32.to_ne_bytes());
    insn
}

fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
        .unwrap_or_else(|| panic!("{key} missing from {status}"))
}

fn assert_no_capabilities(status: &str) {
    for key in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(status, key), "0000000000000000", "{key}");
    }
    assert_eq!(status_field(status, "NoNewPrivs"), "1");
}

#[test]
fn runs_as_nobody_with_no_capabilities() {
    if !privileged("runs_as_nobody_with_no_capabilities") {
        return;
    }
    let state = StateDir::new();
    let mut spec = sh("id -u; id -g; cat /proc/self/status", &state);
    spec.groups = vec![1234, 5678];
    let out = run(spec);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("65534\n65534\n"), "{out:?}");
    assert_eq!(status_field(&out.stdout, "Groups"), "1234 5678");
    assert_eq!(status_field(&out.stdout, "Seccomp"), "0");
    assert_no_capabilities(&out.stdout);
}

#[test]
fn uid_zero_gains_no_capabilities_at_exec() {
    if !privileged("uid_zero_gains_no_capabilities_at_exec") {
        return;
    }
    let state = StateDir::new();
    let mut spec = sh("id -u; cat /proc/self/status", &state);
    spec.uid = 0;
    spec.gid = 0;
    let out = run(spec);
    assert!(out.stdout.starts_with("0\n"), "{out:?}");
    assert_eq!(status_field(&out.stdout, "Groups"), "");
    assert_no_capabilities(&out.stdout);
}

#[test]
fn seccomp_filter_is_installed_and_notify_fd_reaches_the_parent() {
    if !privileged("seccomp_filter_is_installed_and_notify_fd_reaches_the_parent") {
        return;
    }
    let state = StateDir::new();
    let mut spec = sh("cat /proc/self/status", &state);
    spec.seccomp = Some(allow_all());
    let mut fd_kind = String::new();
    let out = run_with(spec, |launched| {
        use std::os::fd::AsRawFd;
        // run_with already resumed; the fd stays ours.
        let fd = launched.notify_fd.as_ref().expect("notify fd").as_raw_fd();
        fd_kind = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap().display().to_string();
    });
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(fd_kind, "anon_inode:seccomp notify");
    assert_eq!(status_field(&out.stdout, "Seccomp"), "2");
    assert_eq!(status_field(&out.stdout, "Seccomp_filters"), "1");
    assert_no_capabilities(&out.stdout);
}

#[test]
fn a_command_never_resumed_does_not_run() {
    if !privileged("a_command_never_resumed_does_not_run") {
        return;
    }
    let state = StateDir::new();
    let (out_r, out_w) = std::io::pipe().unwrap();
    let mut spec = sh("echo ran", &state);
    spec.seccomp = Some(allow_all());
    spec.stdout = sandbox::Stdio::Fd(out_w.into());
    let mut launched = sandbox::launch(&spec).unwrap();
    drop(spec);
    assert!(launched.notify_fd.is_some());
    // wait() without resume() closes the launch socket: the parked command must give up.
    assert_eq!(launched.wait_timeout(Duration::from_secs(30)).unwrap(), Some(127));
    let mut got = String::new();
    std::io::Read::read_to_string(&mut &out_r, &mut got).unwrap();
    assert_eq!(got, "");
}

#[test]
fn environment_is_exactly_the_spec_and_path_is_searched() {
    if !privileged("environment_is_exactly_the_spec_and_path_is_searched") {
        return;
    }
    let state = StateDir::new();
    let mut spec = sh("", &state);
    spec.argv = vec!["env".into()];
    spec.env = vec![("PATH".into(), "/nonexistent:/usr/bin:/bin".into()), ("ONLY".into(), "this".into())];
    let out = run(spec);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "PATH=/nonexistent:/usr/bin:/bin\nONLY=this\n");
}

#[test]
fn cwd_is_applied() {
    if !privileged("cwd_is_applied") {
        return;
    }
    let state = StateDir::new();
    let mut spec = sh("pwd", &state);
    spec.cwd = "/etc".into();
    assert_eq!(run(spec).stdout, "/etc\n");
}

#[test]
fn signals_propagate_as_128_plus_signal() {
    if !privileged("signals_propagate_as_128_plus_signal") {
        return;
    }
    let state = StateDir::new();
    assert_eq!(run(sh("kill -KILL $$", &state)).code, 137);
    assert_eq!(run(sh("kill -TERM $$", &state)).code, 143);
    // SIGTERM to the init is forwarded to the command.
    let out = run_with(sh("echo ready; exec sleep 30", &state), |launched| {
        std::thread::sleep(Duration::from_millis(100));
        launched.signal(libc::SIGTERM).unwrap();
    });
    assert_eq!(out.code, 143, "{out:?}");
    // kill() takes the whole sandbox down.
    let out = run_with(sh("sleep 30 & sleep 30", &state), |launched| launched.kill().unwrap());
    assert_eq!(out.code, 137, "{out:?}");
}

fn launch_error(spec: sandbox::LaunchSpec) -> String {
    match sandbox::launch(&spec) {
        Ok(_) => panic!("launch should have failed"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn failures_name_the_step_and_errno() {
    if !privileged("failures_name_the_step_and_errno") {
        return;
    }
    let state = StateDir::new();
    let mut spec = sh("true", &state);
    spec.argv = vec!["no-such-program-agentsh".into()];
    assert_eq!(
        launch_error(spec),
        "find executable no-such-program-agentsh: ENOENT (No such file or directory)"
    );

    let mut spec = sh("true", &state);
    spec.cwd = "/nonexistent-agentsh".into();
    assert_eq!(launch_error(spec), "chdir /nonexistent-agentsh: ENOENT (No such file or directory)");

    let mut spec = sh("true", &state);
    spec.bind_files = vec![(state.0.join("missing"), "/etc/agentsh-missing".into())];
    assert_eq!(launch_error(spec), "bind file /etc/agentsh-missing: ENOENT (No such file or directory)");

    let mut spec = sh("true", &state);
    spec.seccomp = Some(vec![0; 7]);
    assert!(launch_error(spec).starts_with("invalid launch spec: seccomp"));
}
