//! A session: a workspace, a compiled policy, a state dir with its sockets, and a cgroup that
//! holds every process the session ever started.

use std::{
    os::unix::{ffi::OsStrExt, fs::DirBuilderExt},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use anyhow::Context;
use dns::{
    AddressGuard, DnsEvent, ResolverConfig, SessionResolver, Upstream,
    pool::session_v6_prefix,
    upstream::{UpstreamConfig, nameservers_from_resolv_conf},
};
use llmproxy::ca::SessionCa;
use policies::{
    CompiledPolicy, Policy,
    config::{FuseMode, ServerConfig},
    engine::file::FileRules,
};
use sandbox::cgroup::SessionCgroup;

use super::Recorder;
use crate::{control::protocol::SessionInfo, events::Event};

/// One live session.
pub struct Session {
    /// `session-<uuid>`.
    pub id: String,
    /// The agent's working directory.
    pub workspace: PathBuf,
    /// Policy name (embedded name or file name).
    pub policy_name: String,
    /// The policy as loaded.
    pub policy: Arc<Policy>,
    /// The policy compiled for decisions.
    pub compiled: Arc<CompiledPolicy>,
    /// Host path of the session's state dir (seen as `/run/agentsh` inside the sandbox).
    pub dir: PathBuf,
    /// `<data_dir>/sessions/<id>`: what can grow large (the rebuilt home's own files, the
    /// trash), kept off the state dir.
    pub data: PathBuf,
    /// The session resolver: one synthetic pool per session, so bindings outlive commands.
    pub resolver: Arc<SessionResolver>,
    /// The command DNS events are attributed to (the latest started).
    pub current_command: Arc<Mutex<Option<String>>>,
    /// The session's CA, for connections the gateway terminates; its certificate is in
    /// [`CA_FILE`] and [`CA_BUNDLE`] of the state dir.
    pub ca: Arc<SessionCa>,
    /// The LLM proxy, when the policy names providers.
    pub llm: Option<Arc<llmproxy::LlmProxy>>,
    /// The database proxies, when the policy names `db_services`.
    pub db: Option<Arc<super::db::SessionDb>>,
    recorder: Arc<Recorder>,
    /// The uid that created the session (who may `wrap` into it besides root).
    pub owner_uid: u32,
    backend: &'static str,
    /// The Landlock layer commands run under (`files.landlock`), as the daemon resolved it.
    landlock: super::landlock::LandlockState,
    /// The FUSE workspace (`files.fuse_workspace`): the sandbox binds it at the workspace path.
    workspace_mount: Mutex<Option<sandbox::workspace::WorkspaceMount>>,
    /// Whether the session has the FUSE workspace, and why: "on (…)" or "off (…)".
    pub fuse: String,
    cgroup: Mutex<Option<SessionCgroup>>,
    created_at: String,
    commands: AtomicU64,
    running: AtomicU64,
}

impl Session {
    /// Create the state dir, cgroup and resolver of a new session.
    /// `owner_uid` is the peer creating it: its home (from the user database) is `${HOME}` in
    /// the rules the FUSE workspace applies, and `env` (its environment) holds their other
    /// variables.
    pub fn create(
        daemon: &super::Daemon,
        workspace: PathBuf,
        policy_name: String,
        policy: Policy,
        owner_uid: u32,
        env: &std::collections::BTreeMap<String, String>,
    ) -> anyhow::Result<Session> {
        let (config, recorder, upstream_tls) =
            (&daemon.config, daemon.recorder.clone(), &daemon.upstream_tls);
        let id = format!("session-{}", uuid::Uuid::new_v4());
        // Everything that can fail on bad input first; then the state dir and the cgroup,
        // removed again if a later step fails, so a refused session leaves nothing behind.
        let ca = Arc::new(SessionCa::generate(&id).context("creating the session CA")?);
        let compiled = Arc::new(CompiledPolicy::new(&policy));
        let current_command = Arc::new(Mutex::new(None));
        let resolver = Arc::new(SessionResolver::new(
            compiled.clone(),
            AddressGuard::new(&policy),
            upstream(config),
            ResolverConfig {
                mode: config.dns.mode,
                pool_v6: session_v6_prefix(uuid::Uuid::new_v4().as_u128() as u16),
                ..ResolverConfig::default()
            },
            dns_event_sink(recorder.clone(), id.clone(), current_command.clone()),
        ));
        let llm_sink = Arc::new(super::llm::AuditSink {
            recorder: recorder.clone(),
            session_id: id.clone(),
            current_command: current_command.clone(),
        });
        let llm = super::llm::session_proxy(&policy, config, upstream_tls, resolver.clone(), llm_sink)?;
        let dir = config.state_dir.join("sessions").join(&id);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let data = config.data_dir().join("sessions").join(&id);
        let made = write_trust(&dir, &ca).and_then(|()| {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&data)
                .with_context(|| format!("creating {} (data_dir)", data.display()))?;
            if data != dir {
                std::fs::write(data.join(DATA_OWNER), config.state_dir.as_os_str().as_bytes())
                    .with_context(|| format!("writing {}", data.join(DATA_OWNER).display()))?;
            }
            let db = super::db::SessionDb::create(
                &policy,
                super::db::DbSetup {
                    session_id: &id,
                    dir: &dir,
                    ca: ca.clone(),
                    extra_roots: upstream_tls.extra_roots().to_vec(),
                    cancel_keys: daemon.cancel_keys.clone(),
                    recorder: recorder.clone(),
                    current_command: current_command.clone(),
                    resolver: &resolver,
                    runtime: daemon.runtime.handle(),
                },
            )?;
            let cgroup = SessionCgroup::create(&id).context("creating the session cgroup")?;
            Ok((db.map(Arc::new), cgroup))
        });
        let (db, cgroup) = match made {
            Ok(x) => x,
            Err(e) => {
                remove_dirs(&dir, &data);
                return Err(e);
            }
        };
        // The owner's variables, not the daemon's: `${HOME}/.ssh` is the owner's keys.
        let home = owner_home(owner_uid);
        let rules = FileRules::new(&policy.file_rules, &workspace, &|name| match name {
            "HOME" => home.clone(),
            _ => env.get(name).cloned(),
        });
        for u in rules.unapplied() {
            let (rule, path, unset) = (&u.rule, &u.path, u.unset.as_deref().unwrap_or("-"));
            tracing::warn!(session = %id, rule, path, unset, "file rule path matches nothing in the FUSE layer (its variable is unset in the creator's environment, or it is not absolute)");
        }
        let rule_within = rules.rule_within(&workspace).map(str::to_owned);
        let (fuse, fuse_why) = fuse_decision(config.files.fuse_workspace, rule_within.as_deref());
        if !fuse && rule_within.is_some() {
            tracing::warn!(session = %id, "FUSE workspace {fuse_why}");
        }
        let workspace_mount = if fuse {
            let xattrs = config.files.fuse_xattrs;
            match mount_workspace(
                &policy,
                rules,
                &workspace,
                &dir,
                &data.join("trash"),
                xattrs,
                recorder.clone(),
                &id,
                current_command.clone(),
            ) {
                Ok(m) => Some(m),
                Err(e) => {
                    let _ = cgroup.remove();
                    remove_dirs(&dir, &data);
                    return Err(e.context(format!("the FUSE workspace is {fuse_why}")));
                }
            }
        } else {
            None
        };
        Ok(Session {
            id,
            resolver,
            current_command,
            ca,
            llm,
            db,
            recorder,
            owner_uid,
            backend: daemon.backend.name(),
            landlock: daemon.landlock.clone(),
            workspace_mount: Mutex::new(workspace_mount),
            fuse: fuse_why,
            workspace,
            policy_name,
            policy: Arc::new(policy),
            compiled,
            dir,
            data,
            cgroup: Mutex::new(Some(cgroup)),
            created_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            commands: AtomicU64::new(0),
            running: AtomicU64::new(0),
        })
    }

    /// The session cgroup's directory, while the session lives.
    pub fn cgroup_path(&self) -> Option<PathBuf> {
        self.cgroup.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|c| c.path().to_path_buf())
    }

    /// Whether `pid` runs inside this session (by its cgroup). A pid whose cgroup cannot be read
    /// counts as inside, so a caller refusing session processes fails closed.
    pub fn contains(&self, pid: i32) -> bool {
        let cgroup = self.cgroup.lock().unwrap_or_else(|p| p.into_inner());
        cgroup.as_ref().is_some_and(|cg| cg.contains(pid).unwrap_or(true))
    }

    /// Move `pid` into the session's cgroup (so it is the session's, and dies with it).
    pub fn adopt(&self, pid: i32) -> anyhow::Result<()> {
        let cgroup = self.cgroup.lock().unwrap_or_else(|p| p.into_inner());
        let cg = cgroup.as_ref().context("the session is being destroyed")?;
        cg.add_pid(pid).with_context(|| format!("moving {pid} into the session cgroup"))
    }

    /// Count a command as started; the guard counts it as finished when dropped.
    pub fn command_started(self: &Arc<Self>) -> RunningGuard {
        self.commands.fetch_add(1, Ordering::Relaxed);
        self.running.fetch_add(1, Ordering::Relaxed);
        RunningGuard(self.clone())
    }

    /// A snapshot for the control API.
    pub fn info(&self) -> SessionInfo {
        SessionInfo {
            id: self.id.clone(),
            workspace: self.workspace.clone(),
            policy: self.policy_name.clone(),
            backend: self.backend.into(),
            landlock_abi: self.landlock.abi(),
            landlock_off: self.landlock.off_reason().map(str::to_owned),
            fuse_workspace: self.fuse.clone(),
            created_at: self.created_at.clone(),
            commands: self.commands.load(Ordering::Relaxed),
            running: self.running.load(Ordering::Relaxed),
        }
    }

    /// The directory holding what `uid`'s commands create directly in `home` (see
    /// `home_view`): the session's own, removed with it.
    pub fn home_view_dir(&self, uid: u32, home: &std::path::Path) -> PathBuf {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        home.hash(&mut h);
        self.data.join(format!("home-{uid}-{:016x}", h.finish()))
    }

    /// The socket files behind the FUSE workspace's inodes, when there is one.
    pub fn backing_sockets(&self) -> Option<sandbox::workspace::BackingSockets> {
        self.workspace_mount.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|m| m.backing_sockets())
    }

    /// What the sandbox binds at the workspace path: the FUSE mount when there is one.
    pub fn workspace_source(&self) -> PathBuf {
        match &*self.workspace_mount.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(m) => m.mountpoint().to_path_buf(),
            None => self.workspace.clone(),
        }
    }

    /// The soft-deleted files of the session (`files.fuse_workspace`), or why there are none.
    pub fn trash_list(&self) -> anyhow::Result<Vec<sandbox::workspace::TrashEntry>> {
        let mount = self.workspace_mount.lock().unwrap_or_else(|p| p.into_inner());
        let m = mount.as_ref().context("this session has no FUSE workspace (files.fuse_workspace)")?;
        Ok(m.trash().list()?)
    }

    /// Put a soft-deleted file back; returns where.
    pub fn trash_restore(&self, id: &str) -> anyhow::Result<PathBuf> {
        let mount = self.workspace_mount.lock().unwrap_or_else(|p| p.into_inner());
        let m = mount.as_ref().context("this session has no FUSE workspace (files.fuse_workspace)")?;
        Ok(m.trash().restore(id)?)
    }

    /// Where the session's events go.
    pub fn recorder(&self) -> &Arc<Recorder> {
        &self.recorder
    }

    /// Kill every process of the session, remove its cgroup, its state dir (sockets included)
    /// and its data dir.
    pub fn destroy(&self) -> anyhow::Result<()> {
        if let Some(db) = &self.db {
            db.stop();
        }
        // Unmount before the state dir (which holds the mount point) goes.
        drop(self.workspace_mount.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(cg) = self.cgroup.lock().unwrap_or_else(|p| p.into_inner()).take() {
            cg.kill_all().context("killing the session's processes")?;
            cg.wait_empty(std::time::Duration::from_secs(5))
                .context("waiting for the session's processes")?;
            cg.remove().context("removing the session cgroup")?;
        }
        for dir in [&self.dir, &self.data] {
            match std::fs::remove_dir_all(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", dir.display()));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The file in a session's data dir naming the state dir of the server that made it.
const DATA_OWNER: &str = ".state_dir";

/// Removes what sessions of the server on `state_dir` left in `data_dir` when it did not end
/// cleanly (no session outlives its server, and one server runs per state dir); what servers
/// on other state dirs keep there is left alone. Nothing when the data dir is the state dir,
/// whose session dirs may hold a mount point of a FUSE layer. Returns what was removed.
pub fn reap_stale_data(data_dir: &std::path::Path, state_dir: &std::path::Path) -> Vec<PathBuf> {
    if data_dir == state_dir {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(data_dir.join("sessions")) else { return Vec::new() };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let owner = std::fs::read(path.join(DATA_OWNER)).ok();
        if owner.as_deref() == Some(state_dir.as_os_str().as_bytes())
            && std::fs::remove_dir_all(&path).is_ok()
        {
            removed.push(path);
        }
    }
    removed
}

/// Removes a session's state and data dirs after a failed start.
fn remove_dirs(dir: &std::path::Path, data: &std::path::Path) {
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(data);
}

/// The home directory of `uid` in the user database, if it has one.
fn owner_home(uid: u32) -> Option<String> {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten()?;
    user.dir.to_str().map(str::to_owned)
}

/// Whether a session gets the FUSE workspace under `mode`, given the first of its rules that
/// reaches into the workspace, and why (for `session show`, the `session_created` event and
/// errors): "on (…)" or "off (…)".
fn fuse_decision(mode: FuseMode, rule_within: Option<&str>) -> (bool, String) {
    match (mode, rule_within) {
        (FuseMode::On, _) => (true, "on (files.fuse_workspace: on)".into()),
        (FuseMode::Auto, Some(rule)) => (true, format!("on (rule {rule} applies inside the workspace)")),
        (FuseMode::Auto, None) => (false, "off (no rule applies inside the workspace)".into()),
        (FuseMode::Off, Some(rule)) => (
            false,
            format!(
                "off (files.fuse_workspace: off; rule {rule} and any other inside the workspace not applied)"
            ),
        ),
        (FuseMode::Off, None) => (false, "off (files.fuse_workspace: off)".into()),
    }
}

/// Mount the FUSE workspace of a session over `workspace`, in `dir`, applying `rules`.
#[allow(clippy::too_many_arguments)]
fn mount_workspace(
    policy: &Policy,
    rules: FileRules,
    workspace: &std::path::Path,
    dir: &std::path::Path,
    trash_dir: &std::path::Path,
    xattrs: bool,
    recorder: Arc<Recorder>,
    session_id: &str,
    current: Arc<Mutex<Option<String>>>,
) -> anyhow::Result<sandbox::workspace::WorkspaceMount> {
    use sandbox::workspace::{WorkspaceConfig, WorkspaceMount};
    let mountpoint = dir.join("workspace-mnt");
    std::fs::create_dir_all(&mountpoint)?;
    let sink = Arc::new(FileEvents { recorder, session_id: session_id.to_string(), current });
    let config = WorkspaceConfig {
        backing: workspace.to_path_buf(),
        sandbox_path: workspace.to_path_buf(),
        rules,
        symlink_escape: policy.policies.symlink_escape,
        trash_dir: trash_dir.to_path_buf(),
        events: sink,
        threads: 2,
        passthrough: true,
        xattrs,
    };
    WorkspaceMount::mount(config, &mountpoint).context("mounting the FUSE workspace")
}

/// Turns the FUSE workspace's events into audit events of the session.
struct FileEvents {
    recorder: Arc<Recorder>,
    session_id: String,
    current: Arc<Mutex<Option<String>>>,
}

impl sandbox::workspace::FileEventSink for FileEvents {
    fn event(&self, ev: sandbox::workspace::FileEvent) {
        let mut e = Event::new(ev.kind.as_str(), &self.session_id);
        e.command_id = self.current.lock().unwrap_or_else(|p| p.into_inner()).clone();
        e.pid = i32::try_from(ev.pid).ok();
        e.policy = Some(crate::events::EventPolicy {
            decision: match ev.verdict {
                policies::engine::file::FileVerdict::Allow => "allow",
                policies::engine::file::FileVerdict::Deny => "deny",
                policies::engine::file::FileVerdict::Audit => "audit",
                policies::engine::file::FileVerdict::SoftDelete => "soft_delete",
            }
            .into(),
            rule: ev.rule,
            message: ev.message,
        });
        let mut e = e
            .field("path", ev.path.display().to_string())
            .field("operation", format!("{:?}", ev.op).to_lowercase());
        if let Some(t) = ev.target {
            e = e.field("target", t.display().to_string());
        }
        if let Some(id) = ev.trash_id {
            e = e.field("trash_id", id);
        }
        self.recorder.record(e);
    }
}

/// The session CA alone, in the state dir (for `NODE_EXTRA_CA_CERTS`).
pub const CA_FILE: &str = "ca.pem";
/// The host's bundle with the session CA appended, in the state dir: bound over the host
/// bundle's path in the sandbox and named by `SSL_CERT_FILE` and friends.
pub const CA_BUNDLE: &str = "ca-bundle.pem";

/// The variables through which common TLS stacks (OpenSSL, curl, Python requests, git) trust
/// `bundle`, a bundle holding the session CA, and Node.js `ca`, the CA alone; with database
/// services also libpq, which verifies servers against its own root file.
pub fn trust_vars(bundle: &std::path::Path, ca: &std::path::Path, db: bool) -> Vec<(&'static str, String)> {
    let (bundle, ca) = (bundle.display().to_string(), ca.display().to_string());
    let mut vars: Vec<(&'static str, String)> =
        ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO"]
            .into_iter()
            .map(|v| (v, bundle.clone()))
            .collect();
    vars.push(("NODE_EXTRA_CA_CERTS", ca.clone()));
    if db {
        vars.push(("PGSSLROOTCERT", ca));
    }
    vars
}

/// Write the session's trust files: its CA, and the host bundle with the CA appended.
fn write_trust(dir: &std::path::Path, ca: &SessionCa) -> anyhow::Result<()> {
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write(CA_FILE, ca.cert_pem())?;
    let mut bundle = match super::tls::host_bundle() {
        Some(host) => std::fs::read_to_string(host).with_context(|| format!("reading {}", host.display()))?,
        None => String::new(),
    };
    if !bundle.is_empty() && !bundle.ends_with('\n') {
        bundle.push('\n');
    }
    bundle.push_str(ca.cert_pem());
    write(CA_BUNDLE, &bundle)
}

/// The resolver the session forwards to: `dns.upstream` from the server config, else the
/// host's own nameservers (read once, at session creation).
fn upstream(config: &ServerConfig) -> Upstream {
    let servers: Vec<_> = if config.dns.upstream.is_empty() {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        nameservers_from_resolv_conf(&text)
    } else {
        config.dns.upstream.iter().map(|u| u.0).collect()
    };
    Upstream::new(UpstreamConfig::new(servers))
}

/// Turn the resolver's events into audit events of the session.
fn dns_event_sink(
    recorder: Arc<Recorder>,
    session_id: String,
    current: Arc<Mutex<Option<String>>>,
) -> Arc<dyn Fn(DnsEvent) + Send + Sync> {
    Arc::new(move |ev: DnsEvent| {
        let mut e = Event::new(ev.kind.as_str(), &session_id);
        e.command_id = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
        e.domain = Some(ev.name);
        e.policy = Some((&ev.decision).into());
        let mut e = e
            .field("qtype", ev.qtype)
            .field("rcode", ev.rcode)
            .field("answers", ev.answers)
            .field("transport", format!("{:?}", ev.transport).to_lowercase());
        if let Some(u) = ev.upstream {
            e = e.field("upstream", u.to_string());
        }
        if ev.suppressed > 0 {
            e = e.field("suppressed", ev.suppressed);
        }
        recorder.record(e);
    })
}

/// Marks a command as running until dropped.
pub struct RunningGuard(Arc<Session>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owners_home_comes_from_the_user_database() {
        assert_eq!(owner_home(0).as_deref(), Some("/root"));
        // `nobody` has a home entry too; an id nobody holds has none.
        assert!(owner_home(65534).is_some());
        assert_eq!(owner_home(4_000_000_000), None);
    }

    #[test]
    fn fuse_modes_say_why() {
        assert_eq!(
            fuse_decision(FuseMode::Auto, Some("r")),
            (true, "on (rule r applies inside the workspace)".into())
        );
        assert!(!fuse_decision(FuseMode::Auto, None).0);
        assert!(fuse_decision(FuseMode::On, None).0);
        let (on, why) = fuse_decision(FuseMode::Off, Some("r"));
        assert!(!on && why.contains("rule r") && why.contains("not applied"), "{why}");
    }
}
