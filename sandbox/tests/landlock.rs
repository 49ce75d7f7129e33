//! Landlock with real launches: the workspace and the private /tmp are writable, system trees
//! are readable and executable, and anything else is refused with EACCES even where the
//! permission bits would allow it; the launch reports the ABI it used.
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{StateDir, privileged, run_with, sh};
use sandbox::{BindDir, LandlockPlan, landlock_plan::kernel_abi};

/// A host directory removed on drop, mode 0777 so only Landlock can refuse the sandbox.
struct HostDir(PathBuf);

impl HostDir {
    fn new(parent: &str, tag: &str) -> HostDir {
        let dir = PathBuf::from(format!("{parent}/agentsh-landlock-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        HostDir(dir)
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn landlock_spec(script: &str, ws: &Path, state: &StateDir) -> sandbox::LaunchSpec {
    let mut spec = sh(script, state);
    spec.cwd = ws.to_path_buf();
    spec.bind_dirs =
        vec![BindDir { host: ws.to_path_buf(), sandbox: ws.to_path_buf(), writable: true, noexec: false }];
    spec.landlock = Some(LandlockPlan::for_workspace(ws));
    spec
}

#[test]
fn writes_outside_the_workspace_fail_with_eacces() {
    if !privileged("writes_outside_the_workspace_fail_with_eacces") {
        return;
    }
    let abi = kernel_abi()
        .expect("Landlock must be available for this test (CONFIG_SECURITY_LANDLOCK, lsm=landlock)");
    let ws = HostDir::new("/tmp", "ws");
    let outside = HostDir::new("/var/tmp", "outside");
    std::fs::write(outside.0.join("seen.txt"), "host\n").unwrap();
    std::fs::set_permissions(outside.0.join("seen.txt"), std::fs::Permissions::from_mode(0o666)).unwrap();
    let state = StateDir::new();
    let o = outside.0.display();
    let script = format!(
        "echo data > w.txt && mkdir -p d/e && mv w.txt d/e/w.txt && cat d/e/w.txt
         echo t > /tmp/t && cat /tmp/t
         head -c 5 /etc/passwd; echo
         /bin/true && echo exec-ok
         echo x > {o}/new.txt || echo create-refused
         echo x >> {o}/seen.txt || echo append-refused
         cat {o}/seen.txt || echo read-refused
         ls /root >/dev/null || echo home-refused
         echo ok > /dev/null && echo devnull-ok"
    );
    let mut got_abi = None;
    let out = run_with(landlock_spec(&script, &ws.0, &state), |l| got_abi = l.landlock_abi);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(got_abi, Some(abi.min(10)));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "data",
            "t",
            "root:",
            "exec-ok",
            "create-refused",
            "append-refused",
            "read-refused",
            "home-refused",
            "devnull-ok"
        ],
        "{out:?}"
    );
    // Each refusal is EACCES ("Permission denied"), not a missing path.
    assert_eq!(out.stderr.matches("Permission denied").count(), 4, "{}", out.stderr);
    assert!(!outside.0.join("new.txt").exists());
    assert_eq!(std::fs::read_to_string(outside.0.join("seen.txt")).unwrap(), "host\n");
    assert_eq!(std::fs::read_to_string(ws.0.join("d/e/w.txt")).unwrap(), "data\n");
}

#[test]
fn without_a_plan_the_same_write_succeeds() {
    if !privileged("without_a_plan_the_same_write_succeeds") {
        return;
    }
    let ws = HostDir::new("/tmp", "ws-off");
    let outside = HostDir::new("/var/tmp", "outside-off");
    let state = StateDir::new();
    let script = format!("echo x > {}/new.txt", outside.0.display());
    let mut spec = landlock_spec(&script, &ws.0, &state);
    spec.landlock = None;
    let mut got_abi = Some(0);
    let out = run_with(spec, |l| got_abi = l.landlock_abi);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(got_abi, None);
    assert!(outside.0.join("new.txt").exists());
}

#[test]
fn a_missing_required_path_fails_the_launch_naming_it() {
    if !privileged("a_missing_required_path_fails_the_launch_naming_it") {
        return;
    }
    let ws = HostDir::new("/tmp", "ws-missing");
    let state = StateDir::new();
    let mut spec = landlock_spec("true", &ws.0, &state);
    let plan = spec.landlock.as_mut().unwrap();
    plan.paths.push(sandbox::LandlockPath {
        path: "/nonexistent-agentsh".into(),
        access: sandbox::LandlockAccess::Read,
        required: true,
        split: false,
    });
    let err = sandbox::launch(&spec).expect_err("a missing required path must fail the launch");
    let text = err.to_string();
    assert!(text.contains("landlock /nonexistent-agentsh") && text.contains("ENOENT"), "{text}");
}

#[test]
fn tcp_connects_are_limited_to_the_planned_ports() {
    if !privileged("tcp_connects_are_limited_to_the_planned_ports") {
        return;
    }
    let abi = kernel_abi().expect("Landlock must be available for this test");
    assert!(abi >= 4, "this kernel's Landlock ABI {abi} has no TCP rules (needs 4, Linux 6.7)");
    let ws = HostDir::new("/tmp", "ws-tcp");
    let state = StateDir::new();
    // Nothing listens in the sandbox's network namespace: an allowed port is refused by the
    // stack (ECONNREFUSED), any other by Landlock (EACCES) before it gets that far.
    let script = "for p in 4040 4041; do
          if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/tmp/err; then echo $p open; else echo $p $(grep -o 'refused\\|denied' /tmp/err | head -n 1); fi
        done";
    let mut spec = landlock_spec("", &ws.0, &state);
    spec.argv = vec!["bash".into(), "-c".into(), script.into()];
    spec.landlock.as_mut().unwrap().connect_tcp_ports = Some(vec![4040]);
    let out = run_with(spec, |_| {});
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "4040 refused\n4041 denied\n", "{out:?}");
}

#[test]
fn a_home_split_around_denied_trees_keeps_the_rest_usable() {
    if !privileged("a_home_split_around_denied_trees_keeps_the_rest_usable") {
        return;
    }
    kernel_abi().expect("Landlock must be available for this test (CONFIG_SECURITY_LANDLOCK, lsm=landlock)");
    let ws = HostDir::new("/tmp", "ws-home");
    let home = HostDir::new("/var/tmp", "home");
    for (rel, text) in [(".ssh/id_rsa", "KEY"), (".cargo/config.toml", "[net]"), (".gitconfig", "[user]")] {
        let p = home.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        // As the HostDir itself: only Landlock may refuse.
        std::fs::set_permissions(p.parent().unwrap(), std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(&p, text).unwrap();
    }
    let policy = policies::load_policy(policies::embedded::source("default").unwrap(), "default").unwrap();
    let home_text = home.0.display().to_string();
    let rules = policies::engine::file::FileRules::new(&policy.file_rules, &ws.0, &|v| {
        (v == "HOME").then(|| home_text.clone())
    });
    let state = StateDir::new();
    let h = home.0.display();
    let script = format!(
        "cat {h}/.cargo/config.toml; echo
         cat {h}/.gitconfig; echo
         echo built > {h}/.cargo/new && cat {h}/.cargo/new
         cat {h}/.ssh/id_rsa || echo ssh-refused
         ls {h}/.ssh || echo ssh-list-refused
         echo x > {h}/new || echo create-in-home-refused"
    );
    let mut spec = landlock_spec(&script, &ws.0, &state);
    spec.landlock = Some(LandlockPlan::for_session(&ws.0, Some(&home.0), &[]).narrowed(&rules));
    let out = run_with(spec, |_| {});
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["[net]", "[user]", "built", "ssh-refused", "ssh-list-refused", "create-in-home-refused"],
        "{out:?}"
    );
    assert_eq!(out.stderr.matches("Permission denied").count(), 3, "{}", out.stderr);
}
