//! The FUSE workspace with real mounts: rules enforced per operation with EACCES and events,
//! real tools (git, cc) working inside, soft delete and restore, symlinks that leave the
//! workspace.
#![allow(unsafe_code)]
mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::fuse::{Mounted, errno_of};
use common::privileged;
use policies::engine::file::{FileOp, FileVerdict};
use sandbox::workspace::{FileEventKind, SYMLINK_ESCAPE_RULE, SymlinkEscape};

const RULES: &str = "file_rules:
  - {name: secrets, paths: ['${WORKSPACE}/secrets/**'], operations: [read], decision: deny}
  - {name: ro, paths: ['${WORKSPACE}/ro/**'], operations: [write, create, delete], decision: deny}
  - {name: env, paths: ['${WORKSPACE}/**/.env'], operations: [read], decision: audit}
";

fn seed(b: &Path) {
    fs::create_dir_all(b.join("secrets")).unwrap();
    fs::write(b.join("secrets/key"), "hunter2\n").unwrap();
    fs::create_dir_all(b.join("ro")).unwrap();
    fs::write(b.join("ro/file"), "read me\n").unwrap();
    fs::write(b.join(".env"), "A=1\n").unwrap();
}

#[test]
fn denied_operations_fail_with_eacces_and_are_reported() {
    if !privileged("denied_operations_fail_with_eacces_and_are_reported") {
        return;
    }
    let m = Mounted::new(RULES, SymlinkEscape::Deny, seed);
    let eacces = libc::EACCES;
    assert_eq!(errno_of(fs::read(m.path("secrets/key")), "read secrets/key"), eacces);
    assert_eq!(errno_of(fs::read_dir(m.path("secrets")).map(|_| ()), "list secrets"), eacces);
    assert_eq!(errno_of(fs::write(m.path("ro/file"), "x"), "write ro/file"), eacces);
    assert_eq!(errno_of(fs::write(m.path("ro/new"), "x"), "create ro/new"), eacces);
    assert_eq!(errno_of(fs::remove_file(m.path("ro/file")), "delete ro/file"), eacces);
    assert_eq!(errno_of(fs::rename(m.path("ro/file"), m.path("moved")), "rename ro/file away"), eacces);
    assert_eq!(errno_of(fs::hard_link(m.path("ro/file"), m.path("ro/link")), "link into ro"), eacces);

    assert_eq!(fs::read_to_string(m.path("ro/file")).unwrap(), "read me\n");
    assert_eq!(fs::read_to_string(m.path(".env")).unwrap(), "A=1\n");
    fs::write(m.path("ok.txt"), "fine\n").unwrap();
    fs::set_permissions(m.path("ok.txt"), std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let mode =
        |p: &Path| std::os::unix::fs::PermissionsExt::mode(&fs::metadata(p).unwrap().permissions()) & 0o777;
    assert_eq!((mode(&m.path("ok.txt")), mode(&m.backing.join("ok.txt"))), (0o640, 0o640));
    fs::rename(m.path("ok.txt"), m.path("ok2.txt")).unwrap();
    fs::remove_file(m.path("ok2.txt")).unwrap();
    // Nothing leaked to the backing directory from the refused writes.
    assert_eq!(fs::read_to_string(m.backing.join("ro/file")).unwrap(), "read me\n");
    assert!(!m.backing.join("ro/new").exists() && !m.backing.join("ok2.txt").exists());

    let events = m.events.take();
    let denied: Vec<(FileEventKind, FileOp, String)> = events
        .iter()
        .filter(|e| e.verdict == FileVerdict::Deny)
        .map(|e| (e.kind, e.op, e.rule.clone()))
        .collect();
    for want in [
        // `read` covers lookups: the name is refused before any open.
        (FileEventKind::Open, FileOp::Stat, "secrets"),
        (FileEventKind::Open, FileOp::Write, "ro"),
        (FileEventKind::Create, FileOp::Create, "ro"),
        (FileEventKind::Delete, FileOp::Delete, "ro"),
        (FileEventKind::Rename, FileOp::RenameFrom, "ro"),
        (FileEventKind::Create, FileOp::Link, "ro"),
    ] {
        assert!(denied.iter().any(|d| (d.0, d.1, d.2.as_str()) == want), "missing {want:?} in {denied:?}");
    }
    let by_kind = |kind| events.iter().filter(move |e| e.kind == kind && e.verdict != FileVerdict::Deny);
    assert!(by_kind(FileEventKind::Open).any(|e| e.verdict == FileVerdict::Audit && e.rule == "env"));
    let write =
        by_kind(FileEventKind::Write).find(|e| e.path == m.path("ok.txt")).expect("a file_write event");
    assert_eq!((write.rule.as_str(), write.pid > 0), ("default-allow-workspace", true));
    let rename = by_kind(FileEventKind::Rename).next().expect("a file_rename event");
    assert_eq!((rename.path.clone(), rename.target.clone()), (m.path("ok.txt"), Some(m.path("ok2.txt"))));
    assert!(by_kind(FileEventKind::Delete).any(|e| e.path == m.path("ok2.txt")));
}

fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{script}: {text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

#[test]
fn git_and_a_c_build_work_inside_the_mount() {
    if !privileged("git_and_a_c_build_work_inside_the_mount") {
        return;
    }
    // Served by the daemon, then with kernel passthrough (git maps its pack files).
    for passthrough in [false, true] {
        git_and_cc(passthrough);
    }
}

fn git_and_cc(passthrough: bool) {
    let m = Mounted::with_passthrough(RULES, SymlinkEscape::Deny, passthrough, |_| {});
    let out = sh(
        &m.mnt,
        "git init -q -b main repo && cd repo
         printf '#include <stdio.h>\\nint main(void){puts(\"built\");return 0;}\\n' > hello.c
         printf 'hello: hello.c\\n\\tcc -O1 -o hello hello.c\\n' > Makefile
         git add hello.c Makefile && git commit -q -m first
         cc -c -o hello.o hello.c && cc -o hello hello.o && ./hello
         echo '/* two */' >> hello.c && git commit -qam second && git log --oneline | wc -l
         git status --porcelain --untracked-files=no | wc -l
         git fsck --no-progress 2>&1 && git gc -q && git log --oneline | wc -l",
    );
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines, ["built", "2", "0", "2"], "{out}");
    // The same repository is intact seen from the backing directory.
    let out = sh(&m.backing.join("repo"), "git fsck --no-progress && git log --format=%s");
    assert_eq!(out, "second\nfirst\n");
}

#[test]
fn soft_delete_and_restore_round_trip() {
    if !privileged("soft_delete_and_restore_round_trip") {
        return;
    }
    let rules = "file_rules:\n  - {name: trash, paths: ['${WORKSPACE}/**'], operations: [delete], decision: soft_delete}\n";
    let m = Mounted::new(rules, SymlinkEscape::Deny, |b| {
        fs::create_dir_all(b.join("src")).unwrap();
        fs::write(b.join("src/main.rs"), "fn main() {}\n").unwrap();
        fs::write(b.join("old.txt"), "old\n").unwrap();
    });
    fs::remove_file(m.path("src/main.rs")).unwrap();
    assert!(!m.path("src/main.rs").exists());
    // Renaming over a file deletes it too: it goes to the trash first.
    fs::write(m.path("new.txt"), "new\n").unwrap();
    fs::rename(m.path("new.txt"), m.path("old.txt")).unwrap();
    assert_eq!(fs::read_to_string(m.path("old.txt")).unwrap(), "new\n");

    let trash = m.mount().trash();
    let entries = trash.list().unwrap();
    let originals: Vec<&Path> = entries.iter().map(|e| e.original.as_path()).collect();
    assert_eq!(originals, [Path::new("src/main.rs"), Path::new("old.txt")]);
    let events = m.events.take();
    let soft = events.iter().find(|e| e.verdict == FileVerdict::SoftDelete).expect("a soft delete event");
    assert_eq!((soft.kind, soft.trash_id.as_deref()), (FileEventKind::Delete, Some(entries[0].id.as_str())));

    assert_eq!(trash.restore(&entries[0].id).unwrap(), Path::new("src/main.rs"));
    assert_eq!(fs::read_to_string(m.path("src/main.rs")).unwrap(), "fn main() {}\n");
    let busy = trash.restore(&entries[1].id).expect_err("old.txt exists again, restore must refuse");
    assert_eq!(busy.kind(), std::io::ErrorKind::AlreadyExists);
    fs::remove_file(m.path("old.txt")).unwrap();
    assert_eq!(trash.list().unwrap().len(), 2);
    assert!(trash.restore("../../etc").is_err());

    // A directory swapped for a symlink since the delete is not restored through.
    fs::create_dir_all(m.path("d")).unwrap();
    fs::write(m.path("d/f"), "f\n").unwrap();
    fs::remove_file(m.path("d/f")).unwrap();
    fs::remove_dir(m.path("d")).unwrap();
    let outside = m.root.join("outside");
    fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, m.backing.join("d")).unwrap();
    let id = trash.list().unwrap().into_iter().find(|e| e.original == Path::new("d/f")).unwrap().id;
    assert_eq!(trash.restore(&id).unwrap_err().kind(), std::io::ErrorKind::InvalidData);
    assert!(fs::read_dir(&outside).unwrap().next().is_none(), "nothing may land outside the workspace");
}

