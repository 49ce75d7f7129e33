//! Directory binds: a workspace under the host's /tmp appears writable at the same path inside
//! the private /tmp, read-only binds stay read-only even for uid 0, mount points are created
//! only inside private tmpfs, and bad specs are rejected before anything starts.
mod common;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use common::{StateDir, privileged, run, sh};
use sandbox::{BindDir, LaunchSpec, SandboxError};

/// A fresh directory directly under the host's `/tmp` (not `$TMPDIR`: the point is `/tmp`).
struct HostDir(PathBuf);

impl HostDir {
    fn new(tag: &str) -> HostDir {
        let dir = PathBuf::from(format!("/tmp/agentsh-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        HostDir(dir)
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `awk` text printing the options of the mount at `path` from the command's mountinfo.
fn mount_options(path: &str) -> String {
    format!("awk '$5 == \"{path}\" {{ print $6 }}' /proc/self/mountinfo; ")
}

fn has_options(line: &str, want: &[&str]) -> bool {
    want.iter().all(|w| line.split(',').any(|o| o == *w))
}

#[test]
fn workspace_under_tmp_is_writable_at_the_same_path() {
    if !privileged("workspace_under_tmp_is_writable_at_the_same_path") {
        return;
    }
    let ws = HostDir::new("ws");
    std::os::unix::fs::chown(&ws.0, Some(65534), Some(65534)).unwrap();
    std::fs::write(ws.0.join("seed.txt"), "from host\n").unwrap();
    let state = StateDir::new();
    let script = format!(
        "pwd; cat seed.txt; echo from sandbox > out.txt; ls -A /tmp; {}",
        mount_options(ws.0.to_str().unwrap())
    );
    let mut spec = sh(&script, &state);
    spec.cwd = ws.0.clone();
    spec.bind_dirs =
        vec![BindDir { host: ws.0.clone(), sandbox: ws.0.clone(), writable: true, noexec: false }];
    let out = run(spec);
    assert_eq!(out.code, 0, "{out:?}");
    let name = ws.0.file_name().unwrap().to_str().unwrap();
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), ws.0.to_str());
    assert_eq!(lines.next(), Some("from host"));
    assert_eq!(lines.next(), Some(name), "the rest of the host's /tmp stays hidden: {out:?}");
    let opts = lines.next().unwrap_or_default();
    assert!(has_options(opts, &["rw", "nosuid", "nodev"]), "{opts}");
    let written = ws.0.join("out.txt");
    assert_eq!(std::fs::read_to_string(&written).unwrap(), "from sandbox\n");
    assert_eq!(std::fs::metadata(&written).unwrap().uid(), 65534);
}

#[test]
fn read_only_bind_refuses_writes_even_for_uid_zero() {
    if !privileged("read_only_bind_refuses_writes_even_for_uid_zero") {
        return;
    }
    let src = HostDir::new("ro-src");
    std::fs::write(src.0.join("data.txt"), "data\n").unwrap();
    let state = StateDir::new();
    // Two levels of mount point to create, inside the private /run this time.
    let inside = format!("/run/agentsh-test-{}/ro", std::process::id());
    let script = format!(
        "cat {inside}/data.txt; touch {inside}/new 2>/dev/null && echo writable || echo read-only; \
         echo x 2>/dev/null > {inside}/data.txt || echo still-read-only; {}",
        mount_options(&inside)
    );
    let mut spec = sh(&script, &state);
    spec.uid = 0;
    spec.gid = 0;
    spec.bind_dirs = vec![BindDir {
        host: src.0.clone(),
        sandbox: PathBuf::from(&inside),
        writable: false,
        noexec: false,
    }];
    let out = run(spec);
    assert_eq!(out.code, 0, "{out:?}");
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("data"));
    assert_eq!(lines.next(), Some("read-only"));
    assert_eq!(lines.next(), Some("still-read-only"));
    let opts = lines.next().unwrap_or_default();
    assert!(has_options(opts, &["ro", "nosuid", "nodev"]), "{opts}");
    assert_eq!(std::fs::read_to_string(src.0.join("data.txt")).unwrap(), "data\n");
    assert!(!src.0.join("new").exists());
    assert!(!PathBuf::from(&inside).exists(), "the mount point was created on the host");
}

#[test]
fn noexec_bind_refuses_execution_even_for_uid_zero() {
    if !privileged("noexec_bind_refuses_execution_even_for_uid_zero") {
        return;
    }
    let src = HostDir::new("noexec-src");
    let tool = src.0.join("tool");
    std::fs::copy("/bin/true", &tool).unwrap();
    let script_file = src.0.join("hello.sh");
    std::fs::write(&script_file, "#!/bin/sh\necho hello\n").unwrap();
    for f in [&tool, &script_file] {
        std::fs::set_permissions(f, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let state = StateDir::new();
    let inside = format!("/run/agentsh-test-{}/noexec", std::process::id());
    // The same binary and script run from a writable bind without the flag, beside it.
    let exec_ok = format!("/run/agentsh-test-{}/exec", std::process::id());
    let script = format!(
        "{inside}/tool && echo ran-binary || echo refused-binary; \
         {inside}/hello.sh 2>/dev/null || echo refused-script; sh {inside}/hello.sh; \
         cp {inside}/tool {inside}/copy && {inside}/copy || echo refused-copy; \
         {exec_ok}/tool && echo ran-elsewhere; {}",
        mount_options(&inside)
    );
    let mut spec = sh(&script, &state);
    spec.uid = 0;
    spec.gid = 0;
    spec.bind_dirs = vec![
        BindDir { host: src.0.clone(), sandbox: PathBuf::from(&inside), writable: true, noexec: true },
        BindDir { host: src.0.clone(), sandbox: PathBuf::from(&exec_ok), writable: false, noexec: false },
    ];
    let out = run(spec);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[..5],
        ["refused-binary", "refused-script", "hello", "refused-copy", "ran-elsewhere"],
        "{out:?}"
    );
    assert!(has_options(lines[5], &["rw", "nosuid", "nodev", "noexec"]), "{}", lines[5]);
    assert!(src.0.join("copy").exists(), "the bind stays writable");
}

#[test]
fn no_mount_point_is_created_through_an_earlier_bind() {
    if !privileged("no_mount_point_is_created_through_an_earlier_bind") {
        return;
    }
    let ws = HostDir::new("nested");
    let other = HostDir::new("nested-src");
    let state = StateDir::new();
    let mut spec = sh("true", &state);
    spec.bind_dirs = vec![
        BindDir { host: ws.0.clone(), sandbox: ws.0.clone(), writable: true, noexec: false },
        BindDir { host: other.0.clone(), sandbox: ws.0.join("missing"), writable: true, noexec: false },
    ];
    let err = sandbox::launch(&spec).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("attach bind {}/missing: ENOENT (No such file or directory)", ws.0.display())
    );
    assert!(!ws.0.join("missing").exists(), "created on the host through the workspace bind");
}

#[test]
fn single_files_bind_writable_or_read_only() {
    if !privileged("single_files_bind_writable_or_read_only") {
        return;
    }
    // A directory standing for the host's view of a home, bound over itself, with two files
    // bound on their own on top: one writable, one read-only.
    let home = HostDir::new("file-binds");
    for (name, text) in [("rw.txt", "rw\n"), ("ro.txt", "ro\n")] {
        std::fs::write(home.0.join(name), text).unwrap();
        // The command's own (uid 65534): only the mount can refuse its write.
        std::os::unix::fs::chown(home.0.join(name), Some(65534), Some(65534)).unwrap();
    }
    let other = HostDir::new("file-binds-src");
    std::fs::write(other.0.join("elsewhere.txt"), "elsewhere\n").unwrap();
    let state = StateDir::new();
    let h = home.0.display().to_string();
    let script = format!(
        "echo more >> {h}/rw.txt && echo wrote-rw; echo more >> {h}/ro.txt 2>/dev/null || echo refused-ro; \
         cat /tmp/in-tmp/elsewhere.txt; rm {h}/rw.txt 2>/dev/null || echo busy"
    );
    let mut spec = sh(&script, &state);
    let file =
        |host: PathBuf, inside: PathBuf, writable| BindDir { host, sandbox: inside, writable, noexec: false };
    spec.bind_dirs = vec![
        file(home.0.join("rw.txt"), home.0.join("rw.txt"), true),
        file(home.0.join("ro.txt"), home.0.join("ro.txt"), false),
        // Inside the private /tmp the mount point is made as a file.
        file(other.0.join("elsewhere.txt"), PathBuf::from("/tmp/in-tmp/elsewhere.txt"), false),
    ];
    let out = run(spec);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "wrote-rw\nrefused-ro\nelsewhere\nbusy\n", "{out:?}");
    assert_eq!(std::fs::read_to_string(home.0.join("rw.txt")).unwrap(), "rw\nmore\n");
    assert_eq!(std::fs::read_to_string(home.0.join("ro.txt")).unwrap(), "ro\n");
}

