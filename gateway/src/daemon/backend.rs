//! Choosing the redirect backend at start-up (`security.mode`, `security.minimum_mode`), by
//! trying rather than assuming: seccomp user-notify is probed in a child process (the same probe
//! as `agentsh detect`). This gateway funnels sessions through seccomp user-notify; the eBPF and
//! ptrace backends are not wired into it yet, so asking for them stops the server instead of
//! silently running with something else (fail closed).

use anyhow::{Context, bail};
use policies::config::{SecurityConfig, SecurityMode};
use sandbox::detect::{ProbeName, ProbeResult};

/// Probe seccomp user-notify in a fresh copy of this binary.
fn seccomp_works() -> anyhow::Result<ProbeResult> {
    let exe = std::env::current_exe().context("finding this binary to probe the kernel")?;
    let out = std::process::Command::new(exe)
        .args(["detect", "--probe", ProbeName::SeccompNotify.as_str()])
        .stdin(std::process::Stdio::null())
        .output()
        .context("running the seccomp probe")?;
    if !out.status.success() {
        return Ok(ProbeResult::no(format!("the probe process failed ({})", out.status)));
    }
    serde_json::from_slice(&out.stdout).context("reading the seccomp probe's answer")
}

/// The backend sessions use, as `session show` and events name it.
pub fn choose(config: &SecurityConfig) -> anyhow::Result<&'static str> {
    let chosen = match config.mode {
        SecurityMode::Auto | SecurityMode::Seccomp => {
            let probe = seccomp_works()?;
            if !probe.available {
                bail!(
                    "security.mode {}: seccomp user-notify does not work here ({}); the eBPF and ptrace \
                     backends are not available in this gateway yet, so no session could be governed",
                    if config.mode == SecurityMode::Auto { "auto" } else { "seccomp" },
                    probe.detail
                );
            }
            SecurityMode::Seccomp
        }
        SecurityMode::Ebpf | SecurityMode::Ptrace => bail!(
            "security.mode {}: this backend is not available in this gateway yet (use seccomp or auto; \
             `agentsh detect` shows what the machine supports)",
            if config.mode == SecurityMode::Ebpf { "ebpf" } else { "ptrace" }
        ),
    };
    if let (Some(min), Some(have)) = (config.minimum_mode.and_then(SecurityMode::strength), chosen.strength())
        && have < min
    {
        bail!("security.minimum_mode is not met by the backend this machine offers");
    }
    Ok("seccomp")
}
