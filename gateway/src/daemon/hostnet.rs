//! Commands under the eBPF backend: the command shares the host's network namespace and runs in a
//! cgroup of its own below the session's, to which the redirect programs are attached before it
//! starts. Its connects are rewritten in the kernel to the gateway's listeners on the host
//! loopback, its DNS to the session resolver there, and the destinations the policy denies
//! outright are refused in the kernel (EPERM) with an audit event.
//!
//! Order matters both ways: the programs are attached, and proven by the backend's self-test,
//! before any process of the command exists; they are detached only once its cgroup is empty,
//! and a cgroup that cannot be emptied stays attached.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use ipnet::IpNet;
use policies::{Policy, Verdict};
use redirect::ebpf::{Attached, DenyRule, Refusal, RefusalReason, SessionParams};
use sandbox::cgroup::SessionCgroup;

use super::{
    Daemon,
    backend::EbpfSessions,
    netns::{SharedLoopback, bind_shared_loopback},
    session::Session,
};
use crate::events::{Event, EventPolicy};

/// Port ranges up to this long become one kernel rule per port; longer ones are left to the
/// funnel (which denies them all the same, after the connection reached it).
const MAX_PORTS_PER_RULE: u32 = 64;

/// The rules the kernel can enforce: every CIDR of a deny rule without domains (a rule with
/// neither domains nor CIDRs matches every address), as long as only deny rules come before it
/// (a name could make an earlier allow match first, and an earlier allow by address could cover
/// part of the range). Loopback is left out: the command's own loopback servers stay reachable,
/// as in a private namespace, and the host's are decided by the funnel. Each rule's policy name,
/// by position.
pub fn kernel_denies(policy: &Policy) -> (Vec<DenyRule>, Vec<(String, Option<String>)>) {
    let (mut rules, mut names) = (Vec::new(), Vec::new());
    for rule in &policy.network_rules {
        if rule.decision != Verdict::Deny {
            break;
        }
        if !rule.domains.is_empty() {
            continue;
        }
        let ports: Option<Vec<Option<u16>>> = if rule.ports.is_empty() {
            Some(vec![None])
        } else if rule.ports.iter().map(|p| u32::from(p.end - p.start) + 1).sum::<u32>() <= MAX_PORTS_PER_RULE
        {
            Some(rule.ports.iter().flat_map(|p| p.start..=p.end).map(Some).collect())
        } else {
            None
        };
        let Some(ports) = ports else { continue };
        let nets: Vec<IpNet> = if rule.cidrs.is_empty() {
            vec![IpNet::V4(Default::default()), IpNet::V6(Default::default())]
        } else {
            rule.cidrs.iter().map(|c| c.net()).collect()
        };
        for net in nets.iter().flat_map(|n| without_loopback(*n)) {
            for &port in &ports {
                rules.push(DenyRule { net, port });
                names.push((rule.name.clone(), rule.message.clone()));
            }
        }
    }
    (rules, names)
}

/// `net` without the loopback ranges (127.0.0.0/8, ::1), which are the command's own, and the
/// attach self-test's sentinels (which must reach the gateway): the parts of it that touch none
/// of them. An IPv6 network holding `::1` keeps only the global, unique-local and link-local
/// prefixes it covers; what is left out is still denied, by the funnel.
fn without_loopback(net: IpNet) -> Vec<IpNet> {
    let holes: [IpNet; 3] = [
        "127.0.0.0/8".parse().expect("valid"),
        IpNet::from(std::net::IpAddr::V4(*redirect::ebpf::SENTINEL_V4.ip())),
        IpNet::from(std::net::IpAddr::V6(*redirect::ebpf::SENTINEL_V6.ip())),
    ];
    let start = match net {
        IpNet::V6(n) if n.contains(&std::net::Ipv6Addr::LOCALHOST) => ["2000::/3", "fc00::/7", "fe80::/10"]
            .iter()
            .map(|p| p.parse::<IpNet>().expect("valid"))
            .filter(|p| net.contains(p))
            .collect(),
        other => vec![other],
    };
    holes.iter().fold(start, |nets, hole| nets.into_iter().flat_map(|n| subtract(n, *hole)).collect())
}

