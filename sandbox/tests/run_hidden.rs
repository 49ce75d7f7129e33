//! The private `/run`: host sockets under `/run` and `/var/run` are unreachable from inside, the
//! state dir still appears at `/run/agentsh`, and `/etc/resolv.conf` is still the spec's even
//! when the host's is a symlink into `/run` (systemd-resolved).
//!
//! The connect probe is a perl one-liner: perl-base, which carries `Socket`, is Essential on
//! Debian, so it is present wherever these tests run.
// unshare and mount for the systemd-resolved layout have no safe std wrapper; each block says
// why it is sound.
#![allow(unsafe_code)]
mod common;

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{StateDir, privileged, run, sh};

/// A Unix socket listening at a fresh path under the host's `/run`, removed on drop.
struct HostSocket {
    path: PathBuf,
    _listener: UnixListener,
}

impl HostSocket {
    fn new() -> HostSocket {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(format!("/run/agentsh-test-{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        HostSocket { path, _listener: listener }
    }
}

impl Drop for HostSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Shell text that prints `<label> connected` or `<label> errno=<n>` for a connect to `path`.
fn probe(label: &str, path: &Path) -> String {
    format!(
        "perl -MSocket -e 'socket(S, PF_UNIX, SOCK_STREAM, 0) or die; \
         print connect(S, pack_sockaddr_un($ARGV[0])) ? \"{label} connected\\n\" : \"{label} errno=\" . ($!+0) . \"\\n\"' {p}; ",
        p = path.display()
    )
}

#[test]
fn host_run_sockets_are_unreachable_and_the_state_dir_remains() {
    if !privileged("host_run_sockets_are_unreachable_and_the_state_dir_remains") {
        return;
    }
    let socket = HostSocket::new();
    let name = socket.path.file_name().unwrap().to_str().unwrap();
    let state = StateDir::new();
    std::fs::write(state.0.join("hello.txt"), "world\n").unwrap();
    let via_var = Path::new("/var/run").join(name);
    let mut script = probe("run", &socket.path);
    script += &probe("var-run", &via_var);
    script += "ls -A /run; cat /run/agentsh/hello.txt; stat -c %a /run; \
               awk '$5 == \"/run\" { print $6, $9 }' /proc/self/mountinfo; cat /etc/resolv.conf";
    let mut spec = sh(&script, &state);
    spec.uid = 0;
    spec.gid = 0;
    let out = run(spec);
    assert_eq!(out.code, 0, "{out:?}");
    let enoent = libc::ENOENT;
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some(format!("run errno={enoent}").as_str()), "{out:?}");
    assert_eq!(lines.next(), Some(format!("var-run errno={enoent}").as_str()), "{out:?}");
    assert_eq!(lines.next(), Some("agentsh"), "only the state dir mount point is in /run: {out:?}");
    assert_eq!(lines.next(), Some("world"));
    assert_eq!(lines.next(), Some("755"));
    let run_mount = lines.next().unwrap_or_default();
    assert!(run_mount.ends_with(" tmpfs"), "{run_mount}");
    for flag in ["nosuid", "nodev", "noexec"] {
        assert!(run_mount.split([' ', ',']).any(|f| f == flag), "{flag} missing: {run_mount}");
    }
    assert_eq!(lines.next(), Some("nameserver 127.0.0.53"));
    // Still reachable on the host: the sandbox changed nothing outside.
    assert!(std::os::unix::net::UnixStream::connect(&socket.path).is_ok());
}

#[test]
fn host_run_is_visible_when_not_hidden() {
    if !privileged("host_run_is_visible_when_not_hidden") {
        return;
    }
    // The positive control for the probe above: the same connect succeeds through /var/run.
    let socket = HostSocket::new();
    let via_var = Path::new("/var/run").join(socket.path.file_name().unwrap());
    let state = StateDir::new();
    let mut spec = sh(&format!("{}ls /run/agentsh", probe("var-run", &via_var)), &state);
    spec.uid = 0;
    spec.gid = 0;
    spec.hide_run = false;
    let out = run(spec);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "var-run connected\nresolv.conf\n");
}

