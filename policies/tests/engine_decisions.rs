//! Decision tables for the compiled engine: one small hand-written policy per rule family, and
//! the exact decision (verdict and rule name) expected for each request.

use std::net::IpAddr;

use policies::{
    CompiledPolicy, ConnectRequest, Decision, Policy, Verdict,
    engine::{DEFAULT_DENY_DNS, DEFAULT_DENY_NETWORK},
    matchers::domain::Hostname,
};

fn compile(yaml: &str) -> CompiledPolicy {
    let policy: Policy = serde_norway::from_str(yaml).expect("test policy parses");
    CompiledPolicy::new(&policy)
}

fn host(name: &str) -> Hostname {
    Hostname::parse(name).expect("test host name")
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

/// Build a request from `name`, `ip` and `port` where `-` means unknown.
fn req(name: &str, addr: &str, port: u16) -> ConnectRequest {
    let h = (name != "-").then(|| host(name));
    let a = (addr != "-").then(|| ip(addr));
    ConnectRequest::new(h, a, port)
}

/// Assert each `(name, ip, port) → (verdict, rule)` row of a table.
fn table(policy: &CompiledPolicy, rows: &[(&str, &str, u16, Verdict, &str)]) {
    for &(name, addr, port, verdict, rule) in rows {
        let d = policy.decide_connect(&req(name, addr, port));
        assert_eq!((d.verdict, d.rule.as_str()), (verdict, rule), "connect {name} {addr} :{port}");
    }
}

fn dns_table(policy: &CompiledPolicy, rows: &[(&str, Verdict, &str)]) {
    for &(name, verdict, rule) in rows {
        let d = policy.decide_dns(&host(name));
        assert_eq!((d.verdict, d.rule.as_str()), (verdict, rule), "dns {name}");
    }
}

const DENY: Verdict = Verdict::Deny;
const ALLOW: Verdict = Verdict::Allow;
const NET: &str = DEFAULT_DENY_NETWORK;

#[test]
fn first_match_wins_in_file_order() {
    let allow_first = compile(
        "network_rules:
           - {name: a, domains: [x.com], decision: allow}
           - {name: d, domains: [x.com], decision: deny}",
    );
    let deny_first = compile(
        "network_rules:
           - {name: d, domains: ['**.x.com'], decision: deny}
           - {name: a, domains: [api.x.com], decision: allow}
           - {name: rest, decision: allow}",
    );
    table(&allow_first, &[("x.com", "-", 443, ALLOW, "a"), ("y.com", "-", 443, DENY, NET)]);
    table(
        &deny_first,
        &[
            ("api.x.com", "-", 443, DENY, "d"),
            ("x.com", "-", 443, DENY, "d"),
            ("y.com", "-", 443, ALLOW, "rest"),
            ("-", "1.2.3.4", 443, ALLOW, "rest"),
        ],
    );
}

#[test]
fn later_allow_does_not_beat_earlier_narrow_deny() {
    let p = compile(
        "network_rules:
           - {name: no-ssh, ports: [22], decision: deny}
           - {name: meta, cidrs: [169.254.0.0/16], decision: deny}
           - {name: all, domains: ['**'], decision: allow}
           - {name: ips, cidrs: [0.0.0.0/0, '::/0'], decision: allow}",
    );
    table(
        &p,
        &[
            ("a.com", "-", 22, DENY, "no-ssh"),
            ("a.com", "-", 443, ALLOW, "all"),
            ("a.com", "169.254.169.254", 80, DENY, "meta"),
            ("-", "169.254.169.254", 80, DENY, "meta"),
            ("-", "8.8.8.8", 53, ALLOW, "ips"),
            ("-", "2001:db8::1", 443, ALLOW, "ips"),
        ],
    );
}

#[test]
fn port_lists_and_ranges() {
    let p = compile(
        "network_rules:
           - {name: web, domains: ['*.x.com'], ports: [443, '8000-8100', 80], decision: allow}",
    );
    table(
        &p,
        &[
            ("a.x.com", "-", 443, ALLOW, "web"),
            ("a.x.com", "-", 80, ALLOW, "web"),
            ("a.x.com", "-", 8000, ALLOW, "web"),
            ("a.x.com", "-", 8100, ALLOW, "web"),
            ("a.x.com", "-", 8101, DENY, NET),
            ("a.x.com", "-", 7999, DENY, NET),
            ("a.x.com", "-", 22, DENY, NET),
        ],
    );
}

#[test]
fn v4_mapped_v6_matches_v4_blocks() {
    let p = compile(
        "network_rules:
           - {name: private, cidrs: [10.0.0.0/8], decision: deny}
           - {name: mapped-block, cidrs: ['::ffff:192.168.0.0/112'], decision: deny}
           - {name: any4, cidrs: [0.0.0.0/0], decision: allow}",
    );
    table(
        &p,
        &[
            ("-", "10.1.2.3", 443, DENY, "private"),
            ("-", "::ffff:10.1.2.3", 443, DENY, "private"),
            ("-", "192.168.7.7", 443, DENY, "mapped-block"),
            ("-", "::ffff:192.168.7.7", 443, DENY, "mapped-block"),
            ("-", "::ffff:1.1.1.1", 443, ALLOW, "any4"),
            // A real IPv6 address is not in any IPv4 block.
            ("-", "2001:db8::1", 443, DENY, NET),
        ],
    );
    // A request built by hand with an uncanonicalised address is folded by the engine too.
    let raw = ConnectRequest { host: None, ip: Some(ip("::ffff:10.9.9.9")), port: 1 };
    assert_eq!(p.decide_connect(&raw).rule, "private");
}

#[test]
fn v6_blocks() {
    let p = compile(
        "network_rules:
           - {name: ula, cidrs: ['fc00::/7'], decision: deny}
           - {name: doc, cidrs: ['2001:db8::/32'], ports: [443], decision: allow}
           - {name: loop6, cidrs: ['::1'], decision: allow}",
    );
    table(
        &p,
        &[
            ("-", "fd12:3456::1", 443, DENY, "ula"),
            ("-", "2001:db8:ffff::1", 443, ALLOW, "doc"),
            ("-", "2001:db8::1", 80, DENY, NET),
            ("-", "2001:db9::1", 443, DENY, NET),
            ("-", "::1", 5432, ALLOW, "loop6"),
            ("-", "::2", 5432, DENY, NET),
        ],
    );
}

#[test]
fn what_the_request_knows_limits_what_can_match() {
    let p = compile(
        "network_rules:
           - {name: by-name, domains: [api.x.com], decision: allow}
           - {name: by-ip, cidrs: [1.2.3.0/24], decision: allow}",
    );
    table(
        &p,
        &[
            ("api.x.com", "-", 443, ALLOW, "by-name"),
            ("-", "1.2.3.4", 443, ALLOW, "by-ip"),
            ("api.x.com", "1.2.3.4", 443, ALLOW, "by-name"),
            ("other.com", "1.2.3.4", 443, ALLOW, "by-ip"),
            ("api.x.com", "9.9.9.9", 443, ALLOW, "by-name"),
            ("other.com", "9.9.9.9", 443, DENY, NET),
            ("other.com", "-", 443, DENY, NET),
            ("-", "9.9.9.9", 443, DENY, NET),
        ],
    );
}

#[test]
fn rules_with_domains_and_cidrs_need_both() {
    let p = compile(
        "network_rules:
           - {name: pinned, domains: [api.x.com, '*.cdn.x.com'], cidrs: [1.2.3.0/24, '2001:db8::/32'],
              ports: [443], decision: allow}",
    );
    table(
        &p,
        &[
            ("api.x.com", "1.2.3.4", 443, ALLOW, "pinned"),
            ("a.cdn.x.com", "2001:db8::7", 443, ALLOW, "pinned"),
            ("api.x.com", "1.2.4.4", 443, DENY, NET),
            ("evil.com", "1.2.3.4", 443, DENY, NET),
            ("api.x.com", "-", 443, DENY, NET),
            ("-", "1.2.3.4", 443, DENY, NET),
            ("api.x.com", "1.2.3.4", 80, DENY, NET),
        ],
    );
}

#[test]
fn default_deny_names_and_messages() {
    let empty = CompiledPolicy::new(&Policy::default());
    assert_eq!(empty.decide_connect(&req("a.com", "1.1.1.1", 443)), Decision::default_deny(NET));
    assert_eq!(empty.decide_dns(&host("a.com")), Decision::default_deny(DEFAULT_DENY_DNS));
    assert_eq!(empty.rule_count(), 0);

    let p = compile(
        "network_rules:
           - {name: nope, domains: [a.com], decision: deny, message: 'not this one'}",
    );
    let d = p.decide_connect(&req("a.com", "-", 443));
    assert_eq!(d, Decision { verdict: DENY, rule: "nope".into(), message: Some("not this one".into()) });
}

#[test]
fn single_star_is_one_label_double_star_any() {
    let p = compile(
        "network_rules:
           - {name: one, domains: ['*.a.com'], decision: allow}
           - {name: star, domains: ['*'], decision: audit}
           - {name: mid, domains: ['api.**.b.com'], decision: approve}",
    );
    table(
        &p,
        &[
            ("x.a.com", "-", 1, ALLOW, "one"),
            ("a.com", "-", 1, DENY, NET),
            ("x.y.a.com", "-", 1, DENY, NET),
            ("localhost", "-", 1, Verdict::Audit, "star"),
            ("api.b.com", "-", 1, Verdict::Approve, "mid"),
            ("api.q.r.b.com", "-", 1, Verdict::Approve, "mid"),
            ("x.api.b.com", "-", 1, DENY, NET),
        ],
    );
}

#[test]
fn names_are_normalised_before_matching() {
    let p = compile(
        "network_rules:
           - {name: a, domains: [API.X.COM.], decision: allow}",
    );
    let d = p.decide_connect(&ConnectRequest::by_name(host("Api.X.Com."), 443));
    assert_eq!(d.rule, "a");
}

#[test]
fn dns_answers_names_the_first_governing_rule_allows() {
    let p = compile(
        "network_rules:
           - {name: ssh-off, domains: ['**.x.com'], ports: [22], decision: deny}
           - {name: pinned-off, domains: [pin.x.com], cidrs: [10.0.0.0/8], decision: deny}
           - {name: bad, domains: [bad.x.com], decision: deny}
           - {name: web, domains: ['*.x.com'], ports: [443], decision: allow}
           - {name: ask, domains: [ask.y.com], decision: approve, message: 'ask first'}
           - {name: watch, domains: [watch.y.com], decision: audit}
           - {name: ip-allow, cidrs: [0.0.0.0/0], decision: allow}
           - {name: ip-deny, cidrs: [1.0.0.0/8], decision: deny}",
    );
    dns_table(
        &p,
        &[
            // A deny limited to port 22 does not refuse the name: port 443 is allowed later.
            ("a.x.com", ALLOW, "web"),
            // A deny limited to some addresses does not refuse the name either.
            ("pin.x.com", ALLOW, "web"),
            // An unconditional deny does.
            ("bad.x.com", DENY, "bad"),
            // `**.x.com` matched, but only on port 22; nothing else governs x.com itself.
            ("x.com", DENY, DEFAULT_DENY_DNS),
            ("ask.y.com", Verdict::Approve, "ask"),
            ("watch.y.com", Verdict::Audit, "watch"),
            // CIDR-only allows never make a name resolvable.
            ("other.org", DENY, DEFAULT_DENY_DNS),
        ],
    );
    assert_eq!(p.decide_dns(&host("ask.y.com")).message.as_deref(), Some("ask first"));
    // The connect decisions still enforce the port-limited deny.
    table(&p, &[("a.x.com", "-", 22, DENY, "ssh-off"), ("a.x.com", "-", 443, ALLOW, "web")]);
}

#[test]
fn dns_with_unscoped_rules() {
    let p = compile(
        "network_rules:
           - {name: only-https, ports: [443], decision: allow}
           - {name: evil, domains: [evil.com], decision: deny}",
    );
    // A rule with no domains and no CIDRs governs every name; limited to 443 it still allows.
    dns_table(&p, &[("evil.com", ALLOW, "only-https"), ("a.b", ALLOW, "only-https")]);

    let p = compile(
        "network_rules:
           - {name: good, domains: [good.com], decision: allow}
           - {name: ssh-off, ports: [22], decision: deny}
           - {name: nothing-else, decision: deny}
           - {name: late, domains: [late.com], decision: allow}",
    );
    dns_table(
        &p,
        &[("good.com", ALLOW, "good"), ("late.com", DENY, "nothing-else"), ("x.com", DENY, "nothing-else")],
    );
}

fn redirects() -> CompiledPolicy {
    compile(
        r#"
           dns_redirects:
             - {name: corp, match: '(^|\.)corp\.example$', resolve_to: 127.0.0.1}
             - {name: corp-late, match: 'corp', resolve_to: 10.0.0.1}
             - {name: anthropic, match: '(^|\.)anthropic\.com$', resolve_to: 10.0.0.50}
           connect_redirects:
             - {name: to-gw, match: '^api\.openai\.com:443$', redirect_to: 'llm-gw.internal:443'}
             - {name: any-openai, match: 'openai\.com:', redirect_to: 'other:443'}
             - {name: v6-pg, match: '^\[2001:db8::1\]:5432$', redirect_to_unix: /run/agentsh/db.sock}
             - {name: v4-pg, match: '^10\.0\.0\.1:5432$', redirect_to: '127.0.0.1:5432'}"#,
    )
}

#[test]
fn dns_redirects_first_match() {
    let p = redirects();
    let name = |n: &str| p.match_dns_redirect(&host(n)).map(|r| r.name.as_str());
    assert_eq!(name("db.corp.example"), Some("corp"));
    assert_eq!(name("corp.example"), Some("corp"));
    assert_eq!(name("corporate.com"), Some("corp-late"));
    assert_eq!(name("api.anthropic.com"), Some("anthropic"));
    assert_eq!(name("anthropic.com.evil.org"), None);
    // agentsh #97: case and a trailing dot must not bypass a redirect.
    assert_eq!(name("API.Anthropic.COM."), Some("anthropic"));
    assert_eq!(name("Db.CORP.Example."), Some("corp"));
}

#[test]
fn connect_redirects_first_match_and_normalisation() {
    let p = redirects();
    let name = |h: &str, port: u16| p.match_connect_redirect(h, port).map(|r| r.name.as_str());
    assert_eq!(name("api.openai.com", 443), Some("to-gw"));
    assert_eq!(name("api.openai.com", 80), Some("any-openai"));
    // agentsh #97: case and a trailing dot must not bypass a redirect.
    assert_eq!(name("API.OpenAI.COM.", 443), Some("to-gw"));
    assert_eq!(name("api.openai.com.", 443), Some("to-gw"));
    assert_eq!(name("2001:db8::1", 5432), Some("v6-pg"));
    assert_eq!(name("[2001:DB8:0:0::1]", 5432), Some("v6-pg"));
    assert_eq!(name("::ffff:10.0.0.1", 5432), Some("v4-pg"));
    assert_eq!(name("example.com", 443), None);

    let by_ip = ConnectRequest::by_ip(ip("2001:db8::1"), 5432);
    assert_eq!(p.match_connect_redirect_for(&by_ip).map(|r| r.name.as_str()), Some("v6-pg"));
    let both = ConnectRequest::by_name_and_ip(host("db.internal"), ip("10.0.0.1"), 5432);
    assert_eq!(p.match_connect_redirect_for(&both).map(|r| r.name.as_str()), Some("v4-pg"));
    let named = ConnectRequest::by_name_and_ip(host("API.openai.com"), ip("10.0.0.1"), 443);
    assert_eq!(p.match_connect_redirect_for(&named).map(|r| r.name.as_str()), Some("to-gw"));
}

#[test]
fn no_redirects_match_nothing() {
    let p = CompiledPolicy::new(&Policy::default());
    assert!(p.match_dns_redirect(&host("a.com")).is_none());
    assert!(p.match_connect_redirect("a.com", 443).is_none());
}