fn rejected(dirs: Vec<BindDir>) -> String {
    let state = StateDir::new();
    let mut spec = LaunchSpec::new(["true"], &state.0);
    spec.bind_dirs = dirs;
    match sandbox::launch(&spec) {
        Err(SandboxError::InvalidSpec { field: "bind_dirs", reason }) => reason,
        other => panic!("expected a bind_dirs InvalidSpec, got {other:?}"),
    }
}

fn bind(host: &str, sandbox: &str) -> BindDir {
    BindDir { host: host.into(), sandbox: sandbox.into(), writable: false, noexec: false }
}

#[test]
fn bad_bind_dirs_are_rejected_before_launch() {
    // No privilege needed: validation runs before any namespace is made.
    assert_eq!(
        rejected(vec![bind("relative", "/tmp/x")]),
        "[0] host path relative must be absolute without `..`"
    );
    assert_eq!(
        rejected(vec![bind("/etc", "/tmp/../etc")]),
        "[0] sandbox path /tmp/../etc must be absolute without `..`"
    );
    assert!(
        rejected(vec![bind("/nonexistent-agentsh", "/tmp/x")])
            .starts_with("[0] host path /nonexistent-agentsh: ")
    );
    assert_eq!(
        rejected(vec![bind("/dev/null", "/tmp/x")]),
        "[0] host path /dev/null is neither a directory nor a regular file"
    );
    // A file lands on a file, a directory on a directory.
    assert!(rejected(vec![bind("/etc/hostname", "/etc")]).starts_with(
        "[0] sandbox path /etc is outside the sandbox's private tmpfs, so it must be a regular file"
    ),);
    assert!(rejected(vec![bind("/etc", "/etc/hostname")]).starts_with(
        "[0] sandbox path /etc/hostname is outside the sandbox's private tmpfs, so it must be a directory"
    ),);
    assert_eq!(rejected(vec![bind("/etc", "/proc/x")]), "[0] sandbox path /proc/x lies under /proc");
    assert_eq!(rejected(vec![bind("/etc", "/sys")]), "[0] sandbox path /sys lies under /sys");
    assert_eq!(
        rejected(vec![bind("/etc", "/tmp/ok"), bind("/etc", "/run/agentsh/x")]),
        "[1] sandbox path /run/agentsh/x overlaps the state dir mount /run/agentsh"
    );
    assert!(rejected(vec![bind("/etc", "/")]).contains("overlaps the state dir mount"));
    assert!(
        rejected(vec![bind("/etc", "/nonexistent-agentsh")])
            .starts_with("[0] sandbox path /nonexistent-agentsh is outside the sandbox's private tmpfs")
    );
    assert_eq!(
        rejected(vec![bind("/etc", "/tmp/a/b"), bind("/etc", "/tmp/a")]),
        "/tmp/a would hide the earlier mount /tmp/a/b"
    );
    let many = (0..257).map(|i| bind("/etc", &format!("/tmp/{i}"))).collect();
    assert_eq!(rejected(many), "257 entries exceed the limit of 256");
}
