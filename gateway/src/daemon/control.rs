//! One control connection: check the caller with SO_PEERCRED, read one request, answer it.

use std::{os::unix::net::UnixStream, sync::Arc};

use anyhow::{Context, bail};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use policies::{config::SigningMode, embedded, load_policy};

use super::{Daemon, Session, landlock::LandlockState};
use crate::{
    control::{
        frame::{read_frame, write_frame},
        protocol::{PolicySpec, Request, Response},
    },
    events::Event,
};

/// The caller, as the kernel reports it.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// Process id.
    pub pid: i32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Serve one connection to completion; errors go back to the caller as `Response::Error`.
pub fn serve(daemon: &Arc<Daemon>, mut stream: UnixStream) {
    let peer = match getsockopt(&stream, PeerCredentials) {
        Ok(c) => Peer { pid: c.pid(), uid: c.uid(), gid: c.gid() },
        Err(e) => {
            eprintln!("agentsh server: SO_PEERCRED: {e}");
            return;
        }
    };
    let me = nix::unistd::geteuid().as_raw();
    if peer.uid != 0 && peer.uid != me {
        let ev = Event::new("listener_auth_fail", "")
            .field("listener", "control")
            .field("peer_uid", peer.uid)
            .field("peer_pid", peer.pid)
            .field("reason", "uid_not_allowed");
        daemon.recorder.record(ev);
        return;
    }
    // The control API is never reachable from inside a sandbox, whatever path led there (a
    // symlink in the workspace, a state dir inside it): a session's process is refused.
    let inside = daemon
        .sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .find_map(|s| s.contains(peer.pid).then(|| s.id.clone()));
    // The seccomp supervisor connects allowed Unix sockets on an agent's behalf, so a peer with
    // the daemon's own pid is an agent too: the daemon never calls its own control API.
    let inside = inside.or_else(|| (peer.pid == std::process::id() as i32).then(|| "unknown".to_string()));
    if let Some(session_id) = inside {
        let ev = Event::new("listener_auth_fail", &session_id)
            .field("listener", "control")
            .field("peer_uid", peer.uid)
            .field("peer_pid", peer.pid)
            .field("reason", "peer_in_session");
        daemon.recorder.record(ev);
        return;
    }
    let response = match read_frame::<Request>(&mut stream) {
        Ok(req) => handle(daemon, req, &mut stream, peer)
            .unwrap_or_else(|e| Response::Error { error: format!("{e:#}") }),
        Err(e) => Response::Error { error: format!("bad request: {e}") },
    };
    // What the request caused is in the log before the caller hears back.
    daemon.recorder.flush();
    let _ = write_frame(&mut stream, &response);
}

/// What a signature check found: the signer, or why the policy is not trusted; `None` when
/// signatures are off or the policy is embedded.
type SignatureCheck = Option<Result<String, String>>;

/// The policy a request names, loaded, with its signature check.
fn resolve_policy(
    spec: PolicySpec,
    signing: &policies::config::SigningConfig,
) -> anyhow::Result<(String, policies::Policy, SignatureCheck)> {
    let (name, file, text, checked) = match spec {
        PolicySpec::Embedded { name } => {
            let Some(text) = embedded::source(&name) else {
                bail!("unknown embedded policy {name:?} (one of: {})", embedded::NAMES.join(", "));
            };
            (name.clone(), format!("<embedded:{name}>"), text.to_string(), None)
        }
        PolicySpec::Inline { file, text, signature } => {
            let checked = check_signature(signing, &text, signature.as_deref());
            if let Some(Err(why)) = &checked
                && signing.mode == SigningMode::Enforce
            {
                bail!("policy {file} refused: {why} (policies.signing.mode is enforce)");
            }
            (file.clone(), file, text, checked)
        }
    };
    let policy = load_policy(&text, &file).map_err(|errs| anyhow::anyhow!("invalid policy:\n{errs}"))?;
    Ok((name, policy, checked))
}

/// Verify a policy file's signature under `signing`: `Ok(signer)` or `Err(why)`.
fn check_signature(
    signing: &policies::config::SigningConfig,
    text: &str,
    signature: Option<&str>,
) -> SignatureCheck {
    if signing.mode == SigningMode::Off {
        return None;
    }
    let store = signing.trust_store.as_deref()?;
    let result = (|| {
        let sig = signature.ok_or_else(|| anyhow::anyhow!("it has no signature (.sig file)"))?;
        let sig: crate::signing::Signature =
            serde_json::from_str(sig).map_err(|e| anyhow::anyhow!("its signature file is malformed: {e}"))?;
        let keys = crate::signing::trust_store(store, signing.mode == SigningMode::Enforce)?;
        let key = crate::signing::verify(text.as_bytes(), &sig, &keys)?;
        anyhow::Ok(format!("{} ({}, key {})", sig.signer, key.label, key.key_id))
    })();
    Some(result.map_err(|e| format!("{e:#}")))
}