#[test]
fn symlinks_out_of_the_workspace_are_refused_in_deny_mode() {
    if !privileged("symlinks_out_of_the_workspace_are_refused_in_deny_mode") {
        return;
    }
    let m = Mounted::new(RULES, SymlinkEscape::Deny, |b| {
        fs::create_dir_all(b.join("a/b")).unwrap();
        fs::write(b.join("a/b/f"), "inside\n").unwrap();
        // Planted from outside the mount: must not be followable through it.
        std::os::unix::fs::symlink("/etc/hostname", b.join("planted")).unwrap();
        std::os::unix::fs::symlink("../../../../etc/hostname", b.join("a/b/rel")).unwrap();
    });
    let eacces = libc::EACCES;
    let link = |t: &str, at: &str| std::os::unix::fs::symlink(t, m.path(at));
    assert_eq!(errno_of(link("/etc/passwd", "p"), "absolute escape"), eacces);
    assert_eq!(errno_of(link("../../..", "a/up"), "relative escape"), eacces);
    link("b/f", "a/in").unwrap();
    link("./a/b/../b/f", "in2").unwrap();
    assert_eq!(fs::read_to_string(m.path("a/in")).unwrap(), "inside\n");
    assert_eq!(fs::read_to_string(m.path("in2")).unwrap(), "inside\n");
    assert_eq!(errno_of(fs::read_to_string(m.path("planted")), "follow planted"), eacces);
    assert_eq!(errno_of(fs::read_link(m.path("a/b/rel")), "readlink rel"), eacces);
    // Moving an inside link to where it leads out makes it unresolvable too.
    link("../b/f", "a/b/c").unwrap();
    fs::rename(m.path("a/b/c"), m.path("c")).unwrap();
    assert_eq!(errno_of(fs::read_link(m.path("c")), "readlink moved"), eacces);
    let events = m.events.take();
    let escapes: Vec<_> = events.iter().filter(|e| e.rule == SYMLINK_ESCAPE_RULE).collect();
    assert!(
        escapes
            .iter()
            .any(|e| e.op == FileOp::Symlink && e.target.as_deref() == Some(Path::new("/etc/passwd")))
    );
    assert!(
        escapes
            .iter()
            .any(|e| e.op == FileOp::Readlink && e.target.as_deref() == Some(Path::new("/etc/hostname")))
    );
}

