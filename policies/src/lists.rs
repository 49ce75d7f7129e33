//! Named domain lists a policy can use in `domains:` as `@name`, so that well-known sets are
//! maintained here once and stay visible in the policy: `@known-doh` expands to every public
//! DNS-over-HTTPS endpoint below and its sub-domains.

/// Well-known public DoH (and DoT) endpoint names, normalised (lower-case, no trailing dot).
/// A policy denies them with `domains: ["@known-doh"]`.
pub const KNOWN_DOH_HOSTS: &[&str] = &[
    "dns.google",
    "dns.google.com",
    "8888.google",
    "cloudflare-dns.com",
    "mozilla.cloudflare-dns.com",
    "chrome.cloudflare-dns.com",
    "one.one.one.one",
    "1dot1dot1dot1.cloudflare-dns.com",
    "security.cloudflare-dns.com",
    "family.cloudflare-dns.com",
    "dns.quad9.net",
    "dns9.quad9.net",
    "dns10.quad9.net",
    "dns11.quad9.net",
    "doh.opendns.com",
    "dns.opendns.com",
    "doh.familyshield.opendns.com",
    "dns.adguard.com",
    "dns.adguard-dns.com",
    "dns.nextdns.io",
    "doh.cleanbrowsing.org",
    "doh.dns.sb",
    "dns.alidns.com",
    "doh.pub",
    "dns.controld.com",
    "freedns.controld.com",
    "doh.mullvad.net",
    "dns.mullvad.net",
    "doh.libredns.gr",
    "dns.switch.ch",
    "ordns.he.net",
];

/// The names of the lists, as written in policies.
pub const LIST_NAMES: &[&str] = &["@known-doh"];

/// The hosts of the list `name` (with its `@`), if there is one.
pub fn named_list(name: &str) -> Option<&'static [&'static str]> {
    match name {
        "@known-doh" => Some(KNOWN_DOH_HOSTS),
        _ => None,
    }
}

#[cfg(test)]
mod tests {

    use crate::{CompiledPolicy, ConnectRequest, Verdict, matchers::domain::Hostname};

    #[test]
    fn known_doh_expands_to_hosts_and_subdomains() {
        let policy = crate::load_policy(
            "network_rules:\n  - {name: no-doh, domains: ['@known-doh'], decision: deny}\n  - {name: rest, decision: allow}\n",
            "t.yaml",
        )
        .unwrap();
        let c = CompiledPolicy::new(&policy);
        for name in ["dns.google", "a.dns.google", "cloudflare-dns.com"] {
            let d = c.decide_connect(&ConnectRequest::by_name(Hostname::parse(name).unwrap(), 443));
            assert_eq!((d.verdict, d.rule.as_str()), (Verdict::Deny, "no-doh"), "{name}");
        }
        let d = c.decide_connect(&ConnectRequest::by_name(Hostname::parse("google.com").unwrap(), 443));
        assert_eq!(d.rule, "rest");
    }

    #[test]
    fn unknown_lists_are_load_errors_naming_the_entry() {
        let err = crate::load_policy(
            "network_rules:\n  - {name: x, domains: ['@nope'], decision: deny}\n",
            "t.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("t.yaml:2:") && err.contains("network_rules[0].domains[0]"), "{err}");
        assert!(err.contains("unknown domain list \"@nope\""), "{err}");
    }
}
