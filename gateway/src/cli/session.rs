//! `agentsh session create|list|show|destroy`.

use std::{path::Path, process::ExitCode};

use anyhow::{Context, bail};

use super::client;
use crate::control::protocol::{PolicySpec, Request, Response, SessionInfo};

/// Turn a `--policy` argument into what the daemon needs: an existing file's text, else an
/// embedded name.
pub fn policy_spec(arg: &str) -> anyhow::Result<PolicySpec> {
    let path = Path::new(arg);
    if path.exists() {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {arg}"))?;
        let signature = std::fs::read_to_string(crate::signing::sig_path(path)).ok();
        return Ok(PolicySpec::Inline { file: arg.to_string(), text, signature });
    }
    if policies::embedded::source(arg).is_none() {
        bail!(
            "{arg}: no such file, and not an embedded policy (one of: {})",
            policies::embedded::NAMES.join(", ")
        );
    }
    Ok(PolicySpec::Embedded { name: arg.to_string() })
}

/// Ask the daemon for a new session; returns its description.
pub fn create_session(workspace: &Path, policy: &str) -> anyhow::Result<SessionInfo> {
    let workspace =
        std::fs::canonicalize(workspace).with_context(|| format!("workspace {}", workspace.display()))?;
    // Variables that are not UTF-8 cannot be named in a policy: left out.
    let env = std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let req = Request::SessionCreate { workspace, policy: policy_spec(policy)?, env: env.collect() };
    match client::call(&req)? {
        Response::Created { session } => Ok(session),
        other => bail!("unexpected response: {other:?}"),
    }
}

/// Destroy a session.
pub fn destroy_session(id: &str) -> anyhow::Result<()> {
    client::call(&Request::SessionDestroy { id: id.to_string() })?;
    Ok(())
}

fn print_info(s: &SessionInfo) {
    println!("id:         {}", s.id);
    println!("workspace:  {}", s.workspace.display());
    println!("policy:     {}", s.policy);
    println!("backend:    {}", s.backend);
    match (s.landlock_abi, &s.landlock_off) {
        (Some(abi), _) => println!("landlock:   ABI {abi}"),
        (None, Some(why)) => println!("landlock:   none ({why})"),
        (None, None) => println!("landlock:   none"),
    }
    if !s.fuse_workspace.is_empty() {
        println!("fuse:       {}", s.fuse_workspace);
    }
    println!("created:    {}", s.created_at);
    println!("commands:   {} ({} running)", s.commands, s.running);
}

/// `session create`.
pub fn create(workspace: &Path, policy: &str, json: bool) -> anyhow::Result<ExitCode> {
    let s = create_session(workspace, policy)?;
    if json {
        println!("{}", serde_json::json!({"id": s.id, "workspace": s.workspace, "policy": s.policy}));
    } else {
        println!("{}", s.id);
    }
    Ok(ExitCode::SUCCESS)
}

/// `session list`.
pub fn list(json: bool) -> anyhow::Result<ExitCode> {
    let Response::Sessions { sessions } = client::call(&Request::SessionList)? else {
        bail!("unexpected response")
    };
    if json {
        println!("{}", serde_json::to_string(&sessions)?);
    } else {
        for s in sessions {
            println!("{}  {}  {}  {}", s.id, s.policy, s.workspace.display(), s.created_at);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `session show`.
pub fn show(id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let Response::Session { session } = client::call(&Request::SessionShow { id: id.to_string() })? else {
        bail!("unexpected response")
    };
    if json {
        println!("{}", serde_json::to_string(&session)?);
    } else {
        print_info(&session);
    }
    Ok(ExitCode::SUCCESS)
}

/// `session destroy`.
pub fn destroy(id: &str) -> anyhow::Result<ExitCode> {
    destroy_session(id)?;
    Ok(ExitCode::SUCCESS)
}

/// `session trash SID [--restore ID] [--json]`.
pub fn trash(id: &str, restore: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    match client::call(&Request::SessionTrash { id: id.to_string(), restore })? {
        Response::Trash { entries } if json => {
            let list: Vec<_> = entries
                .iter()
                .map(|(id, path, size)| serde_json::json!({"id": id, "path": path, "size": size}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        Response::Trash { entries } => {
            for (id, path, size) in entries {
                println!("{id}  {}  ({size} bytes)", path.display());
            }
        }
        Response::Restored { path } if json => println!("{}", serde_json::json!({"restored": path})),
        Response::Restored { path } => println!("restored {}", path.display()),
        other => bail!("unexpected answer from the server: {other:?}"),
    }
    Ok(ExitCode::SUCCESS)
}