#[test]
fn symlinks_out_of_the_workspace_follow_file_rules_in_evaluate_mode() {
    if !privileged("symlinks_out_of_the_workspace_follow_file_rules_in_evaluate_mode") {
        return;
    }
    let rules =
        "file_rules:\n  - {name: hostname, paths: [/etc/hostname], operations: [read], decision: allow}\n";
    let m = Mounted::new(rules, SymlinkEscape::Evaluate, |_| {});
    std::os::unix::fs::symlink("/etc/hostname", m.path("h")).unwrap();
    assert_eq!(fs::read_to_string(m.path("h")).unwrap(), fs::read_to_string("/etc/hostname").unwrap());
    let refused = std::os::unix::fs::symlink("/etc/passwd", m.path("p"));
    assert_eq!(errno_of(refused, "link to /etc/passwd"), libc::EACCES);
    let events = m.events.take();
    assert!(events.iter().any(|e| e.op == FileOp::Symlink && e.rule == "default-deny-file"));
}

#[test]
fn exec_rules_apply_to_execve_through_the_mount() {
    if !privileged("exec_rules_apply_to_execve_through_the_mount") {
        return;
    }
    let rules = "file_rules:\n  - {name: no-exec-bin, paths: ['${WORKSPACE}/bin/**'], operations: [exec], decision: deny}\n";
    let script = |b: &Path, rel: &str| {
        let p = b.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, "#!/bin/sh\necho ran\n").unwrap();
        fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    };
    let m = Mounted::new(rules, SymlinkEscape::Deny, |b| {
        script(b, "bin/tool");
        script(b, "ok/tool");
    });
    let ran = Command::new(m.path("ok/tool")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "ran\n");
    let refused = Command::new(m.path("bin/tool")).output();
    assert_eq!(errno_of(refused.map(|o| o.status), "exec bin/tool"), libc::EACCES);
    // Reading it is still fine: only execution is refused.
    assert!(fs::read_to_string(m.path("bin/tool")).unwrap().contains("echo ran"));
    let events = m.events.take();
    assert!(
        events
            .iter()
            .any(|e| e.op == FileOp::Exec && e.verdict == FileVerdict::Deny && e.rule == "no-exec-bin")
    );
}