/// `net` minus `hole`: nothing when `hole` covers it, `net` itself when they do not meet, else
/// the sibling of every halving on the way down to `hole`.
fn subtract(net: IpNet, hole: IpNet) -> Vec<IpNet> {
    if hole.contains(&net) {
        return Vec::new();
    }
    if !net.contains(&hole) {
        return vec![net];
    }
    let mut out = Vec::new();
    let mut cur = net;
    while cur.prefix_len() < hole.prefix_len() {
        let halves: Vec<IpNet> = cur.subnets(cur.prefix_len() + 1).expect("a longer prefix").collect();
        let (inside, outside) =
            if halves[0].contains(&hole) { (halves[0], halves[1]) } else { (halves[1], halves[0]) };
        out.push(outside);
        cur = inside;
    }
    out
}

/// One command's host-network set-up: its cgroup with the programs attached, and the gateway's
/// sockets on the host loopback.
pub struct HostNet {
    /// The gateway's listeners and the session resolver's sockets.
    pub sockets: Option<SharedLoopback>,
    /// The attached programs (the funnel names connections through them).
    pub attached: Arc<Attached>,
    /// Unix socket connects go to the supervisor (see [`EbpfSessions::unix_via_notify`]).
    pub unix_via_notify: bool,
    cgroup_dir: PathBuf,
    /// Taken by the clean-up on drop.
    cgroup: Option<SessionCgroup>,
    ebpf: Arc<super::backend::Backend>,
}

impl HostNet {
    /// Create the command's cgroup under the session's, bind the gateway's sockets and attach
    /// the programs (self-test included). Nothing of the command runs yet.
    pub fn prepare(daemon: &Daemon, session: &Session, command_id: &str) -> anyhow::Result<HostNet> {
        let ebpf = ebpf_sessions(daemon).context("the eBPF backend is not in use")?;
        let parent = session.cgroup_path().context("the session is being destroyed")?;
        let cgroup =
            SessionCgroup::create_in(&parent, command_id).context("creating the command's cgroup")?;
        let sockets = match bind_shared_loopback() {
            Ok(s) => s,
            Err(e) => {
                let _ = cgroup.remove();
                return Err(e.context("binding the gateway on the host loopback"));
            }
        };
        let (deny_list, names) = kernel_denies(&session.policy);
        let params = params(&sockets, deny_list);
        let attached = match params.and_then(|p| Ok(ebpf.backend.attach(cgroup.path(), p)?)) {
            Ok(a) => Arc::new(a),
            Err(e) => {
                let _ = cgroup.remove();
                return Err(e.context("attaching the eBPF redirect programs"));
            }
        };
        // The self-test's probe connections wait in the accept queues, their records already
        // taken; no process of the command exists yet, so whatever is queued now is theirs.
        for l in &sockets.gateway {
            if l.set_nonblocking(true).is_ok() {
                while l.accept().is_ok() {}
            }
        }
        ebpf.attached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(attached.cgroup_id(), (session.id.clone(), command_id.to_string(), names));
        Ok(HostNet {
            sockets: Some(sockets),
            attached,
            unix_via_notify: ebpf.unix_via_notify,
            cgroup_dir: cgroup.path().to_path_buf(),
            cgroup: Some(cgroup),
            ebpf: daemon.backend.clone(),
        })
    }

    /// The command's cgroup (launch the command into it).
    pub fn cgroup_path(&self) -> &Path {
        &self.cgroup_dir
    }
}

/// After the command ended (or when it never started): kill what is left of it, and once its
/// cgroup is empty, detach the programs and remove the cgroup. A cgroup that does not empty
/// keeps its programs (its processes stay funnelled) and is left for the session's destruction.
impl Drop for HostNet {
    fn drop(&mut self) {
        let Some(cgroup) = self.cgroup.take() else { return };
        let _ = cgroup.kill_all();
        // Gone already means empty: the session's destruction removes the cgroups below its own.
        let empty = !cgroup.path().exists() || cgroup.wait_empty(Duration::from_secs(5)).unwrap_or(false);
        if !empty {
            tracing::warn!(cgroup = %cgroup.path().display(), "command cgroup not empty; leaving it attached");
            std::mem::forget(self.attached.clone());
            return;
        }
        if let Some(ebpf) = ebpf_of(&self.ebpf) {
            ebpf.attached.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.attached.cgroup_id());
        }
        // The funnel may still hold the programs for connections it is finishing; they detach
        // with the last holder, and the cgroup directory goes now (it is empty).
        let _ = cgroup.remove();
    }
}

