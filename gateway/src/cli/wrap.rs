//! `agentsh wrap [--session SID | --policy P] [--fail-open] -- CMD`: run CMD here, in the
//! caller's own context (not as the daemon's child), under the sandbox's seccomp filter, with
//! the filter's notify fd handed to the gateway over `<state dir>/notify.sock`. The command
//! starts only once the gateway has taken it into the session; if the hand-off fails, it does
//! not run at all (exit 126) unless `--fail-open` says to run it unwrapped.

use std::{ffi::OsString, os::fd::AsFd, os::unix::net::UnixStream, path::Path, process::ExitCode};

use anyhow::Context;
use redirect::filter::{FilterSpec, compile};

use super::{client, session};
use crate::{
    control::frame::{read_frame, write_frame},
    daemon::wrap::{SOCKET, WrapHello, WrapReply},
};

/// Exit code when the command could not be wrapped (as a shell says for "cannot execute").
const EXIT_NOT_WRAPPED: u8 = 126;

/// Run `wrap`.
pub fn run(
    session_id: Option<String>,
    policy: &str,
    fail_open: bool,
    command: &[String],
) -> anyhow::Result<ExitCode> {
    let (sid, created) = match session_id {
        Some(s) => (s, false),
        None => {
            let cwd = std::env::current_dir().context("the current directory")?;
            (session::create_session(&cwd, policy)?.id, true)
        }
    };
    let result = wrapped(&sid, command);
    if created {
        let _ = session::destroy_session(&sid);
    }
    match result {
        Ok(code) => Ok(ExitCode::from(code.clamp(0, 255) as u8)),
        Err(e) if fail_open => {
            eprintln!("agentsh wrap: {e:#}; running the command unwrapped (--fail-open)");
            let status = std::process::Command::new(&command[0]).args(&command[1..]).status()?;
            Ok(ExitCode::from(status.code().unwrap_or(EXIT_NOT_WRAPPED.into()).clamp(0, 255) as u8))
        }
        Err(e) => {
            eprintln!("agentsh wrap: {e:#}; the command was not run");
            Ok(ExitCode::from(EXIT_NOT_WRAPPED))
        }
    }
}

/// Fork the command under the filter, hand the fd over, and run it once the gateway agrees.
fn wrapped(session_id: &str, command: &[String]) -> anyhow::Result<i32> {
    let program =
        compile(&FilterSpec::sandbox_default()).map_err(|e| anyhow::anyhow!("compiling the filter: {e}"))?;
    let argv: Vec<OsString> = command.iter().map(OsString::from).collect();
    let mut child =
        sandbox::wrap::spawn_filtered(&argv, program.as_bytes()).context("starting the command")?;
    let socket = client::state_dir().join(SOCKET);
    let reply = hand_off(&socket, session_id, &mut child, command)?;
    if let Some(error) = reply.error {
        anyhow::bail!("the gateway refused: {error}");
    }
    child.release().context("releasing the command")?;
    child.wait().context("waiting for the command")
}

fn hand_off(
    socket: &Path,
    session_id: &str,
    child: &mut sandbox::wrap::Filtered,
    command: &[String],
) -> anyhow::Result<WrapReply> {
    let mut stream =
        UnixStream::connect(socket).with_context(|| format!("connecting to {}", socket.display()))?;
    let hello = WrapHello { session_id: session_id.to_string(), pid: child.pid, argv: command.to_vec() };
    write_frame(&mut stream, &hello)?;
    let notify = child.notify.take().context("no notify fd")?;
    redirect::handoff::send_fd(&stream, notify.as_fd()).context("handing over the notify fd")?;
    drop(notify); // the gateway has its own copy now
    read_frame(&mut stream).context("reading the gateway's answer")
}