#[test]
fn a_sandboxed_command_sees_the_rules_through_the_mount() {
    if !privileged("a_sandboxed_command_sees_the_rules_through_the_mount") {
        return;
    }
    let m = Mounted::new(RULES, SymlinkEscape::Deny, |b| {
        seed(b);
        for p in [b, &b.join("ro"), &b.join("ro/file")] {
            std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
        }
    });
    let state = common::StateDir::new();
    let script = "echo made > made.txt && cat made.txt
        cat secrets/key || echo secret-refused
        echo x >> ro/file || echo ro-refused
        cat ro/file";
    let mut spec = common::sh(script, &state);
    spec.cwd = m.mnt.clone();
    spec.bind_dirs =
        vec![sandbox::BindDir { host: m.mnt.clone(), sandbox: m.mnt.clone(), writable: true, noexec: false }];
    spec.landlock = Some(sandbox::LandlockPlan::for_workspace(&m.mnt));
    let out = common::run(spec);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "made\nsecret-refused\nro-refused\nread me\n", "{out:?}");
    assert_eq!(out.stderr.matches("Permission denied").count(), 2, "{}", out.stderr);
    let made = fs::metadata(m.backing.join("made.txt")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&made), 65534, "new files belong to the caller");
    let events = m.events.take();
    let denied = events.iter().filter(|e| e.verdict == FileVerdict::Deny && e.uid == 65534).count();
    assert!(denied >= 2, "{events:?}");
}

fn cstr(s: impl AsRef<std::ffi::OsStr>) -> std::ffi::CString {
    std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(s.as_ref())).unwrap()
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) -> Result<(), i32> {
    // SAFETY: NUL-terminated strings; `value` is valid for its length.
    let r = unsafe {
        libc::setxattr(cstr(p).as_ptr(), cstr(name).as_ptr(), value.as_ptr().cast(), value.len(), 0)
    };
    if r < 0 { Err(last_errno()) } else { Ok(()) }
}

