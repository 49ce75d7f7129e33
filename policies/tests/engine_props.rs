//! Property tests for the compiled engine: wildcard and v4-mapped invariants, and agreement of
//! `decide_connect` / `decide_dns` with naive linear scans written here from the documented rules.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use policies::{
    CompiledPolicy, ConnectRequest, Decision, Policy, Verdict,
    engine::{DEFAULT_DENY_DNS, DEFAULT_DENY_NETWORK},
    matchers::{cidr::Cidr, domain::Hostname},
    model::network::NetworkRule,
};
use proptest::prelude::*;

fn compile(yaml: &str) -> (Policy, CompiledPolicy) {
    let policy: Policy = serde_norway::from_str(yaml).expect("generated policy parses");
    let compiled = CompiledPolicy::new(&policy);
    (policy, compiled)
}

fn decision(rule: &NetworkRule) -> Decision {
    Decision { verdict: rule.decision, rule: rule.name.clone(), message: rule.message.clone() }
}

/// The connect semantics, read straight off the rule list.
fn linear_connect(policy: &Policy, req: &ConnectRequest) -> Decision {
    for rule in &policy.network_rules {
        let port_ok = rule.ports.is_empty() || rule.ports.iter().any(|p| p.contains(req.port));
        let domain_ok = rule.domains.is_empty()
            || req.host.as_ref().is_some_and(|h| rule.domains.iter().any(|d| d.matches(h)));
        let cidr_ok =
            rule.cidrs.is_empty() || req.ip.is_some_and(|ip| rule.cidrs.iter().any(|c| c.contains(ip)));
        if port_ok && domain_ok && cidr_ok {
            return decision(rule);
        }
    }
    Decision::default_deny(DEFAULT_DENY_NETWORK)
}

/// The DNS semantics, read straight off the rule list.
fn linear_dns(policy: &Policy, name: &Hostname) -> Decision {
    for rule in &policy.network_rules {
        let governs = if rule.domains.is_empty() {
            rule.cidrs.is_empty()
        } else {
            rule.domains.iter().any(|d| d.matches(name))
        };
        let settles = rule.decision != Verdict::Deny || (rule.ports.is_empty() && rule.cidrs.is_empty());
        if governs && settles {
            return decision(rule);
        }
    }
    Decision::default_deny(DEFAULT_DENY_DNS)
}

const LABELS: &[&str] = &["a", "b", "c"];
const PATTERN_LABELS: &[&str] = &["a", "b", "c", "*", "**"];

fn pattern() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PATTERN_LABELS), 1..4).prop_map(|l| l.join("."))
}

fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(LABELS), 1..5).prop_map(|l| l.join("."))
}

/// Addresses from a small space so that blocks and addresses collide often.
fn addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0u8..3, 0u8..3, any::<u8>()).prop_map(|(a, b, c)| IpAddr::V4(Ipv4Addr::new(10, a, b, c))),
        (0u8..3, 0u8..3, any::<u8>())
            .prop_map(|(a, b, c)| IpAddr::V6(Ipv4Addr::new(10, a, b, c).to_ipv6_mapped())),
        (0u16..3, any::<u16>()).prop_map(|(a, b)| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, a, 0, 0, 0, 0, b))),
    ]
}

fn cidr() -> impl Strategy<Value = String> {
    (addr(), 0u8..=128).prop_map(|(ip, len)| match ip {
        IpAddr::V4(v4) => format!("{v4}/{}", 8 + len % 25),
        IpAddr::V6(v6) => format!("{v6}/{}", 16 + len % 113),
    })
}

fn ports() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec((1u16..8, 0u16..3).prop_map(|(a, w)| format!("{a}-{}", a + w)), 0..3)
}

fn verdict() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&["allow", "deny", "approve", "audit"][..])
}

