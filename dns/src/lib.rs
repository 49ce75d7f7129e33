//! Session resolver: answers every DNS question of a sandbox, decides each one by policy
//! (`policies::decide_dns`), never forwards a denied name, hands out synthetic addresses bound
//! 1:1 to names, applies `dns_redirects`, and keeps the TTL-aware name↔address map used to name
//! later connects. Not implemented yet: see the issue tracker.
#![forbid(unsafe_code)]
