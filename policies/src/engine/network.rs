//! Network rule decisions: [`CompiledPolicy::decide_connect`] and [`CompiledPolicy::decide_dns`].
//!
//! Both follow "first rule in file order wins". They find that rule without scanning: each
//! candidate source (domain trie, prefix table, unscoped rules) yields its lowest index that
//! passes the remaining checks, and the smallest of those is the answer.

use crate::{
    Decision, Verdict,
    matchers::{cidr::canonical_ip, domain::Hostname},
};

use super::{CompiledPolicy, CompiledRule, ConnectRequest, DEFAULT_DENY_DNS, DEFAULT_DENY_NETWORK};

/// The smaller of two optional rule indices.
fn earliest(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Whether a rule that matched a name by its domains (or has no scope at all) settles the DNS
/// question for that name. Any non-deny verdict does: the name is usable on at least one port or
/// address, so it is answered (or approved). A deny settles it only when it covers every
/// connection to the name, that is when it lists neither ports nor CIDRs; otherwise later rules
/// may still allow other ports or addresses, and the connect decision enforces the deny.
fn settles_dns(rule: &CompiledRule) -> bool {
    rule.verdict != Verdict::Deny || (rule.ports.is_any() && !rule.has_cidrs)
}

impl CompiledPolicy {
    fn rule(&self, index: u32) -> &CompiledRule {
        &self.rules[index as usize]
    }

    /// Decide a connection. Rules are taken in file order and the first that matches decides.
    /// A rule matches when all of these hold:
    /// - its ports contain `req.port` (no ports: any port);
    /// - it has no domains, or `req.host` is known and matches one of them;
    /// - it has no CIDRs, or `req.ip` is known and lies in one of them (v4-mapped IPv6 addresses
    ///   are compared as IPv4).
    ///
    /// No match gives [`Verdict::Deny`] with rule `default-deny-network`.
    pub fn decide_connect(&self, req: &ConnectRequest) -> Decision {
        let port = req.port;

        // Rules whose CIDRs contain the address, sorted: both a candidate source for CIDR-only
        // rules and the membership test for rules that have domains and CIDRs.
        let mut by_cidr = Vec::new();
        if let Some(ip) = req.ip {
            self.prefixes.extend_matches(canonical_ip(ip), &mut by_cidr);
            by_cidr.sort_unstable();
            by_cidr.dedup();
        }

        // CIDR-only rules (rules that also have domains are found through the trie below).
        let mut best = by_cidr.iter().copied().find(|&i| {
            let r = self.rule(i);
            !r.has_domains && r.ports.contains(port)
        });

        let bound = best.unwrap_or(u32::MAX);
        let from_unscoped = self
            .unscoped
            .iter()
            .copied()
            .take_while(|&i| i < bound)
            .find(|&i| self.rule(i).ports.contains(port));
        best = earliest(best, from_unscoped);

        if let Some(host) = &req.host {
            let bound = best.unwrap_or(u32::MAX);
            // Accepting anything at or past `bound` stops the search early; it is discarded below.
            let from_domains = self.domains.first_match(host, |i| {
                if i >= bound {
                    return true;
                }
                let r = self.rule(i);
                r.ports.contains(port) && (!r.has_cidrs || by_cidr.binary_search(&i).is_ok())
            });
            best = earliest(best, from_domains.filter(|&i| i < bound));
        }

        match best {
            Some(i) => self.rule(i).decision(),
            None => Decision::default_deny(DEFAULT_DENY_NETWORK),
        }
    }

    /// Decide whether the session resolver answers `name` (DNS is policy: a refused name is never
    /// forwarded upstream). The rules considered, in file order, are those whose domains match
    /// `name` and those with neither domains nor CIDRs; CIDR-only rules are skipped, so no
    /// CIDR allow ever makes a name resolvable. The first considered rule that settles the name
    /// decides:
    /// - `allow`, `audit` and `approve` rules always settle it (with their own verdict), even
    ///   when they are limited to some ports or CIDRs: the name is usable somewhere;
    /// - a `deny` rule settles it only when it lists neither ports nor CIDRs. A deny of
    ///   `*.example.com` on port 22 leaves the name resolvable for a later allow on 443, and the
    ///   connect decision still refuses port 22.
    ///
    /// No settling rule gives [`Verdict::Deny`] with rule `default-deny-dns`.
    pub fn decide_dns(&self, name: &Hostname) -> Decision {
        let from_unscoped = self.unscoped.iter().copied().find(|&i| settles_dns(self.rule(i)));
        let bound = from_unscoped.unwrap_or(u32::MAX);
        let from_domains = self
            .domains
            .first_match(name, |i| i >= bound || settles_dns(self.rule(i)))
            .filter(|&i| i < bound);
        match earliest(from_unscoped, from_domains) {
            Some(i) => self.rule(i).decision(),
            None => Decision::default_deny(DEFAULT_DENY_DNS),
        }
    }
}
