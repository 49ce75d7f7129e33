//! The CLI side of the control API: finding the daemon's socket, starting the daemon on first
//! use (unless `AGENTSH_NO_AUTO=1`), and one request/response exchange per connection.

use std::{
    io,
    os::unix::{fs::DirBuilderExt, net::UnixStream, process::CommandExt},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::control::{
    frame::{read_frame, write_frame},
    protocol::{Request, Response},
};

/// How long a freshly started daemon gets to open its socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The state dir: `AGENTSH_STATE_DIR`, else `/run/agentsh` for root, else
/// `$XDG_RUNTIME_DIR/agentsh`.
pub fn state_dir() -> PathBuf {
    if let Some(dir) = STATE_DIR.get() {
        return dir.clone();
    }
    if let Some(dir) = std::env::var_os("AGENTSH_STATE_DIR") {
        return dir.into();
    }
    if nix::unistd::geteuid().is_root() {
        return "/run/agentsh".into();
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) => PathBuf::from(dir).join("agentsh"),
        None => std::env::temp_dir().join(format!("agentsh-{}", nix::unistd::geteuid())),
    }
}

/// The control socket: `AGENTSH_SERVER` (a path, or `unix://PATH`), else `<state dir>/agentsh.sock`.
pub fn control_socket() -> PathBuf {
    match std::env::var("AGENTSH_SERVER") {
        Ok(s) if !s.is_empty() && STATE_DIR.get().is_none() => {
            PathBuf::from(s.strip_prefix("unix://").unwrap_or(&s))
        }
        _ => state_dir().join("agentsh.sock"),
    }
}

fn auto_start_allowed() -> bool {
    std::env::var("AGENTSH_NO_AUTO").map(|v| v != "1").unwrap_or(true)
}

static DAEMON_CONFIG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
static STATE_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Use `dir` as the state dir (and so the control socket) for the rest of this process.
pub fn use_state_dir(dir: PathBuf) {
    let _ = STATE_DIR.set(dir);
}

/// Use `path` as `--config` for a daemon this process starts.
pub fn set_daemon_config(path: String) {
    let _ = DAEMON_CONFIG.set(path);
}

/// Start `agentsh server` in the background, logging to `<state dir>/server.log`.
fn start_daemon() -> anyhow::Result<()> {
    let dir = state_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let log_path = dir.join("server.log");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
    let exe = std::env::current_exe().context("locating the agentsh binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("server");
    if let Some(c) = DAEMON_CONFIG.get() {
        cmd.arg("--config").arg(c);
    }
    cmd.env("AGENTSH_STATE_DIR", &dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting agentsh server")?;
    Ok(())
}

/// Connect to the daemon, starting it first if it is not running and auto-start is allowed.
pub fn connect() -> anyhow::Result<UnixStream> {
    let path = control_socket();
    match UnixStream::connect(&path) {
        Ok(s) => return Ok(s),
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => {
            if !auto_start_allowed() {
                bail!("no agentsh server at {} (AGENTSH_NO_AUTO=1, so not starting one)", path.display());
            }
        }
        Err(e) => return Err(e).with_context(|| format!("connecting to {}", path.display())),
    }
    start_daemon()?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match UnixStream::connect(&path) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => {
                let log = state_dir().join("server.log");
                return Err(e).with_context(|| {
                    format!("agentsh server did not start at {} (see {})", path.display(), log.display())
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Send one request on a fresh connection and read the response.
pub fn call(req: &Request) -> anyhow::Result<Response> {
    let mut sock = connect()?;
    write_frame(&mut sock, req)?;
    read_response(&mut sock)
}

/// Read the daemon's response; an `Error` response becomes an error.
pub fn read_response(sock: &mut UnixStream) -> anyhow::Result<Response> {
    let resp: Response = read_frame(sock).context("reading the server's response")?;
    match resp {
        Response::Error { error } => bail!("{error}"),
        other => Ok(other),
    }
}
