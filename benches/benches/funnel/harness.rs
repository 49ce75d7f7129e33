//! Processes of the funnel bench: a private `agentsh server`, sessions, and the measuring client
//! (`funnel_client`) on the host or inside `agentsh exec`, driven one line at a time.

use std::{
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// Errors of the harness are reported as text; the bench stops on the first one.
pub type Result<T> = std::result::Result<T, String>;

/// The workspace root (the benches crate's parent directory).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `target/release/agentsh` (under `CARGO_TARGET_DIR` when set), built with
/// `cargo build --release -p gateway` when it is missing. An existing binary is used as is.
pub fn agentsh_binary() -> Result<PathBuf> {
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let target = if target.is_absolute() { target } else { root.join(target) };
    let bin = target.join("release").join("agentsh");
    if bin.exists() {
        return Ok(bin);
    }
    eprintln!("funnel: {} is missing; running cargo build --release -p gateway", bin.display());
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "gateway"])
        .current_dir(&root)
        .status()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !status.success() || !bin.exists() {
        return Err(format!("cargo build --release -p gateway failed ({status})"));
    }
    Ok(bin)
}

/// A directory under `/var/tmp` (the sandbox mounts a private `/tmp`), removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh directory whose name contains `label`.
    pub fn new(label: &str) -> Result<TempDir> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let path = PathBuf::from(format!("/var/tmp/agentsh-bench-{label}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        Ok(TempDir(path))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // `AGENTSH_BENCH_KEEP=1` keeps the state dirs (with the daemon's server.log) to inspect.
        if std::env::var_os("AGENTSH_BENCH_KEEP").is_some_and(|v| v == "1") {
            eprintln!("funnel: kept {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A private `agentsh server` (own state dir); SIGTERM on drop, which destroys its sessions.
pub struct Daemon {
    bin: PathBuf,
    child: Child,
    state: TempDir,
}

impl Daemon {
    /// Start the daemon and wait until its control socket answers.
    pub fn start(bin: &Path, label: &str) -> Result<Daemon> {
        let state = TempDir::new(label)?;
        let log = std::fs::File::create(state.path().join("server.log")).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .arg("server")
            .env("AGENTSH_STATE_DIR", state.path())
            .env_remove("AGENTSH_SERVER")
            .env_remove("AGENTSH_CONFIG")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("starting {} server: {e}", bin.display()))?;
        let mut d = Daemon { bin: bin.to_path_buf(), child, state };
        let socket = d.state.path().join("agentsh.sock");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if let Ok(Some(status)) = d.child.try_wait() {
                return Err(format!("agentsh server exited ({status}): {}", d.log()));
            }
            if Instant::now() > deadline {
                return Err(format!("agentsh server did not listen: {}", d.log()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(d)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("server.log")).unwrap_or_default()
    }

    /// An `agentsh` command aimed at this daemon only.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("AGENTSH_STATE_DIR", self.state.path())
            .env("AGENTSH_NO_AUTO", "1")
            .env_remove("AGENTSH_SERVER")
            .env_remove("AGENTSH_SESSION_ID");
        c
    }

    fn cli(&self, args: &[&str]) -> Result<Output> {
        let out = self.command().args(args).stdin(Stdio::null()).output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "agentsh {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr),
                self.log()
            ));
        }
        Ok(out)
    }

    /// `session create` over `workspace` with the policy file `policy`; returns the id.
    pub fn create_session(&self, workspace: &Path, policy: &Path) -> Result<String> {
        let (Some(ws), Some(p)) = (workspace.to_str(), policy.to_str()) else {
            return Err("non-UTF-8 temp path".into());
        };
        let out = self.cli(&["session", "create", "--workspace", ws, "--policy", p])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time of the daemon's live threads so far (`/proc/PID/task/*/schedstat`, ns precision;
    /// threads that already exited are not counted).
    pub fn cpu(&self) -> Result<Duration> {
        let dir = format!("/proc/{}/task", self.child.id());
        let tasks = std::fs::read_dir(&dir).map_err(|e| format!("reading {dir}: {e}"))?;
        let mut ns = 0u64;
        for t in tasks.flatten() {
            let stat = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            ns += stat.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
        Ok(Duration::from_nanos(ns))
    }

    /// `(VmRSS, VmHWM)` of the daemon process in KiB.
    pub fn memory_kib(&self) -> Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .map_err(|e| format!("reading the daemon's /proc status: {e}"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| format!("no {name} in /proc status"))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One timed round trip, as the client measured it.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// `connect()` alone.
    pub connect: Duration,
    /// connect → (send) → receive one byte → close.
    pub total: Duration,
}

/// A running `funnel_client`, on the host or inside a session.
pub struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    label: &'static str,
}

impl Client {
    /// Start `cmd` (which runs `funnel_client`) with piped stdio and wait for its `ready`.
    pub fn spawn(mut cmd: Command, label: &'static str) -> Result<Client> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting the {label} client: {e}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("client stdio not piped".into());
        };
        let mut c = Client { child, stdin: Some(stdin), stdout: BufReader::new(stdout), label };
        let first = c.line()?;
        if first != "ready" {
            return Err(format!("{label} client said {first:?} instead of ready"));
        }
        Ok(c)
    }

    fn line(&mut self) -> Result<String> {
        let mut s = String::new();
        match self.stdout.read_line(&mut s) {
            Ok(0) => Err(format!("the {} client exited", self.label)),
            Ok(_) => Ok(s.trim_end().to_string()),
            Err(e) => Err(format!("reading the {} client: {e}", self.label)),
        }
    }

    /// Send one command; return the numbers of its `ok` answer.
    fn ask(&mut self, cmd: &str) -> Result<Vec<u64>> {
        let stdin = self.stdin.as_mut().ok_or("client closed")?;
        writeln!(stdin, "{cmd}").and_then(|()| stdin.flush()).map_err(|e| e.to_string())?;
        let answer = self.line()?;
        let Some(rest) = answer.strip_prefix("ok") else {
            return Err(format!("{} client, {cmd}: {answer}", self.label));
        };
        rest.split_whitespace().map(|w| w.parse().map_err(|e| format!("{answer:?}: {e}"))).collect()
    }

    fn samples(&mut self, cmd: &str) -> Result<Vec<Sample>> {
        let v = self.ask(cmd)?;
        Ok(v.chunks_exact(2)
            .map(|p| Sample { connect: Duration::from_nanos(p[0]), total: Duration::from_nanos(p[1]) })
            .collect())
    }

    /// `n` × connect, send `byte`, receive one byte, close.
    pub fn latency(&mut self, addr: SocketAddr, n: u64, byte: u8) -> Result<Vec<Sample>> {
        self.samples(&format!("lat {addr} {n} {byte:02x}"))
    }

    /// `n` × connect, receive one byte (the server speaks first), close.
    pub fn server_first(&mut self, addr: SocketAddr, n: u64) -> Result<Vec<Sample>> {
        self.samples(&format!("ssf {addr} {n}"))
    }

    /// Send `bytes` over one connection and wait for the sink's count.
    pub fn bulk(&mut self, addr: SocketAddr, bytes: u64) -> Result<Duration> {
        let v = self.ask(&format!("bulk {addr} {bytes}"))?;
        v.first().map(|n| Duration::from_nanos(*n)).ok_or_else(|| "bulk: no figure".into())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "quit");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