fn ebpf_of(backend: &super::backend::Backend) -> Option<&EbpfSessions> {
    match backend {
        super::backend::Backend::Ebpf(e) => Some(e),
        super::backend::Backend::Seccomp | super::backend::Backend::Ptrace => None,
    }
}

fn ebpf_sessions(daemon: &Daemon) -> Option<&EbpfSessions> {
    ebpf_of(&daemon.backend)
}

fn params(sockets: &SharedLoopback, deny_list: Vec<DenyRule>) -> anyhow::Result<SessionParams> {
    let v4 = |a: std::net::SocketAddr| match a {
        std::net::SocketAddr::V4(a) => Ok(a),
        other => Err(anyhow::anyhow!("{other} is not IPv4")),
    };
    let v6 = |a: std::net::SocketAddr| match a {
        std::net::SocketAddr::V6(a) => Some(a),
        std::net::SocketAddr::V4(_) => None,
    };
    let [dns4, dns6] = sockets.dns.udp_addrs()?;
    Ok(SessionParams {
        gateway_v4: v4(sockets.gateway[0].local_addr()?)?,
        gateway_v6: v6(sockets.gateway[1].local_addr()?),
        dns_v4: v4(dns4)?,
        dns_v6: v6(dns6),
        deny_list,
    })
}

/// The audit event for one refusal the kernel made, if it belongs to a live command.
fn refusal_event(ebpf: &EbpfSessions, r: &Refusal) -> Option<Event> {
    // A refused UDP connect sent nothing (glibc sorting `getaddrinfo` answers does it for every
    // address); the seccomp backend is silent about it too. Sends are reported.
    if matches!(r.reason, RefusalReason::SelfTest | RefusalReason::UdpConnect) {
        return None;
    }
    let (session_id, command_id, names) = ebpf.owner(r.cgroup_id)?;
    let (rule, message) = match (r.reason, r.rule.and_then(|m| m.index)) {
        (RefusalReason::DenyRule, Some(i)) => {
            names.get(i).cloned().unwrap_or_else(|| ("deny-rule".into(), None))
        }
        // The seccomp backend's names for the same refusals.
        (RefusalReason::Udp, _) => ("datagram-egress".into(), None),
        (RefusalReason::Egress, _) => ("egress-not-funnelled".into(), None),
        (reason, _) => (format!("ebpf-{reason:?}").to_lowercase(), None),
    };
    let mut e = Event::new("net_connect_blocked", &session_id);
    e.command_id = Some(command_id);
    e.pid = i32::try_from(r.tgid).ok().filter(|p| *p != 0);
    e.remote = Some(redirect::sockaddr::canonical(r.dst).to_string());
    e.policy = Some(EventPolicy { decision: "deny".into(), rule, message });
    let transport = match r.transport {
        Some(redirect::Transport::Tcp) => "tcp",
        Some(redirect::Transport::Udp) => "udp",
        None => "other",
    };
    Some(e.field("stage", "kernel").field("backend", "ebpf").field("transport", transport))
}

