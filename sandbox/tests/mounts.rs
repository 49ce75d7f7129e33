//! Mount and PID namespace tests: fresh /proc with only sandbox pids, private /tmp, the state
//! dir at /run/agentsh, the spec's resolv.conf, read-only extra files, the UTS hostname.
mod common;

use common::{StateDir, privileged, run, sh};

#[test]
fn proc_shows_only_sandbox_pids_and_host_pids_cannot_be_signalled() {
    if !privileged("proc_shows_only_sandbox_pids_and_host_pids_cannot_be_signalled") {
        return;
    }
    let state = StateDir::new();
    let me = std::process::id();
    let script = format!(
        "for p in /proc/[0-9]*; do echo ${{p#/proc/}}; done; \
         if kill -0 {me} 2>/dev/null; then echo host-visible; else echo host-hidden; fi; \
         if kill -0 1 2>/dev/null; then echo init-signallable; else echo init-protected; fi"
    );
    let out = run(sh(&script, &state));
    assert_eq!(out.code, 0, "{out:?}");
    let pids: Vec<u32> = out.stdout.lines().filter_map(|l| l.parse().ok()).collect();
    assert!(pids.contains(&1) && pids.contains(&2), "init and command expected: {pids:?}");
    assert!(pids.iter().all(|p| *p < 50), "only sandbox pids expected: {pids:?}");
    assert!(!pids.contains(&me) || me < 50, "the test's own pid leaked: {pids:?}");
    assert!(out.stdout.contains("host-hidden"), "{out:?}");
    assert!(out.stdout.contains("init-protected"), "{out:?}");
}

#[test]
fn tmp_is_empty_and_private() {
    if !privileged("tmp_is_empty_and_private") {
        return;
    }
    let state = StateDir::new();
    let marker = format!("agentsh-inside-{}", std::process::id());
    let script = format!("ls -A /tmp | wc -l; echo x > /tmp/{marker} && ls /tmp");
    let out = run(sh(&script, &state));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, format!("0\n{marker}\n"));
    // The state dir lives in the host's /tmp and was not visible inside; the marker is not
    // visible outside.
    assert!(std::env::temp_dir().read_dir().unwrap().count() > 0);
    assert!(!std::env::temp_dir().join(&marker).exists());
}

#[test]
fn state_dir_is_mounted_read_only_at_run_agentsh() {
    if !privileged("state_dir_is_mounted_read_only_at_run_agentsh") {
        return;
    }
    let state = StateDir::new();
    std::fs::write(state.0.join("hello.txt"), "world\n").unwrap();
    let script =
        "cat /run/agentsh/hello.txt; ls /run/agentsh; touch /run/agentsh/new 2>/dev/null || echo read-only";
    let out = run(sh(script, &state));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "world\nhello.txt\nresolv.conf\nread-only\n");
}

#[test]
fn resolv_conf_has_the_spec_text_and_host_is_untouched() {
    if !privileged("resolv_conf_has_the_spec_text_and_host_is_untouched") {
        return;
    }
    let before = std::fs::read("/etc/resolv.conf").ok();
    let state = StateDir::new();
    let mut spec = sh("cat /etc/resolv.conf", &state);
    spec.resolv_conf = "nameserver 127.0.0.1\noptions ndots:1\n".into();
    let out = run(spec);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "nameserver 127.0.0.1\noptions ndots:1\n");
    assert_eq!(std::fs::read("/etc/resolv.conf").ok(), before);
}

#[test]
fn bind_files_are_visible_and_read_only() {
    if !privileged("bind_files_are_visible_and_read_only") {
        return;
    }
    let state = StateDir::new();
    let source = state.0.join("ca.pem");
    std::fs::write(&source, "-----BEGIN CERTIFICATE-----\n").unwrap();
    // The mount point must exist on the host; /var/tmp is not covered by the sandbox's tmpfs.
    let target = std::path::PathBuf::from(format!("/var/tmp/agentsh-bind-target-{}", std::process::id()));
    std::fs::write(&target, "").unwrap();
    let mut spec =
        sh(&format!("cat {t}; echo y 2>/dev/null >{t} || echo read-only", t = target.display()), &state);
    spec.uid = 0;
    spec.gid = 0;
    spec.bind_files = vec![(source, target.clone())];
    let out = run(spec);
    let host_view = std::fs::read_to_string(&target).unwrap();
    std::fs::remove_file(&target).unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "-----BEGIN CERTIFICATE-----\nread-only\n");
    assert_eq!(host_view, "", "the host's file must be untouched");
}

#[test]
fn hostname_is_private() {
    if !privileged("hostname_is_private") {
        return;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let state = StateDir::new();
    let mut spec = sh("cat /proc/sys/kernel/hostname", &state);
    spec.hostname = Some("agentsh-test".into());
    let out = run(spec);
    assert_eq!(out.stdout, "agentsh-test\n", "{out:?}");
    assert_eq!(std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(), host);
}
