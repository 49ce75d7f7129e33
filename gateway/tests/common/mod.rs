//! Shared harness of the gateway's end-to-end tests: a private `agentsh server` per test, sessions
//! with inline policies, `exec --output json --events all` parsed into typed results, and the
//! local upstreams (TLS with a CA made at run time, plain HTTP, server-speaks-first) and a fake
//! upstream resolver ([`dns::FakeDns`]).
//!
//! Every daemon gets a server config whose `dns.upstream` is on the host's loopback, so no test
//! ever sends a query to the host's own resolver.

#![allow(dead_code, missing_docs)]

pub mod dns;
pub mod provider;
pub mod upstream;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::Deserialize;

/// The binary under test.
pub const AGENTSH: &str = env!("CARGO_BIN_EXE_agentsh");

/// True when the test may run: root with seccomp user-notify and a cgroup v2 mount.
/// Otherwise prints why and returns false, or panics under `AGENTSH_REQUIRE_PRIVILEGED=1`.
pub fn privileged(test: &str) -> bool {
    if !redirect::testing::require_root_and_notify(test) {
        return false;
    }
    if sandbox::cgroup::unified_root().is_err() {
        redirect::testing::skip(test, "needs a cgroup v2 mount for the session cgroups");
        return false;
    }
    true
}

/// Copy the binary under test to `dst` with `cp`, not from this process: a file this
/// multi-threaded test process had open for writing could be inherited by a child another test
/// forks at that moment, and executing the copy would then fail with ETXTBSY.
pub fn copy_binary(dst: &Path) {
    let ok = Command::new("cp").arg(AGENTSH).arg(dst).status().expect("cp").success();
    assert!(ok, "copying {AGENTSH} to {}", dst.display());
}

/// Start `agentsh server` with `config` (YAML after a `state_dir` line pointing into `dir`),
/// which must refuse to start and bind nothing; returns its stderr.
pub fn server_refuses(dir: &TempDir, config: &str) -> String {
    let state = dir.path().join("state");
    let file = dir.write("server.yaml", &format!("state_dir: {}\n{config}", state.display()));
    let out =
        Command::new(AGENTSH).args(["server", "--config"]).arg(&file).output().expect("run agentsh server");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the server started: {stderr}");
    assert!(!state.join("agentsh.sock").exists(), "the refused server bound its socket");
    stderr
}