/// One rule as a YAML flow mapping; about a third have no domains and a third no CIDRs.
fn rule_yaml() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(pattern(), 0..3),
        prop::collection::vec(cidr(), 0..3),
        prop_oneof![Just(true), Just(false), Just(false)],
        ports(),
        verdict(),
    )
        .prop_map(|(domains, cidrs, drop_cidrs, ports, verdict)| {
            let cidrs = if drop_cidrs { Vec::new() } else { cidrs };
            let quote = |v: &[String]| v.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ");
            format!(
                "{{domains: [{}], cidrs: [{}], ports: [{}], decision: {verdict}}}",
                quote(&domains),
                quote(&cidrs),
                quote(&ports)
            )
        })
}

fn policy_yaml() -> impl Strategy<Value = String> {
    prop::collection::vec(rule_yaml(), 0..12).prop_map(|rules| {
        let mut yaml = String::from("network_rules:\n");
        for (i, rule) in rules.iter().enumerate() {
            // Insert the name into the flow mapping.
            yaml.push_str(&format!("  - {{name: r{i}, {}\n", &rule[1..]));
        }
        if rules.is_empty() {
            yaml = "network_rules: []\n".into();
        }
        yaml
    })
}

fn request() -> impl Strategy<Value = ConnectRequest> {
    (prop::option::of(name()), prop::option::of(addr()), 1u16..10).prop_map(|(n, ip, port)| {
        let host = n.map(|n| Hostname::parse(&n).expect("generated name"));
        // Built by hand (not `new`) so that un-canonicalised v4-mapped addresses reach the engine.
        ConnectRequest { host, ip, port }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn compiled_connect_equals_linear(yaml in policy_yaml(), reqs in prop::collection::vec(request(), 1..16)) {
        let (policy, compiled) = compile(&yaml);
        for req in reqs {
            prop_assert_eq!(compiled.decide_connect(&req), linear_connect(&policy, &req), "{}", req);
        }
    }

    #[test]
    fn compiled_dns_equals_linear(yaml in policy_yaml(), names in prop::collection::vec(name(), 1..8)) {
        let (policy, compiled) = compile(&yaml);
        for n in names {
            let n = Hostname::parse(&n).expect("generated name");
            prop_assert_eq!(compiled.decide_dns(&n), linear_dns(&policy, &n), "{}", n);
        }
    }

    #[test]
    fn one_star_is_exactly_one_label(x in "[a-z0-9]{1,10}", y in "[a-z0-9]{1,10}", port in 1u16..) {
        let (_, p) = compile("network_rules: [{name: w, domains: ['*.a.com'], decision: allow}]");
        let verdict = |n: &str| p.decide_connect(&ConnectRequest::by_name(
            Hostname::parse(n).expect("generated name"), port)).verdict;
        prop_assert_eq!(verdict(&format!("{x}.a.com")), Verdict::Allow);
        prop_assert_eq!(verdict("a.com"), Verdict::Deny);
        prop_assert_eq!(verdict(&format!("{x}.{y}.a.com")), Verdict::Deny);
        prop_assert_eq!(verdict(&format!("{x}.b.a.com")), Verdict::Deny);
    }

    #[test]
    fn v4_mapped_addresses_match_v4_blocks(a in any::<u32>(), len in 0u8..=32, host in any::<u32>()) {
        let net: Cidr = format!("{}/{len}", Ipv4Addr::from(a)).parse().expect("generated block");
        let yaml = format!("network_rules: [{{name: blk, cidrs: ['{net}'], decision: deny}}, \
                            {{name: rest, decision: allow}}]");
        let (_, p) = compile(&yaml);
        // An address inside the block: the network's bits, the host's bits below the prefix.
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        let inside = Ipv4Addr::from((a & mask) | (host & !mask));
        let mapped = IpAddr::V6(inside.to_ipv6_mapped());
        prop_assert!(net.contains(mapped));
        let raw = ConnectRequest { host: None, ip: Some(mapped), port: 443 };
        prop_assert_eq!(p.decide_connect(&raw).rule, "blk");
        prop_assert_eq!(p.decide_connect(&ConnectRequest::by_ip(IpAddr::V4(inside), 443)).rule, "blk");
    }
}
