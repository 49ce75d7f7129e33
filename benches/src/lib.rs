//! Shared fixtures for the benchmarks: deterministic policy generators and the naive linear-scan
//! decision used as the baseline the compiled engine is compared with.
#![forbid(unsafe_code)]

use std::{fmt::Write, net::IpAddr};

use policies::{ConnectRequest, Decision, Policy, engine::DEFAULT_DENY_NETWORK, matchers::domain::Hostname};

/// A small deterministic generator (xorshift64*), so every run benchmarks the same policy.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (zero is replaced by a fixed non-zero seed).
    pub fn new(seed: u64) -> Self {
        Rng(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

const TLDS: &[&str] = &["com", "net", "org", "io", "dev", "internal"];

/// The domain pattern of domain rule `i`: exact names, `*` and `**` in leading, middle and
/// trailing positions, spread over a few top-level domains.
pub fn domain_pattern(i: usize) -> String {
    let tld = TLDS[i % TLDS.len()];
    match i % 5 {
        0 => format!("api{i}.svc{i}.{tld}"),
        1 => format!("*.svc{i}.{tld}"),
        2 => format!("**.zone{i}.{tld}"),
        3 => format!("api.*.region{i}.{tld}"),
        _ => format!("cdn{i}.**.{tld}"),
    }
}

/// A host name that matches [`domain_pattern`]`(i)` (and, by construction, no earlier pattern).
pub fn name_for_pattern(i: usize) -> Hostname {
    let tld = TLDS[i % TLDS.len()];
    let text = match i % 5 {
        0 => format!("api{i}.svc{i}.{tld}"),
        1 => format!("www.svc{i}.{tld}"),
        2 => format!("a.b.zone{i}.{tld}"),
        3 => format!("api.eu.region{i}.{tld}"),
        _ => format!("cdn{i}.x.y.{tld}"),
    };
    Hostname::parse(&text).unwrap_or_else(|e| panic!("generated name {text}: {e}"))
}

/// The CIDR of CIDR rule `i`: IPv4 blocks of /8 to /32 under first octets 11-99 (so 203.0.113.0/24
/// is never covered), and every eighth rule an IPv6 block under 2001:db8::/32.
pub fn cidr_block(i: usize, rng: &mut Rng) -> String {
    if i % 8 == 7 {
        let len = 48 + rng.below(81) as u8;
        let addr = std::net::Ipv6Addr::new(
            0x2001,
            0xdb8,
            (i >> 16) as u16,
            i as u16,
            rng.below(65536) as u16,
            0,
            0,
            1,
        );
        return format!("{addr}/{len}");
    }
    let first = 11 + rng.below(89) as u8;
    let len = match rng.below(10) {
        0 => 8 + rng.below(5) as u8,
        1..=5 => 16 + rng.below(9) as u8,
        _ => 25 + rng.below(8) as u8,
    };
    let rest = rng.next_u64();
    format!("{first}.{}.{}.{}/{len}", rest as u8, (rest >> 8) as u8, (rest >> 16) as u8)
}

fn ports(rng: &mut Rng) -> &'static str {
    match rng.below(5) {
        0 => "[]",
        1 => "[443]",
        2 => "[80, 443]",
        3 => "['8000-8999', 443]",
        _ => "[443, 5432]",
    }
}

/// A policy with `n` domain rules and `n` CIDR rules, interleaved (domain rule `k` at index `2k`,
/// CIDR rule `k` at `2k + 1`), plus two port-only deny rules for ports nobody benchmarks.
/// Also returns the CIDR texts so callers can pick addresses inside them.
pub fn generate(n: usize) -> (Policy, Vec<String>) {
    let mut rng = Rng::new(n as u64 + 1);
    let mut yaml = String::from("network_rules:\n  - {name: no-smtp, ports: [25], decision: deny}\n");
    let mut cidrs = Vec::with_capacity(n);
    for k in 0..n {
        let verdict = if rng.below(10) == 0 { "deny" } else { "allow" };
        let _ = writeln!(
            yaml,
            "  - {{name: d{k}, domains: ['{}'], ports: {}, decision: {verdict}}}",
            domain_pattern(k),
            ports(&mut rng)
        );
        let cidr = cidr_block(k, &mut rng);
        let _ = writeln!(
            yaml,
            "  - {{name: c{k}, cidrs: ['{cidr}'], ports: {}, decision: {verdict}}}",
            ports(&mut rng)
        );
        cidrs.push(cidr);
    }
    yaml.push_str("  - {name: no-telnet, ports: [23], decision: deny}\n");
    let policy = serde_norway::from_str(&yaml).unwrap_or_else(|e| panic!("generated policy: {e}"));
    (policy, cidrs)
}

/// The first address of a CIDR text such as `10.1.2.0/24` (its network address).
pub fn network_address(cidr: &str) -> IpAddr {
    let (addr, _) = cidr.split_once('/').unwrap_or((cidr, ""));
    addr.parse().unwrap_or_else(|e| panic!("generated address {addr}: {e}"))
}

/// The naive decision: every rule in order, with the reference matchers. The baseline for the
/// compiled engine's figures.
pub fn linear_decide_connect(policy: &Policy, req: &ConnectRequest) -> Decision {
    for rule in &policy.network_rules {
        let port_ok = rule.ports.is_empty() || rule.ports.iter().any(|p| p.contains(req.port));
        let domain_ok = rule.domains.is_empty()
            || req.host.as_ref().is_some_and(|h| rule.domains.iter().any(|d| d.matches(h)));
        let cidr_ok =
            rule.cidrs.is_empty() || req.ip.is_some_and(|ip| rule.cidrs.iter().any(|c| c.contains(ip)));
        if port_ok && domain_ok && cidr_ok {
            return Decision {
                verdict: rule.decision,
                rule: rule.name.clone(),
                message: rule.message.clone(),
            };
        }
    }
    Decision::default_deny(DEFAULT_DENY_NETWORK)
}