fn get_xattr(p: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let (p, name) = (cstr(p), cstr(name));
    // SAFETY: NUL-terminated strings; a zero-length probe, then a buffer of the size given.
    let size = unsafe { libc::getxattr(p.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        return Err(last_errno());
    }
    let mut buf = vec![0u8; size as usize];
    let got = unsafe { libc::getxattr(p.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if got < 0 {
        return Err(last_errno());
    }
    buf.truncate(got as usize);
    Ok(buf)
}

fn list_xattr(p: &Path) -> Vec<String> {
    let p = cstr(p);
    let mut buf = vec![0u8; 4096];
    // SAFETY: NUL-terminated path; `buf` has room for its length.
    let got = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(got >= 0, "listxattr: {}", std::io::Error::last_os_error());
    buf[..got as usize]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into())
        .collect()
}

#[test]
fn user_extended_attributes_pass_through_and_no_other_namespace_does() {
    if !privileged("user_extended_attributes_pass_through_and_no_other_namespace_does") {
        return;
    }
    // Not served unless asked for: the kernel learns at the first request that there are none.
    let off = Mounted::new(RULES, SymlinkEscape::Deny, |b| fs::write(b.join("a.txt"), "a\n").unwrap());
    assert_eq!(set_xattr(&off.path("a.txt"), "user.color", b"blue"), Err(libc::EOPNOTSUPP));
    assert_eq!(get_xattr(&off.path("a.txt"), "user.color"), Err(libc::EOPNOTSUPP));
    assert_eq!(get_xattr(&off.backing.join("a.txt"), "user.color"), Err(libc::ENODATA));

    let m = Mounted::with_xattrs(RULES, SymlinkEscape::Deny, |b| {
        seed(b);
        fs::write(b.join("a.txt"), "a\n").unwrap();
    });
    // The host set a trusted attribute on the backing file: not the sandbox's to see.
    set_xattr(&m.backing.join("a.txt"), "trusted.agentsh-test", b"host").unwrap();

    let a = m.path("a.txt");
    set_xattr(&a, "user.color", b"blue").unwrap();
    assert_eq!(get_xattr(&a, "user.color").unwrap(), b"blue");
    assert_eq!(
        get_xattr(&m.backing.join("a.txt"), "user.color").unwrap(),
        b"blue",
        "stored on the backing file"
    );
    assert_eq!(list_xattr(&a), ["user.color"]);
    assert_eq!(get_xattr(&a, "trusted.agentsh-test"), Err(libc::ENODATA));
    // A capability set here would apply to the file outside the sandbox.
    // (A well-formed vfs_cap_data v2 granting CAP_SETUID (7), so the kernel passes it on.)
    let mut cap = Vec::new();
    for word in [0x0200_0000u32, 1 << 7, 0, 0, 0] {
        cap.extend_from_slice(&word.to_le_bytes());
    }
    assert_eq!(set_xattr(&a, "security.capability", &cap), Err(libc::EOPNOTSUPP));
    assert_eq!(set_xattr(&a, "trusted.x", b"1"), Err(libc::EOPNOTSUPP));
    assert_eq!(get_xattr(&m.backing.join("a.txt"), "security.capability"), Err(libc::ENODATA));
    // Changing attributes is writing: refused where writes are.
    assert_eq!(set_xattr(&m.path("ro/file"), "user.color", b"red"), Err(libc::EACCES));
    assert_eq!(get_xattr(&m.backing.join("ro/file"), "user.color"), Err(libc::ENODATA));
    // Removal.
    let a_c = cstr(&a);
    // SAFETY: NUL-terminated strings.
    assert_eq!(unsafe { libc::removexattr(a_c.as_ptr(), cstr("user.color").as_ptr()) }, 0);
    assert_eq!(get_xattr(&a, "user.color"), Err(libc::ENODATA));
    assert!(list_xattr(&a).is_empty());
    // Directories carry them too.
    fs::create_dir(m.path("dir")).unwrap();
    set_xattr(&m.path("dir"), "user.tag", b"d").unwrap();
    assert_eq!(get_xattr(&m.path("dir"), "user.tag").unwrap(), b"d");

    let writes: Vec<String> = m
        .events
        .take()
        .into_iter()
        .filter(|e| e.kind == FileEventKind::Write)
        .map(|e| format!("{:?} {}", e.verdict, e.path.strip_prefix(&m.mnt).unwrap().display()))
        .collect();
    assert!(
        writes.contains(&"Allow a.txt".to_string()) && writes.contains(&"Deny ro/file".to_string()),
        "{writes:?}"
    );
}

#[test]
fn writes_and_truncation_by_a_sandboxed_command_drop_setuid_and_setgid() {
    if !privileged("writes_and_truncation_by_a_sandboxed_command_drop_setuid_and_setgid") {
        return;
    }
    // Served by the daemon, and passed through (the kernel writes the backing file itself and
    // asks the daemon to drop the bits).
    for passthrough in [false, true] {
        setid_bits_drop(passthrough);
    }
}

fn setid_bits_drop(passthrough: bool) {
    use std::os::unix::fs::PermissionsExt;
    // (name, mode before, mode after), as on a local filesystem: a write, truncation or owner
    // change by a caller without CAP_FSETID drops set-user-ID, and set-group-ID when
    // group-executable.
    let cases = [
        ("appended", 0o6775, 0o775),
        ("opened-truncating", 0o6775, 0o775),
        ("truncated", 0o4755, 0o755),
        ("sgid-not-executable", 0o2764, 0o2764),
        ("chowned", 0o6775, 0o775),
        ("untouched", 0o4755, 0o4755),
    ];
    let m = Mounted::with_passthrough(RULES, SymlinkEscape::Deny, passthrough, |b| {
        seed(b);
        std::os::unix::fs::chown(b, Some(65534), Some(65534)).unwrap();
        for (name, mode, _) in cases {
            let p = b.join(name);
            fs::write(&p, "data\n").unwrap();
            std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        }
    });
    let state = common::StateDir::new();
    let script = "echo x >> appended && : > opened-truncating && truncate -s 1 truncated \
        && echo x >> sgid-not-executable && chown 65534:65534 chowned && cat untouched >/dev/null \
        && echo done";
    let mut spec = common::sh(script, &state);
    spec.cwd = m.mnt.clone();
    spec.bind_dirs =
        vec![sandbox::BindDir { host: m.mnt.clone(), sandbox: m.mnt.clone(), writable: true, noexec: false }];
    let out = common::run(spec);
    assert_eq!((out.code, out.stdout.as_str()), (0, "done\n"), "{out:?}");
    for (name, _, after) in cases {
        let mode = fs::metadata(m.backing.join(name)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, after, "{name} (passthrough {passthrough}): {mode:o}");
        // And the mount says the same (no stale cached mode).
        let seen = fs::metadata(m.path(name)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(seen, after, "{name} through the mount (passthrough {passthrough}): {seen:o}");
    }
}

#[test]
fn unix_sockets_bound_through_the_mount_work_and_host_bound_ones_are_refused() {
    if !privileged("unix_sockets_bound_through_the_mount_work_and_host_bound_ones_are_refused") {
        return;
    }
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    let m = Mounted::new(RULES, SymlinkEscape::Deny, seed);
    // Bound and reached through the mount: the kernel finds the listener by the mount's inode.
    let listener = UnixListener::bind(m.path("through.sock")).unwrap();
    let server = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        c.write_all(b"hello").unwrap();
    });
    let mut client = UnixStream::connect(m.path("through.sock")).unwrap();
    let mut got = String::new();
    client.read_to_string(&mut got).unwrap();
    assert_eq!(got, "hello");
    server.join().unwrap();
    // Bound on the backing directory (a server on the host side): the mount's inode for that
    // name is not the listener's, so a connect through the mount is refused.
    let _host = UnixListener::bind(m.backing.join("host.sock")).unwrap();
    let e = UnixStream::connect(m.path("host.sock")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED), "{e}");
    // The socket file behind the mount's inode is found, and the listener through it.
    use std::os::unix::fs::MetadataExt;
    let sockets = m.mount().backing_sockets();
    let seen = fs::metadata(m.path("host.sock")).unwrap();
    let behind = sockets.open(seen.dev(), seen.ino()).expect("the backing socket");
    use std::os::fd::AsRawFd;
    UnixStream::connect(format!("/proc/self/fd/{}", behind.as_raw_fd())).unwrap();
    // Not for another device's inode, nor through a link planted in the backing directory.
    assert!(sockets.open(seen.dev() + 1, seen.ino()).is_none());
    fs::create_dir(m.backing.join("d")).unwrap();
    let dir_ino = fs::metadata(m.path("d")).unwrap().ino();
    fs::remove_dir(m.backing.join("d")).unwrap();
    std::os::unix::fs::symlink(m.backing.join("host.sock"), m.backing.join("d")).unwrap();
    assert!(sockets.open(seen.dev(), dir_ino).is_none(), "a link is not followed");
}