fn handle(
    daemon: &Arc<Daemon>,
    req: Request,
    stream: &mut UnixStream,
    peer: Peer,
) -> anyhow::Result<Response> {
    match req {
        Request::SessionCreate { workspace, policy, env } => {
            if !workspace.is_absolute() || !workspace.is_dir() {
                bail!("workspace {} is not an existing absolute directory", workspace.display());
            }
            let kept = [
                ("state dir", daemon.config.state_dir.as_path(), "the daemon's sockets"),
                ("data dir", daemon.config.data_dir(), "other sessions' homes and trash"),
            ];
            for (what, dir, reach) in kept {
                if dir.starts_with(&workspace) {
                    bail!(
                        "workspace {} contains the agentsh {what} {}: the agent could reach {reach}",
                        workspace.display(),
                        dir.display()
                    );
                }
            }
            let (name, policy, signature) = resolve_policy(policy, &daemon.config.policies.signing)?;
            let session = Session::create(daemon, workspace, name, policy, peer.uid, &env)?;
            let info = session.info();
            let mut created = Event::new("session_created", &session.id)
                .field("workspace", session.workspace.display().to_string())
                .field("policy", session.policy_name.clone())
                .field("backend", daemon.backend.name())
                .field("peer_uid", peer.uid);
            created = match &daemon.landlock {
                LandlockState::On { abi } => created.field("landlock_abi", *abi),
                LandlockState::Off { reason } => created.field("landlock_off", reason.clone()),
            };
            created = created.field("fuse_workspace", session.fuse.clone());
            match signature {
                Some(Ok(signer)) => created = created.field("policy_signed_by", signer),
                Some(Err(why)) => {
                    daemon.recorder.record(
                        Event::new("policy_signature_invalid", &session.id)
                            .field("policy", session.policy_name.clone())
                            .field("reason", why),
                    );
                }
                None => {}
            }
            daemon.recorder.record(created);
            let session = Arc::new(session);
            if let Some(db) = &session.db
                && let Err(e) =
                    db.start(daemon.runtime.handle(), Arc::downgrade(&session), daemon.db_pool.clone())
            {
                let _ = session.destroy();
                return Err(e.context("serving the database sockets"));
            }
            daemon.sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(session.id.clone(), session);
            Ok(Response::Created { session: info })
        }
        Request::SessionList => {
            let sessions = daemon
                .sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .map(|s| s.info())
                .collect();
            Ok(Response::Sessions { sessions })
        }
        Request::SessionShow { id } => Ok(Response::Session { session: daemon.session(&id)?.info() }),
        Request::SessionDestroy { id } => {
            let session = daemon.session(&id)?;
            session.destroy().with_context(|| format!("destroying {id}"))?;
            daemon.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            daemon.recorder.record(Event::new("session_destroyed", &id));
            Ok(Response::Done)
        }
        Request::Exec(exec) => super::exec::run(daemon, exec, stream, peer),
        Request::SessionTrash { id, restore } => {
            let session = daemon.session(&id)?;
            match restore {
                Some(trash_id) => {
                    let path = session.trash_restore(&trash_id)?;
                    daemon.recorder.record(
                        Event::new("file_restore", &session.id)
                            .field("trash_id", trash_id)
                            .field("path", path.display().to_string()),
                    );
                    Ok(Response::Restored { path })
                }
                None => Ok(Response::Trash {
                    entries: session.trash_list()?.into_iter().map(|e| (e.id, e.original, e.size)).collect(),
                }),
            }
        }
        Request::Events { session, kinds, follow } => {
            stream_events(daemon, stream, session.as_deref(), &kinds, follow)?;
            Ok(Response::Done)
        }
        Request::Shutdown => {
            daemon.destroy_all();
            let _ = std::fs::remove_file(daemon.config.control_socket());
            // Answer first, then leave: the caller waits for the reply.
            let recorder = daemon.recorder.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                recorder.flush();
                std::process::exit(0);
            });
            Ok(Response::Done)
        }
    }
}

/// Write the recorded events that match, then (with `follow`) new ones until the client hangs
/// up. Followed before reading the log, so nothing falls between the two; events already sent
/// from the log are not sent twice.
fn stream_events(
    daemon: &Arc<Daemon>,
    stream: &mut UnixStream,
    session: Option<&str>,
    kinds: &[String],
    follow: bool,
) -> anyhow::Result<()> {
    let matches = |e: &Event| {
        session.is_none_or(|s| e.session_id == s) && (kinds.is_empty() || kinds.contains(&e.kind))
    };
    let live = follow.then(|| daemon.recorder.follow());
    daemon.recorder.flush();
    let mut sent = std::collections::HashSet::new();
    let log = daemon.config.state_dir.join("audit.jsonl");
    if let Ok(f) = std::fs::File::open(&log) {
        use std::io::BufRead;
        for line in std::io::BufReader::new(f).lines() {
            let Ok(line) = line else { break };
            let Ok(e) = serde_json::from_str::<Event>(&line) else { continue };
            if matches(&e) {
                if follow {
                    sent.insert(e.id.clone());
                }
                write_frame(stream, &Response::Event(Box::new(e)))?;
            }
        }
    }
    let Some(live) = live else { return Ok(()) };
    loop {
        match live.recv_timeout(std::time::Duration::from_secs(1)) {
            Ok(e) if matches(&e) && !sent.contains(&e.id) => {
                write_frame(stream, &Response::Event(Box::new(e)))?
            }
            Ok(_) => {}
            // A quiet second: check the client is still there (a hang-up ends the stream).
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let mut probe = [0u8; 1];
                stream.set_nonblocking(true)?;
                let gone = matches!(std::io::Read::read(stream, &mut probe), Ok(0));
                stream.set_nonblocking(false)?;
                if gone {
                    return Ok(());
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}
