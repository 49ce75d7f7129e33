//! DNS is policy (DESIGN.md §1), end to end as root on the real kernel: every question of the
//! sandbox lands on the session resolver, whatever server or transport it was sent to; a denied
//! name never reaches the upstream (a fake resolver on the host's loopback that logs every
//! question); allowed names get stable synthetic addresses whose later connects are decided on
//! the name; passthrough answers name later connects too; `dns_redirects` answer A and AAAA; the
//! rebinding guard and the SNI binding refuse what a name rule alone must not carry; port 853 to
//! a name not allowed there fails at connect.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::{
    Daemon, ExecResult, Session,
    dns::{FakeDns, TXT_ANSWER},
    upstream::{TLS_BODY, TestCa, Upstream},
};
use serde_json::{Value, json};

const PROBE: &str = include_str!("scripts/dns_probe.py");

/// Names on the test certificate.
const CERT_NAMES: [&str; 4] = ["allowed.test", "other.test", "rebind.test", "pass-deny.test"];

/// A fake upstream resolver, a TLS upstream with a certificate for the test names, and a daemon
/// forwarding DNS to the fake resolver only.
struct World {
    dns: FakeDns,
    tls: Upstream,
    ca: TestCa,
    daemon: Daemon,
}

impl World {
    fn new(mode: &str) -> World {
        let dns = FakeDns::start();
        let ca = TestCa::with_names(&CERT_NAMES);
        let tls = ca.serve();
        let daemon = Daemon::start_with_config(&dns.server_config(mode));
        World { dns, tls, ca, daemon }
    }

    fn port(&self) -> u16 {
        self.tls.port()
    }

    /// A session with `rules` (YAML list items, `{P}` standing for the TLS port) and `extra`
    /// top-level sections, with the CA and the probe script in its workspace.
    fn session(&self, rules: &[&str], extra: &str) -> Session {
        let mut policy = String::from("version: 1\nname: dns-test\nnetwork_rules:\n");
        for r in rules {
            policy.push_str("  - ");
            policy.push_str(&r.replace("{P}", &self.port().to_string()));
            policy.push('\n');
        }
        policy.push_str(extra);
        let s = self.daemon.session(&policy);
        s.workspace.write("ca.pem", &self.ca.ca_pem);
        s.workspace.write("dns_probe.py", PROBE);
        s
    }

    /// Run the probe script with `args`; its JSON output.
    fn probe(&self, s: &Session, args: &[&str]) -> (ExecResult, Value) {
        let mut argv = vec!["python3", "dns_probe.py"];
        argv.extend_from_slice(args);
        let r = self.daemon.exec(s, &argv);
        r.assert_exit(0);
        let v =
            serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("probe output ({e}): {r:#?}"));
        (r, v)
    }

    /// Raw queries (see the script); one result per query.
    fn query(&self, s: &Session, queries: &[[&str; 4]]) -> (ExecResult, Vec<Value>) {
        let arg = serde_json::to_string(queries).unwrap();
        let (r, v) = self.probe(s, &["query", &arg]);
        let Value::Array(results) = v else { panic!("query output is a list: {r:#?}") };
        assert_eq!(results.len(), queries.len());
        (r, results)
    }
}

/// The usual rules: `denied.test` denied everywhere, the test names allowed on the TLS port, and
/// the upstream's loopback address vouched for on that port (the rebinding guard refuses a
/// loopback answer otherwise).
const RULES: [&str; 3] = [
    "{name: deny-denied, domains: [denied.test], decision: deny, message: not for agents}",
    "{name: allow-test-names, domains: [allowed.test, other.test, '*.many.test'], ports: [{P}], decision: allow}",
    "{name: vouch-upstream, cidrs: [127.0.0.1/32], ports: [{P}], decision: allow}",
];

fn is_synthetic_v4(ip: &str) -> bool {
    ip.parse::<Ipv4Addr>().is_ok_and(|ip| {
        let [a, b, ..] = ip.octets();
        a == 198 && (b == 18 || b == 19)
    })
}

fn is_synthetic_v6(ip: &str) -> bool {
    ip.parse::<Ipv6Addr>().is_ok_and(|ip| ip.segments()[..3] == [0xfd00, 0, 0x5e55])
}

/// The IP of an event's `remote` (`ip:port` or `[ip]:port`).
fn remote_ip(remote: &str) -> IpAddr {
    remote.parse::<std::net::SocketAddr>().map(|s| s.ip()).unwrap_or_else(|e| panic!("{remote}: {e}"))
}

