//! The rebinding guard the gateway applies to real resolutions (and the resolver to passthrough
//! answers): an allowed name that resolves into loopback, private, link-local, CGNAT, metadata,
//! unique-local, multicast or reserved space is refused unless a network rule with CIDRs that
//! contain that address explicitly allows it. A domain-only allow never vouches for such an
//! address: that is exactly the DNS-rebinding attack (agentsh audit M3).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use policies::{
    Decision, Policy, Verdict,
    matchers::{
        cidr::{Cidr, canonical_ip},
        domain::{DomainPattern, Hostname},
    },
};

/// Rule name when a name resolved to no address at all.
pub const RESOLVED_NO_ADDRESS: &str = "resolved-no-address";
/// Rule name when a name resolved into a sensitive range no CIDR rule allows.
pub const RESOLVED_SENSITIVE: &str = "resolved-sensitive-address";
/// Rule name when every resolved address is public.
pub const RESOLVED_PUBLIC: &str = "resolved-public-address";

/// The sensitive class of `ip`, or `None` for an ordinary public address.
pub fn sensitive_class(ip: IpAddr) -> Option<&'static str> {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => v6_class(v6),
    }
}

fn v4_class(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, d] = ip.octets();
    Some(match (a, b) {
        (0, _) => "unspecified",
        (127, _) => "loopback",
        (169, 254) if c == 169 && d == 254 => "metadata",
        (169, 254) => "link-local",
        (10, _) | (192, 168) => "private",
        (172, 16..=31) => "private",
        (100, 64..=127) => "cgnat",
        (192, 0) if c == 0 => "ietf-protocol",
        (198, 18..=19) => "synthetic",
        (224..=239, _) => "multicast",
        (240..=255, _) => "reserved",
        _ => return None,
    })
}

