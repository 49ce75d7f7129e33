//! The session's database proxies, wired in: one `dbproxy::DbProxy` per `db_services` entry,
//! reached two ways and no other.
//! - **Per-session Unix socket** at `<state>/db/<service>/.s.PGSQL.5432`, seen in the sandbox
//!   as `/run/agentsh/db/<service>/.s.PGSQL.5432` (so `PGHOST=/run/agentsh/db/<service>` works).
//!   A connection is accepted only from the supervisor's own on-behalf connects (the daemon's
//!   pid: the sandbox's AF_UNIX connects are made by the supervisor, after the unix rules, to
//!   the very inode checked, and only this session's sandbox sees this session's state dir) or
//!   from a process inside the session's cgroup; anyone else on the host is refused and audited.
//! - **Transparent**: a TCP connect from the sandbox to the service's upstream, by name (the
//!   synthetic address bound to it) or by any of its addresses (resolved when the session is
//!   created), is handed to the proxy instead of being relayed; there is no other route to it.
//!   With `policies.db.unavoidability: enforce`, a name that does not resolve refuses the
//!   session.

use std::{
    net::{IpAddr, SocketAddr},
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, Weak},
};

use anyhow::{Context, bail};
use dbproxy::{
    ClientCtx, DbEvent, DbProxy, EventSink, ProxyOptions,
    proxy::{CancelTable, SessionPool},
};
use dns::{Family, SessionResolver};
use policies::{Policy, engine::db::DbRules, matchers::domain::Hostname, model::blocks::Unavoidability};

use super::{Recorder, session::Session};
use crate::events::{Event, EventPolicy};

/// Name of the socket file libpq looks for in `PGHOST`.
pub const SOCKET_NAME: &str = ".s.PGSQL.5432";

/// One service: its proxy and how connects to its upstream are recognised.
pub struct DbEntry {
    /// The proxy.
    pub proxy: Arc<DbProxy>,
    /// Upstream host (name or IP literal) as written.
    host: String,
    /// Upstream port.
    port: u16,
    /// Upstream addresses, resolved at session creation.
    addrs: Vec<IpAddr>,
    /// Host path of the per-session socket.
    socket: PathBuf,
}

/// A session's database proxies.
pub struct SessionDb {
    /// One per `db_services` entry.
    pub entries: Vec<Arc<DbEntry>>,
    listeners: Mutex<Vec<std::os::unix::net::UnixListener>>,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

/// Everything [`SessionDb::create`] needs from the session being made.
pub struct DbSetup<'a> {
    /// The session id.
    pub session_id: &'a str,
    /// The session's state dir on the host.
    pub dir: &'a Path,
    /// The session CA, which terminates clients' TLS (`terminate_*` modes).
    pub ca: Arc<llmproxy::ca::SessionCa>,
    /// Extra upstream roots.
    pub extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Shared by every proxy of the daemon.
    pub cancel_keys: CancelTable,
    /// Where events go.
    pub recorder: Arc<Recorder>,
    /// The command events are attributed to.
    pub current_command: Arc<Mutex<Option<String>>>,
    /// For resolving upstream names.
    pub resolver: &'a SessionResolver,
    /// The runtime to resolve on.
    pub runtime: &'a tokio::runtime::Handle,
}

