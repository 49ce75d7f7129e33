//! The `agentsh` binary: parses the command line and dispatches to one module per command.
#![forbid(unsafe_code)]

mod cli;
mod control;
mod daemon;
mod events;
mod integrity;
mod signing;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AGENTSH_LOG")
                .unwrap_or_else(|_| "warn,gateway=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Installed as /bin/sh or /bin/bash, the binary is the shell shim.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let called = argv.first().and_then(|a| std::path::Path::new(a).file_name()).and_then(|n| n.to_str());
    if called.is_some_and(|n| cli::shim::SHELLS.contains(&n)) {
        return match cli::shim::run_as_shell(argv) {
            Ok(code) => code,
            Err(err) => {
                eprintln!("agentsh shim: {err:#}");
                ExitCode::from(126)
            }
        };
    }
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("agentsh: {err:#}");
            ExitCode::from(cli::EXIT_ERROR)
        }
    }
}