/// The data of every answer of a raw query result.
fn answers(result: &Value) -> Vec<String> {
    result["answers"]
        .as_array()
        .unwrap_or_else(|| panic!("no answers in {result}"))
        .iter()
        .map(|a| a["data"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn denied_name_never_leaves_and_allowed_name_connects_by_synthetic_address() {
    if !common::privileged("denied_name_never_leaves_and_allowed_name_connects_by_synthetic_address") {
        return;
    }
    let w = World::new("synthetic");
    let s = w.session(&RULES, "");
    let p = w.port();
    let script = format!(
        "getent ahosts denied.test; echo \"getent=$?\"; curl -sS --max-time 10 --cacert ca.pem https://allowed.test:{p}/"
    );
    let r = w.daemon.exec(&s, &["sh", "-c", &script]);
    r.assert_exit(0);
    assert!(r.stdout.starts_with("getent=2\n"), "getent finds nothing: {r:#?}");
    assert!(r.stdout.ends_with(TLS_BODY), "{r:#?}");

    // The upstream only ever heard of the allowed name (the gateway's own resolution of it).
    assert!(!w.dns.asked("denied.test"), "{:?}", w.dns.questions());
    assert_eq!(w.dns.names(), ["allowed.test"], "{:?}", w.dns.questions());

    let refused: Vec<_> =
        r.of("dns_query").into_iter().filter(|e| e.domain.as_deref() == Some("denied.test")).collect();
    assert!(!refused.is_empty(), "{r:#?}");
    for e in &refused {
        assert_eq!((e.rule(), e.decision(), e.str("rcode")), ("deny-denied", "deny", "REFUSED"), "{e:#?}");
    }
    let allowed: Vec<_> =
        r.of("dns_query").into_iter().filter(|e| e.domain.as_deref() == Some("allowed.test")).collect();
    assert!(!allowed.is_empty(), "{r:#?}");
    for e in &allowed {
        assert_eq!((e.rule(), e.str("rcode")), ("allow-test-names", "NOERROR"), "{e:#?}");
        for a in e.fields["answers"].as_array().unwrap() {
            let a = a.as_str().unwrap();
            assert!(is_synthetic_v4(a) || is_synthetic_v6(a), "real address leaked: {a}");
        }
    }

    let connects = r.of("net_connect");
    assert!(!connects.is_empty(), "{r:#?}");
    let done = connects.iter().find(|e| e.num("bytes_received") > 0).expect("a connection carried the reply");
    assert_eq!(done.domain.as_deref(), Some("allowed.test"));
    assert_eq!((done.rule(), done.decision()), ("allow-test-names", "allow"));
    assert_eq!(done.str("sni"), "allowed.test");
    assert_eq!(done.str("upstream"), format!("127.0.0.1:{p}"));
    for e in &connects {
        let ip = remote_ip(e.remote.as_deref().unwrap()).to_string();
        assert!(
            is_synthetic_v4(&ip) || is_synthetic_v6(&ip),
            "connected through a synthetic address: {e:#?}"
        );
    }
    assert!(r.of("net_connect_blocked").is_empty(), "{r:#?}");
    assert!(w.tls.accepted() >= 1);
}

#[test]
fn getaddrinfo_is_synthetic_and_stable_and_every_resolver_is_the_session_resolver() {
    if !common::privileged("getaddrinfo_is_synthetic_and_stable_and_every_resolver_is_the_session_resolver") {
        return;
    }
    let w = World::new("synthetic");
    let s = w.session(&RULES, "");
    let port = w.port().to_string();

    // getaddrinfo: one synthetic address per family, the same on every call.
    let (_, v) = w.probe(&s, &["gai", &port, "allowed.test", "other.test"]);
    let mut seen = Vec::new();
    for name in ["allowed.test", "other.test"] {
        let v4 = &v[name]["v4"];
        let v6 = &v[name]["v6"];
        assert_eq!(v4[0], v4[1], "stable A: {v}");
        assert_eq!(v6[0], v6[1], "stable AAAA: {v}");
        let (a, aaaa) = (v4[0][0].as_str().unwrap(), v6[0][0].as_str().unwrap());
        assert_eq!(v4[0].as_array().unwrap().len(), 1, "{v}");
        assert!(is_synthetic_v4(a), "{a}");
        assert!(is_synthetic_v6(aaaa), "{aaaa}");
        seen.push((a.to_string(), aaaa.to_string()));
    }
    assert_ne!(seen[0], seen[1], "one address per name");
    let (allowed_v4, allowed_v6) = seen[0].clone();

    // Many names: distinct, and the same in a later command of the session.
    let names: Vec<String> = (0..40).map(|i| format!("n{i}.many.test")).collect();
    let mut args = vec!["gai", port.as_str()];
    args.extend(names.iter().map(String::as_str));
    let (_, first) = w.probe(&s, &args);
    let (_, again) = w.probe(&s, &args);
    let mut v4s: Vec<&str> = names.iter().map(|n| first[n]["v4"][0][0].as_str().unwrap()).collect();
    for n in &names {
        assert_eq!(first[n]["v4"], again[n]["v4"], "{n} keeps its address across commands");
        assert_eq!(first[n]["v6"], again[n]["v6"], "{n} keeps its address across commands");
    }
    assert!(v4s.iter().all(|a| is_synthetic_v4(a)));
    v4s.sort();
    v4s.dedup();
    assert_eq!(v4s.len(), names.len(), "distinct addresses");
    let (_, again) = w.probe(&s, &["gai", &port, "allowed.test"]);
    assert_eq!(again["allowed.test"]["v4"][0][0], json!(allowed_v4), "bindings outlive commands");

    // Raw queries: TCP, and servers hard-coded elsewhere, all answered by the session resolver.
    let (r, got) = w.query(
        &s,
        &[
            ["tcp", "127.0.0.1", "allowed.test", "A"],
            ["udpc", "127.0.0.53", "allowed.test", "A"],
            ["udpc", "203.0.113.53", "allowed.test", "A"],
            ["tcp", "203.0.113.53", "allowed.test", "A"],
            ["udp", "::1", "allowed.test", "AAAA"],
            ["udpc", "127.0.0.53", "allowed.test", "TXT"],
            ["udpc", "203.0.113.53", "denied.test", "A"],
            ["tcp", "127.0.0.53", "denied.test", "TXT"],
            ["udp", "127.0.0.1", "unlisted.example", "A"],
        ],
    );
    for (i, want) in
        [(0, &allowed_v4), (1, &allowed_v4), (2, &allowed_v4), (3, &allowed_v4), (4, &allowed_v6)]
    {
        assert_eq!(got[i]["rcode"], "NOERROR", "query {i}: {}", got[i]);
        assert_eq!(answers(&got[i]), [want.as_str()], "query {i}: {}", got[i]);
    }
    assert_eq!(got[5]["rcode"], "NOERROR", "{}", got[5]);
    assert_eq!(answers(&got[5]), [TXT_ANSWER], "TXT is forwarded for an allowed name");
    for (i, g) in got.iter().enumerate().skip(6) {
        assert_eq!(g["rcode"], "REFUSED", "query {i}: {g}");
    }
    let transports: Vec<&str> = r
        .of("dns_query")
        .iter()
        .filter(|e| e.domain.as_deref() == Some("allowed.test") && e.str("qtype") == "A")
        .map(|e| e.str("transport"))
        .collect();
    assert_eq!(transports, ["tcp", "udp", "udp", "tcp"], "{r:#?}");
    let unlisted = r.of("dns_query").into_iter().find(|e| e.domain.as_deref() == Some("unlisted.example"));
    assert_eq!(unlisted.map(|e| e.rule()), Some("default-deny-dns"), "{r:#?}");

    // The upstream heard the one forwarded TXT question, for the allowed name, and nothing else.
    let q = w.dns.questions();
    assert_eq!(w.dns.names(), ["allowed.test"], "{q:?}");
    assert!(q.iter().all(|q| q.qtype == "TXT"), "A/AAAA are synthetic, never forwarded: {q:?}");
}

#[test]
fn unconnected_sendto_to_another_resolver_lands_on_the_session_resolver() {
    if !common::privileged("unconnected_sendto_to_another_resolver_lands_on_the_session_resolver") {
        return;
    }
    let w = World::new("synthetic");
    let s = w.session(&RULES, "");
    let (_, got) = w.query(
        &s,
        &[
            ["udp", "127.0.0.53", "allowed.test", "A"],
            ["udp", "203.0.113.53", "allowed.test", "TXT"],
            ["udp", "127.0.0.53", "denied.test", "A"],
        ],
    );
    assert_eq!(got[0]["rcode"], "NOERROR", "{}", got[0]);
    assert!(answers(&got[0]).iter().all(|a| is_synthetic_v4(a)) && !answers(&got[0]).is_empty());
    assert_eq!(answers(&got[1]), [TXT_ANSWER], "{}", got[1]);
    assert_eq!(got[2]["rcode"], "REFUSED", "{}", got[2]);
    assert_eq!(w.dns.names(), ["allowed.test"], "{:?}", w.dns.questions());
}

#[test]
fn passthrough_returns_the_real_answer_and_names_later_connects() {
    if !common::privileged("passthrough_returns_the_real_answer_and_names_later_connects")
        || !common::decides_at_connect("passthrough_returns_the_real_answer_and_names_later_connects")
    {
        return;
    }
    let w = World::new("passthrough");
    let s = w.session(
        &[
            "{name: deny-denied, domains: [denied.test], decision: deny}",
            "{name: no-tls-for-pass-deny, domains: [pass-deny.test], ports: [{P}], decision: deny}",
            "{name: allow-test-names, domains: [allowed.test, pass-deny.test], ports: [{P}], decision: allow}",
            "{name: vouch-upstream, cidrs: [127.0.0.1/32], ports: [{P}], decision: allow}",
        ],
        "",
    );
    let p = w.port();
    let port = p.to_string();

    let (_, v) = w.probe(&s, &["gai", &port, "allowed.test", "denied.test"]);
    assert_eq!(v["allowed.test"]["v4"], json!([["127.0.0.1"], ["127.0.0.1"]]), "the upstream's answer: {v}");
    assert!(v["denied.test"]["v4"][0].is_string(), "denied: {v}");
    assert!(!w.dns.asked("denied.test"));

    let url = format!("https://allowed.test:{p}/");
    let r = w.daemon.exec(&s, &["curl", "-sS", "--max-time", "10", "--cacert", "ca.pem", &url]);
    r.assert_exit(0);
    assert_eq!(r.stdout, TLS_BODY);
    let e = r.one("net_connect");
    assert_eq!(e.remote.as_deref(), Some(format!("127.0.0.1:{p}").as_str()), "the real address");
    assert_eq!((e.domain.as_deref(), e.rule()), (Some("allowed.test"), "allow-test-names"));

    // Once pass-deny.test has been answered with 127.0.0.1, a connect to that address is
    // decided on that name (denied on this port), not on the CIDR rule that would allow the IP.
    let script =
        format!("python3 dns_probe.py gai {p} pass-deny.test && python3 dns_probe.py connect 127.0.0.1 {p}");
    let r = w.daemon.exec(&s, &["sh", "-c", &script]);
    r.assert_exit(0);
    let mut lines = r.stdout.lines();
    let gai: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(gai["pass-deny.test"]["v4"][0], json!(["127.0.0.1"]), "{r:#?}");
    assert_eq!(lines.next(), Some("\"EACCES\""), "{r:#?}");
    let e = r.one("net_connect_blocked");
    assert_eq!(
        (e.rule(), e.str("stage"), e.str("domain")),
        ("no-tls-for-pass-deny", "connect", "pass-deny.test")
    );
    assert_eq!(w.tls.accepted(), 1, "only the allowed connect reached the upstream");
    assert!(w.dns.asked("pass-deny.test") && !w.dns.asked("denied.test"), "{:?}", w.dns.questions());
}

#[test]
fn dns_redirects_answer_a_and_aaaa_and_nodata_otherwise() {
    if !common::privileged("dns_redirects_answer_a_and_aaaa_and_nodata_otherwise") {
        return;
    }
    let w = World::new("synthetic");
    let s = w.session(
        &RULES,
        "dns_redirects:\n\
         \x20 - {name: redir-v4, match: '(^|\\.)redir\\.test$', resolve_to: 127.0.0.1, ttl: 42}\n\
         \x20 - {name: redir-v6, match: '^redir6\\.test$', resolve_to: '::1'}\n",
    );
    let (r, got) = w.query(
        &s,
        &[
            ["udp", "127.0.0.1", "redir.test", "A"],
            ["udp", "127.0.0.1", "sub.redir.test", "A"],
            ["tcp", "127.0.0.1", "redir.test", "AAAA"],
            ["udp", "127.0.0.1", "redir.test", "TXT"],
            ["udp", "127.0.0.1", "redir.test", "MX"],
            ["udp", "::1", "redir6.test", "AAAA"],
            ["udp", "127.0.0.1", "redir6.test", "A"],
        ],
    );
    for (i, want) in [(0, "127.0.0.1"), (1, "127.0.0.1"), (5, "::1")] {
        assert_eq!(got[i]["rcode"], "NOERROR", "{}", got[i]);
        assert_eq!(answers(&got[i]), [want], "{}", got[i]);
    }
    assert_eq!(got[0]["answers"][0]["ttl"], 42, "the rule's TTL");
    for i in [2, 3, 4, 6] {
        assert_eq!(got[i]["rcode"], "NOERROR", "NODATA: {}", got[i]);
        assert!(answers(&got[i]).is_empty(), "NODATA: {}", got[i]);
    }
    let redirects = r.of("dns_redirect");
    assert_eq!(redirects.len(), 7, "one event per question: {r:#?}");
    let first = redirects[0];
    assert_eq!(
        (first.domain.as_deref(), first.rule(), first.decision()),
        (Some("redir.test"), "redir-v4", "allow")
    );
    assert_eq!(first.fields["answers"], json!(["127.0.0.1"]));
    assert!(redirects.iter().any(|e| e.rule() == "redir-v6" && e.fields["answers"] == json!(["::1"])));

    let (_, v) = w.probe(&s, &["gai", "80", "redir.test"]);
    assert_eq!(v["redir.test"]["v4"][0], json!(["127.0.0.1"]), "{v}");
    assert!(w.dns.questions().is_empty(), "a redirected name is never forwarded: {:?}", w.dns.questions());
}

#[test]
fn rebinding_to_loopback_is_refused_without_a_cidr_rule() {
    if !common::privileged("rebinding_to_loopback_is_refused_without_a_cidr_rule") {
        return;
    }
    let w = World::new("synthetic");
    let s = w.session(&["{name: allow-rebind, domains: [rebind.test], ports: [{P}], decision: allow}"], "");
    let url = format!("https://rebind.test:{}/", w.port());
    let r = w.daemon.exec(&s, &["curl", "-sS", "--max-time", "10", "--cacert", "ca.pem", &url]);
    assert_ne!(r.exit_code, 0, "{r:#?}");
    assert!(r.stdout.is_empty());
    let blocked = r.of("net_connect_blocked");
    assert!(!blocked.is_empty(), "{r:#?}");
    for e in blocked {
        assert_eq!((e.rule(), e.decision()), ("resolved-sensitive-address", "deny"), "{e:#?}");
        assert_eq!(e.domain.as_deref(), Some("rebind.test"));
    }
    assert!(r.of("net_connect").is_empty(), "{r:#?}");
    assert_eq!(w.tls.accepted(), 0, "the rebound address is never dialled");
    assert!(w.dns.asked("rebind.test"), "the gateway resolved the name itself");
}

#[test]
fn sni_other_than_the_bound_name_is_refused() {
    if !common::privileged("sni_other_than_the_bound_name_is_refused") {
        return;
    }
    let w = World::new("synthetic");
    let s = w.session(&RULES, "");
    let p = w.port();
    let script = format!(
        "ip=$(getent ahostsv4 allowed.test | awk '{{print $1; exit}}'); echo \"$ip\"; \
         curl -sS --max-time 10 --cacert ca.pem --resolve other.test:{p}:$ip https://other.test:{p}/"
    );
    let r = w.daemon.exec(&s, &["sh", "-c", &script]);
    assert_ne!(r.exit_code, 0, "{r:#?}");
    let ip = r.stdout.lines().next().unwrap_or_default();
    assert!(is_synthetic_v4(ip), "{r:#?}");
    let e = r.one("net_connect_blocked");
    assert_eq!((e.rule(), e.decision()), ("name-mismatch", "deny"), "{e:#?}");
    assert_eq!(e.domain.as_deref(), Some("allowed.test"), "the bound name");
    assert_eq!(e.str("sni"), "other.test");
    assert_eq!(e.remote.as_deref(), Some(format!("{ip}:{p}").as_str()));
    assert!(r.of("net_connect").is_empty(), "{r:#?}");
    assert_eq!(w.tls.accepted(), 0);
}

#[test]
fn dot_port_to_a_synthetic_address_is_refused_at_connect() {
    if !common::privileged("dot_port_to_a_synthetic_address_is_refused_at_connect")
        || !common::decides_at_connect("dot_port_to_a_synthetic_address_is_refused_at_connect")
    {
        return;
    }
    let w = World::new("synthetic");
    let s = w.session(&["{name: allow-dot-https, domains: [dot.test], ports: [443], decision: allow}"], "");
    let (r, v) = w.probe(&s, &["connect", "dot.test", "853"]);
    assert_eq!(v, "EACCES", "{r:#?}");
    let blocked = r.of("net_connect_blocked");
    assert!(!blocked.is_empty(), "{r:#?}");
    for e in blocked {
        assert_eq!(
            (e.rule(), e.str("stage"), e.str("domain")),
            ("default-deny-network", "connect", "dot.test")
        );
        assert!(e.remote.as_deref().is_some_and(|r| r == "dot.test:853"), "{e:#?}");
    }
    assert!(r.of("net_connect").is_empty(), "{r:#?}");
    assert!(w.dns.questions().is_empty(), "nothing was forwarded: {:?}", w.dns.questions());
}
