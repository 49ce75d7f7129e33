//! The session's answer to the seccomp supervisor: where may this socket go. It only decides
//! (and records blocked attempts); the supervisor does the IO. The full decision on name + IP +
//! port is made later by the funnel, once the first bytes name the destination.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Component, Path, PathBuf},
    sync::Arc,
};

use policies::{CompiledPolicy, ConnectRequest, Decision, Policy};
use policies::{engine::unix::UnixTarget, model::unix::UnixOperation};
use redirect::{
    Action,
    decide::{CallKind, ConnectDecider, SockInfo, UnixRefusal},
    sockaddr::UnixAddr,
};

use super::Recorder;
use crate::events::Event;

/// Where the sandbox sees the session's state dir.
pub const SANDBOX_STATE_DIR: &str = "/run/agentsh";

/// Per-command decider.
pub struct SessionDecider {
    /// Session id, for events.
    pub session_id: String,
    /// Command id, for events.
    pub command_id: String,
    /// The policy as loaded (rule details).
    pub policy: Arc<Policy>,
    /// The compiled policy.
    pub compiled: Arc<CompiledPolicy>,
    /// The gateway listener for IPv4 sockets.
    pub gateway_v4: SocketAddr,
    /// The gateway listener for IPv6 sockets.
    pub gateway_v6: SocketAddr,
    /// The workspace: Unix sockets inside it are reachable.
    pub workspace: PathBuf,
    /// Event sink.
    pub recorder: Arc<Recorder>,
    /// The session resolver: names of synthetic and remembered addresses.
    pub resolver: Arc<dns::SessionResolver>,
    /// The session's database proxies: a connect to a service's upstream goes to the funnel,
    /// which hands it to the proxy, even on the host's loopback.
    pub db: Option<Arc<super::db::SessionDb>>,
    /// Where the agent reaches the session resolver, per family: `127.0.0.1:53` and `[::1]:53`
    /// in a sandbox's own namespace; the resolver's own ports when the agent shares a network
    /// namespace (`wrap`).
    pub resolver_addrs: [SocketAddr; 2],
    /// The agent shares a network namespace (`wrap`): its loopback is not its own, so loopback
    /// destinations are decided by policy like any other (only a CIDR rule exports them).
    pub shared_netns: bool,
    /// Where the agent sees the session's state dir (its sockets): `/run/agentsh` in a sandbox,
    /// the session's own dir on the host under `wrap`.
    pub state_dir: PathBuf,
    /// Unix paths already reported as blocked (programs retry, e.g. glibc's nscd lookups).
    pub reported_unix: std::sync::Mutex<std::collections::HashSet<PathBuf>>,
    /// The policy's `unix_socket_rules`, compiled with this command's variables.
    pub unix_rules: policies::engine::unix::UnixRules,
    /// With the FUSE workspace: the socket files behind its inodes (a listener bound on the
    /// host side in the workspace is reached through them).
    pub backing_sockets: Option<sandbox::workspace::BackingSockets>,
}

/// The position of the rule named `rule` in `network_rules`, if it is one.
fn rule_index(policy: &Policy, rule: &str) -> Option<usize> {
    policy.network_rules.iter().position(|r| r.name == rule)
}

/// A decision on the address alone is final when the deciding rule does not look at names and
/// no earlier rule could match by name instead (the name is only known once the first bytes
/// come). The built-in default deny is never final: a name rule may still allow.
pub(super) fn final_on_address(policy: &Policy, d: &Decision) -> bool {
    match rule_index(policy, &d.rule) {
        Some(i) => {
            policy.network_rules[i].domains.is_empty()
                && policy.network_rules[..i].iter().all(|r| r.domains.is_empty())
        }
        None => false,
    }
}

