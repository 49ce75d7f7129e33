//! The gateway's side of `agentsh wrap`: `<state dir>/notify.sock` takes a seccomp notify fd
//! from a wrapper (SCM_RIGHTS) and supervises the wrapped process where it already runs, in
//! the caller's namespaces (a sidecar's agent container, say).
//!
//! Before accepting, the peer (SO_PEERCRED) must be root, the daemon's uid or the session's
//! owner, and the process it names must be its own child with its own uid (a wrapper cannot
//! hand over somebody else's process). The process is moved into the session's cgroup, the
//! gateway's listeners and the session resolver are bound in the process's network namespace,
//! and only then is the wrapper told to let it run. The namespace is shared, so loopback is
//! decided by policy like any address, and Unix sockets are limited to the session's own state
//! dir and the workspace.
//!
//! The wrapper may live in a PID namespace of its own, nested in the daemon's (an agent
//! container whose PID namespace the gateway's contains): the kernel translates the peer's pid
//! for us, and the child the wrapper names by its own pid is found among the peer's children by
//! its innermost pid. A wrapper whose PID namespace the daemon cannot see has pid 0 here and is
//! refused.

use std::{
    os::unix::net::{UnixListener, UnixStream},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use redirect::{OriginalDstTable, handoff::recv_fd, seccomp::Supervisor};
use serde::{Deserialize, Serialize};

use super::{
    Daemon,
    decider::{Reach, SessionDecider},
    session::Session,
};
use crate::{
    control::frame::{read_frame, write_frame},
    events::Event,
};

/// Name of the hand-off socket in the state dir.
pub const SOCKET: &str = "notify.sock";

/// What a wrapper says before sending the fd.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WrapHello {
    /// The session to join.
    pub session_id: String,
    /// The filtered child (the wrapper's own child), waiting to run.
    pub pid: i32,
    /// Its command line, for events.
    pub argv: Vec<String>,
}

/// The gateway's answer: run, or why not.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WrapReply {
    /// The id events of this command carry, when accepted.
    pub command_id: Option<String>,
    /// Why the hand-off was refused.
    pub error: Option<String>,
    /// The session CA (PEM), for the wrapper to make the command trust it: the gateway
    /// terminates TLS with it (LLM provider hosts, `rewrite_sni` redirects). Absent from an
    /// older gateway.
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// Whether the session has database services (libpq is then pointed at the CA too).
    #[serde(default)]
    pub db: bool,
}

/// Accept hand-offs on `<state dir>/notify.sock` until the daemon exits.
pub fn listen(daemon: &Arc<Daemon>) -> anyhow::Result<()> {
    let path = daemon.config.state_dir.join(SOCKET);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    // Wrappers run as any user; who may hand over what is decided per connection.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))?;
    let daemon = daemon.clone();
    std::thread::Builder::new().name("agentsh-wrap".into()).spawn(move || {
        for conn in listener.incoming().flatten() {
            let daemon = daemon.clone();
            std::thread::spawn(move || serve(&daemon, conn));
        }
    })?;
    Ok(())
}

fn serve(daemon: &Arc<Daemon>, mut stream: UnixStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let reply = match accept(daemon, &mut stream) {
        Ok((command_id, session)) => WrapReply {
            command_id: Some(command_id),
            error: None,
            ca_pem: Some(session.ca.cert_pem().to_string()),
            db: session.db.is_some(),
        },
        Err(e) => WrapReply { command_id: None, error: Some(format!("{e:#}")), ca_pem: None, db: false },
    };
    let _ = write_frame(&mut stream, &reply);
}

/// The wrapper's child that it calls `claimed` (a pid in the wrapper's own PID namespace,
/// which may be nested in ours), as a pid in ours, with its real uid: found among the peer's
/// children by the innermost pid of each (`NSpid`). A process that is not the peer's own child
/// cannot be named at all.
fn wrapped_child(peer_pid: i32, claimed: i32) -> anyhow::Result<Option<(i32, u32)>> {
    let children = std::fs::read_to_string(format!("/proc/{peer_pid}/task/{peer_pid}/children"))
        .with_context(|| format!("reading the children of {peer_pid}"))?;
    for child in children.split_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{child}/status")) else { continue };
        let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
        let innermost = field("NSpid:").and_then(|v| v.split_whitespace().last()?.parse::<i32>().ok());
        if innermost == Some(claimed) {
            let uid = field("Uid:")
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .context("reading Uid")?;
            return Ok(Some((child, uid)));
        }
    }
    Ok(None)
}

