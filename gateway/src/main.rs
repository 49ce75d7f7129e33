//! The `agentsh` binary: parses the command line and dispatches to one module per command.
#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("agentsh: {err:#}");
            ExitCode::from(cli::EXIT_ERROR)
        }
    }
}
