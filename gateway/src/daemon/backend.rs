//! Choosing the redirect backend at start-up (`security.mode`, `security.minimum_mode`), by
//! trying rather than assuming: seccomp user-notify is probed in a child process (the same probe
//! as `agentsh detect`), and the eBPF programs are loaded (each session's attach then proves
//! them with a self-test). A backend that was asked for and does not work stops the server
//! instead of letting it run with something else (fail closed); `auto` takes the strongest that
//! works.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use policies::config::{SecurityConfig, SecurityMode};
use redirect::ebpf::EbpfBackend;
use sandbox::detect::{ProbeName, ProbeResult};

/// The redirect backend sessions use.
pub enum Backend {
    /// seccomp user-notify: each command in a private network namespace, its connects handed to
    /// the supervisor.
    Seccomp,
    /// eBPF cgroup/sock_addr programs: each command in the host network namespace, in a cgroup of
    /// its own whose connects the kernel rewrites to the gateway.
    Ebpf(EbpfSessions),
    /// ptrace: each command in a private network namespace, like seccomp, with its trapped calls
    /// answered at ptrace stops (for kernels or runtimes without user-notify).
    Ptrace,
}

impl Backend {
    /// The name `session show` and events use.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Seccomp => "seccomp",
            Backend::Ebpf(_) => "ebpf",
            Backend::Ptrace => "ptrace",
        }
    }
}

/// The eBPF backend with the commands attached to it, so that the kernel's refusals (which name
/// a cgroup) can be told as events of the right session and command.
pub struct EbpfSessions {
    /// The loaded programs.
    pub backend: EbpfBackend,
    /// seccomp user-notify works too, so Unix socket connects (which no cgroup program sees)
    /// are still decided by policy; without it `unix_socket_rules` are not enforced.
    pub unix_via_notify: bool,
    /// Command cgroups attached now, by cgroup id: session id, command id, and the policy rule
    /// names of the kernel's deny list, by position.
    pub attached: Mutex<HashMap<u64, Owner>>,
}

/// Whose an attached cgroup is: session id, command id, and the policy rule (name, message) of
/// each kernel deny rule, by position.
pub type Owner = (String, String, Vec<(String, Option<String>)>);

impl EbpfSessions {
    /// Whose cgroup `id` is.
    pub fn owner(&self, id: u64) -> Option<Owner> {
        self.attached.lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned()
    }
}

/// Probe seccomp user-notify in a fresh copy of this binary.
fn seccomp_works() -> anyhow::Result<ProbeResult> {
    probe(ProbeName::SeccompNotify)
}

/// Probe `PTRACE_SEIZE` of a child in a fresh copy of this binary.
fn ptrace_works() -> anyhow::Result<ProbeResult> {
    probe(ProbeName::Ptrace)
}

/// Run `agentsh detect --probe NAME` and read its answer.
fn probe(name: ProbeName) -> anyhow::Result<ProbeResult> {
    let exe = std::env::current_exe().context("finding this binary to probe the kernel")?;
    let out = std::process::Command::new(exe)
        .args(["detect", "--probe", name.as_str()])
        .stdin(std::process::Stdio::null())
        .output()
        .context("running the seccomp probe")?;
    if !out.status.success() {
        return Ok(ProbeResult::no(format!("the probe process failed ({})", out.status)));
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("reading the {} probe's answer", name.as_str()))
}

fn ebpf(unix_via_notify: bool) -> anyhow::Result<Backend> {
    let backend = EbpfBackend::load()?;
    if !unix_via_notify {
        tracing::warn!(
            "seccomp user-notify is unavailable: unix_socket_rules are not enforced under the eBPF backend"
        );
        eprintln!("agentsh server: seccomp user-notify is unavailable: unix_socket_rules are not enforced");
    }
    Ok(Backend::Ebpf(EbpfSessions { backend, unix_via_notify, attached: Mutex::default() }))
}

/// The backend sessions use, as `security` asks and the machine allows.
pub fn choose(config: &SecurityConfig) -> anyhow::Result<Arc<Backend>> {
    let chosen = match config.mode {
        SecurityMode::Auto => {
            let probe = seccomp_works()?;
            if probe.available {
                Backend::Seccomp
            } else {
                match ebpf(false) {
                    Ok(b) => b,
                    Err(e) => {
                        let ptrace = ptrace_works()?;
                        if !ptrace.available {
                            bail!(
                                "security.mode auto: no redirect backend works here: seccomp user-notify ({}), \
                                 eBPF ({e:#}), ptrace ({})",
                                probe.detail,
                                ptrace.detail
                            );
                        }
                        Backend::Ptrace
                    }
                }
            }
        }
        SecurityMode::Seccomp => {
            let probe = seccomp_works()?;
            if !probe.available {
                bail!("security.mode seccomp: seccomp user-notify does not work here ({})", probe.detail);
            }
            Backend::Seccomp
        }
        SecurityMode::Ebpf => ebpf(seccomp_works()?.available)
            .context("security.mode ebpf: the eBPF redirect programs do not load")?,
        SecurityMode::Ptrace => {
            let probe = ptrace_works()?;
            if !probe.available {
                bail!("security.mode ptrace: ptrace does not work here ({})", probe.detail);
            }
            Backend::Ptrace
        }
    };
    let strength = match chosen {
        Backend::Seccomp => SecurityMode::Seccomp.strength(),
        Backend::Ebpf(_) => SecurityMode::Ebpf.strength(),
        Backend::Ptrace => SecurityMode::Ptrace.strength(),
    };
    if let (Some(min), Some(have)) = (config.minimum_mode.and_then(SecurityMode::strength), strength)
        && have < min
    {
        bail!(
            "security.minimum_mode is not met: this machine offers the {} backend (`agentsh detect` shows why)",
            chosen.name()
        );
    }
    Ok(Arc::new(chosen))
}
