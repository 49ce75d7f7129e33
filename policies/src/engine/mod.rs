//! The pure decision engine: a [`Policy`] compiled once into lookup structures, then asked
//! questions with typed requests. No IO and no async; every answer is a [`Decision`] (or a
//! matched redirect rule) naming the rule that produced it.
//!
//! Compilation is infallible because every value was validated when the policy was loaded. The
//! network rules keep agentsh's semantics (first match in file order wins; within a rule ports,
//! domains and CIDRs must all match; no match denies), but a request never scans the rule list:
//! candidates come from a domain suffix trie, a CIDR prefix table and the short list of rules
//! that name neither domains nor CIDRs.

pub mod db;
pub mod file;
mod network;
mod redirect;
mod request;
pub mod unix;

use crate::{
    Decision, Policy, Verdict,
    matchers::{domain_trie::DomainTrie, ports::PortSet, prefix_table::PrefixTable},
    model::network::{ConnectRedirect, DnsRedirect},
};

pub use redirect::normalise_connect_host;
pub use request::ConnectRequest;

use redirect::RedirectMatcher;

/// Rule name of the decision made when no network rule matches a connection.
pub const DEFAULT_DENY_NETWORK: &str = "default-deny-network";
/// Rule name of the decision made when no network rule governs a DNS name.
pub const DEFAULT_DENY_DNS: &str = "default-deny-dns";

/// One network rule with the parts the engine checks after candidate lookup.
#[derive(Debug, Clone)]
struct CompiledRule {
    name: String,
    verdict: Verdict,
    message: Option<String>,
    ports: PortSet,
    has_domains: bool,
    has_cidrs: bool,
}

impl CompiledRule {
    fn decision(&self) -> Decision {
        Decision { verdict: self.verdict, rule: self.name.clone(), message: self.message.clone() }
    }
}

/// A policy compiled for fast, allocation-light decisions. Cheap to share behind an `Arc`;
/// all methods take `&self`.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    rules: Vec<CompiledRule>,
    domains: DomainTrie,
    prefixes: PrefixTable,
    /// Rules with neither domains nor CIDRs, in file order: they match any destination.
    unscoped: Vec<u32>,
    dns_redirects: Vec<DnsRedirect>,
    dns_matcher: RedirectMatcher,
    connect_redirects: Vec<ConnectRedirect>,
    connect_matcher: RedirectMatcher,
}

impl CompiledPolicy {
    /// Compile `policy`. Never fails: patterns, CIDRs, ports and regexes were validated at load.
    pub fn new(policy: &Policy) -> Self {
        let mut rules = Vec::with_capacity(policy.network_rules.len());
        let mut unscoped = Vec::new();
        let mut domain_pairs = Vec::new();
        let mut cidr_pairs = Vec::new();
        for (index, rule) in (0u32..).zip(&policy.network_rules) {
            domain_pairs.extend(rule.domains.iter().map(|d| (d, index)));
            cidr_pairs.extend(rule.cidrs.iter().map(|c| (c, index)));
            if rule.domains.is_empty() && rule.cidrs.is_empty() {
                unscoped.push(index);
            }
            rules.push(CompiledRule {
                name: rule.name.clone(),
                verdict: rule.decision,
                message: rule.message.clone(),
                ports: PortSet::new(&rule.ports),
                has_domains: !rule.domains.is_empty(),
                has_cidrs: !rule.cidrs.is_empty(),
            });
        }
        CompiledPolicy {
            rules,
            domains: DomainTrie::from_patterns(domain_pairs),
            prefixes: PrefixTable::from_cidrs(cidr_pairs),
            unscoped,
            dns_matcher: RedirectMatcher::new(policy.dns_redirects.iter().map(|r| &r.pattern)),
            dns_redirects: policy.dns_redirects.clone(),
            connect_matcher: RedirectMatcher::new(policy.connect_redirects.iter().map(|r| &r.pattern)),
            connect_redirects: policy.connect_redirects.clone(),
        }
    }

    /// Number of network rules compiled.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }
}

impl From<&Policy> for CompiledPolicy {
    fn from(policy: &Policy) -> Self {
        CompiledPolicy::new(policy)
    }
}