fn v6_class(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    Some(match seg[0] {
        0xfd00 if seg[1..4] == [0x0ec2, 0, 0] => "metadata",
        0xfc00..=0xfdff => "unique-local",
        0xfe80..=0xfebf => "link-local",
        0xfec0..=0xfeff => "site-local",
        0xff00..=0xffff => "multicast",
        // NAT64 (64:ff9b::/96) reaches whatever IPv4 address it embeds.
        0x0064 if seg[1..6] == [0xff9b, 0, 0, 0, 0] => {
            let [.., hi, lo] = seg;
            return v4_class(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
        }
        _ => return None,
    })
}

#[derive(Debug, Clone)]
struct CidrRule {
    name: String,
    verdict: Verdict,
    message: Option<String>,
    domains: Vec<DomainPattern>,
    cidrs: Vec<Cidr>,
}

/// The network rules that name CIDRs, in file order: all [`check_resolved`] needs from a policy.
#[derive(Debug, Clone, Default)]
pub struct AddressGuard {
    rules: Vec<CidrRule>,
}

impl AddressGuard {
    /// Keep the CIDR-bearing network rules of `policy`.
    pub fn new(policy: &Policy) -> Self {
        let rules = policy
            .network_rules
            .iter()
            .filter(|r| !r.cidrs.is_empty())
            .map(|r| CidrRule {
                name: r.name.clone(),
                verdict: r.decision,
                message: r.message.clone(),
                domains: r.domains.clone(),
                cidrs: r.cidrs.clone(),
            })
            .collect();
        AddressGuard { rules }
    }

    /// The first CIDR rule (any port) covering `ip` for `name`.
    fn explicit(&self, name: &Hostname, ip: IpAddr) -> Option<&CidrRule> {
        self.rules.iter().find(|r| {
            r.cidrs.iter().any(|c| c.contains(ip))
                && (r.domains.is_empty() || r.domains.iter().any(|d| d.matches(name)))
        })
    }
}

/// Decide whether `name` may be used at `ips` (a real resolution). Every address must pass: a
/// public address passes; a sensitive one (see [`sensitive_class`]) passes only when the first
/// CIDR rule covering it (with matching domains, if the rule has any) permits. One failing
/// address refuses the whole answer, since the client could pick any of them. Ports are left to
/// the connect decision.
pub fn check_resolved(guard: &AddressGuard, name: &Hostname, ips: &[IpAddr]) -> Decision {
    if ips.is_empty() {
        return Decision {
            verdict: Verdict::Deny,
            rule: RESOLVED_NO_ADDRESS.into(),
            message: Some(format!("{name} resolved to no address")),
        };
    }
    let mut vouched_by: Option<&str> = None;
    for &ip in ips {
        let Some(class) = sensitive_class(ip) else { continue };
        match guard.explicit(name, ip) {
            Some(r) if r.verdict.permits() => vouched_by = Some(vouched_by.unwrap_or(&r.name)),
            Some(r) => {
                return Decision { verdict: r.verdict, rule: r.name.clone(), message: r.message.clone() };
            }
            None => {
                return Decision {
                    verdict: Verdict::Deny,
                    rule: RESOLVED_SENSITIVE.into(),
                    message: Some(format!("{name} resolved to {class} address {ip}; no CIDR rule allows it")),
                };
            }
        }
    }
    Decision { verdict: Verdict::Allow, rule: vouched_by.unwrap_or(RESOLVED_PUBLIC).into(), message: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Policy {
        policies::load_policy(yaml, "test.yaml").expect("test policy loads")
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().expect("ip")).collect()
    }

    #[test]
    fn classes() {
        for (ip, class) in [
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.20.0.1", "private"),
            ("192.168.1.1", "private"),
            ("100.100.100.200", "cgnat"),
            ("169.254.169.254", "metadata"),
            ("169.254.1.1", "link-local"),
            ("fe80::1", "link-local"),
            ("fd00:ec2::254", "metadata"),
            ("fd12::1", "unique-local"),
            ("::ffff:10.0.0.1", "private"),
            ("64:ff9b::7f00:1", "loopback"),
            ("198.18.0.1", "synthetic"),
        ] {
            assert_eq!(sensitive_class(ip.parse().expect("ip")), Some(class), "{ip}");
        }
        assert_eq!(sensitive_class("93.184.216.34".parse().expect("ip")), None);
        assert_eq!(sensitive_class("2606:2800:220:1::1".parse().expect("ip")), None);
    }

    #[test]
    fn domain_allow_does_not_vouch_for_private_addresses() {
        let p = policy(
            "version: 1\nname: t\nnetwork_rules:\n\
             - {name: web, domains: ['*.example.com'], ports: [443], decision: allow}\n\
             - {name: lab, domains: [db.example.com], cidrs: [10.9.0.0/16], decision: allow}\n\
             - {name: meta, cidrs: [169.254.0.0/16], decision: deny}\n",
        );
        let g = AddressGuard::new(&p);
        let name = Hostname::parse("www.example.com").expect("name");
        let d = check_resolved(&g, &name, &ips(&["93.184.216.34"]));
        assert_eq!((d.verdict, d.rule.as_str()), (Verdict::Allow, RESOLVED_PUBLIC));
        let d = check_resolved(&g, &name, &ips(&["93.184.216.34", "127.0.0.1"]));
        assert_eq!((d.verdict, d.rule.as_str()), (Verdict::Deny, RESOLVED_SENSITIVE));
        let d = check_resolved(&g, &name, &ips(&["169.254.169.254"]));
        assert_eq!((d.verdict, d.rule.as_str()), (Verdict::Deny, "meta"));
        let d = check_resolved(&g, &name, &ips(&["10.9.1.1"]));
        assert_eq!(d.verdict, Verdict::Deny, "lab rule is scoped to db.example.com");
        let db = Hostname::parse("db.example.com").expect("name");
        let d = check_resolved(&g, &db, &ips(&["10.9.1.1"]));
        assert_eq!((d.verdict, d.rule.as_str()), (Verdict::Allow, "lab"));
        assert_eq!(check_resolved(&g, &db, &[]).rule, RESOLVED_NO_ADDRESS);
    }
}