/// Whether a connect to the host's loopback `dst` is exported by an explicit CIDR rule.
pub fn loopback_exported(policy: &Policy, compiled: &CompiledPolicy, dst: SocketAddr) -> bool {
    let d = compiled.decide_connect(&ConnectRequest::by_ip(dst.ip(), dst.port()));
    d.verdict.permits()
        && rule_index(policy, &d.rule).is_some_and(|i| !policy.network_rules[i].cidrs.is_empty())
}

/// One of the sandbox's own addresses on its `lo` ([`sandbox::SANDBOX_SELF_V4`],
/// [`sandbox::SANDBOX_SELF_V6`], also v4-mapped): a destination that never leaves the sandbox's
/// network namespace, like its loopback.
fn is_sandbox_self(dst: SocketAddr) -> bool {
    match dst.ip() {
        IpAddr::V4(a) => a == sandbox::SANDBOX_SELF_V4,
        IpAddr::V6(a) => {
            a == sandbox::SANDBOX_SELF_V6 || a.to_ipv4_mapped() == Some(sandbox::SANDBOX_SELF_V4)
        }
    }
}

/// The session resolver's addresses inside a sandbox's own network namespace.
pub const SANDBOX_RESOLVERS: [SocketAddr; 2] = [
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 53),
    SocketAddr::new(std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), 53),
];

/// Lexically normalise `path` (resolving `.` and `..`), relative to `cwd` when not absolute.
fn normalise(path: &Path, cwd: Option<&Path>) -> Option<PathBuf> {
    let joined = if path.is_absolute() { path.to_path_buf() } else { cwd?.join(path) };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
        }
    }
    Some(out)
}

/// Where a command's agent reaches the gateway and the resolver, and how it shares the network.
pub struct Reach {
    /// The gateway's listeners, IPv4 then IPv6.
    pub gateway: [SocketAddr; 2],
    /// See [`SessionDecider::resolver_addrs`].
    pub resolver_addrs: [SocketAddr; 2],
    /// See [`SessionDecider::shared_netns`].
    pub shared_netns: bool,
    /// See [`SessionDecider::state_dir`].
    pub state_dir: PathBuf,
}

impl SessionDecider {
    /// The decider of one command of `session`; `env` gives the variables of its Unix socket
    /// rules besides `WORKSPACE`/`PROJECT_ROOT`.
    pub fn for_command(
        daemon: &super::Daemon,
        session: &super::session::Session,
        command_id: &str,
        reach: Reach,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> SessionDecider {
        let workspace = session.workspace.display().to_string();
        SessionDecider {
            session_id: session.id.clone(),
            command_id: command_id.to_string(),
            policy: session.policy.clone(),
            compiled: session.compiled.clone(),
            gateway_v4: reach.gateway[0],
            gateway_v6: reach.gateway[1],
            workspace: session.workspace.clone(),
            recorder: daemon.recorder.clone(),
            resolver: session.resolver.clone(),
            db: session.db.clone(),
            resolver_addrs: reach.resolver_addrs,
            shared_netns: reach.shared_netns,
            state_dir: reach.state_dir,
            reported_unix: Default::default(),
            backing_sockets: session.backing_sockets(),
            unix_rules: policies::engine::unix::UnixRules::new(&session.policy.unix_socket_rules, &|name| {
                match name {
                    "PROJECT_ROOT" | "WORKSPACE" => Some(workspace.clone()),
                    other => env(other),
                }
            }),
        }
    }

    fn blocked(&self, kind: &str, remote: String, pid: u32, d: &Decision, fields: &[(&str, String)]) {
        let mut e = Event::new(kind, &self.session_id);
        e.command_id = Some(self.command_id.clone());
        e.pid = i32::try_from(pid).ok();
        e.remote = Some(remote);
        e.policy = Some(d.into());
        for (k, v) in fields {
            e.fields.insert((*k).to_string(), v.clone().into());
        }
        self.recorder.record(e);
    }

    fn gateway_for(&self, sock: SockInfo) -> SocketAddr {
        if sock.family == libc::AF_INET6 { self.gateway_v6 } else { self.gateway_v4 }
    }

    /// Whether an AF_UNIX pathname is reachable: the session's own sockets and the workspace.
    fn unix_allowed(&self, path: &Path) -> bool {
        path.starts_with(&self.state_dir) || path.starts_with(&self.workspace)
    }

    /// The path as the agent meant it (absolute, lexically normalised against its cwd), for
    /// deciding and for events.
    fn unix_path(raw: &[u8], pid: u32) -> (PathBuf, Option<PathBuf>) {
        let path = Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(raw));
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
        (path.to_path_buf(), normalise(path, cwd.as_deref()))
    }