/// Record the kernel's refusals as events, for as long as the daemon runs (a thread that
/// sleeps in `poll` on the ring buffer).
pub fn report_refusals(daemon: &Arc<Daemon>) -> anyhow::Result<()> {
    let Some(ebpf) = ebpf_sessions(daemon) else { return Ok(()) };
    let mut refusals = ebpf.backend.refusals().context("the eBPF refusal stream was already taken")?;
    let daemon = daemon.clone();
    std::thread::Builder::new().name("agentsh-refusals".into()).spawn(move || {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let Some(ebpf) = ebpf_sessions(&daemon) else { return };
        loop {
            for r in refusals.by_ref() {
                if let Some(e) = refusal_event(ebpf, &r) {
                    daemon.recorder.record(e);
                }
            }
            let mut fds = [PollFd::new(refusals.as_fd(), PollFlags::POLLIN)];
            if let Err(e) = poll(&mut fds, PollTimeout::NONE)
                && e != nix::errno::Errno::EINTR
            {
                tracing::error!(error = %e, "polling the eBPF refusal stream");
                return;
            }
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Policy {
        policies::load_policy(yaml, "t.yaml").expect("policy loads")
    }

    #[test]
    fn only_address_denies_before_any_other_verdict_reach_the_kernel() {
        let p = policy(
            "version: 1\nname: t\nnetwork_rules:\n\
             - {name: doh, domains: [dns.google], decision: deny}\n\
             - {name: private, cidrs: [10.0.0.0/8, 'fd00::/8'], decision: deny}\n\
             - {name: smtp, cidrs: [0.0.0.0/0], ports: [25, 465], decision: deny}\n\
             - {name: wide, cidrs: [192.0.2.0/24], ports: ['1-65535'], decision: deny}\n\
             - {name: web, domains: [example.com], decision: allow}\n\
             - {name: late, cidrs: [198.51.100.0/24], decision: deny}\n",
        );
        let (rules, names) = kernel_denies(&p);
        let got: Vec<(String, Option<u16>, &str)> =
            rules.iter().zip(&names).map(|(r, n)| (r.net.to_string(), r.port, n.0.as_str())).collect();
        assert_eq!(
            &got[..2],
            [("10.0.0.0/8".to_string(), None, "private"), ("fd00::/8".to_string(), None, "private"),]
        );
        let rule_for = |dst: &str| {
            let dst = dst.parse().unwrap();
            rules.iter().zip(&names).find(|(r, _)| r.covers(dst)).map(|(_, n)| n.0.as_str())
        };
        assert_eq!(rule_for("203.0.113.5:25"), Some("smtp"));
        assert_eq!(rule_for("8.8.8.8:465"), Some("smtp"));
        assert_eq!(rule_for("203.0.113.5:80"), None);
        assert_eq!(rule_for("127.0.0.1:25"), None, "loopback is the command's own");
        assert_eq!(rule_for("192.0.2.1:80"), None, "a range of more ports than the kernel takes");
        assert_eq!(rule_for("198.51.100.1:80"), None, "after an allow");
    }

    #[test]
    fn a_deny_everything_rule_reaches_the_kernel_without_loopback() {
        let p = policy(
            "version: 1\nname: t\nnetwork_rules:\n\
             - {name: all, decision: deny}\n\
             - {name: later, cidrs: [127.0.0.0/16], decision: deny}\n",
        );
        let (rules, names) = kernel_denies(&p);
        for dst in
            ["0.0.0.1:1", "126.255.255.255:80", "128.0.0.0:443", "203.0.113.5:443", "[2001:db8::1]:443"]
        {
            assert!(rules.iter().any(|r| r.covers(dst.parse().unwrap())), "{dst} denied");
        }
        let sentinels = [redirect::ebpf::SENTINEL_V4.to_string(), redirect::ebpf::SENTINEL_V6.to_string()];
        for dst in ["127.0.0.1:80", "127.1.2.3:80", "[::1]:80", "[::ffff:127.0.0.1]:80"]
            .into_iter()
            .chain(sentinels.iter().map(String::as_str))
        {
            assert!(!rules.iter().any(|r| r.covers(dst.parse().unwrap())), "{dst} left to the command");
        }
        assert!(names.iter().all(|n| n.0 == "all"), "the loopback-only rule adds nothing: {names:?}");
    }

    #[test]
    fn the_default_policy_denies_private_ranges_in_the_kernel() {
        let p = policy(policies::embedded::source("default").expect("default policy"));
        let (rules, names) = kernel_denies(&p);
        assert!(rules.iter().any(|r| r.covers("169.254.169.254:80".parse().unwrap())));
        assert!(rules.iter().any(|r| r.covers("[::ffff:10.1.2.3]:443".parse().unwrap())));
        assert!(!rules.iter().any(|r| r.covers("93.184.216.34:443".parse().unwrap())));
        assert!(names.iter().all(|n| n.0 == "no-private-or-metadata"), "{names:?}");
    }
}