/// Takes the wrapper's child into its session: the command id and the session.
fn accept(daemon: &Arc<Daemon>, stream: &mut UnixStream) -> anyhow::Result<(String, Arc<Session>)> {
    let cred = getsockopt(&*stream, PeerCredentials).context("reading the peer's credentials")?;
    let hello: WrapHello = read_frame(stream).context("reading the hand-off request")?;
    let notify = recv_fd(stream).context("receiving the notify fd")?;
    let session = daemon.session(&hello.session_id)?;
    let refuse = |reason: &str, why: String| -> anyhow::Result<(String, Arc<Session>)> {
        let mut e = Event::new("listener_auth_fail", &session.id)
            .field("listener", "notify")
            .field("peer_uid", cred.uid())
            .field("peer_pid", cred.pid())
            .field("reason", reason);
        e.pid = Some(hello.pid);
        daemon.recorder.record(e);
        bail!("{why}")
    };
    let uid = cred.uid();
    if uid != 0 && uid != nix::unistd::geteuid().as_raw() && uid != session.owner_uid {
        return refuse("uid_not_allowed", format!("uid {uid} may not join session {}", session.id));
    }
    let Some((pid, child_uid)) = wrapped_child(cred.pid(), hello.pid)? else {
        return refuse(
            "not_the_peers_child",
            format!("process {} is not the wrapper's own child", hello.pid),
        );
    };
    if child_uid != uid {
        return refuse(
            "not_the_peers_child",
            format!("process {} runs as uid {child_uid}, not {uid}", hello.pid),
        );
    }
    if session.contains(cred.pid()) {
        return refuse("peer_in_session", "a process of a session cannot wrap another".into());
    }
    session.adopt(pid)?;
    let command_id = format!("cmd-{}", uuid::Uuid::new_v4());
    supervise(daemon, &session, pid, notify, &command_id)?;
    let mut e = Event::new("wrap_started", &session.id).field("argv", hello.argv).field("peer_uid", uid);
    e.command_id = Some(command_id.clone());
    e.pid = Some(pid);
    daemon.recorder.record(e);
    Ok((command_id, session))
}

/// Start the supervisor, the funnel and the resolver for the wrapped process; they stop when
/// every process under the filter has exited.
fn supervise(
    daemon: &Arc<Daemon>,
    session: &Arc<Session>,
    pid: i32,
    notify: std::os::fd::OwnedFd,
    command_id: &str,
) -> anyhow::Result<()> {
    let sockets = super::netns::in_netns(pid, super::netns::bind_shared_loopback)
        .context("binding the gateway in the wrapped process's network namespace")?;
    let table = Arc::new(OriginalDstTable::new(4096, Duration::from_secs(30)));
    let reach = Reach {
        gateway: [sockets.gateway[0].local_addr()?, sockets.gateway[1].local_addr()?],
        resolver_addrs: sockets.dns.udp_addrs()?,
        shared_netns: true,
        state_dir: session.dir.clone(),
    };
    let decider = SessionDecider::for_command(daemon, session, command_id, reach, &|_| None);
    let supervisor = Supervisor::new(notify, Arc::new(decider), table.clone()).spawn()?;
    let funnel = super::funnel::Funnel::for_session(daemon, session, command_id, table, false);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    {
        let _rt = daemon.runtime.enter();
        funnel.serve_all(daemon, sockets.gateway, &stop_rx)?;
        super::exec::serve_dns(daemon, &session.resolver, sockets.dns, &stop_rx)?;
    }
    *session.current_command.lock().unwrap_or_else(|p| p.into_inner()) = Some(command_id.to_string());
    let running = session.command_started();
    std::thread::spawn(move || {
        let _ = supervisor.join();
        let _ = stop_tx.send(true);
        drop(running);
    });
    Ok(())
}