    /// Records one `unix_socket_blocked` per path (programs retry, e.g. glibc's nscd lookups).
    fn unix_blocked(&self, shown: PathBuf, pid: u32, rule: &str, message: &str) {
        let first = self.reported_unix.lock().unwrap_or_else(|p| p.into_inner()).insert(shown.clone());
        if first {
            let d = Decision {
                verdict: policies::Verdict::Deny,
                rule: rule.into(),
                message: Some(message.into()),
            };
            self.blocked("unix_socket_blocked", shown.display().to_string(), pid, &d, &[]);
        }
    }
}

impl ConnectDecider for SessionDecider {
    fn decide(&self, dst: SocketAddr, sock: SockInfo, pid: u32) -> Action {
        self.decide_call(CallKind::Connect, dst, sock, pid)
    }

    fn decide_call(&self, call: CallKind, dst: SocketAddr, sock: SockInfo, pid: u32) -> Action {
        if is_sandbox_self(dst) {
            // The sandbox itself, on any port and transport (a DNS server of its own included):
            // it stays inside the namespace, so it is never redirected nor dialled from the host.
            return Action::Continue;
        }
        if self.resolver_addrs.contains(&dst) {
            return Action::Continue;
        }
        if dst.port() == 53 {
            // Every DNS question goes to the session resolver, whatever server it was meant for.
            return Action::Redirect(self.resolver_addrs[usize::from(sock.family == libc::AF_INET6)]);
        }
        let exported = dst.ip().is_loopback()
            && (loopback_exported(&self.policy, &self.compiled, dst)
                || self.db.as_ref().is_some_and(|db| db.for_connect(dst, None).is_some()));
        if dst.ip().is_loopback() && !exported && !self.shared_netns {
            return Action::Continue; // stays on the sandbox's own loopback
        }
        if !sock.is_stream() && call == CallKind::Connect {
            // Connecting a datagram socket sends nothing (glibc does it to sort addresses); the
            // sandbox has no route, so the kernel answers ENETUNREACH itself. Sends are decided.
            return Action::Continue;
        }
        if !sock.is_stream() || call == CallKind::Send {
            let d = Decision {
                verdict: policies::Verdict::Deny,
                rule: "datagram-egress".into(),
                message: Some("only TCP leaves the sandbox; UDP and raw datagrams are refused".into()),
            };
            self.blocked("net_connect_blocked", dst.to_string(), pid, &d, &[("transport", "udp".into())]);
            return Action::Deny(libc::EACCES);
        }
        if let Some(name) = self.resolver.name_for(dst.ip()) {
            // The address names exactly one host: the decision on the name is final now.
            let d = self.compiled.decide_connect(&ConnectRequest::by_name(name.clone(), dst.port()));
            if !d.verdict.permits() {
                let fields = [("stage", "connect".to_string()), ("domain", name.to_string())];
                self.blocked("net_connect_blocked", format!("{name}:{}", dst.port()), pid, &d, &fields);
                return Action::Deny(libc::EACCES);
            }
            return Action::Redirect(self.gateway_for(sock));
        }
        let quick = self.compiled.decide_connect(&ConnectRequest::by_ip(dst.ip(), dst.port()));
        if !quick.verdict.permits() && final_on_address(&self.policy, &quick) {
            self.blocked("net_connect_blocked", dst.to_string(), pid, &quick, &[("stage", "connect".into())]);
            return Action::Deny(libc::EACCES);
        }
        Action::Redirect(self.gateway_for(sock))
    }