impl SessionDb {
    /// The proxies of `policy`'s `db_services` and their bound sockets (not yet served: see
    /// [`SessionDb::start`]); `None` when the policy names no service.
    pub fn create(policy: &Policy, setup: DbSetup<'_>) -> anyhow::Result<Option<SessionDb>> {
        if policy.db_services.is_empty() {
            return Ok(None);
        }
        let rules = Arc::new(DbRules::new(policy));
        let sink: Arc<dyn EventSink> = Arc::new(AuditSink {
            recorder: setup.recorder.clone(),
            session_id: setup.session_id.to_string(),
            current_command: setup.current_command.clone(),
        });
        let enforce = policy.policies.db.unavoidability == Unavoidability::Enforce;
        let mut entries = Vec::new();
        let mut listeners = Vec::new();
        for (name, service) in &policy.db_services {
            let (host, port) = (service.upstream.host.clone(), service.upstream.port);
            let addrs = match host.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => {
                    let addrs = resolve(setup.resolver, setup.runtime, &host);
                    if addrs.is_empty() && enforce {
                        bail!(
                            "db_services.{name}: upstream {host} does not resolve, and policies.db.unavoidability is enforce"
                        );
                    }
                    addrs
                }
            };
            let opts = ProxyOptions {
                // libpq sends no SNI to an IP address: present the upstream's name then.
                client_tls: Some(setup.ca.server_config_with_fallback(vec![b"postgresql".to_vec()], &host)),
                extra_roots: setup.extra_roots.clone(),
                cancel_keys: setup.cancel_keys.clone(),
                events: sink.clone(),
                // Defence in depth: with no write-class operation granted, the server refuses
                // writes hidden in what the classifier sees as reads.
                read_only: !dbproxy::proxy::grants_writes(policy, name),
                log_statements: policy.policies.db.log_statements,
                ..ProxyOptions::default()
            };
            let proxy = Arc::new(DbProxy::new(name.clone(), service.clone(), rules.clone(), opts));
            let dir = setup.dir.join("db").join(name);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&dir)
                .with_context(|| format!("creating {}", dir.display()))?;
            let socket = dir.join(SOCKET_NAME);
            let listener = bind_in(&dir).with_context(|| format!("binding {}", socket.display()))?;
            // Any uid in the sandbox may connect; who may is decided at accept.
            std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777))?;
            listeners.push(listener);
            entries.push(Arc::new(DbEntry { proxy, host, port, addrs, socket }));
        }
        Ok(Some(SessionDb { entries, listeners: Mutex::new(listeners), tasks: Mutex::default() }))
    }

    /// Serve the per-session sockets on `runtime` until [`SessionDb::stop`].
    pub fn start(
        &self,
        runtime: &tokio::runtime::Handle,
        session: Weak<Session>,
        pool: Arc<SessionPool>,
    ) -> anyhow::Result<()> {
        let _guard = runtime.enter();
        let listeners = std::mem::take(&mut *self.listeners.lock().unwrap_or_else(|p| p.into_inner()));
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        for (listener, entry) in listeners.into_iter().zip(&self.entries) {
            listener.set_nonblocking(true)?;
            let listener = tokio::net::UnixListener::from_std(listener)?;
            let (entry, session) = (entry.clone(), session.clone());
            tasks.push(runtime.spawn(accept_loop(listener, entry, session, pool.clone())).abort_handle());
        }
        Ok(())
    }

    /// Stop serving the sockets (the session is going away).
    pub fn stop(&self) {
        for t in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            t.abort();
        }
    }

    /// The service a TCP connect to `dst` belongs to: by the name the destination address was
    /// resolved for (`bound`), or by the address itself.
    pub fn for_connect(&self, dst: SocketAddr, bound: Option<&Hostname>) -> Option<&Arc<DbEntry>> {
        self.entries.iter().find(|e| {
            e.port == dst.port()
                && (bound.is_some_and(|b| b.as_str() == e.host) || e.addrs.contains(&dst.ip()))
        })
    }
}

/// Bind [`SOCKET_NAME`] in `dir` through `/proc/self/fd`, so a state dir deep enough to push
/// the full path past the 108 bytes of `sun_path` still works.
fn bind_in(dir: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::fd::AsRawFd;
    let handle = std::fs::File::open(dir)?;
    std::os::unix::net::UnixListener::bind(format!("/proc/self/fd/{}/{SOCKET_NAME}", handle.as_raw_fd()))
}