/// Runs `body` on a thread of its own in a private mount namespace, so it can rearrange `/etc`
/// and `/run` without the host (or other tests) seeing it.
fn in_private_mount_ns<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: unshare and mount take plain flags and NUL-terminated strings; CLONE_NEWNS
        // only affects this thread, which ends with the closure.
        unsafe {
            assert_eq!(libc::unshare(libc::CLONE_NEWNS), 0, "unshare: {}", std::io::Error::last_os_error());
            let flags = libc::MS_REC | libc::MS_PRIVATE;
            let ret = libc::mount(std::ptr::null(), c"/".as_ptr(), std::ptr::null(), flags, std::ptr::null());
            assert_eq!(ret, 0, "make / private: {}", std::io::Error::last_os_error());
        }
        body()
    })
    .join()
    .unwrap()
}

fn mount(src: &str, target: &str, fstype: &str, data: &str) {
    let c = |s: &str| std::ffi::CString::new(s).unwrap();
    let (src, target, fstype, data) = (c(src), c(target), c(fstype), c(data));
    // SAFETY: all four are NUL-terminated strings that outlive the call.
    let ret = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, data.as_ptr().cast()) };
    assert_eq!(ret, 0, "mount {target:?}: {}", std::io::Error::last_os_error());
}

#[test]
fn resolv_conf_symlinked_into_run_still_gets_the_spec_text() {
    if !privileged("resolv_conf_symlinked_into_run_still_gets_the_spec_text") {
        return;
    }
    let scratch = StateDir::new();
    let state = StateDir::new();
    let spec_text = "nameserver 127.0.0.1\n";
    let outputs = in_private_mount_ns(move || {
        // systemd-resolved's layout, made in this thread's namespace only: an overlay on /etc
        // whose resolv.conf is a relative symlink into a tmpfs /run.
        let (upper, work) = (scratch.0.join("upper"), scratch.0.join("work"));
        std::fs::create_dir_all(&upper).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        std::os::unix::fs::symlink("../run/systemd/resolve/stub-resolv.conf", upper.join("resolv.conf"))
            .unwrap();
        let data = format!("lowerdir=/etc,upperdir={},workdir={}", upper.display(), work.display());
        mount("overlay", "/etc", "overlay", &data);
        mount("tmpfs", "/run", "tmpfs", "mode=0755");
        std::fs::create_dir_all("/run/systemd/resolve").unwrap();
        std::fs::write("/run/systemd/resolve/stub-resolv.conf", "nameserver 127.0.0.53\n").unwrap();

        let script = "cat /etc/resolv.conf; readlink /etc/resolv.conf";
        let mut spec = sh(script, &state);
        spec.resolv_conf = spec_text.into();
        let resolved_up = run(spec);
        // resolved not started yet: the link dangles, and is followed one hop by its text.
        std::fs::remove_file("/run/systemd/resolve/stub-resolv.conf").unwrap();
        let mut spec = sh(script, &state);
        spec.resolv_conf = spec_text.into();
        let dangling = run(spec);
        let mut spec = sh(script, &state);
        spec.resolv_conf = spec_text.into();
        spec.hide_run = false;
        std::fs::write("/run/systemd/resolve/stub-resolv.conf", "nameserver 127.0.0.53\n").unwrap();
        let run_shared = run(spec);
        // SAFETY: a NUL-terminated path; detaching lets `scratch` (the overlay's dirs) be removed.
        unsafe { libc::umount2(c"/etc".as_ptr(), libc::MNT_DETACH) };
        (resolved_up, dangling, run_shared)
    });
    let expected = format!("{spec_text}../run/systemd/resolve/stub-resolv.conf\n");
    for out in [outputs.0, outputs.1, outputs.2] {
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(out.stdout, expected, "{out:?}");
    }
}
