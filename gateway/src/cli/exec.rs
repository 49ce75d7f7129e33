//! `agentsh exec` and `agentsh run`: run a command in a session and exit with its exit code.

use std::{collections::BTreeMap, os::fd::AsFd, path::Path, process::ExitCode, time::Duration};

use anyhow::{Context, bail};

use super::{client, session};
use crate::{
    control::{
        frame::write_frame,
        protocol::{EventsMode, ExecRequest, ExecResult, Request, Response},
    },
    events::Event,
};

/// How `exec` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputMode {
    /// The command's own output on this terminal; events (if asked) on stderr.
    #[default]
    Human,
    /// One JSON object: `{session_id, command_id, exit_code, stdout, stderr, duration_ms, events}`.
    Json,
}

/// Flags shared by `exec` and `run`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ExecFlags {
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputMode::Human)]
    pub output: OutputMode,
    /// Which events to report: none, summary (blocked only, at most 25) or all.
    /// Blocked events are summarised by default.
    #[arg(long, value_enum)]
    pub events: Option<EventsMode>,
    /// Kill the command after this long (e.g. 30s, 5m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
}

pub fn describe(e: &Event) -> String {
    let mut s = format!("agentsh: {}", e.kind);
    if let Some(r) = e.domain.as_ref().or(e.remote.as_ref()) {
        s.push_str(&format!(" {r}"));
    }
    if let Some(p) = &e.policy {
        s.push_str(&format!(" → {} (rule {})", p.decision, p.rule));
        if let Some(m) = &p.message {
            s.push_str(&format!(": {m}"));
        }
    }
    s
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(255))
}

/// Run `argv` in session `sid` and report per `flags`.
pub fn exec(sid: &str, argv: &[String], flags: &ExecFlags) -> anyhow::Result<ExitCode> {
    if argv.is_empty() {
        bail!("no command given (usage: agentsh exec SID -- CMD [ARG…])");
    }
    let json = flags.output == OutputMode::Json;
    let events = flags.events.unwrap_or(EventsMode::Summary);
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let req = Request::Exec(ExecRequest {
        session_id: sid.to_string(),
        argv: argv.to_vec(),
        env,
        timeout_ms: flags.timeout.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        capture: json,
        events,
    });
    let mut sock = client::connect()?;
    write_frame(&mut sock, &req)?;
    if !json {
        for fd in [std::io::stdin().as_fd(), std::io::stdout().as_fd(), std::io::stderr().as_fd()] {
            redirect::handoff::send_fd(&sock, fd).context("passing stdio to the server")?;
        }
    }
    let Response::Exited(result) = client::read_response(&mut sock)? else { bail!("unexpected response") };
    report(&result, json)?;
    Ok(exit_code(result.exit_code))
}

fn report(result: &ExecResult, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(result)?);
    } else {
        for e in &result.events {
            eprintln!("{}", describe(e));
        }
    }
    Ok(())
}

/// Run `argv` in session `sid` with output captured, returning the whole result.
pub fn exec_captured(sid: &str, argv: &[String], events: EventsMode) -> anyhow::Result<ExecResult> {
    let req = Request::Exec(ExecRequest {
        session_id: sid.to_string(),
        argv: argv.to_vec(),
        env: std::env::vars().collect(),
        timeout_ms: Some(60_000),
        capture: true,
        events,
    });
    let mut sock = client::connect()?;
    write_frame(&mut sock, &req)?;
    let Response::Exited(result) = client::read_response(&mut sock)? else { bail!("unexpected response") };
    Ok(result)
}

/// One-shot: create a session, run the command, destroy the session.
pub fn run(policy: &str, workspace: &Path, argv: &[String], flags: &ExecFlags) -> anyhow::Result<ExitCode> {
    let s = session::create_session(workspace, policy)?;
    let result = exec(&s.id, argv, flags);
    let destroyed = session::destroy_session(&s.id);
    let code = result?;
    destroyed?;
    Ok(code)
}
