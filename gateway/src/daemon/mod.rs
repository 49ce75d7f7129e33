//! The daemon (`agentsh server`): owns the sessions, serves the control API on a Unix socket
//! (mode 0600, callers checked with SO_PEERCRED) and runs every session's gateway.

pub mod audit;
mod backend;
mod control;
mod db;
mod decider;
mod exec;
mod funnel;
mod home_view;
mod hostnet;
mod landlock;
mod llm;
mod netns;
mod otlp;
mod session;
mod tls;
pub mod wrap;

pub(crate) use session::trust_vars;
pub(crate) use tls::host_bundle;

use std::{
    collections::BTreeMap,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    os::unix::net::{UnixListener, UnixStream},
    path::Path,
    sync::{Arc, Mutex},
};

use anyhow::{Context, bail};
use policies::config::ServerConfig;

pub use audit::Recorder;
pub use session::Session;

/// Shared daemon state.
pub struct Daemon {
    /// The server config in force.
    pub config: ServerConfig,
    /// Live sessions by id.
    pub sessions: Mutex<BTreeMap<String, Arc<Session>>>,
    /// Where events go.
    pub recorder: Arc<Recorder>,
    /// Runtime for the data plane (session gateways).
    pub runtime: tokio::runtime::Runtime,
    /// Trust for the TLS connections the gateway originates.
    pub upstream_tls: Arc<tls::UpstreamTls>,
    /// Cancel keys the database proxies issued, shared by every session's proxies.
    pub cancel_keys: dbproxy::proxy::CancelTable,
    /// The thread database sessions run on (a current-thread runtime of its own: a busy proxy
    /// then pays no work-stealing wake-ups; see `benches/db_pgbench`).
    pub db_pool: Arc<dbproxy::proxy::SessionPool>,
    /// The redirect backend in use (`security.mode` as resolved at start-up).
    pub backend: Arc<backend::Backend>,
    /// The Landlock layer (`files.landlock` as resolved at start-up).
    pub landlock: landlock::LandlockState,
}

impl Daemon {
    /// Look up a live session.
    pub fn session(&self, id: &str) -> anyhow::Result<Arc<Session>> {
        match self.sessions.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            Some(s) => Ok(s.clone()),
            None => bail!("no such session: {id}"),
        }
    }

    /// Destroy every session (on shutdown).
    pub fn destroy_all(&self) {
        let sessions = std::mem::take(&mut *self.sessions.lock().unwrap_or_else(|p| p.into_inner()));
        for s in sessions.values() {
            if let Err(e) = s.destroy() {
                eprintln!("agentsh: destroying {}: {e:#}", s.id);
            }
        }
    }
}

/// Refuse to start when a live daemon answers on the control socket `path`.
fn refuse_if_live(path: &Path) -> anyhow::Result<()> {
    if UnixStream::connect(path).is_ok() {
        bail!("another agentsh server is already listening on {}", path.display());
    }
    Ok(())
}

/// Bind the control socket at `path`, replacing a stale file; the socket is mode 0600 in a
/// 0700 directory.
fn bind_control(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    refuse_if_live(path)?;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    let listener = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Run the daemon until SIGINT or SIGTERM.
pub fn run(config: ServerConfig) -> anyhow::Result<()> {
    let backend = backend::choose(&config.security)?;
    let landlock = landlock::resolve(
        config.files.landlock,
        config.security.strict,
        sandbox::landlock_plan::kernel_abi(),
    )?;
    let upstream_tls = Arc::new(tls::UpstreamTls::load(&config.tls.extra_roots)?);
    let state_dir = config.state_dir.clone();
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(state_dir.join("sessions"))?;
    // Everything a bad config can fail comes before the control socket is bound, so a refused
    // start leaves no socket behind; a live server is checked for first, so its audit log is
    // never touched by a second one.
    let socket = config.control_socket();
    refuse_if_live(&socket)?;
    for stale in session::reap_stale_data(config.data_dir(), &state_dir) {
        tracing::info!(path = %stale.display(), "removed the data of a session of an earlier run");
    }
    let recorder = Arc::new(Recorder::open(&state_dir, &config.audit).context("opening the audit log")?);
    if let Some(otlp) = &config.audit.otlp {
        let tls = upstream_tls.client_config(vec![b"http/1.1".to_vec()]);
        recorder.export_to(otlp::Exporter::start(otlp, tls).context("audit.otlp")?);
    }
    let listener = bind_control(&socket)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("agentsh-gw")
        .enable_all()
        .build()?;
    let daemon = Arc::new(Daemon {
        config,
        sessions: Mutex::default(),
        recorder,
        runtime,
        upstream_tls,
        cancel_keys: dbproxy::proxy::CancelTable::new(),
        db_pool: Arc::new(
            dbproxy::proxy::SessionPool::new(1).context("starting the database session thread")?,
        ),
        backend,
        landlock,
    });

    hostnet::report_refusals(&daemon)?;
    wrap::listen(&daemon)?;
    let on_signal = daemon.clone();
    let sock_path = socket.clone();
    daemon.runtime.spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        on_signal.destroy_all();
        let _ = std::fs::remove_file(&sock_path);
        on_signal.recorder.flush();
        std::process::exit(0);
    });

    eprintln!("agentsh server: listening on {}", socket.display());
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let daemon = daemon.clone();
                std::thread::spawn(move || control::serve(&daemon, stream));
            }
            Err(e) => eprintln!("agentsh server: accept: {e}"),
        }
    }
    Ok(())
}
