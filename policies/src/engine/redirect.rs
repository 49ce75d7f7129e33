//! `dns_redirects` and `connect_redirects` matching: first matching rule in file order, found with
//! one [`regex::RegexSet`] pass over all patterns and confirmed with the rule's own regex.
//!
//! Inputs are normalised before matching (lower-case, no trailing dot, IPv6 literals in brackets,
//! v4-mapped IPv6 folded to IPv4) so that `API.Example.com.` cannot slip past a redirect written
//! for `api.example.com` (agentsh #97).

use std::net::IpAddr;

use regex::{RegexSet, RegexSetBuilder};

use crate::{
    matchers::{cidr::canonical_ip, domain::Hostname},
    model::{
        network::{ConnectRedirect, DnsRedirect},
        serde_str::RegexPattern,
    },
};

use super::{CompiledPolicy, ConnectRequest};

/// Upper bound on the compiled size of the combined set; past it we fall back to trying each
/// rule's regex in order, which gives the same answers more slowly.
const SET_SIZE_LIMIT: usize = 64 << 20;

/// Finds the first of an ordered list of regexes that matches a text.
#[derive(Debug, Clone)]
pub(super) struct RedirectMatcher {
    /// `None` when there are no patterns or the set exceeded [`SET_SIZE_LIMIT`].
    set: Option<RegexSet>,
}

impl RedirectMatcher {
    pub(super) fn new<'a>(patterns: impl Iterator<Item = &'a RegexPattern>) -> Self {
        let sources: Vec<&str> = patterns.map(|p| p.source.as_str()).collect();
        let set = if sources.is_empty() {
            None
        } else {
            RegexSetBuilder::new(&sources).size_limit(SET_SIZE_LIMIT).build().ok()
        };
        RedirectMatcher { set }
    }

    /// Index of the first of `items` (the list the patterns came from, in the same order) whose
    /// pattern matches `text`.
    fn first<T>(&self, items: &[T], pattern: impl Fn(&T) -> &RegexPattern, text: &str) -> Option<usize> {
        match &self.set {
            Some(set) => set
                .matches(text)
                .into_iter()
                .find(|&i| items.get(i).is_some_and(|item| pattern(item).regex.is_match(text))),
            None => items.iter().position(|item| pattern(item).regex.is_match(text)),
        }
    }
}

/// The host part of a connect-redirect key: IP literals in canonical form (IPv6 in brackets,
/// v4-mapped IPv6 as plain IPv4), names lower-case and IDNA-encoded with no trailing dot. Text
/// that is neither is lower-cased and stripped of trailing dots as a best effort.
pub fn normalise_connect_host(host: &str) -> String {
    let host = host.trim();
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return match canonical_ip(ip) {
            IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
    }
    match Hostname::parse(bare) {
        Ok(name) => name.as_str().to_string(),
        Err(_) => bare.trim_end_matches('.').to_ascii_lowercase(),
    }
}

impl CompiledPolicy {
    /// The first `dns_redirects` rule whose regex matches `name` (already normalised by
    /// [`Hostname`]: lower-case, no trailing dot). Matching is unanchored, as in agentsh.
    pub fn match_dns_redirect(&self, name: &Hostname) -> Option<&DnsRedirect> {
        let i = self.dns_matcher.first(&self.dns_redirects, |r| &r.pattern, name.as_str())?;
        self.dns_redirects.get(i)
    }

    /// The first `connect_redirects` rule whose regex matches `host:port`, with `host` normalised
    /// by [`normalise_connect_host`] first. Matching is unanchored, as in agentsh.
    pub fn match_connect_redirect(&self, host: &str, port: u16) -> Option<&ConnectRedirect> {
        let key = format!("{}:{port}", normalise_connect_host(host));
        let i = self.connect_matcher.first(&self.connect_redirects, |r| &r.pattern, &key)?;
        self.connect_redirects.get(i)
    }

    /// [`match_connect_redirect`](Self::match_connect_redirect) for a request: tried with the name
    /// when it is known, then with the address when the name matched nothing.
    pub fn match_connect_redirect_for(&self, req: &ConnectRequest) -> Option<&ConnectRedirect> {
        let by_name = req.host.as_ref().and_then(|h| self.match_connect_redirect(h.as_str(), req.port));
        by_name.or_else(|| req.ip.and_then(|ip| self.match_connect_redirect(&ip.to_string(), req.port)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_hosts() {
        assert_eq!(normalise_connect_host("API.Example.COM."), "api.example.com");
        assert_eq!(normalise_connect_host("2001:DB8::1"), "[2001:db8::1]");
        assert_eq!(normalise_connect_host("[2001:db8:0::1]"), "[2001:db8::1]");
        assert_eq!(normalise_connect_host("::ffff:10.0.0.1"), "10.0.0.1");
        assert_eq!(normalise_connect_host("10.0.0.1"), "10.0.0.1");
        assert_eq!(normalise_connect_host("Weird Host.."), "weird host");
    }
}
