//! `agentsh server [--config FILE]`: run the daemon in the foreground.

use std::process::ExitCode;

use anyhow::Context;
use policies::config::{ServerConfig, load_server_config};

/// Load the config (strictly; `AGENTSH_STATE_DIR` overrides `state_dir`) and run the daemon.
/// Run as root without a `data_dir`, sessions keep their bulky data in `/var/lib/agentsh`.
pub fn run(config: Option<&str>) -> anyhow::Result<ExitCode> {
    let mut cfg = match config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
            load_server_config(&text, path)
                .map_err(|errs| anyhow::anyhow!("invalid server config:\n{errs}"))?
        }
        None => ServerConfig::default(),
    };
    if let Some(dir) = std::env::var_os("AGENTSH_STATE_DIR") {
        cfg.state_dir = dir.into();
    } else if config.is_none() {
        cfg.state_dir = super::client::state_dir();
    }
    if cfg.data_dir.is_none() && nix::unistd::geteuid().is_root() {
        cfg.data_dir = Some("/var/lib/agentsh".into());
    }
    crate::daemon::run(cfg)?;
    Ok(ExitCode::SUCCESS)
}
