//! `agentsh wrap [--session SID | --policy P] [--fail-open] -- CMD`: run CMD here, in the
//! caller's own context (not as the daemon's child), under the sandbox's seccomp filter, with
//! the filter's notify fd handed to the gateway over `<state dir>/notify.sock`. The command
//! starts only once the gateway has taken it into the session; if the hand-off fails, it does
//! not run at all (exit 126) unless `--fail-open` says to run it unwrapped.
//!
//! The command trusts the session CA, with which the gateway terminates TLS (LLM provider
//! hosts, `rewrite_sni` redirects): `SSL_CERT_FILE` and the other variables of a sandboxed
//! command name files the wrapper makes in a private temp dir, removed when the command ends —
//! the caller's own bundle (its `SSL_CERT_FILE`, …, else this system's) with the CA appended,
//! and the CA with the caller's own extra roots (`NODE_EXTRA_CA_CERTS`, `PGSSLROOTCERT`).

use std::{
    collections::BTreeMap,
    ffi::OsString,
    os::fd::AsFd,
    os::unix::{fs::DirBuilderExt, net::UnixStream},
    path::{Path, PathBuf},
    process::ExitCode,
};

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
    let trust = reply.ca_pem.as_deref().map(Trust::write).transpose()?;
    let env = environment(std::env::vars_os(), session_id, &reply, trust.as_ref());
    child.release_with_env(&env).context("releasing the command")?;
    let code = child.wait().context("waiting for the command");
    drop(trust);
    code
}

/// The caller's variables that name a CA bundle, in the order they are taken as the base of
/// the command's.
const BUNDLE_VARS: [&str; 3] = ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"];
/// The caller's variables that name extra roots, kept beside the CA.
const EXTRA_ROOT_VARS: [&str; 2] = ["NODE_EXTRA_CA_CERTS", "PGSSLROOTCERT"];

/// The trust files of one wrapped command, in a private temp dir removed on drop.
struct Trust {
    dir: PathBuf,
}

impl Trust {
    fn write(ca_pem: &str) -> anyhow::Result<Trust> {
        let dir = std::env::temp_dir().join(format!("agentsh-wrap-{}", uuid::Uuid::new_v4()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("making {}", dir.display()))?;
        let trust = Trust { dir };
        let read = |var: &str| std::env::var_os(var).and_then(|p| std::fs::read_to_string(p).ok());
        let base = BUNDLE_VARS
            .iter()
            .find_map(|v| read(v))
            .or_else(|| crate::daemon::host_bundle().and_then(|p| std::fs::read_to_string(p).ok()))
            .unwrap_or_default();
        let extra: Vec<String> = EXTRA_ROOT_VARS.iter().filter_map(|v| read(v)).collect();
        let write = |name: &str, parts: &[&str]| -> anyhow::Result<()> {
            let mut text = String::new();
            for p in parts.iter().filter(|p| !p.is_empty()) {
                text.push_str(p);
                if !text.ends_with('\n') {
                    text.push('\n');
                }
            }
            let path = trust.dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
        };
        write("ca-bundle.pem", &[&base, ca_pem])?;
        let mut roots: Vec<&str> = vec![ca_pem];
        roots.extend(extra.iter().map(String::as_str));
        write("ca.pem", &roots)?;
        Ok(trust)
    }

    fn bundle(&self) -> PathBuf {
        self.dir.join("ca-bundle.pem")
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

impl Drop for Trust {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The command's environment: the caller's, with the session's ids and the trust variables.
fn environment(
    caller: impl IntoIterator<Item = (OsString, OsString)>,
    session_id: &str,
    reply: &WrapReply,
    trust: Option<&Trust>,
) -> Vec<(OsString, OsString)> {
    let mut env: BTreeMap<OsString, OsString> = caller.into_iter().collect();
    env.insert("AGENTSH_SESSION_ID".into(), session_id.into());
    if let Some(id) = &reply.command_id {
        env.insert("AGENTSH_COMMAND_ID".into(), id.into());
    }
    if let Some(t) = trust {
        for (var, value) in crate::daemon::trust_vars(&t.bundle(), &t.ca(), reply.db) {
            env.insert(var.into(), value.into());
        }
    }
    env.into_iter().collect()
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
