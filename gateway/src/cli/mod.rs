//! Command-line surface (DESIGN.md §6). One file per command; only commands that work are here.

mod policy_check;
mod policy_source;
mod policy_validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for usage, IO and load errors.
pub const EXIT_ERROR: u8 = 2;

/// agentsh: execution-layer security for AI agents.
#[derive(Debug, Parser)]
#[command(name = "agentsh", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Load policies strictly and report every error with file, line and column.
    ///
    /// Prints `FILE: ok` for each valid policy. Exit 0 when all are valid, 1 otherwise.
    Validate {
        /// Policy files, or names of embedded policies (default, strict, audit).
        #[arg(required = true)]
        files: Vec<String>,
        /// Treat the files as server configs (`agentsh server --config`) instead of policies.
        #[arg(long)]
        config: bool,
    },
    /// Show how a policy decides a connect or a DNS question, and which rule decides it.
    ///
    /// Exit 0 when every check is permitted (allow or audit), 1 when any is not, 2 on error.
    Check {
        /// A policy file, or the name of an embedded policy (default, strict, audit).
        policy: String,
        /// Decide a connect to HOST:PORT (a name, an IPv4 address or a bracketed IPv6 address).
        #[arg(long = "connect", value_name = "HOST:PORT")]
        connects: Vec<String>,
        /// With --connect NAME:PORT, the address the name resolved to (checked against CIDR rules).
        #[arg(long, value_name = "IP")]
        ip: Option<std::net::IpAddr>,
        /// Decide a DNS question for NAME.
        #[arg(long = "dns", value_name = "NAME")]
        names: Vec<String>,
        /// Print one JSON object per check instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Run the parsed command line and return the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Policy(PolicyCommand::Validate { files, config }) => policy_validate::run(&files, config),
        Command::Policy(PolicyCommand::Check { policy, connects, ip, names, json }) => {
            policy_check::run(&policy, &connects, ip, &names, json)
        }
    }
}
