//! From probe results to the report: domains with weights, the score, the backend `auto` would
//! pick, tips for what is missing (with the points each would add), and a config snippet.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{ProbeName, ProbeResult};

/// The whole `detect` answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// `linux <release> <machine>`.
    pub platform: String,
    /// The redirect backend `security.mode: auto` picks here (`seccomp`, `ebpf`, `ptrace`), or
    /// `none` when no backend can funnel egress.
    pub security_mode: String,
    /// Sum of the scores of the domains (0–100).
    pub protection_score: u32,
    /// The five domains.
    pub domains: Vec<Domain>,
    /// Flat view of the findings.
    pub capabilities: Capabilities,
    /// Backend names, available and not.
    pub summary: Summary,
    /// One per missing backend.
    pub tips: Vec<Tip>,
}

/// A protection domain: its weight is scored when any of its backends is available.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Domain {
    /// `File Protection`, `Command Control`, `Network`, `Resource Limits`, `Isolation`.
    pub name: &'static str,
    /// Points the domain is worth.
    pub weight: u32,
    /// Points scored here.
    pub score: u32,
    /// Whether any backend is available.
    pub active: bool,
    /// The backends that can serve the domain.
    pub backends: Vec<Backend>,
}

/// One way of enforcing a domain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Backend {
    /// Backend name (`seccomp-notify`, `landlock`, …).
    pub name: &'static str,
    /// Whether the probe succeeded.
    pub available: bool,
    /// What the probe saw.
    pub detail: String,
    /// What the backend does.
    pub description: &'static str,
    /// `probe` (the thing was done) or `syscall` (a query answered).
    pub check_method: &'static str,
}

/// The findings, flat.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Capabilities {
    /// seccomp user-notify filters can be installed and answered.
    pub seccomp: bool,
    /// Same as `seccomp` (agentsh's name).
    pub seccomp_user_notify: bool,
    /// The kernel knows `SECCOMP_RET_USER_NOTIF`.
    pub seccomp_basic: bool,
    /// A Landlock ruleset can be created.
    pub landlock: bool,
    /// The Landlock ABI (0 when absent).
    pub landlock_abi: u32,
    /// Landlock can scope TCP (ABI ≥ 4).
    pub landlock_network: bool,
    /// FUSE can be mounted.
    pub fuse: bool,
    /// A child can be traced.
    pub ptrace: bool,
    /// A cgroup sock_addr program can be loaded and attached.
    pub ebpf: bool,
    /// The cgroup v2 hierarchy is mounted and a cgroup can be created in it.
    pub cgroups_v2: bool,
    /// Where the cgroup v2 hierarchy is mounted.
    pub cgroups_v2_mount: Option<String>,
    /// Controllers enabled on the cgroup v2 hierarchy.
    pub cgroups_v2_controllers: Vec<String>,
    /// A network namespace can be created.
    pub network_namespace: bool,
    /// A PID namespace can be created.
    pub pid_namespace: bool,
    /// Capabilities can be dropped.
    pub capabilities_drop: bool,
}

/// Backend names by outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Backends that work.
    pub available: Vec<&'static str>,
    /// Backends that do not.
    pub unavailable: Vec<&'static str>,
}

/// What is missing and how to get it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tip {
    /// The backend.
    pub feature: &'static str,
    /// Always `unavailable`.
    pub status: &'static str,
    /// What is lost without it.
    pub impact: &'static str,
    /// What to do.
    pub action: &'static str,
    /// Points the score would gain with it (0 when another backend already covers the domain).
    pub points: u32,
}

