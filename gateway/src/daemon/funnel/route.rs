//! Where a redirected connection may go. The name comes from the session resolver first (a
//! synthetic address is bound to exactly one name; passthrough answers are remembered), then
//! from the first bytes (TLS SNI, HTTP Host). The verdict is `decide_connect` on that name and
//! the real address; `connect_redirects` can send the connection elsewhere.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use dns::{Family, check_resolved};
use policies::{
    ConnectRequest, Decision, Verdict,
    config::DnsMode,
    matchers::{cidr::canonical_ip, domain::Hostname},
    model::network::{ConnectRedirect, TlsRedirectMode, Visibility},
};
use redirect::OriginalDst;

use super::{Funnel, Named};

/// Where to dial.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// These addresses, in order, until one answers.
    Tcp(Vec<SocketAddr>),
    /// A Unix socket (`redirect_to_unix`).
    Unix(PathBuf),
}

/// A `connect_redirects` rule that applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Redirected {
    /// The rule's name.
    pub rule: String,
    /// `redirect_to` or `unix:PATH`.
    pub to: String,
    /// Whether to record a `connect_redirect` event.
    pub visible: bool,
    /// The rule's message.
    pub message: Option<String>,
    /// `tls.mode: rewrite_sni`: the server name to present upstream. The agent's TLS is then
    /// terminated with the session CA and a new TLS connection made to the target.
    pub rewrite_sni: Option<String>,
}

/// The outcome of routing one connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The verdict and its rule.
    pub decision: Decision,
    /// The name the connection was decided on.
    pub name: Option<Hostname>,
    /// Where to dial (empty when denied).
    pub target: Target,
    /// The connect redirect, if one applied.
    pub redirect: Option<Redirected>,
}

fn deny(rule: &str, message: String) -> Decision {
    Decision { verdict: Verdict::Deny, rule: rule.into(), message: Some(message) }
}

impl Route {
    fn denied(decision: Decision, name: Option<Hostname>) -> Route {
        Route { decision, name, target: Target::Tcp(Vec::new()), redirect: None }
    }
}

impl Funnel {
    /// Real addresses of `name` from the session's upstream, IPv4 first.
    async fn resolve(&self, name: &Hostname) -> Vec<IpAddr> {
        let mut ips = self.resolver.resolve_real(name, Family::V4).await.unwrap_or_default();
        ips.extend(self.resolver.resolve_real(name, Family::V6).await.unwrap_or_default());
        ips.into_iter().map(canonical_ip).collect()
    }

    /// Route a connection whose original destination is `dst` and whose first bytes said `named`.
    pub(super) async fn route(&self, dst: &OriginalDst, named: &Named) -> Route {
        // Bytes that claim TLS or HTTP but do not parse may still be accepted upstream: relaying
        // them unnamed would let a broken ClientHello slip past every name rule.
        if named.protocol == "malformed" {
            let d =
                deny("malformed-first-bytes", "the first bytes claim TLS or HTTP but do not parse".into());
            return Route::denied(d, None);
        }
        let bound = self.resolver.name_for(dst.ip());
        if let (Some(b), Some(h)) = (&bound, &named.host)
            && b != h
        {
            let d = deny("name-mismatch", format!("{h} is not the name this address was resolved for ({b})"));
            return Route::denied(d, bound);
        }
        let synthetic = bound.is_some() && self.resolver.config().mode == DnsMode::Synthetic;
        let name = bound.or_else(|| named.host.clone());
        let request_ip = if synthetic { None } else { Some(dst.ip()) };
        let req = ConnectRequest::new(name.clone(), request_ip, dst.port());
        if let Some(r) = self.compiled.match_connect_redirect_for(&req) {
            return self.redirect_route(r, name, named).await;
        }
        if synthetic {
            let Some(name) = name else {
                return Route::denied(Decision::default_deny("default-deny-network"), None);
            };
            return self.synthetic_route(name, dst.port()).await;
        }
        let d = self.compiled.decide_connect(&req);
        if d.verdict.permits()
            && bound_by_name_only(self, &d)
            && !dst.ip().is_loopback()
            && let Some(host) = &named.host
            && name.as_ref() == Some(host)
            && !self.resolve(host).await.contains(&dst.ip())
        {
            // A rule that matched by name alone only holds when the name points at the address
            // the agent dialled: otherwise any allowed SNI would carry traffic anywhere.
            let d = deny("name-address-mismatch", format!("{host} does not resolve to {}", dst.ip()));
            return Route::denied(d, name);
        }
        if !d.verdict.permits() {
            return Route::denied(d, name);
        }
        Route { decision: d, name, target: Target::Tcp(vec![dst.dst]), redirect: None }
    }

