//! `agentsh policy check POLICY --connect HOST:PORT | --dns NAME`: a policy author's tool that
//! prints each verdict and the rule that decided it, plus any redirect that would apply.

use std::{net::IpAddr, process::ExitCode};

use anyhow::{Context, bail};
use policies::{CompiledPolicy, ConnectRequest, Decision, matchers::domain::Hostname};
use serde_json::json;

use super::policy_source;

/// A parsed `--connect` target.
#[derive(Debug, PartialEq)]
struct Target {
    host: Option<Hostname>,
    ip: Option<IpAddr>,
    port: u16,
}

/// Parse `name:port`, `1.2.3.4:port` or `[v6]:port`.
fn parse_target(text: &str) -> anyhow::Result<Target> {
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => rest.split_once("]:").context("expected [IPv6]:PORT")?,
        None => text.rsplit_once(':').context("expected HOST:PORT")?,
    };
    let port: u16 = port.parse().ok().filter(|p| *p != 0).with_context(|| format!("bad port {port:?}"))?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Target { host: None, ip: Some(ip), port });
    }
    if text.starts_with('[') {
        bail!("{host:?} is not an IPv6 address");
    }
    let host = Hostname::parse(host).map_err(|e| anyhow::anyhow!("bad host {host:?}: {e}"))?;
    Ok(Target { host: Some(host), ip: None, port })
}

fn decision_json(kind: &str, target: &str, d: &Decision) -> serde_json::Value {
    json!({"check": kind, "target": target, "decision": d.verdict.as_str(), "rule": d.rule, "message": d.message})
}

fn print_decision(kind: &str, target: &str, d: &Decision) {
    print!("{kind} {target}: {} (rule {})", d.verdict, d.rule);
    match &d.message {
        Some(m) => println!(": {m}"),
        None => println!(),
    }
}

/// Decide every requested check against the policy and print the outcomes.
pub fn run(
    policy: &str,
    connects: &[String],
    ip: Option<IpAddr>,
    names: &[String],
    json: bool,
) -> anyhow::Result<ExitCode> {
    if connects.is_empty() && names.is_empty() {
        bail!("nothing to check: give --connect HOST:PORT and/or --dns NAME");
    }
    let compiled = CompiledPolicy::new(&policy_source::load(policy)?);
    let mut all_permitted = true;
    for text in connects {
        let mut t = parse_target(text).with_context(|| format!("--connect {text}"))?;
        if t.host.is_some() && ip.is_some() {
            t.ip = ip;
        }
        let d = compiled.decide_connect(&ConnectRequest { host: t.host.clone(), ip: t.ip, port: t.port });
        all_permitted &= d.verdict.permits();
        let redirect_host = t.host.as_ref().map(|h| h.to_string()).or(t.ip.map(|i| i.to_string()));
        let redirect = redirect_host.and_then(|h| compiled.match_connect_redirect(&h, t.port));
        if json {
            let mut v = decision_json("connect", text, &d);
            if let Some(r) = redirect {
                v["redirect"] = json!({
                    "rule": r.name,
                    "redirect_to": r.redirect_to,
                    "redirect_to_unix": r.redirect_to_unix,
                    "tls_mode": r.tls.as_ref().map(|t| format!("{:?}", t.mode)),
                    "sni": r.tls.as_ref().and_then(|t| t.sni.clone()),
                });
            }
            println!("{v}");
        } else {
            print_decision("connect", text, &d);
            if let Some(r) = redirect {
                let to = r
                    .redirect_to
                    .clone()
                    .or(r.redirect_to_unix.as_ref().map(|p| format!("unix:{}", p.display())));
                println!("  redirect (rule {}): to {}", r.name, to.unwrap_or_default());
            }
        }
    }
    for name in names {
        let host = Hostname::parse(name).map_err(|e| anyhow::anyhow!("--dns {name}: {e}"))?;
        let redirect = compiled.match_dns_redirect(&host);
        let d = compiled.decide_dns(&host);
        all_permitted &= d.verdict.permits() || redirect.is_some();
        if json {
            let mut v = decision_json("dns", name, &d);
            if let Some(r) = redirect {
                v["dns_redirect"] =
                    json!({"rule": r.name, "resolve_to": r.resolve_to.to_string(), "ttl": r.ttl});
            }
            println!("{v}");
        } else {
            match redirect {
                Some(r) => {
                    println!("dns {name}: redirect to {} ttl {} (rule {})", r.resolve_to, r.ttl, r.name)
                }
                None => print_decision("dns", name, &d),
            }
        }
    }
    Ok(ExitCode::from(if all_permitted { 0 } else { 1 }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let t = parse_target("API.example.com.:443").unwrap();
        assert_eq!(t.host.unwrap().as_str(), "api.example.com");
        assert_eq!(t.port, 443);
        assert_eq!(parse_target("10.0.0.1:80").unwrap().ip, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(parse_target("[::1]:5432").unwrap().ip, Some("::1".parse().unwrap()));
        assert!(parse_target("example.com").is_err());
        assert!(parse_target("example.com:0").is_err());
        assert!(parse_target("[example.com]:80").is_err());
    }
}