/// A backend as specified, with what its probe found.
type Probed = (&'static BackendSpec, Backend);

struct BackendSpec {
    name: &'static str,
    description: &'static str,
    impact: &'static str,
    action: &'static str,
    check_method: &'static str,
}

const SECCOMP_NOTIFY: BackendSpec = BackendSpec {
    name: "seccomp-notify",
    description: "seccomp user-notify: connect() redirected into the gateway, escape routes denied",
    impact: "no syscall-level redirection; egress falls back to eBPF or ptrace",
    action: "run on Linux ≥ 5.9 without a container seccomp profile that blocks seccomp(2) (e.g. docker --security-opt seccomp=unconfined)",
    check_method: "probe",
};
const LANDLOCK: BackendSpec = BackendSpec {
    name: "landlock",
    description: "Landlock: kernel-enforced read-only system paths, writable workspace",
    impact: "no kernel file sandbox under the FUSE workspace",
    action: "enable CONFIG_SECURITY_LANDLOCK and add landlock to the lsm= boot parameter",
    check_method: "probe",
};
const LANDLOCK_NET: BackendSpec = BackendSpec {
    name: "landlock-network",
    description: "Landlock ABI ≥ 4: TCP bind/connect scoping as a second layer under the funnel",
    impact: "no Landlock layer under the network funnel",
    action: "use Linux ≥ 6.7 (Landlock ABI 4)",
    check_method: "syscall",
};
const FUSE: BackendSpec = BackendSpec {
    name: "fuse",
    description: "FUSE workspace: per-operation file rules, file events, soft delete",
    impact: "no per-file policy or file events in the workspace",
    action: "load the fuse module and expose /dev/fuse (containers: --device /dev/fuse --cap-add SYS_ADMIN)",
    check_method: "probe",
};
const PTRACE: BackendSpec = BackendSpec {
    name: "ptrace",
    description: "ptrace fallback: connect() rewritten at syscall entry",
    impact: "no fallback where seccomp user-notify is unavailable",
    action: "allow ptrace (kernel.yama.ptrace_scope ≤ 1, CAP_SYS_PTRACE in containers)",
    check_method: "probe",
};
const EBPF: BackendSpec = BackendSpec {
    name: "ebpf",
    description: "eBPF cgroup/connect: redirect in the kernel for agents sharing the host network",
    impact: "no redirection for agents that must share the host network namespace",
    action: "run as root (or with CAP_BPF and CAP_NET_ADMIN) on a kernel with cgroup v2 and BPF cgroup sock_addr programs",
    check_method: "probe",
};
const CGROUPS: BackendSpec = BackendSpec {
    name: "cgroups-v2",
    description: "cgroup v2 with memory and pids controllers: per-session limits",
    impact: "no per-session memory, CPU or process limits",
    action: "boot with systemd.unified_cgroup_hierarchy=1 so the memory, cpu and pids controllers are on cgroup v2",
    check_method: "probe",
};
const PIDNS: BackendSpec = BackendSpec {
    name: "pid-namespace",
    description: "PID namespace: the agent cannot see or signal host processes",
    impact: "the agent sees host processes",
    action: "run as root or allow unprivileged user namespaces",
    check_method: "probe",
};
const NETNS: BackendSpec = BackendSpec {
    name: "network-namespace",
    description: "network namespace: only loopback, so any bypass of the funnel fails closed",
    impact: "a bypass of the funnel would reach the network",
    action: "run as root (CAP_SYS_ADMIN) or allow unprivileged user namespaces",
    check_method: "probe",
};
const CAPDROP: BackendSpec = BackendSpec {
    name: "capability-drop",
    description: "capabilities dropped from the bounding set",
    impact: "the agent keeps the launcher's capabilities",
    action: "run with CAP_SETPCAP (root)",
    check_method: "probe",
};

/// The report for `results` (a missing probe counts as unavailable) on `platform`.
pub fn report(results: &BTreeMap<ProbeName, ProbeResult>, platform: &str) -> Report {
    let missing = ProbeResult::no("not probed");
    let get = |p: ProbeName| results.get(&p).unwrap_or(&missing);
    let landlock_abi: u32 =
        get(ProbeName::Landlock).facts.get("abi").and_then(|a| a.parse().ok()).unwrap_or(0);
    let landlock_ok = get(ProbeName::Landlock).available;
    let cg = get(ProbeName::CgroupV2);
    let controllers: Vec<String> = cg
        .facts
        .get("controllers")
        .map(|c| c.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let limits_ok = cg.available && ["memory", "pids"].iter().all(|c| controllers.iter().any(|x| x == c));
    let limits_detail = if limits_ok {
        format!("controllers: {}", controllers.join(" "))
    } else if cg.available {
        format!(
            "cgroup v2 at {} has controllers [{}]; memory and pids are needed",
            cg.facts.get("mount").map_or("?", |m| m),
            controllers.join(" ")
        )
    } else {
        cg.detail.clone()
    };
    let netns_ok = get(ProbeName::NetworkNamespace).available;
    let landlock_net_detail = if landlock_abi >= 4 {
        format!("ABI {landlock_abi}")
    } else {
        format!("ABI {landlock_abi} (needs 4)")
    };
    let backend = |spec: &'static BackendSpec, available: bool, detail: String| {
        (
            spec,
            Backend {
                name: spec.name,
                available,
                detail,
                description: spec.description,
                check_method: spec.check_method,
            },
        )
    };
    let probed =
        |spec: &'static BackendSpec, p: ProbeName| backend(spec, get(p).available, get(p).detail.clone());
    let domains_spec: Vec<(&'static str, u32, Vec<Probed>)> = vec![
        (
            "File Protection",
            25,
            vec![
                probed(&LANDLOCK, ProbeName::Landlock),
                probed(&FUSE, ProbeName::Fuse),
                probed(&SECCOMP_NOTIFY, ProbeName::SeccompNotify),
            ],
        ),
        (
            "Command Control",
            25,
            vec![probed(&SECCOMP_NOTIFY, ProbeName::SeccompNotify), probed(&PTRACE, ProbeName::Ptrace)],
        ),
        (
            "Network",
            20,
            vec![
                probed(&SECCOMP_NOTIFY, ProbeName::SeccompNotify),
                probed(&EBPF, ProbeName::Ebpf),
                probed(&PTRACE, ProbeName::Ptrace),
                backend(&LANDLOCK_NET, landlock_ok && landlock_abi >= 4, landlock_net_detail),
            ],
        ),
        ("Resource Limits", 15, vec![backend(&CGROUPS, limits_ok, limits_detail)]),
        (
            "Isolation",
            15,
            vec![
                probed(&PIDNS, ProbeName::PidNamespace),
                probed(&NETNS, ProbeName::NetworkNamespace),
                probed(&CAPDROP, ProbeName::CapabilityDrop),
            ],
        ),
    ];
    let mut domains = Vec::new();
    let mut tips = Vec::new();
    let mut available = Vec::new();
    let mut unavailable = Vec::new();
    for (name, weight, backends) in domains_spec {
        let active = backends.iter().any(|(_, b)| b.available);
        for (spec, b) in &backends {
            let list = if b.available { &mut available } else { &mut unavailable };
            if !list.contains(&b.name) {
                list.push(b.name);
            }
            if !b.available && !tips.iter().any(|t: &Tip| t.feature == spec.name) {
                tips.push(Tip {
                    feature: spec.name,
                    status: "unavailable",
                    impact: spec.impact,
                    action: spec.action,
                    points: 0,
                });
            }
        }
        // An inactive domain is won back by its first (preferred) backend.
        if !active
            && let Some((first, _)) = backends.first()
            && let Some(t) = tips.iter_mut().find(|t| t.feature == first.name)
        {
            t.points += weight;
        }
        domains.push(Domain {
            name,
            weight,
            score: if active { weight } else { 0 },
            active,
            backends: backends.into_iter().map(|(_, b)| b).collect(),
        });
    }
    unavailable.retain(|n| !available.contains(n));
    let seccomp = get(ProbeName::SeccompNotify).available;
    let ebpf = get(ProbeName::Ebpf).available;
    let ptrace = get(ProbeName::Ptrace).available;
    let security_mode = if seccomp && netns_ok {
        "seccomp"
    } else if ebpf {
        "ebpf"
    } else if ptrace {
        "ptrace"
    } else {
        "none"
    };
    Report {
        platform: platform.to_string(),
        security_mode: security_mode.into(),
        protection_score: domains.iter().map(|d| d.score).sum(),
        domains,
        capabilities: Capabilities {
            seccomp,
            seccomp_user_notify: seccomp,
            seccomp_basic: get(ProbeName::SeccompBasic).available,
            landlock: landlock_ok,
            landlock_abi,
            landlock_network: landlock_ok && landlock_abi >= 4,
            fuse: get(ProbeName::Fuse).available,
            ptrace,
            ebpf,
            cgroups_v2: cg.available,
            cgroups_v2_mount: cg.facts.get("mount").cloned(),
            cgroups_v2_controllers: controllers,
            network_namespace: netns_ok,
            pid_namespace: get(ProbeName::PidNamespace).available,
            capabilities_drop: get(ProbeName::CapabilityDrop).available,
        },
        summary: Summary { available, unavailable },
        tips,
    }
}

/// A server config snippet for this machine (`agentsh detect config`): the backend to pin,
/// strictness when the best backend is there, and the findings as comments.
pub fn config_snippet(r: &Report) -> String {
    let c = &r.capabilities;
    let yes = |b: bool| if b { "yes" } else { "no" };
    let mut s = format!(
        "# agentsh server config for this machine ({}), written by `agentsh detect config`.\n\
         # Protection score {}/100. Findings: seccomp user-notify {}, eBPF {}, ptrace {},\n\
         # Landlock {} (ABI {}), FUSE {}, network namespace {}, cgroup v2 {}.\n",
        r.platform,
        r.protection_score,
        yes(c.seccomp),
        yes(c.ebpf),
        yes(c.ptrace),
        yes(c.landlock),
        c.landlock_abi,
        yes(c.fuse),
        yes(c.network_namespace),
        c.cgroups_v2_mount.as_deref().unwrap_or("no"),
    );
    match r.security_mode.as_str() {
        "none" => s.push_str(
            "# No redirect backend works here: agentsh cannot funnel egress on this machine.\n\
             security:\n  mode: auto\n  strict: true\n",
        ),
        mode => {
            s.push_str(&format!("security:\n  mode: {mode}\n  minimum_mode: {mode}\n"));
            s.push_str(&format!("  strict: {}\n", mode == "seccomp"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(available: bool) -> BTreeMap<ProbeName, ProbeResult> {
        ProbeName::ALL
            .into_iter()
            .map(|p| {
                let r = if available { ProbeResult::ok("ok") } else { ProbeResult::no("EPERM") };
                (p, r)
            })
            .collect()
    }

    #[test]
    fn everything_available_scores_100_with_no_tips() {
        let mut r = all(true);
        r.insert(ProbeName::Landlock, ProbeResult::ok("ABI 7").fact("abi", "7"));
        r.insert(
            ProbeName::CgroupV2,
            ProbeResult::ok("ok").fact("mount", "/sys/fs/cgroup").fact("controllers", "cpu memory pids"),
        );
        let rep = report(&r, "linux test");
        assert_eq!(rep.protection_score, 100);
        assert!(rep.tips.is_empty(), "{:?}", rep.tips);
        assert_eq!(rep.security_mode, "seccomp");
        assert!(rep.capabilities.landlock_network);
        assert!(rep.summary.unavailable.is_empty());
    }

    #[test]
    fn nothing_available_scores_0_and_every_domain_has_a_paying_tip() {
        let rep = report(&all(false), "linux test");
        assert_eq!(rep.protection_score, 0);
        assert_eq!(rep.security_mode, "none");
        assert_eq!(rep.tips.iter().map(|t| t.points).sum::<u32>(), 100, "{:#?}", rep.tips);
        assert!(rep.summary.available.is_empty());
    }

    #[test]
    fn hybrid_cgroups_without_controllers_lose_resource_limits_only() {
        let mut r = all(true);
        r.insert(ProbeName::Landlock, ProbeResult::ok("ABI 7").fact("abi", "7"));
        r.insert(
            ProbeName::CgroupV2,
            ProbeResult::ok("ok").fact("mount", "/sys/fs/cgroup/unified").fact("controllers", ""),
        );
        let rep = report(&r, "linux test");
        assert_eq!(rep.protection_score, 85);
        assert_eq!(rep.tips.len(), 1);
        assert_eq!((rep.tips[0].feature, rep.tips[0].points), ("cgroups-v2", 15));
        assert!(rep.capabilities.cgroups_v2, "the hierarchy itself works");
    }

    #[test]
    fn without_seccomp_the_next_backend_is_chosen_and_covered_domains_cost_nothing() {
        let mut r = all(true);
        r.insert(ProbeName::SeccompNotify, ProbeResult::no("EBUSY"));
        let rep = report(&r, "linux test");
        assert_eq!(rep.security_mode, "ebpf");
        let tip = rep.tips.iter().find(|t| t.feature == "seccomp-notify").expect("tip");
        assert_eq!(tip.points, 0, "ptrace and FUSE still cover its domains");
        r.insert(ProbeName::Ebpf, ProbeResult::no("EPERM"));
        assert_eq!(report(&r, "x").security_mode, "ptrace");
    }

    #[test]
    fn config_snippet_pins_the_chosen_backend() {
        let rep = report(&all(true), "linux test");
        let s = config_snippet(&rep);
        assert!(s.contains("security:\n  mode: seccomp\n  minimum_mode: seccomp\n  strict: true\n"), "{s}");
        let none = config_snippet(&report(&all(false), "linux test"));
        assert!(none.contains("mode: auto"), "{none}");
    }
}