    /// A synthetic address: the name is certain; resolve it for real, refuse sensitive answers
    /// (no rebinding), decide on the name and the real address.
    async fn synthetic_route(&self, name: Hostname, port: u16) -> Route {
        let ips = self.resolve(&name).await;
        let guard = check_resolved(self.resolver.guard(), &name, &ips);
        if !guard.verdict.permits() {
            return Route::denied(guard, Some(name));
        }
        let d = self.compiled.decide_connect(&ConnectRequest::new(
            Some(name.clone()),
            ips.first().copied(),
            port,
        ));
        if !d.verdict.permits() {
            return Route::denied(d, Some(name));
        }
        let targets = ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect();
        Route { decision: d, name: Some(name), target: Target::Tcp(targets), redirect: None }
    }

    async fn redirect_route(&self, r: &ConnectRedirect, name: Option<Hostname>, named: &Named) -> Route {
        let rewrite_sni =
            r.tls.as_ref().filter(|t| t.mode == TlsRedirectMode::RewriteSni).and_then(|t| t.sni.clone());
        if rewrite_sni.is_some() && (named.protocol != "tls" || named.host.is_none()) {
            // Terminating needs a ClientHello with a name to issue the agent's certificate for;
            // anything else would be carried to the target unexamined.
            let d = deny(&r.name, "tls.mode rewrite_sni applies only to TLS clients that send SNI".into());
            return Route::denied(d, name);
        }
        let allow = Decision { verdict: Verdict::Allow, rule: r.name.clone(), message: r.message.clone() };
        let visible = r.visibility != Visibility::Silent;
        if let Some(path) = &r.redirect_to_unix {
            let redirect = Redirected {
                rule: r.name.clone(),
                to: format!("unix:{}", path.display()),
                visible,
                message: r.message.clone(),
                rewrite_sni: None,
            };
            return Route {
                decision: allow,
                name,
                target: Target::Unix(path.clone()),
                redirect: Some(redirect),
            };
        }
        let to = r.redirect_to.clone().unwrap_or_default();
        let targets = match to.rsplit_once(':') {
            Some((host, port)) => {
                match (host.trim_matches(['[', ']']).parse::<IpAddr>(), port.parse::<u16>()) {
                    (Ok(ip), Ok(port)) => vec![SocketAddr::new(ip, port)],
                    (Err(_), Ok(port)) => match Hostname::parse(host) {
                        Ok(h) => {
                            self.resolve(&h).await.into_iter().map(|ip| SocketAddr::new(ip, port)).collect()
                        }
                        Err(_) => Vec::new(),
                    },
                    _ => Vec::new(),
                }
            }
            None => Vec::new(),
        };
        if targets.is_empty() {
            return Route::denied(deny(&r.name, format!("redirect target {to} did not resolve")), name);
        }
        let redirect =
            Redirected { rule: r.name.clone(), to, visible, message: r.message.clone(), rewrite_sni };
        Route { decision: allow, name, target: Target::Tcp(targets), redirect: Some(redirect) }
    }
}

/// Whether the deciding rule matched by name only (no CIDRs to vouch for the address).
fn bound_by_name_only(f: &Funnel, d: &Decision) -> bool {
    f.policy
        .network_rules
        .iter()
        .find(|r| r.name == d.rule)
        .is_some_and(|r| !r.domains.is_empty() && r.cidrs.is_empty())
}
