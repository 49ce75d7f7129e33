//! Session lifecycle through the CLI: create, list, show, destroy; destroying a session kills
//! the command still running in it and removes its state dir and cgroup; `--timeout` ends a
//! command with 124 and a `command_timeout` event.

mod common;

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use common::{Daemon, Session};
use serde_json::Value;

const OPEN: &str = "version: 1\nname: lifecycle\nnetwork_rules:\n  - {name: deny-all, decision: deny}\n";

fn json(d: &Daemon, args: &[&str]) -> Value {
    let out = d.cli(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json output")
}

fn session_dir(d: &Daemon, s: &Session) -> PathBuf {
    d.state.path().join("sessions").join(&s.id)
}

/// The session's part of the data dir (the harness puts `data_dir` beside the state).
fn session_data(d: &Daemon, s: &Session) -> PathBuf {
    d.state.path().join("data").join("sessions").join(&s.id)
}

fn session_cgroup(s: &Session) -> PathBuf {
    sandbox::cgroup::unified_root().expect("cgroup2 mount").join("agentsh").join(&s.id)
}

#[test]
fn create_list_show_destroy() {
    if !common::privileged("create_list_show_destroy") {
        return;
    }
    let d = Daemon::start();
    let s = d.session(OPEN);
    assert!(session_dir(&d, &s).is_dir());
    assert!(session_data(&d, &s).is_dir());
    assert!(session_cgroup(&s).is_dir());

    let list = json(&d, &["session", "list", "--json"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["id"], s.id.as_str());

    d.exec(&s, &["true"]).assert_exit(0);
    let show = json(&d, &["session", "show", &s.id, "--json"]);
    assert_eq!(show["id"], s.id.as_str());
    assert_eq!(show["workspace"], s.workspace.path().to_str().unwrap());
    let backend = std::env::var("AGENTSH_TEST_BACKEND").ok().filter(|b| !b.is_empty());
    assert_eq!(show["backend"], backend.as_deref().unwrap_or("seccomp"));
    assert_eq!((show["commands"].as_u64(), show["running"].as_u64()), (Some(1), Some(0)));

    let out = d.cli(&["session", "destroy", &s.id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json(&d, &["session", "list", "--json"]), serde_json::json!([]));
    let out = d.cli(&["session", "show", &s.id]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such session"));
    assert!(!session_dir(&d, &s).exists(), "the state dir is removed");
    assert!(!session_data(&d, &s).exists(), "the data dir is removed");
    assert!(!session_cgroup(&s).exists(), "the cgroup is removed");
    let kinds: Vec<String> = d.audit().into_iter().filter(|e| e.session_id == s.id).map(|e| e.kind).collect();
    assert_eq!(kinds.first().map(String::as_str), Some("session_created"));
    assert_eq!(kinds.last().map(String::as_str), Some("session_destroyed"));
}

#[test]
fn destroy_kills_a_running_command() {
    if !common::privileged("destroy_kills_a_running_command") {
        return;
    }
    let d = Daemon::start();
    let s = d.session(OPEN);

    // Background jobs do not outlive their command: the sandbox's PID namespace ends with it.
    let r = d.exec(&s, &["sh", "-c", "sleep 30 & echo started"]);
    r.assert_exit(0);
    assert_eq!(r.stdout, "started\n");
    let procs = std::fs::read_to_string(session_cgroup(&s).join("cgroup.procs")).unwrap();
    assert_eq!(procs, "", "nothing of the finished command is left in the session");

    let running = d
        .command()
        .args(["exec", "--output", "json", &s.id, "--", "sleep", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn exec");
    let deadline = Instant::now() + Duration::from_secs(10);
    while json(&d, &["session", "show", &s.id, "--json"])["running"] != 1 {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let out = d.cli(&["session", "destroy", &s.id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = running.wait_with_output().expect("exec ends");
    assert!(started.elapsed() < Duration::from_secs(20), "destroy did not end the command");
    let r: common::ExecResult = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {} {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    });
    assert_eq!(r.exit_code, 128 + 9, "killed by SIGKILL: {r:#?}");
    assert!(!session_dir(&d, &s).exists());
    assert!(!session_cgroup(&s).exists());
}

#[test]
fn timeout_ends_the_command_with_124() {
    if !common::privileged("timeout_ends_the_command_with_124") {
        return;
    }
    let d = Daemon::start();
    let s = d.session(OPEN);
    let r = d.exec_with(&s, &["--timeout", "1s"], &["sleep", "10"]);
    r.assert_exit(124);
    assert!(r.duration_ms < 10_000, "{r:#?}");
    let e = r.one("command_timeout");
    assert_eq!(e.num("timeout_ms"), 1000);
    assert_eq!(e.command_id.as_deref(), Some(r.command_id.as_str()));
}

#[test]
fn a_restart_removes_the_data_an_earlier_run_left() {
    if !common::privileged("a_restart_removes_the_data_an_earlier_run_left") {
        return;
    }
    let d = Daemon::start();
    let s = d.session(OPEN);
    let ours = session_data(&d, &s);
    let marker = std::fs::read(ours.join(".state_dir")).expect("the session's data names its server");
    assert_eq!(marker, d.state.path().as_os_str().as_encoded_bytes());
    let sessions = ours.parent().unwrap().to_path_buf();
    let theirs = sessions.join("session-of-another-server");
    let unmarked = sessions.join("session-unmarked");
    // The clean stop removes the session's data; put it back as a server killed outright
    // leaves it, beside data of another server sharing the data dir and an unmarked entry.
    let d = d.restart_with(|| {
        assert!(!ours.exists(), "a clean stop removes the data");
        std::fs::create_dir_all(ours.join("home-0-0")).unwrap();
        std::fs::write(ours.join("home-0-0/cache.bin"), "x").unwrap();
        std::fs::write(ours.join(".state_dir"), &marker).unwrap();
        std::fs::create_dir_all(&theirs).unwrap();
        std::fs::write(theirs.join(".state_dir"), "/run/elsewhere").unwrap();
        std::fs::create_dir_all(&unmarked).unwrap();
    });
    assert!(!ours.exists(), "the earlier run's session data is removed at start");
    assert!(theirs.is_dir() && unmarked.is_dir(), "data of other servers is left alone");
    drop(d);
}

#[test]
fn a_workspace_holding_the_state_or_data_dir_is_refused() {
    if !common::privileged("a_workspace_holding_the_state_or_data_dir_is_refused") {
        return;
    }
    let d = Daemon::start();
    let state = d.state.path().to_path_buf();
    let data = state.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for (ws, what) in [(state.as_path(), "state dir"), (data.as_path(), "data dir")] {
        let err = d.refused_session_in(ws, OPEN);
        assert!(err.contains(&format!("contains the agentsh {what}")), "{what}: {err}");
    }
    assert_eq!(json(&d, &["session", "list", "--json"]), serde_json::json!([]));
}
