//! Public DNS-over-HTTPS endpoints, by name. DoH looks like any HTTPS connection, so the only
//! way to stop an agent from resolving around the session resolver is to deny these names (and
//! DoT's port 853, which the gateway denies unless a network rule allows it).

use policies::matchers::domain::Hostname;

pub use policies::lists::KNOWN_DOH_HOSTS;

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
