//! Public DNS-over-HTTPS endpoints, by name. DoH looks like any HTTPS connection, so the only
//! way to stop an agent from resolving around the session resolver is to deny these names (and
//! DoT's port 853, which the gateway denies unless a network rule allows it).

use policies::matchers::domain::Hostname;

/// Well-known public DoH (and DoT) endpoint names, normalised (lower-case, no trailing dot).
/// A policy can deny them with a `domains:` rule; [`is_known_doh_host`] checks a name against
/// the list, including sub-domains (e.g. `a.dns.google`).
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

/// Whether `name` is one of [`KNOWN_DOH_HOSTS`] or a sub-domain of one.
pub fn is_known_doh_host(name: &Hostname) -> bool {
    let n = name.as_str();
    KNOWN_DOH_HOSTS.iter().any(|h| {
        n == *h || (n.len() > h.len() && n.ends_with(h) && n.as_bytes()[n.len() - h.len() - 1] == b'.')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_are_normalised_and_matched_with_subdomains() {
        for h in KNOWN_DOH_HOSTS {
            let parsed = Hostname::parse(h).expect("list entry is a host name");
            assert_eq!(parsed.as_str(), *h, "entries are stored normalised");
        }
        let yes = |s| is_known_doh_host(&Hostname::parse(s).expect("name"));
        assert!(yes("DNS.Google."));
        assert!(yes("x.cloudflare-dns.com"));
        assert!(!yes("notdns.google"));
        assert!(!yes("example.com"));
    }
}
