//! Command-line surface (DESIGN.md §6). One file per command; only commands that work are here.

mod audit;
pub mod client;
mod demo;
mod demo_dns;
mod demo_llm;
mod demo_pg;
mod detect;
mod events;
mod exec;
mod policy_check;
mod policy_sign;
mod policy_source;
mod policy_validate;
mod server;
mod session;
pub mod shim;
mod wrap;

use std::{path::PathBuf, process::ExitCode};

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
    /// Run the daemon in the foreground (other commands start it on demand).
    Server {
        /// Server config file (state dir, listeners, DNS, audit sinks, security mode).
        #[arg(long, env = "AGENTSH_CONFIG")]
        config: Option<String>,
    },
    /// Create, list, show and destroy sessions.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Run a command in a session; exits with the command's exit code.
    Exec {
        #[command(flatten)]
        flags: exec::ExecFlags,
        /// Session id (default: $AGENTSH_SESSION_ID).
        #[arg(env = "AGENTSH_SESSION_ID")]
        session: String,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// One shot: create a session, run the command in it, destroy the session.
    Run {
        /// Policy file or embedded policy name.
        #[arg(long, default_value = "default")]
        policy: String,
        /// The workspace (default: the current directory).
        #[arg(long, default_value = ".")]
        workspace: PathBuf,
        /// Server config for a daemon started by this command.
        #[arg(long)]
        config: Option<String>,
        #[command(flatten)]
        flags: exec::ExecFlags,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Run a command here, in this context, with its egress governed by a session's gateway.
    ///
    /// The command runs under the sandbox's seccomp filter, handed to the gateway before it
    /// starts; if the hand-off fails it does not run (exit 126) unless --fail-open.
    Wrap {
        /// Session to join (default: $AGENTSH_SESSION_ID, else a new session for the current
        /// directory with --policy, destroyed afterwards).
        #[arg(long, env = "AGENTSH_SESSION_ID")]
        session: Option<String>,
        /// Policy of a session created for this command.
        #[arg(long, default_value = "default")]
        policy: String,
        /// Run the command unwrapped when the hand-off fails.
        #[arg(long)]
        fail_open: bool,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Route `/bin/sh -c …` through `agentsh exec`: install, remove or check the shell shim.
    #[command(subcommand)]
    Shim(ShimCommand),
    /// Work with policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// An offline tour: a local TLS upstream, an allowed flow and denied ones, with their events.
    Demo,
    /// Work with audit logs.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Show recorded audit events, filtered; with --follow, new ones as they happen.
    Events {
        /// Only this session's events.
        #[arg(long)]
        session: Option<String>,
        /// Only events of this type (repeatable).
        #[arg(long = "type", value_name = "TYPE")]
        kinds: Vec<String>,
        /// Keep printing new events until interrupted.
        #[arg(long, short)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show what this machine can enforce, found by trying each mechanism.
    Detect {
        #[command(subcommand)]
        what: Option<DetectCommand>,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: detect::Output,
        /// Run one probe in this process and print its result (how detect runs each probe).
        #[arg(long, hide = true)]
        probe: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ShimCommand {
    /// Replace DIR/bin/sh (and/or bash) with the shim; the originals become *.real.
    InstallShell {
        /// The root file system to change (a container image's, or /).
        #[arg(long)]
        root: PathBuf,
        /// The shim as seen inside that root (default: this binary's path).
        #[arg(long)]
        shim: Option<PathBuf>,
        /// Also replace bash.
        #[arg(long, conflicts_with = "bash_only")]
        bash: bool,
        /// Replace bash only.
        #[arg(long)]
        bash_only: bool,
        /// Route non-interactive shells too (writes DIR/etc/agentsh/shim.conf force=true).
        #[arg(long)]
        force: bool,
    },
    /// Put the real shells back.
    UninstallShell {
        /// The root file system.
        #[arg(long)]
        root: PathBuf,
    },
    /// Say whether the shim is installed (exit 0) or not (exit 1).
    Status {
        /// The root file system.
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify the HMAC chain of a JSONL audit log and its rotated files.
    ///
    /// Exit 0 when intact; 1 with the first broken, missing or reordered line as FILE:LINE.
    Verify {
        /// The log (`<state dir>/audit.jsonl` or a jsonl sink).
        file: PathBuf,
        /// File holding the key.
        #[arg(long, conflicts_with = "key_env", required_unless_present = "key_env")]
        key_file: Option<PathBuf>,
        /// Environment variable holding the key.
        #[arg(long)]
        key_env: Option<String>,
        /// hmac-sha256 or hmac-sha512.
        #[arg(long, default_value = "hmac-sha256")]
        algorithm: String,
    },
}

#[derive(Debug, Subcommand)]
enum DetectCommand {
    /// Print a server config snippet for this machine.
    Config {
        /// Write it to FILE instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum SessionCommand {
    /// Create a session and print its id.
    Create {
        /// The agent's working directory.
        #[arg(long)]
        workspace: PathBuf,
        /// Policy file or embedded policy name (default, strict, audit).
        #[arg(long, default_value = "default")]
        policy: String,
        /// Print `{"id": …}` instead of the bare id.
        #[arg(long)]
        json: bool,
    },
    /// List sessions.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show one session.
    Show {
        /// Session id.
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Destroy a session, killing every process in it.
    Destroy {
        /// Session id.
        id: String,
    },
    /// List the session's soft-deleted files (files.fuse_workspace), or restore one.
    Trash {
        /// Session id.
        id: String,
        /// Restore the file with this trash id.
        #[arg(long, value_name = "TRASH_ID")]
        restore: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Make an Ed25519 key pair for signing policies: a private key and a trust-store entry.
    Keygen {
        /// Directory to write both files to.
        #[arg(long)]
        output: PathBuf,
        /// Who the key belongs to.
        #[arg(long)]
        label: String,
    },
    /// Sign a policy file: writes FILE.sig next to it.
    Sign {
        /// The policy file.
        file: PathBuf,
        /// The private key (from `policy keygen`).
        #[arg(long)]
        key: PathBuf,
        /// The signer's name (default: $USER).
        #[arg(long)]
        signer: Option<String>,
    },
    /// Verify FILE.sig against a trust store. Exit 0 when valid, 1 when not.
    Verify {
        /// The policy file.
        file: PathBuf,
        /// The trust-store directory.
        #[arg(long)]
        key_dir: PathBuf,
    },
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
        /// With --connect NAME:PORT, the address the name resolved to (checked against CIDR
        /// rules); applies to every --connect given by name.
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
        Command::Server { config } => server::run(config.as_deref()),
        Command::Demo => demo::run(),
        Command::Shim(ShimCommand::InstallShell { root, shim, bash, bash_only, force }) => {
            let shim = match shim {
                Some(s) => s,
                None => std::env::current_exe()?,
            };
            shim::install(&root, &shim, bash, bash_only, force)
        }
        Command::Shim(ShimCommand::UninstallShell { root }) => shim::uninstall(&root),
        Command::Shim(ShimCommand::Status { root }) => shim::status(&root),
        Command::Wrap { session, policy, fail_open, command } => {
            wrap::run(session, &policy, fail_open, &command)
        }
        Command::Events { session, kinds, follow, json } => events::run(session, kinds, follow, json),
        Command::Audit(AuditCommand::Verify { file, key_file, key_env, algorithm }) => {
            audit::verify(&file, key_file, key_env, &algorithm)
        }
        Command::Detect { probe: Some(name), .. } => detect::run_probe(&name),
        Command::Detect { what: Some(DetectCommand::Config { output }), .. } => {
            detect::config(output.as_deref())
        }
        Command::Detect { what: None, output, .. } => detect::run(output),
        Command::Session(SessionCommand::Create { workspace, policy, json }) => {
            session::create(&workspace, &policy, json)
        }
        Command::Session(SessionCommand::List { json }) => session::list(json),
        Command::Session(SessionCommand::Show { id, json }) => session::show(&id, json),
        Command::Session(SessionCommand::Destroy { id }) => session::destroy(&id),
        Command::Session(SessionCommand::Trash { id, restore, json }) => session::trash(&id, restore, json),
        Command::Exec { flags, session, command } => exec::exec(&session, &command, &flags),
        Command::Run { policy, workspace, config, flags, command } => {
            if let Some(c) = config {
                client::set_daemon_config(c);
            }
            exec::run(&policy, &workspace, &command, &flags)
        }
        Command::Policy(PolicyCommand::Validate { files, config }) => policy_validate::run(&files, config),
        Command::Policy(PolicyCommand::Keygen { output, label }) => policy_sign::keygen(&output, &label),
        Command::Policy(PolicyCommand::Sign { file, key, signer }) => {
            policy_sign::sign(&file, &key, signer.as_deref())
        }
        Command::Policy(PolicyCommand::Verify { file, key_dir }) => policy_sign::verify(&file, &key_dir),
        Command::Policy(PolicyCommand::Check { policy, connects, ip, names, json }) => {
            policy_check::run(&policy, &connects, ip, &names, json)
        }
    }
}
