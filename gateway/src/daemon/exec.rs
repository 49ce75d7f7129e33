//! Running one command in a session: launch the sandbox, supervise its notify fd, serve its
//! gateway listeners, wait (with timeout and client-hangup handling), and collect output and
//! events.

use std::{
    collections::BTreeMap,
    io::Read,
    os::{fd::OwnedFd, unix::net::UnixStream},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use policies::engine::file::FileRules;
use redirect::{
    OriginalDstTable,
    filter::{FilterSpec, NotifySet, TrapAction, compile_with},
    ptrace::{Tracer, TracerHandle},
    seccomp::Supervisor,
};
use sandbox::{BindDir, LaunchSpec, SeccompListener, Stdio};

use super::{
    Daemon,
    backend::Backend,
    control::Peer,
    decider::{Reach, SessionDecider, UnixOnly},
    hostnet::HostNet,
};
use crate::{
    control::protocol::{EventsMode, ExecRequest, ExecResult, Response},
    events::{Event, millis},
};

/// Most bytes of stdout or stderr kept in captured mode.
const MAX_CAPTURE: usize = 16 << 20;
/// Exit code reported when `--timeout` killed the command (as `timeout(1)` does).
const EXIT_TIMEOUT: i32 = 124;
/// At most this many events in `--events summary`.
const SUMMARY_MAX: usize = 25;
/// How long finished commands' connections get to report before events are collected.
const DRAIN: Duration = Duration::from_secs(2);

/// What the sandbox filter traps, and who answers.
#[derive(Clone, Copy)]
enum Trap {
    /// The whole connect family, to the user-notify supervisor (seccomp backend).
    Network,
    /// The whole connect family, to the tracer (ptrace backend).
    NetworkTraced,
    /// `connect` only, for its Unix sockets (eBPF backend, whose programs redirect the rest).
    Connect,
    /// Nothing: only the escape-route denials (eBPF backend without user notification).
    Nothing,
}

impl Trap {
    /// How the command installs the filter: a user-notify listener only when one is answered.
    fn listener(self) -> SeccompListener {
        match self {
            Trap::Network | Trap::Connect => SeccompListener::UserNotify,
            Trap::NetworkTraced | Trap::Nothing => SeccompListener::Trace,
        }
    }
}

/// The sandbox filter for `trap`, compiled once per daemon.
fn filter_program(trap: Trap) -> anyhow::Result<&'static [u8]> {
    static PROGRAMS: [OnceLock<Result<Vec<u8>, String>>; 4] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let p = PROGRAMS[trap as usize].get_or_init(|| {
        let mut spec = FilterSpec::sandbox_default();
        let action = match trap {
            Trap::Network => TrapAction::UserNotify,
            Trap::NetworkTraced => TrapAction::Trace,
            Trap::Connect | Trap::Nothing => {
                let connect = matches!(trap, Trap::Connect);
                spec.notify = NotifySet { connect, sendto: false, sendmsg: false, getpeername: false };
                TrapAction::UserNotify
            }
        };
        compile_with(&spec, action).map(|p| p.as_bytes().to_vec()).map_err(|e| e.to_string())
    });
    p.as_deref().map_err(|e| anyhow::anyhow!("compiling the seccomp filter: {e}"))
}

/// Who answers a command's trapped calls. Stopping a tracer kills its tracees; stopping a
/// supervisor ends its loop (the filter then fails the trapped calls).
enum Answerer {
    Notify(redirect::seccomp::SupervisorHandle),
    Trace(TracerHandle),
}

impl Answerer {
    fn stop(self) {
        let _ = match self {
            Answerer::Notify(h) => h.stop(),
            Answerer::Trace(h) => h.stop(),
        };
    }
}

/// Read a pipe to its end, keeping at most `MAX_CAPTURE` bytes.
fn drain(fd: OwnedFd) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(fd);
        let mut out = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = MAX_CAPTURE.saturating_sub(out.len());
                    out.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        out
    })
}

fn pipe() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

