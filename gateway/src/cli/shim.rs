//! The shell shim: `agentsh shim install-shell --root DIR [--bash|--bash-only] [--force]
//! [--shim PATH]` moves `DIR/bin/sh` (and/or `bash`) to `*.real` and puts a link to the agentsh
//! binary in its place; `shim uninstall-shell` puts them back; `shim status` tells.
//!
//! Run as `sh` or `bash`, the binary is the shim: it runs the real shell (as `sh`, so busybox
//! applets still work) through `agentsh exec` in the session of `$AGENTSH_SESSION_ID`, or in a
//! one-shot session of the current directory (`$AGENTSH_SHIM_POLICY`, default `default`). It
//! passes straight through to the real shell when stdin is not a terminal (scripts, pipes)
//! unless `AGENTSH_SHIM_FORCE=1` or `<root>/etc/agentsh/shim.conf` says `force=true`, when it
//! already runs inside a session (no recursion), and with `AGENTSH_SHIM_BYPASS=1`.

use std::{
    ffi::OsString,
    io::IsTerminal,
    os::unix::{fs::symlink, process::CommandExt},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, bail};

use super::exec;
use crate::control::protocol::EventsMode;

/// The shells the shim stands in for.
pub const SHELLS: [&str; 2] = ["sh", "bash"];

fn shells(bash: bool, bash_only: bool) -> Vec<&'static str> {
    match (bash, bash_only) {
        (_, true) => vec!["bash"],
        (true, false) => vec!["sh", "bash"],
        (false, false) => vec!["sh"],
    }
}

fn real(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.real", path.display()))
}

/// `shim install-shell`.
pub fn install(
    root: &Path,
    shim: &Path,
    bash: bool,
    bash_only: bool,
    force: bool,
) -> anyhow::Result<ExitCode> {
    for name in shells(bash, bash_only) {
        let path = root.join("bin").join(name);
        let original = real(&path);
        let ours = std::fs::read_link(&path).is_ok_and(|t| t == shim);
        if ours && original.exists() {
            println!("{}: already the shim", path.display());
            continue;
        }
        if original.exists() {
            bail!(
                "{} exists but {} is not the shim: refusing to overwrite either",
                original.display(),
                path.display()
            );
        }
        if std::fs::symlink_metadata(&path).is_err() {
            bail!("{}: no such shell to replace", path.display());
        }
        std::fs::rename(&path, &original).with_context(|| format!("moving {} aside", path.display()))?;
        if let Err(e) = symlink(shim, &path) {
            let _ = std::fs::rename(&original, &path);
            return Err(e).with_context(|| format!("linking {} to {}", path.display(), shim.display()));
        }
        println!("{} → {} (the real shell is {})", path.display(), shim.display(), original.display());
    }
    if force {
        let dir = root.join("etc/agentsh");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("shim.conf"), "force=true\n")?;
        println!("{}: force=true (non-interactive shells are routed too)", dir.join("shim.conf").display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `shim uninstall-shell`.
pub fn uninstall(root: &Path) -> anyhow::Result<ExitCode> {
    for name in SHELLS {
        let path = root.join("bin").join(name);
        let original = real(&path);
        if original.exists() {
            std::fs::rename(&original, &path).with_context(|| format!("restoring {}", path.display()))?;
            println!("{} restored", path.display());
        }
    }
    let _ = std::fs::remove_file(root.join("etc/agentsh/shim.conf"));
    Ok(ExitCode::SUCCESS)
}

/// `shim status`: exit 0 when the shim is installed for `sh` or `bash`, 1 when not.
pub fn status(root: &Path) -> anyhow::Result<ExitCode> {
    let mut any = false;
    for name in SHELLS {
        let path = root.join("bin").join(name);
        let installed = real(&path).exists();
        any |= installed;
        println!("{}: {}", path.display(), if installed { "shim installed" } else { "not shimmed" });
    }
    println!("force: {}", forced(root));
    Ok(ExitCode::from(if any { 0 } else { 1 }))
}

fn forced(root: &Path) -> bool {
    std::env::var("AGENTSH_SHIM_FORCE").is_ok_and(|v| v == "1")
        || std::fs::read_to_string(root.join("etc/agentsh/shim.conf"))
            .is_ok_and(|c| c.lines().any(|l| l.trim().replace(' ', "") == "force=true"))
}

/// Where the shim was invoked from (`argv[0]`, looked up on `PATH` when it has no slash).
fn invoked_path(argv0: &str) -> PathBuf {
    if argv0.contains('/') {
        return PathBuf::from(argv0);
    }
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(argv0)).find(|c| c.exists()))
        .unwrap_or_else(|| PathBuf::from("/bin").join(argv0))
}

/// Run as the shim (`argv[0]` is `sh` or `bash`); never returns on a pass-through.
pub fn run_as_shell(argv: Vec<OsString>) -> anyhow::Result<ExitCode> {
    let argv0 = argv.first().map(|a| a.to_string_lossy().into_owned()).unwrap_or_default();
    let invoked = invoked_path(&argv0);
    let name = invoked.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let real_shell = real(&invoked);
    let root = invoked.parent().and_then(Path::parent).unwrap_or(Path::new("/")).to_path_buf();
    let inside = std::env::var_os("AGENTSH_COMMAND_ID").is_some();
    let bypass = std::env::var("AGENTSH_SHIM_BYPASS").is_ok_and(|v| v == "1");
    let interactive = std::io::stdin().is_terminal();
    if inside || bypass || !(interactive || forced(&root)) {
        // Straight to the real shell, named as the user called it.
        let err = std::process::Command::new(&real_shell).arg0(&name).args(&argv[1..]).exec();
        bail!("running {}: {err}", real_shell.display());
    }
    let mut command = vec![real_shell.display().to_string()];
    command.extend(argv[1..].iter().map(|a| a.to_string_lossy().into_owned()));
    let flags = exec::ExecFlags { events: Some(EventsMode::None), ..exec::ExecFlags::default() };
    match std::env::var("AGENTSH_SESSION_ID") {
        Ok(sid) if !sid.is_empty() => exec::exec(&sid, &command, &flags),
        _ => {
            let policy = std::env::var("AGENTSH_SHIM_POLICY").unwrap_or_else(|_| "default".into());
            exec::run(&policy, Path::new("."), &command, &flags)
        }
    }
}
