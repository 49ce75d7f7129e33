//! Session cgroup tests: the sandbox starts inside it, `kill_all` ends a backgrounded process,
//! and the cgroup can then be removed.
mod common;

use std::time::{Duration, Instant};

use common::{StateDir, privileged, sh};
use sandbox::cgroup::SessionCgroup;

fn session_id(tag: &str) -> String {
    format!("test-{tag}-{}", std::process::id())
}

#[test]
fn sandbox_starts_in_the_session_cgroup_and_kill_all_ends_it() {
    if !privileged("sandbox_starts_in_the_session_cgroup_and_kill_all_ends_it") {
        return;
    }
    let cg = SessionCgroup::create(&session_id("killall")).unwrap();
    let state = StateDir::new();
    let mut spec = sh("sleep 1000 & cat /proc/self/cgroup; echo started; wait", &state);
    spec.cgroup = Some(cg.path().to_path_buf());
    let (out_r, out_w) = std::io::pipe().unwrap();
    spec.stdout = sandbox::Stdio::Fd(out_w.into());
    let mut launched = sandbox::launch(&spec).unwrap();
    drop(spec);
    let mut out = String::new();
    let mut reader = std::io::BufReader::new(out_r);
    while !out.ends_with("started\n") {
        let n = std::io::BufRead::read_line(&mut reader, &mut out).unwrap();
        assert!(n > 0, "the command ended early: {out}");
    }

    // init, sh and the background sleep.
    let deadline = Instant::now() + Duration::from_secs(10);
    let procs = loop {
        let procs = cg.procs().unwrap();
        if procs.len() >= 3 || Instant::now() > deadline {
            break procs;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(procs.contains(&launched.pid), "init {} not in {procs:?}", launched.pid);
    assert!(procs.len() >= 3, "{procs:?}");
    assert!(procs.iter().all(|p| cg.contains(*p).unwrap()), "{procs:?}");
    assert!(!cg.contains(std::process::id() as libc::pid_t).unwrap());

    cg.kill_all().unwrap();
    assert_eq!(launched.wait_timeout(Duration::from_secs(10)).unwrap(), Some(137));
    assert!(cg.wait_empty(Duration::from_secs(5)).unwrap());
    // A cgroup namespace rooted at the session cgroup hides the host's cgroup path (on a
    // hybrid host the v1 lines read "/" too).
    let cgroup_lines: Vec<&str> = out.lines().filter(|l| *l != "started").collect();
    assert!(cgroup_lines.contains(&"0::/"), "{out}");
    assert!(cgroup_lines.iter().all(|l| l.ends_with(":/")), "{out}");
    cg.remove().unwrap();
}

#[test]
fn creating_an_existing_session_cgroup_fails() {
    if !privileged("creating_an_existing_session_cgroup_fails") {
        return;
    }
    let id = session_id("dup");
    let cg = SessionCgroup::create(&id).unwrap();
    assert!(SessionCgroup::create(&id).is_err());
    assert!(SessionCgroup::create("../escape").is_err());
    cg.remove().unwrap();
}

#[test]
fn removing_a_session_cgroup_removes_the_cgroups_below_it() {
    if !privileged("removing_a_session_cgroup_removes_the_cgroups_below_it") {
        return;
    }
    let cg = SessionCgroup::create(&session_id("tree")).unwrap();
    let path = cg.path().to_path_buf();
    let command = SessionCgroup::create_in(&path, "cmd-1").unwrap();
    std::fs::create_dir(command.path().join("deeper")).unwrap();
    cg.remove().unwrap();
    assert!(!path.exists());
}