fn environment(
    req: &ExecRequest,
    session: &super::session::Session,
    command_id: &str,
) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    let session_id = session.id.as_str();
    let mut env: BTreeMap<String, String> = req.env.clone();
    env.insert("AGENTSH_SESSION_ID".into(), session_id.into());
    env.insert("AGENTSH_COMMAND_ID".into(), command_id.into());
    env.remove("AGENTSH_SERVER");
    // The session CA, for the connections the gateway terminates; the host bundle's path is
    // also covered by a bind mount of the same file.
    let state = std::path::Path::new(sandbox::SANDBOX_STATE_DIR);
    let (bundle, ca) = (state.join(super::session::CA_BUNDLE), state.join(super::session::CA_FILE));
    for (var, value) in super::session::trust_vars(&bundle, &ca, session.db.is_some()) {
        env.insert(var.into(), value);
    }
    // The LLM proxy's base URLs and placeholder keys replace whatever the caller passed: the
    // real keys stay in the gateway.
    if let Some(llm) = &session.llm {
        for (k, v) in llm.env_vars(super::llm::LISTEN) {
            env.insert(k, v);
        }
    }
    env.into_iter().map(|(k, v)| (k.into(), v.into())).collect()
}

fn select_events(events: Vec<Event>, mode: EventsMode) -> Vec<Event> {
    match mode {
        EventsMode::None => Vec::new(),
        EventsMode::All => events,
        EventsMode::Summary => events.into_iter().filter(Event::is_blocked).take(SUMMARY_MAX).collect(),
    }
}

/// Serve the LLM proxy's plain listener on the sandbox's loopback until `stop` flips.
fn serve_llm(
    daemon: &Daemon,
    llm: &Arc<llmproxy::LlmProxy>,
    pid: i32,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let listener =
        super::netns::bind_tcp(pid, super::llm::LISTEN).context("binding the LLM proxy listener")?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let (llm, mut stop) = (llm.clone(), stop.clone());
    daemon.runtime.spawn(async move {
        let stopped = async move {
            let _ = stop.changed().await;
        };
        if let Err(e) = llm.serve_listener(listener, stopped).await {
            tracing::warn!(error = %e, "llm proxy listener");
        }
    });
    Ok(())
}

/// Serve the session resolver on the sandbox's loopback until `stop` flips.
pub fn serve_dns(
    daemon: &Daemon,
    resolver: &Arc<dns::SessionResolver>,
    sockets: super::netns::DnsSockets,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.changed().await;
    };
    for udp in [sockets.udp4, sockets.udp6] {
        udp.set_nonblocking(true)?;
        let udp = tokio::net::UdpSocket::from_std(udp)?;
        daemon.runtime.spawn(dns::serve_udp(udp, resolver.clone(), stopped(stop.clone())));
    }
    for tcp in [sockets.tcp4, sockets.tcp6] {
        tcp.set_nonblocking(true)?;
        let tcp = tokio::net::TcpListener::from_std(tcp)?;
        daemon.runtime.spawn(dns::serve_tcp(tcp, resolver.clone(), stopped(stop.clone())));
    }
    Ok(())
}

/// The result of a command whose session was destroyed while it started: its processes were
/// killed with the session's cgroup, so it ends as a killed command would, not with a setup error.
fn killed_while_starting(
    daemon: &Daemon,
    session: &super::session::Session,
    command_id: String,
    events: EventsMode,
    start: Instant,
) -> Response {
    Response::Exited(ExecResult {
        session_id: session.id.clone(),
        exit_code: 128 + libc::SIGKILL,
        stdout: String::new(),
        stderr: String::new(),
        duration_ms: millis(start.elapsed()),
        events: select_events(daemon.recorder.finish(&command_id), events),
        command_id,
    })
}