/// A directory under `/var/tmp` (the sandbox mounts a private `/tmp`), removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(format!("/var/tmp/agentsh-it-{label}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    /// A fresh directory `parent/agentsh-it-<label>-<pid>` (removed on drop).
    pub fn under(parent: &Path, label: &str) -> TempDir {
        let path = parent.join(format!("agentsh-it-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Write `name` inside the directory and return its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `agentsh server` with its own state dir; SIGTERM (then SIGKILL) on drop.
pub struct Daemon {
    child: Child,
    pub state: TempDir,
}

/// The backend this run's daemons use (`AGENTSH_TEST_BACKEND`, else seccomp).
pub fn backend() -> String {
    std::env::var("AGENTSH_TEST_BACKEND").ok().filter(|b| !b.is_empty()).unwrap_or_else(|| "seccomp".into())
}

/// Whether this run's backend decides connects by name at `connect` (seccomp and ptrace: the
/// agent gets EACCES). Under eBPF the kernel refuses only address rules (EPERM) and a decision
/// by name is made by the gateway after the connect; tests of connect-time answers say so and
/// end there.
pub fn decides_at_connect(test: &str) -> bool {
    let b = backend();
    if b == "ebpf" {
        eprintln!(
            "{test}: connect-time answers are not this backend's ({b}); covered under seccomp and ptrace"
        );
        return false;
    }
    true
}

/// A loopback UDP port nobody listens on (bound, then released): a DNS upstream that answers
/// every query at once with ICMP port-unreachable.
pub fn dead_dns_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

impl Daemon {
    /// A daemon whose DNS upstream is a dead loopback port: names the session resolver forwards
    /// fail (SERVFAIL) instead of reaching the host's resolver.
    pub fn start() -> Daemon {
        Daemon::start_with_config(&format!("dns:\n  upstream: [\"127.0.0.1:{}\"]\n", dead_dns_port()))
    }

    /// [`Daemon::start`] with `security.mode: BACKEND` (`seccomp`, `ebpf`, `ptrace`).
    pub fn start_backend(backend: &str) -> Daemon {
        Daemon::start_with_config(&format!(
            "security: {{mode: {backend}}}\ndns:\n  upstream: [\"127.0.0.1:{}\"]\n",
            dead_dns_port()
        ))
    }

    /// A daemon started with `agentsh server --config FILE`, FILE holding `config` (YAML). The
    /// config must name a DNS upstream on the host's loopback (see [`dns::FakeDns::server_config`]).
    pub fn start_with_config(config: &str) -> Daemon {
        Daemon::start_with_config_env(config, &[])
    }

    /// [`Daemon::start_with_config`] with `env` set in the daemon's environment.
    pub fn start_with_config_env(config: &str, env: &[(&str, &str)]) -> Daemon {
        assert!(
            config.contains("upstream: [\"127.0.0.1:"),
            "a test daemon must forward DNS to a loopback upstream, never the host's resolver: {config}"
        );
        let state = TempDir::new("state");
        // `AGENTSH_TEST_BACKEND` runs every test that does not choose a backend itself under
        // that one (CI runs the suite once per backend).
        let config = match std::env::var("AGENTSH_TEST_BACKEND") {
            Ok(b) if !b.is_empty() && !config.contains("security:") => {
                format!("security: {{mode: {b}}}\n{config}")
            }
            _ => config.to_string(),
        };
        // Session data beside the state, not in the host's /var/lib/agentsh.
        let config = if config.contains("data_dir:") {
            config
        } else {
            format!("data_dir: {}\n{config}", state.path().join("data").display())
        };
        state.write("server.yaml", &config);
        Daemon::spawn(state, env)
    }

    /// Stop this daemon (SIGTERM, as an operator would) and start a new one on the same state
    /// dir and config.
    pub fn restart(self) -> Daemon {
        self.restart_with(|| {})
    }

    /// [`Daemon::restart`], running `between` once this daemon has stopped.
    pub fn restart_with(mut self, between: impl FnOnce()) -> Daemon {
        self.stop();
        between();
        // The state dir moves to the new daemon; this one's drop finds its child gone.
        let state = std::mem::replace(&mut self.state, TempDir(PathBuf::new()));
        Daemon::spawn(state, &[])
    }

    fn spawn(state: TempDir, env: &[(&str, &str)]) -> Daemon {
        let config_file = state.path().join("server.yaml");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(state.path().join("server.log"))
            .expect("server log");
        let child = Command::new(AGENTSH)
            .arg("server")
            .arg("--config")
            .arg(&config_file)
            .env("AGENTSH_STATE_DIR", state.path())
            .env_remove("AGENTSH_SERVER")
            .env_remove("AGENTSH_CONFIG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn agentsh server");
        let mut daemon = Daemon { child, state };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(daemon.socket()).is_err() {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("agentsh server exited early ({status}): {}", daemon.log());
            }
            assert!(Instant::now() < deadline, "agentsh server did not listen: {}", daemon.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    /// The control socket.
    pub fn socket(&self) -> PathBuf {
        self.state.path().join("agentsh.sock")
    }

    /// The daemon's own output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("server.log")).unwrap_or_default()
    }

    /// The JSONL audit file's events.
    pub fn audit(&self) -> Vec<Event> {
        std::fs::read_to_string(self.state.path().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is an event"))
            .collect()
    }

    /// An `agentsh` command aimed at this daemon, never auto-starting another.
    pub fn command(&self) -> Command {
        let mut c = Command::new(AGENTSH);
        c.env("AGENTSH_STATE_DIR", self.state.path())
            .env("AGENTSH_NO_AUTO", "1")
            .env_remove("AGENTSH_SERVER")
            .env_remove("AGENTSH_SESSION_ID")
            .stdin(Stdio::null());
        c
    }

    /// Run the CLI with `args` and return its output.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run agentsh")
    }

    /// Create a session with `policy` (YAML text) over a fresh workspace.
    pub fn session(&self, policy: &str) -> Session {
        self.session_in(TempDir::new("ws"), policy)
    }

    /// `session create --json` with `policy` (YAML text) over `workspace`.
    fn create_session(&self, workspace: &Path, policy: &str) -> Output {
        let policy_dir = TempDir::new("policy");
        let file = policy_dir.write("policy.yaml", policy);
        self.cli(&[
            "session",
            "create",
            "--workspace",
            workspace.to_str().expect("utf-8 path"),
            "--policy",
            file.to_str().expect("utf-8 path"),
            "--json",
        ])
    }

    /// Create a session with `policy` over `workspace` (made by the caller, e.g. to name paths
    /// inside it in the policy).
    pub fn session_in(&self, workspace: TempDir, policy: &str) -> Session {
        let out = self.create_session(workspace.path(), policy);
        assert!(out.status.success(), "session create failed: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("session create --json");
        let id = v["id"].as_str().expect("session id").to_string();
        Session { id, workspace }
    }

    /// Try to create a session with `policy`, which must be refused; returns the CLI's stderr.
    pub fn refused_session(&self, policy: &str) -> String {
        self.refused_session_in(TempDir::new("ws").path(), policy)
    }

    /// [`Daemon::refused_session`] over `workspace`.
    pub fn refused_session_in(&self, workspace: &Path, policy: &str) -> String {
        let out = self.create_session(workspace, policy);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "the session was created: {stderr}");
        stderr
    }

    /// `exec --output json --events all [extra] SID -- argv…`; panics unless the JSON parses and
    /// the CLI's exit code equals the command's.
    pub fn exec_with(&self, s: &Session, extra: &[&str], argv: &[&str]) -> ExecResult {
        let mut args = vec!["exec", "--output", "json", "--events", "all"];
        args.extend_from_slice(extra);
        args.push(&s.id);
        args.push("--");
        args.extend_from_slice(argv);
        let out = self.cli(&args);
        let r: ExecResult = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "exec output is not JSON ({e}): stdout={} stderr={} log={}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log()
            )
        });
        assert_eq!(out.status.code(), Some(r.exit_code.clamp(0, 255)), "CLI exit code = command's");
        r
    }

    /// `exec` with no extra flags.
    pub fn exec(&self, s: &Session, argv: &[&str]) -> ExecResult {
        self.exec_with(s, &[], argv)
    }

    /// Run a Python script (written into the workspace) inside the session.
    pub fn python(&self, s: &Session, name: &str, script: &str, args: &[&str]) -> ExecResult {
        s.workspace.write(name, script);
        let mut argv = vec!["python3", name];
        argv.extend_from_slice(args);
        self.exec(s, &argv)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Daemon {
    fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
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

/// A session and its workspace (removed when dropped; the daemon destroys the session).
pub struct Session {
    pub id: String,
    pub workspace: TempDir,
}

/// The `policy` part of an event.
#[derive(Debug, Clone, Deserialize)]
pub struct EventPolicy {
    pub decision: String,
    pub rule: String,
    #[serde(default)]
    pub message: Option<String>,
}

/// One audit event (DESIGN.md §6).
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: String,
    pub session_id: String,
    #[serde(default)]
    pub command_id: Option<String>,
    #[serde(default)]
    pub pid: Option<i32>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub remote: Option<String>,
    #[serde(default)]
    pub policy: Option<EventPolicy>,
    #[serde(default)]
    pub fields: BTreeMap<String, serde_json::Value>,
}

impl Event {
    /// The deciding rule, or "".
    pub fn rule(&self) -> &str {
        self.policy.as_ref().map_or("", |p| p.rule.as_str())
    }

    /// The verdict, or "".
    pub fn decision(&self) -> &str {
        self.policy.as_ref().map_or("", |p| p.decision.as_str())
    }

    /// A numeric field, or 0.
    pub fn num(&self, key: &str) -> u64 {
        self.fields.get(key).and_then(serde_json::Value::as_u64).unwrap_or(0)
    }

    /// A string field, or "".
    pub fn str(&self, key: &str) -> &str {
        self.fields.get(key).and_then(serde_json::Value::as_str).unwrap_or("")
    }
}

/// `exec --output json` (DESIGN.md §6).
#[derive(Debug, Clone, Deserialize)]
pub struct ExecResult {
    pub session_id: String,
    pub command_id: String,
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    pub duration_ms: u64,
    pub events: Vec<Event>,
}

impl ExecResult {
    /// Events of `kind`.
    pub fn of(&self, kind: &str) -> Vec<&Event> {
        self.events.iter().filter(|e| e.kind == kind).collect()
    }

    /// The single event of `kind`; panics (showing everything) unless there is exactly one.
    pub fn one(&self, kind: &str) -> &Event {
        let found = self.of(kind);
        assert_eq!(found.len(), 1, "expected one {kind} event in {self:#?}");
        found[0]
    }

    /// Panics with the whole result unless the command exited with `code`.
    pub fn assert_exit(&self, code: i32) -> &Self {
        assert_eq!(self.exit_code, code, "unexpected exit code: {self:#?}");
        self
    }

    /// Events that are neither session bookkeeping nor the command's own: the network ones.
    pub fn network_events(&self) -> Vec<&Event> {
        self.events.iter().filter(|e| e.kind.starts_with("net_") || e.kind.ends_with("_blocked")).collect()
    }
}
