//! A proxy in front of a real cluster for integration tests: the policy is real YAML loaded by
//! `policies`, the proxy listens on `<dir>/.s.PGSQL.5432` so `psql -h <dir>` reaches it, and
//! events are recorded. Also a raw-protocol client for what psql cannot do on purpose
//! (extended query by hand, cancel keys, hostile bytes).

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use dbproxy::{
    DbEvent, DbProxy, EventSink, ProxyOptions,
    proxy::{ClientCtx, Served},
    wire::{self, Direction, Phase},
};
use policies::{Policy, engine::db::DbRules, load_policy};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{UnixListener, UnixStream},
};

/// Events in order.
#[derive(Default)]
pub struct Recorder(pub Mutex<Vec<DbEvent>>);

impl EventSink for Recorder {
    fn emit(&self, event: DbEvent) {
        self.0.lock().unwrap().push(event);
    }
}

impl Recorder {
    /// Every event so far.
    pub fn all(&self) -> Vec<DbEvent> {
        self.0.lock().unwrap().clone()
    }
}

/// A proxy serving on a Unix socket in a temp dir.
pub struct ProxyFixture {
    /// The socket dir (`psql -h`).
    pub dir: PathBuf,
    /// The proxy.
    pub proxy: Arc<DbProxy>,
    /// Its events.
    pub events: Arc<Recorder>,
    /// What each served connection returned, in order of completion.
    pub outcomes: Arc<Mutex<Vec<Result<Served, String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ProxyFixture {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh temp dir (`agentsh-dbproxy-<tag>-<pid>-<n>`). Some live as long as the test
/// process (a password file a proxy reads at each login), so the first call of each process
/// removes those of processes that are gone.
pub fn temp_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    static REAP: std::sync::Once = std::sync::Once::new();
    REAP.call_once(reap_temp_dirs);
    let d = std::env::temp_dir().join(format!(
        "agentsh-dbproxy-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Removes the temp dirs of test processes that no longer run.
fn reap_temp_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("agentsh-dbproxy-") else { continue };
        // `<tag>-<pid>-<n>`: the pid is the second field from the end.
        let pid = rest.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Loads `yaml` and starts a proxy for service `appdb`.
pub async fn start_proxy(yaml: &str) -> ProxyFixture {
    start_proxy_with(yaml, ProxyOptions::default()).await
}

/// [`start_proxy`] with `opts` (its events, timeout and read-only mode are the fixture's).
pub async fn start_proxy_with(yaml: &str, opts: ProxyOptions) -> ProxyFixture {
    let policy: Policy =
        load_policy(yaml, "test.yaml").unwrap_or_else(|e| panic!("policy loads: {e}\n{yaml}"));
    let service = policy.db_services.get("appdb").expect("appdb service").clone();
    let rules = Arc::new(DbRules::new(&policy));
    let events = Arc::new(Recorder::default());
    let opts = ProxyOptions {
        events: events.clone(),
        connect_timeout: Duration::from_secs(5),
        read_only: !dbproxy::proxy::grants_writes(&policy, "appdb"),
        ..opts
    };
    let proxy = Arc::new(DbProxy::new("appdb", service, rules, opts));
    let dir = temp_dir("sock");
    let listener = UnixListener::bind(dir.join(".s.PGSQL.5432")).expect("bind proxy socket");
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let (p, o) = (proxy.clone(), outcomes.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else { return };
            let (p, o) = (p.clone(), o.clone());
            tokio::spawn(async move {
                let ctx = ClientCtx {
                    session_id: Some("s1".into()),
                    client_identity: Some("uid:1000".into()),
                    peer_pid: None,
                };
                let r = p.serve(s, ctx).await.map_err(|e| e.to_string());
                o.lock().unwrap().push(r);
            });
        }
    });
    ProxyFixture { dir, proxy, events, outcomes, task }
}

/// The output of a psql run.
pub struct PsqlOut {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs psql (from `bin`) against the proxy socket in `dir` as `user`, with the given
/// `PGPASSWORD`, `-c` commands and stdin.
pub async fn psql(
    bin: &Path,
    dir: &Path,
    user: &str,
    password: &str,
    commands: &[&str],
    stdin: &str,
) -> PsqlOut {
    let mut c = tokio::process::Command::new(bin.join("psql"));
    c.args(["-X", "-q", "-A", "-t", "-h"]).arg(dir).args(["-p", "5432", "-U", user, "-d", "appdb"]);
    for cmd in commands {
        c.arg("-c").arg(cmd);
    }
    c.env("PGPASSWORD", password).env("PGCONNECT_TIMEOUT", "10").env_remove("PGSERVICE");
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("psql runs");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("psql finishes")
        .unwrap();
    PsqlOut {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One backend message.
#[derive(Debug, Clone)]
pub struct Msg {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Msg {
    fn field(&self, t: u8) -> Option<String> {
        if self.tag != b'E' && self.tag != b'N' {
            return None;
        }
        let mut it = self.body.split(|b| *b == 0);
        for f in &mut it {
            if f.first() == Some(&t) {
                return Some(String::from_utf8_lossy(&f[1..]).into_owned());
            }
        }
        None
    }

    /// SQLSTATE of an ErrorResponse.
    pub fn code(&self) -> Option<String> {
        self.field(b'C')
    }

    /// Message of an ErrorResponse.
    pub fn message(&self) -> Option<String> {
        self.field(b'M')
    }

    /// Severity of an ErrorResponse.
    pub fn severity(&self) -> Option<String> {
        self.field(b'V')
    }

    /// The first column of a DataRow, as text.
    pub fn first_column(&self) -> Option<String> {
        if self.tag != b'D' {
            return None;
        }
        let len = i32::from_be_bytes(self.body[2..6].try_into().unwrap());
        (len >= 0).then(|| String::from_utf8_lossy(&self.body[6..6 + len as usize]).into_owned())
    }
}

/// A raw protocol client.
pub struct Raw {
    pub s: UnixStream,
    buf: Vec<u8>,
}

impl Raw {
    /// Connects to the proxy socket in `dir`.
    pub async fn connect(dir: &Path) -> Raw {
        Raw { s: UnixStream::connect(dir.join(".s.PGSQL.5432")).await.expect("connect"), buf: Vec::new() }
    }

    /// Sends raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.expect("send");
    }

    /// Sends a StartupMessage (3.`minor`) as `user` and reads until ReadyForQuery or an error.
    pub async fn startup(&mut self, user: &str, minor: u16, extra: &[(&str, &str)]) -> Vec<Msg> {
        let mut params = vec![("user", user), ("database", "appdb")];
        params.extend_from_slice(extra);
        let mut out = Vec::new();
        wire::Frontend::Startup(wire::Startup { major: 3, minor, params }).encode(&mut out);
        self.send(&out).await;
        self.until_ready().await
    }

    /// The next message, or `None` when the proxy closed (10 s at most).
    pub async fn recv(&mut self) -> Option<Msg> {
        self.recv_within(Duration::from_secs(10)).await.expect("message within the time limit")
    }

    /// The next message within `limit`: `Err` on timeout, `Ok(None)` on close.
    pub async fn recv_within(&mut self, limit: Duration) -> Result<Option<Msg>, ()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(n) =
                wire::check(&self.buf, Direction::Backend, Phase::Normal).expect("valid backend bytes")
            {
                let m = Msg { tag: self.buf[0], body: self.buf[5..n].to_vec() };
                self.buf.drain(..n);
                return Ok(Some(m));
            }
            let mut chunk = [0u8; 8192];
            let n = match tokio::time::timeout_at(deadline, self.s.read(&mut chunk)).await {
                Err(_) => return Err(()),
                Ok(Ok(n)) => n,
                Ok(Err(_)) => 0,
            };
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Messages up to and including ReadyForQuery (or up to the close).
    pub async fn until_ready(&mut self) -> Vec<Msg> {
        let mut v = Vec::new();
        while let Some(m) = self.recv().await {
            let done = m.tag == b'Z';
            v.push(m);
            if done {
                break;
            }
        }
        v
    }

    /// A simple Query and its answer.
    pub async fn query(&mut self, sql: &str) -> Vec<Msg> {
        let mut out = Vec::new();
        wire::Query { sql }.encode(&mut out);
        self.send(&out).await;
        self.until_ready().await
    }
}

/// The first ErrorResponse among `msgs`.
pub fn error_of(msgs: &[Msg]) -> Option<&Msg> {
    msgs.iter().find(|m| m.tag == b'E')
}

/// The transaction status of the last ReadyForQuery.
pub fn status_of(msgs: &[Msg]) -> Option<u8> {
    msgs.iter().rev().find(|m| m.tag == b'Z').map(|m| m.body[0])
}

/// First columns of every DataRow.
pub fn rows(msgs: &[Msg]) -> Vec<String> {
    msgs.iter().filter_map(Msg::first_column).collect()
}

/// An upstream that only counts the connections made to it (and closes them): for checking
/// that a refusal happened before any upstream contact. Returns its port and the count.
pub async fn counting_upstream() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = up.local_addr().unwrap().port();
    let contacts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n = contacts.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = up.accept().await {
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(s);
        }
    });
    (port, contacts)
}