/// The gateway of a command under the eBPF backend: the funnel and the resolver on the host
/// loopback sockets bound before the launch, and a supervisor for Unix connects when the kernel
/// lets one see them (the filter then traps `connect` only).
fn serve_host_net(
    daemon: &Daemon,
    session: &super::session::Session,
    command_id: &str,
    env: &BTreeMap<String, String>,
    h: &mut HostNet,
    launched: &mut sandbox::Launched,
    stop_rx: &tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(Arc<super::funnel::Funnel>, Option<Answerer>)> {
    let sockets = h.sockets.take().context("gateway sockets already served")?;
    // Unix socket connects are still decided here, when the kernel lets the supervisor
    // see them (the filter then traps `connect` only).
    let supervisor = match launched.notify_fd.take() {
        Some(notify) if h.unix_via_notify => {
            let reach = Reach {
                gateway: [sockets.gateway[0].local_addr()?, sockets.gateway[1].local_addr()?],
                resolver_addrs: sockets.dns.udp_addrs()?,
                shared_netns: true,
                state_dir: std::path::PathBuf::from(super::decider::SANDBOX_STATE_DIR),
            };
            let decider =
                SessionDecider::for_command(daemon, session, command_id, reach, &|n| env.get(n).cloned());
            let unused = Arc::new(OriginalDstTable::new(1, Duration::from_secs(1)));
            Some(Answerer::Notify(Supervisor::new(notify, Arc::new(UnixOnly(decider)), unused).spawn()?))
        }
        _ => None,
    };
    let funnel = super::funnel::Funnel::for_session(daemon, session, command_id, h.attached.clone(), true);
    let _rt = daemon.runtime.enter();
    funnel.serve_all(daemon, sockets.gateway, stop_rx)?;
    serve_dns(daemon, &session.resolver, sockets.dns, stop_rx)?;
    Ok((funnel, supervisor))
}

/// The gateway of a command in its own network namespace (seccomp and ptrace backends): the
/// supervisor or tracer of its trapped calls, the funnel on the listeners the sandbox made, the
/// resolver and the LLM proxy bound in its namespace.
fn serve_private_net(
    daemon: &Daemon,
    session: &super::session::Session,
    command_id: &str,
    env: &BTreeMap<String, String>,
    trap: Trap,
    launched: &mut sandbox::Launched,
    stop_rx: &tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(Arc<super::funnel::Funnel>, Answerer)> {
    let listeners = std::mem::take(&mut launched.listeners);
    let [v4, v6] = <[std::net::TcpListener; 2]>::try_from(listeners)
        .map_err(|_| anyhow::anyhow!("sandbox gave no gateway listeners"))?;
    let table = Arc::new(OriginalDstTable::new(4096, Duration::from_secs(30)));
    let reach = Reach {
        gateway: [v4.local_addr()?, v6.local_addr()?],
        resolver_addrs: super::decider::SANDBOX_RESOLVERS,
        shared_netns: false,
        state_dir: std::path::PathBuf::from(super::decider::SANDBOX_STATE_DIR),
    };
    let decider = SessionDecider::for_command(daemon, session, command_id, reach, &|n| env.get(n).cloned());
    let supervisor = match trap {
        Trap::NetworkTraced => {
            let pid = launched.command_pid.context("sandbox gave no command pid to trace")?;
            let tracer = Tracer::new(Arc::new(decider), table.clone());
            Answerer::Trace(tracer.spawn(pid).context("seizing the command")?)
        }
        _ => {
            let notify = launched.notify_fd.take().context("sandbox gave no notify fd")?;
            Answerer::Notify(Supervisor::new(notify, Arc::new(decider), table.clone()).spawn()?)
        }
    };
    let funnel = super::funnel::Funnel::for_session(daemon, session, command_id, table, false);
    let dns_sockets = match super::netns::bind_dns(launched.pid) {
        Ok(s) => Some(s),
        Err(_) if gone(launched).is_some() => None,
        Err(e) => return Err(e.context("binding the session resolver")),
    };
    let _rt = daemon.runtime.enter();
    funnel.serve_all(daemon, [v4, v6], stop_rx)?;
    if let Some(sockets) = dns_sockets {
        serve_dns(daemon, &session.resolver, sockets, stop_rx)?;
    }
    if let Some(llm) = &session.llm
        && let Err(e) = serve_llm(daemon, llm, launched.pid, stop_rx)
        && gone(launched).is_none()
    {
        return Err(e);
    }
    Ok((funnel, supervisor))
}

/// The command's exit status if it has already ended: the sandbox can die before it runs (its
/// session destroyed meanwhile), and then its status is reported like any other end rather than
/// a setup error.
fn gone(launched: &mut sandbox::Launched) -> Option<i32> {
    launched.wait_timeout(Duration::ZERO).ok().flatten()
}

/// Run `req` and answer with its result.
pub fn run(
    daemon: &Arc<Daemon>,
    req: ExecRequest,
    control: &mut UnixStream,
    peer: Peer,
) -> anyhow::Result<Response> {
    let session = daemon.session(&req.session_id)?;
    if req.argv.is_empty() {
        bail!("no command given");
    }
    let passed: Vec<OwnedFd> = if req.capture {
        Vec::new()
    } else {
        (0..3)
            .map(|_| redirect::handoff::recv_fd(control))
            .collect::<Result<_, _>>()
            .context("receiving stdio")?
    };
    let command_id = format!("cmd-{}", uuid::Uuid::new_v4());
    let _running = session.command_started();
    *session.current_command.lock().unwrap_or_else(|p| p.into_inner()) = Some(command_id.clone());
    match req.events {
        EventsMode::None => {}
        EventsMode::Summary => daemon.recorder.start_collecting(&command_id, true, SUMMARY_MAX),
        EventsMode::All => daemon.recorder.start_collecting(&command_id, false, usize::MAX),
    }

    // Under the eBPF backend the command gets a cgroup of its own with the programs attached
    // (and proven) before it starts, and shares the host's network namespace.
    let mut host_net = match &*daemon.backend {
        Backend::Ebpf(_) => match HostNet::prepare(daemon, &session, &command_id) {
            Ok(h) => Some(h),
            Err(_) if session.cgroup_path().is_none() => {
                return Ok(killed_while_starting(daemon, &session, command_id, req.events, Instant::now()));
            }
            Err(e) => return Err(e),
        },
        Backend::Seccomp | Backend::Ptrace => None,
    };
    let mut spec = LaunchSpec::new(&req.argv, &session.dir);
    spec.env = environment(&req, &session, &command_id);
    spec.cwd = session.workspace.clone();
    spec.bind_dirs = vec![BindDir {
        host: session.workspace_source(),
        sandbox: session.workspace.clone(),
        writable: true,
        noexec: false,
    }];
    if let Some(host) = super::tls::host_bundle() {
        spec.bind_files.push((session.dir.join(super::session::CA_BUNDLE), host.to_path_buf()));
    }
    if daemon.landlock.abi().is_some() {
        let rules = FileRules::new(&session.policy.file_rules, &session.workspace, &|name| {
            req.env.get(name).cloned()
        });
        let home = req.env.get("HOME").map(std::path::Path::new);
        // Without a HOME nothing of a home is granted: its rules have nothing to narrow.
        for u in rules.unapplied().iter().filter(|u| home.is_some() || u.unset.as_deref() != Some("HOME")) {
            let (rule, path, unset) = (&u.rule, &u.path, u.unset.as_deref().unwrap_or("-"));
            tracing::warn!(session = %session.id, rule, path, unset, "file rule path matches nothing under Landlock (its variable is unset in the command's environment, or it is not absolute)");
        }
        let mut plan = super::landlock::plan(&daemon.config.files, &session.workspace, home, &rules);
        if let Some(home) = home {
            let view_dir = session.home_view_dir(peer.uid, home);
            let owner = (peer.uid, peer.gid);
            let view = super::home_view::build(&mut plan, home, &session.workspace, &view_dir, owner, &rules)
                .context("building the session's view of the home")?;
            if let Some(view) = view {
                // Before the workspace, which may lie in the home.
                spec.bind_dirs.splice(0..0, view.binds);
            }
        }
        spec.landlock = Some(plan);
    }
    spec.uid = peer.uid;
    spec.gid = peer.gid;
    spec.resolv_conf = "nameserver 127.0.0.1\noptions attempts:1 timeout:1\n".into();
    spec.cgroup = match &host_net {
        Some(h) => Some(h.cgroup_path().to_path_buf()),
        None => session.cgroup_path(),
    };
    let trap = match &host_net {
        None if matches!(&*daemon.backend, Backend::Ptrace) => Trap::NetworkTraced,
        None => Trap::Network,
        Some(h) if h.unix_via_notify => Trap::Connect,
        Some(_) => Trap::Nothing,
    };
    spec.seccomp = Some(filter_program(trap)?.to_vec());
    spec.seccomp_listener = trap.listener();
    spec.gateway_listeners = host_net.is_none();
    spec.host_network = host_net.is_some();
    spec.self_addresses = host_net.is_none();
    let mut readers = Vec::new();
    if req.capture {
        spec.stdin = Stdio::Null;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        spec.stdout = Stdio::Fd(out_w);
        spec.stderr = Stdio::Fd(err_w);
        readers.push(drain(out_r));
        readers.push(drain(err_r));
    } else {
        let mut it = passed.into_iter();
        let (Some(i), Some(o), Some(e)) = (it.next(), it.next(), it.next()) else {
            bail!("stdio not passed")
        };
        spec.stdin = Stdio::Fd(i);
        spec.stdout = Stdio::Fd(o);
        spec.stderr = Stdio::Fd(e);
    }

    let start = Instant::now();
    let mut launched = match sandbox::launch(&spec) {
        Ok(l) => l,
        // Destroyed while it started (its processes killed with the session's cgroup): the
        // command ends as a killed one would, not with a setup error.
        Err(_) if session.cgroup_path().is_none() => {
            drop(spec);
            return Ok(killed_while_starting(daemon, &session, command_id, req.events, start));
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("starting {}", req.argv[0]))),
    };
    drop(spec); // our copies of the pipes' write ends: the readers see EOF when the command ends

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (funnel, supervisor) = match host_net.as_mut() {
        Some(h) => serve_host_net(daemon, &session, &command_id, &req.env, h, &mut launched, &stop_rx)?,
        None => {
            let (funnel, answerer) =
                serve_private_net(daemon, &session, &command_id, &req.env, trap, &mut launched, &stop_rx)?;
            (funnel, Some(answerer))
        }
    };
    // A resume that fails because the command is gone, or because its session is being
    // destroyed (which kills it), ends in the wait below with the command's status.
    if let Err(e) = launched.resume()
        && gone(&mut launched).is_none()
        && session.cgroup_path().is_some()
    {
        return Err(anyhow::Error::new(e).context(format!("starting {}", req.argv[0])));
    }

    // The caller hanging up (Ctrl-C on `agentsh exec`) ends the command.
    let hung_up = Arc::new(AtomicBool::new(false));
    if let Ok(mut watch) = control.try_clone() {
        let flag = hung_up.clone();
        std::thread::spawn(move || {
            let mut b = [0u8; 1];
            if matches!(watch.read(&mut b), Ok(0) | Err(_)) {
                flag.store(true, Ordering::SeqCst);
            }
        });
    }
    let deadline = req.timeout_ms.map(|ms| start + Duration::from_millis(ms));
    let mut timed_out = false;
    let exit_code = loop {
        if let Some(code) = launched.wait_timeout(Duration::from_millis(50))? {
            break code;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            timed_out = true;
            launched.kill()?;
        } else if hung_up.load(Ordering::SeqCst) {
            launched.kill()?;
        }
    };
    let duration = start.elapsed();
    if let Some(supervisor) = supervisor {
        supervisor.stop();
    }
    let _ = stop_tx.send(true);
    let drain_until = Instant::now() + DRAIN;
    while funnel.active.load(Ordering::SeqCst) > 0 && Instant::now() < drain_until {
        std::thread::sleep(Duration::from_millis(10));
    }
    // The command's processes are gone with its PID namespace; only now may its programs go.
    drop(host_net);
    if timed_out {
        let mut e = Event::new("command_timeout", &session.id);
        e.command_id = Some(command_id.clone());
        daemon.recorder.record(e.field("timeout_ms", req.timeout_ms.unwrap_or_default()));
    }
    let mut outputs = readers.into_iter().map(|h| h.join().unwrap_or_default());
    let stdout = outputs.next().unwrap_or_default();
    let stderr = outputs.next().unwrap_or_default();
    let events = select_events(daemon.recorder.finish(&command_id), req.events);
    Ok(Response::Exited(ExecResult {
        session_id: session.id.clone(),
        command_id,
        exit_code: if timed_out { EXIT_TIMEOUT } else { exit_code },
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        duration_ms: millis(duration),
        events,
    }))
}