    fn decide_unix(&self, addr: &UnixAddr, _sock: SockInfo, pid: u32) -> Action {
        let raw = match addr {
            UnixAddr::Pathname(raw) => raw,
            UnixAddr::Abstract(name) => {
                // Abstract names belong to the network namespace: the sandbox's own ones are
                // reachable unless a rule says otherwise, but in a shared namespace they are the
                // host's (container shims, session buses) and only a rule opens them. Pinned
                // either way, so the bytes cannot turn into a path after this answer.
                let shown = || PathBuf::from(format!("@{}", String::from_utf8_lossy(name)));
                return match self.unix_rules.decide(UnixTarget::Abstract(name), UnixOperation::Connect) {
                    Some(d) if !d.verdict.permits() => {
                        let message = d.message.as_deref().unwrap_or("refused by rule");
                        self.unix_blocked(shown(), pid, &d.rule, message);
                        Action::Deny(libc::EACCES)
                    }
                    None if self.shared_netns => {
                        let message = "abstract sockets of a shared network namespace are the host's";
                        self.unix_blocked(shown(), pid, "default-deny-unix", message);
                        Action::Deny(libc::EACCES)
                    }
                    _ => Action::ConnectUnixPinned,
                };
            }
            UnixAddr::Unnamed => return Action::Continue,
        };
        // Lexical here; the supervisor then resolves the path with no symlink followed and
        // connects to the inode it checked, so the text decided on is the file reached.
        let (path, normal) = Self::unix_path(raw, pid);
        if let Some(p) = &normal
            && let Some(d) = self.unix_rules.decide(UnixTarget::Path(p), UnixOperation::Connect)
        {
            if d.verdict.permits() {
                return Action::ConnectUnixPinned;
            }
            self.unix_blocked(p.clone(), pid, &d.rule, d.message.as_deref().unwrap_or("refused by rule"));
            return Action::Deny(libc::EACCES);
        }
        match (path, normal) {
            (_, Some(p)) if self.unix_allowed(&p) => Action::ConnectUnixPinned,
            // The sandbox's /run is an empty private tmpfs: nothing can listen there but the
            // session's own sockets, so answer as the kernel would, without an event for
            // every glibc probe of nscd or systemd.
            (_, Some(p)) if p.starts_with("/run") || p.starts_with("/var/run") => Action::Deny(libc::ENOENT),
            (path, other) => {
                self.unix_blocked(
                    other.unwrap_or(path),
                    pid,
                    "default-deny-unix",
                    "only the session's sockets and sockets in the workspace are reachable",
                );
                Action::Deny(libc::EACCES)
            }
        }
    }

    fn unix_refused(&self, addr: &UnixAddr, why: UnixRefusal, pid: u32) {
        let UnixAddr::Pathname(raw) = addr else { return };
        let (path, normal) = Self::unix_path(raw, pid);
        let (rule, message) = match why {
            UnixRefusal::Symlink => ("unix-symlink", "Unix sockets reached through a symlink are refused"),
            UnixRefusal::HardLink => ("unix-hard-link", "Unix sockets with more than one name are refused"),
        };
        self.unix_blocked(normal.unwrap_or(path), pid, rule, message);
    }

    fn fallback_socket(&self, dev: u64, ino: u64) -> Option<std::os::fd::OwnedFd> {
        self.backing_sockets.as_ref()?.open(dev, ino)
    }
}

/// The decider of a command whose network connects the kernel redirects (the eBPF backend):
/// only its Unix socket connects are decided here, every other connect continues to the
/// kernel's programs.
pub struct UnixOnly(pub SessionDecider);

impl ConnectDecider for UnixOnly {
    fn decide(&self, _dst: SocketAddr, _sock: SockInfo, _pid: u32) -> Action {
        Action::Continue
    }

