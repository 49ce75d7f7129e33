//! Shared helpers for the sandbox integration tests: privilege gate, temp state dirs, running a
//! shell script in a sandbox and collecting its output.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sandbox::{LaunchSpec, Launched, Stdio};

pub mod fuse;

/// True when the test may touch namespaces, mounts and cgroups. Prints why it skips otherwise,
/// and panics instead when `AGENTSH_REQUIRE_PRIVILEGED=1`.
pub fn privileged(test: &str) -> bool {
    let root = std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
    if root {
        return true;
    }
    let reason = "needs root: it creates namespaces, mounts and cgroups";
    if std::env::var("AGENTSH_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{test}: {reason}, and AGENTSH_REQUIRE_PRIVILEGED=1 forbids skipping");
    }
    eprintln!("skipped {test}: {reason}");
    false
}

/// A fresh state directory on the host, removed on drop.
pub struct StateDir(pub PathBuf);

impl StateDir {
    pub fn new() -> StateDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("agentsh-sandbox-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        StateDir(dir)
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A spec running `/bin/sh -c script` as nobody with a fixed small environment.
pub fn sh(script: &str, state: &StateDir) -> LaunchSpec {
    let mut spec = LaunchSpec::new(["sh", "-c", script], &state.0);
    spec.env = vec![("PATH".into(), "/usr/bin:/bin".into()), ("LANG".into(), "C".into())];
    spec.resolv_conf = "nameserver 127.0.0.53\n".into();
    spec.stdin = Stdio::Null;
    spec
}

/// What a finished sandboxed command produced.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

fn pipe() -> (std::io::PipeReader, OwnedFd) {
    let (r, w) = std::io::pipe().unwrap();
    (r, OwnedFd::from(w))
}

fn drain(mut r: std::io::PipeReader) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// Waits at most 30 s, then kills the sandbox and fails the test.
pub fn wait_bounded(l: &mut Launched) -> i32 {
    match l.wait_timeout(Duration::from_secs(30)).unwrap() {
        Some(code) => code,
        None => {
            l.kill().unwrap();
            panic!("sandboxed command did not finish within 30 s");
        }
    }
}

/// Launches `spec` with captured stdout/stderr, calls `during` with the running sandbox, then
/// waits (bounded) and returns the output.
pub fn run_with(mut spec: LaunchSpec, during: impl FnOnce(&mut Launched)) -> Output {
    let (out_r, out_w) = pipe();
    let (err_r, err_w) = pipe();
    spec.stdout = Stdio::Fd(out_w);
    spec.stderr = Stdio::Fd(err_w);
    let launched = sandbox::launch(&spec);
    // Our copies of the write ends must go, or the readers never see end-of-file.
    drop(spec);
    let mut launched = launched.unwrap_or_else(|e| panic!("launch failed: {e}"));
    let out = drain(out_r);
    let err = drain(err_r);
    if launched.notify_fd.is_some() {
        launched.resume().unwrap();
    }
    during(&mut launched);
    let code = wait_bounded(&mut launched);
    Output { code, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

/// Launches `spec` and returns its output.
pub fn run(spec: LaunchSpec) -> Output {
    run_with(spec, |_| {})
}

/// Writes `text` into a pipe and returns the read end, for a command's stdin.
pub fn stdin_pipe() -> (OwnedFd, std::io::PipeWriter) {
    let (r, w) = std::io::pipe().unwrap();
    (OwnedFd::from(r), w)
}

/// Writes a line to a pipe writer and closes it.
pub fn send_line(mut w: std::io::PipeWriter, line: &str) {
    w.write_all(line.as_bytes()).unwrap();
}
