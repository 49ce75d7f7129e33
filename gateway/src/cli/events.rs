//! `agentsh events [--session SID] [--type T]… [--follow] [--json]`: the audit events the
//! daemon recorded, filtered, and with `--follow` new ones as they happen.

use std::{io::Write, process::ExitCode};

use super::{client, exec};
use crate::control::{
    frame::write_frame,
    protocol::{Request, Response},
};

/// Run `events`.
pub fn run(
    session: Option<String>,
    kinds: Vec<String>,
    follow: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut sock = client::connect()?;
    write_frame(&mut sock, &Request::Events { session, kinds, follow })?;
    let stdout = std::io::stdout();
    loop {
        match client::read_response(&mut sock)? {
            Response::Event(e) => {
                let mut out = stdout.lock();
                let line = if json {
                    serde_json::to_string(&e)?
                } else {
                    format!("{} {}", e.timestamp, exec::describe(&e))
                };
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                    return Ok(ExitCode::SUCCESS); // the reader went away (a closed pipe)
                }
            }
            Response::Done => return Ok(ExitCode::SUCCESS),
            other => anyhow::bail!("unexpected answer from the server: {other:?}"),
        }
    }
}