    fn decide_unix(&self, addr: &UnixAddr, sock: SockInfo, pid: u32) -> Action {
        self.0.decide_unix(addr, sock, pid)
    }

    fn unix_refused(&self, addr: &UnixAddr, why: UnixRefusal, pid: u32) {
        self.0.unix_refused(addr, why, pid)
    }

    fn fallback_socket(&self, dev: u64, ino: u64) -> Option<std::os::fd::OwnedFd> {
        self.0.fallback_socket(dev, ino)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_paths_lexically() {
        assert_eq!(normalise(Path::new("/w/../run/x.sock"), None), Some(PathBuf::from("/run/x.sock")));
        assert_eq!(
            normalise(Path::new("a/./b.sock"), Some(Path::new("/w"))),
            Some(PathBuf::from("/w/a/b.sock"))
        );
        assert_eq!(
            normalise(Path::new("../../../../etc/x"), Some(Path::new("/w"))),
            Some(PathBuf::from("/etc/x"))
        );
        assert_eq!(normalise(Path::new("rel"), None), None);
    }

    fn policy(yaml: &str) -> (Policy, CompiledPolicy) {
        let p = policies::load_policy(yaml, "t.yaml").unwrap();
        let c = CompiledPolicy::new(&p);
        (p, c)
    }

    #[test]
    fn address_decisions_are_final_only_without_earlier_name_rules() {
        let (p, c) = policy(
            "network_rules:\n  - {name: meta, cidrs: [169.254.0.0/16], decision: deny}\n  - {name: gh, domains: [github.com], decision: allow}\n",
        );
        let d = c.decide_connect(&ConnectRequest::by_ip("169.254.169.254".parse().unwrap(), 80));
        assert!(final_on_address(&p, &d));
        let d = c.decide_connect(&ConnectRequest::by_ip("140.82.112.3".parse().unwrap(), 443));
        assert!(!final_on_address(&p, &d), "default deny must wait for the name");

        let (p, c) = policy(
            "network_rules:\n  - {name: gh, domains: [github.com], decision: allow}\n  - {name: meta, cidrs: [169.254.0.0/16], decision: deny}\n",
        );
        let d = c.decide_connect(&ConnectRequest::by_ip("169.254.169.254".parse().unwrap(), 80));
        assert!(!final_on_address(&p, &d), "an earlier name rule could still match");

        let (p, c) = policy("network_rules:\n  - {name: deny-all, decision: deny}\n");
        let d = c.decide_connect(&ConnectRequest::by_ip("140.82.112.3".parse().unwrap(), 443));
        assert!(final_on_address(&p, &d), "a catch-all deny needs no name");
    }

    /// A decider for `yaml` whose audit log lives in a fresh temp dir (removed by the caller).
    #[test]
    fn abstract_sockets_of_a_shared_namespace_need_a_rule() {
        let yaml = "version: 1\nname: t\nunix_socket_rules:\n  - {name: bus, paths: ['@/tmp/bus-*'], operations: [connect], decision: allow}\n";
        let (mut d, dir) = decider(yaml);
        let tcp = SockInfo { family: libc::AF_UNIX, sock_type: libc::SOCK_STREAM };
        let shim = UnixAddr::Abstract(b"/containerd-shim/x.sock".to_vec());
        let bus = UnixAddr::Abstract(b"/tmp/bus-1".to_vec());
        assert_eq!(d.decide_unix(&shim, tcp, 1), Action::ConnectUnixPinned, "the sandbox's own namespace");
        d.shared_netns = true;
        assert_eq!(d.decide_unix(&shim, tcp, 1), Action::Deny(libc::EACCES), "the host's namespace");
        assert_eq!(d.decide_unix(&bus, tcp, 1), Action::ConnectUnixPinned, "opened by a rule");
        let _ = std::fs::remove_dir_all(dir);
    }

    fn decider(yaml: &str) -> (SessionDecider, PathBuf) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("agentsh-decider-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config =
            policies::config::AuditConfig { sinks: vec![], log_allowed: false, ..Default::default() };
        let recorder = Arc::new(Recorder::open(&dir, &config).unwrap());
        let (p, c) = policy(yaml);
        let (p, c) = (Arc::new(p), Arc::new(c));
        let resolver = dns::SessionResolver::new(
            c.clone(),
            dns::AddressGuard::new(&p),
            dns::Upstream::new(dns::UpstreamConfig::new(vec![])),
            dns::ResolverConfig::default(),
            Arc::new(|_| {}),
        );
        let unix_rules = policies::engine::unix::UnixRules::new(&p.unix_socket_rules, &|_| None);
        let d = SessionDecider {
            session_id: "s".into(),
            command_id: "c".into(),
            policy: p,
            compiled: c,
            gateway_v4: "127.0.0.1:1000".parse().unwrap(),
            gateway_v6: "[::1]:1000".parse().unwrap(),
            workspace: PathBuf::from("/w"),
            recorder,
            resolver: Arc::new(resolver),
            db: None,
            resolver_addrs: SANDBOX_RESOLVERS,
            shared_netns: false,
            state_dir: PathBuf::from(SANDBOX_STATE_DIR),
            reported_unix: Default::default(),
            backing_sockets: None,
            unix_rules,
        };
        (d, dir)
    }

    #[test]
    fn the_sandbox_self_addresses_stay_inside_on_any_port() {
        // Even a policy that allows everything must not send these to the gateway (which would
        // dial them from the host), and a deny-all must not refuse the sandbox talking to itself.
        for yaml in [
            "network_rules:\n  - {name: all, decision: allow}\n",
            "network_rules:\n  - {name: deny-all, decision: deny}\n",
        ] {
            let (d, dir) = decider(yaml);
            let tcp4 = SockInfo { family: libc::AF_INET, sock_type: libc::SOCK_STREAM };
            let tcp6 = SockInfo { family: libc::AF_INET6, sock_type: libc::SOCK_STREAM };
            let udp4 = SockInfo { family: libc::AF_INET, sock_type: libc::SOCK_DGRAM };
            let v4 = IpAddr::V4(sandbox::SANDBOX_SELF_V4);
            let v6 = IpAddr::V6(sandbox::SANDBOX_SELF_V6);
            let mapped = IpAddr::V6(sandbox::SANDBOX_SELF_V4.to_ipv6_mapped());
            for port in [1, 53, 80, 443, 8080, 65535] {
                for (ip, sock) in [(v4, tcp4), (v6, tcp6), (mapped, tcp6)] {
                    let dst = SocketAddr::new(ip, port);
                    assert_eq!(d.decide_call(CallKind::Connect, dst, sock, 1), Action::Continue, "{dst}");
                }
                let dst = SocketAddr::new(v4, port);
                assert_eq!(d.decide_call(CallKind::Send, dst, udp4, 1), Action::Continue, "{dst}");
            }
            // Neighbours of the self addresses are ordinary destinations.
            for other in ["169.254.255.253:80", "[fd00:0:5e55:ffff::fffd]:80"] {
                let dst: SocketAddr = other.parse().unwrap();
                let sock = if dst.is_ipv4() { tcp4 } else { tcp6 };
                assert_ne!(d.decide_call(CallKind::Connect, dst, sock, 1), Action::Continue, "{dst}");
            }
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    #[test]
    fn loopback_is_exported_only_by_an_explicit_cidr_rule() {
        let (p, c) = policy("network_rules:\n  - {name: all, decision: audit}\n");
        assert!(!loopback_exported(&p, &c, "127.0.0.1:5432".parse().unwrap()));
        let (p, c) =
            policy("network_rules:\n  - {name: pg, cidrs: [127.0.0.1/32], ports: [5432], decision: allow}\n");
        assert!(loopback_exported(&p, &c, "127.0.0.1:5432".parse().unwrap()));
        assert!(!loopback_exported(&p, &c, "127.0.0.1:6379".parse().unwrap()));
    }
}