fn resolve(resolver: &SessionResolver, runtime: &tokio::runtime::Handle, host: &str) -> Vec<IpAddr> {
    let Ok(name) = Hostname::parse(host) else { return Vec::new() };
    runtime.block_on(async {
        let mut ips = resolver.resolve_real(&name, Family::V4).await.unwrap_or_default();
        ips.extend(resolver.resolve_real(&name, Family::V6).await.unwrap_or_default());
        ips
    })
}

/// Serve one per-session socket: peers are checked first (see the module docs).
async fn accept_loop(
    listener: tokio::net::UnixListener,
    entry: Arc<DbEntry>,
    session: Weak<Session>,
    pool: Arc<SessionPool>,
) {
    let daemon_pid = std::process::id() as i32;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let Some(session) = session.upgrade() else { return };
        let pid = stream.peer_cred().ok().and_then(|c| c.pid());
        let allowed = pid.is_some_and(|p| p == daemon_pid || session.contains(p));
        if !allowed {
            let mut e = Event::new("listener_auth_fail", &session.id);
            e.pid = pid;
            e.policy = Some(EventPolicy {
                decision: "deny".into(),
                rule: "db-socket-peer".into(),
                message: Some(
                    "the peer is neither the session's supervisor nor a process of the session".into(),
                ),
            });
            session.recorder().record(e.field("socket", entry.socket.display().to_string()));
            continue;
        }
        let ctx = ClientCtx { session_id: Some(session.id.clone()), client_identity: None, peer_pid: pid };
        let Ok(stream) = stream.into_std() else { continue };
        let served = pool.serve(entry.proxy.clone(), move || tokio::net::UnixStream::from_std(stream), ctx);
        tokio::spawn(async move {
            if let Ok(Err(e)) = served.await {
                tracing::debug!(error = %e, "db proxy connection ended");
            }
        });
    }
}

/// The identity of the process behind `pid` for connection rules: `uid:<uid>`.
pub fn identity_of(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?;
    Some(format!("uid:{uid}"))
}

/// Turns the proxies' events into audit events of the session.
struct AuditSink {
    recorder: Arc<Recorder>,
    session_id: String,
    current_command: Arc<Mutex<Option<String>>>,
}

impl EventSink for AuditSink {
    fn emit(&self, ev: DbEvent) {
        let command_id = self.current_command.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let policy = ev.decision.as_ref().map(Into::into);
        if !self.recorder.keeps(ev.kind.as_str(), policy.as_ref(), command_id.as_deref()) {
            return;
        }
        let mut e = Event::new(ev.kind.as_str(), &self.session_id);
        e.command_id = command_id;
        e.pid = ev.client.peer_pid;
        e.policy = policy;
        let mut e = e.field("service", &*ev.service);
        for (k, v) in [
            ("db_user", ev.db_user.as_deref()),
            ("database", ev.database.as_deref()),
            ("application_name", ev.application_name.as_deref()),
            ("error", ev.error.as_deref()),
        ] {
            if let Some(v) = v {
                e = e.field(k, v);
            }
        }
        if let Some(s) = ev.statement {
            let effects: Vec<serde_json::Value> = s
                .effects
                .iter()
                .map(|x| serde_json::json!({"group": x.group, "subtype": x.subtype, "objects": x.objects}))
                .collect();
            e = e
                .field("statement", &*s.text)
                .field("truncated", s.truncated)
                .field("protocol", s.protocol.as_str())
                .field("effects", effects)
                .field("digest", &*s.digest);
            if let Some(name) = s.statement_name {
                e = e.field("statement_name", &*name);
            }
            if let Some(p) = s.params {
                // Counted, never the values.
                let params = serde_json::json!({"count": p.count, "types": &*p.types, "binary": p.binary, "nulls": p.nulls});
                e = e.field("params", params);
            }
            if let Some(r) = s.result {
                e = e
                    .field("rows", r.rows)
                    .field("command", r.command)
                    .field("duration_ms", r.duration.as_secs_f64() * 1000.0)
                    .field("sqlstate", r.sqlstate)
                    .field("complete", r.complete);
            }
        }
        self.recorder.record(e);
    }
}
