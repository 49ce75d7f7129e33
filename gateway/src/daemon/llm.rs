//! The session's LLM proxy, wired in: built from the policy's `llm:` section when it names
//! providers, reached by the sandbox over a plain listener on its own loopback
//! ([`LISTEN`], advertised through `ANTHROPIC_BASE_URL`, `OPENAI_BASE_URL`, …) and by TLS to a
//! provider host, which the funnel terminates with the session CA and hands over. Upstream TLS
//! trusts what the rest of the gateway trusts; names are resolved through the session's
//! upstream resolver and refused when they point at private or metadata ranges that no rule
//! vouches for (the same rebinding guard as every connect).

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
};

use anyhow::Context;
use dns::{Family, SessionResolver, check_resolved};
use llmproxy::proxy::DialFuture;
use llmproxy::{DLP_REDACTION, Dialer, EventSink, LlmEvent, LlmProxy, ProxyConfig, Upstream};
use policies::{Policy, config::ServerConfig, matchers::domain::Hostname};
use tokio::net::TcpStream;

use super::{Recorder, tls::UpstreamTls};
use crate::events::{Event, EventPolicy};

/// Where the plain listener sits inside every sandbox (its own network namespace).
pub const LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 18080);

/// The proxy for a session whose policy names LLM providers; `None` when it names none.
pub fn session_proxy(
    policy: &Policy,
    config: &ServerConfig,
    upstream_tls: &UpstreamTls,
    resolver: Arc<SessionResolver>,
    sink: Arc<dyn EventSink>,
) -> anyhow::Result<Option<Arc<LlmProxy>>> {
    if policy.llm.providers.is_empty() {
        return Ok(None);
    }
    let mut proxy_config = ProxyConfig::from_policy(&policy.llm).context("llm")?;
    proxy_config.max_body = usize::try_from(config.llm.max_body_bytes).unwrap_or(usize::MAX);
    proxy_config.fallback_tokens = config.llm.usage_fallback_tokens;
    let tls = upstream_tls.client_config(vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    let upstream = Upstream::with_tls(Arc::new(GatewayDialer { resolver }), tls);
    Ok(Some(LlmProxy::new(proxy_config, upstream, sink)))
}

/// Dials provider upstreams for the proxy.
struct GatewayDialer {
    resolver: Arc<SessionResolver>,
}

impl Dialer for GatewayDialer {
    fn dial<'a>(&'a self, host: &'a str, port: u16) -> DialFuture<'a> {
        Box::pin(async move {
            let ips: Vec<IpAddr> = match host.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => {
                    let name = Hostname::parse(host)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
                    let mut ips = self.resolver.resolve_real(&name, Family::V4).await.unwrap_or_default();
                    ips.extend(self.resolver.resolve_real(&name, Family::V6).await.unwrap_or_default());
                    let guard = check_resolved(self.resolver.guard(), &name, &ips);
                    if !guard.verdict.permits() {
                        let why = guard.message.unwrap_or_else(|| guard.rule.clone());
                        return Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
                    }
                    ips
                }
            };
            let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"));
            for ip in ips {
                match TcpStream::connect((ip, port)).await {
                    Ok(s) => {
                        s.set_nodelay(true)?;
                        return Ok(s);
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        })
    }
}

/// Turns the proxy's events into audit events of the session.
pub struct AuditSink {
    /// Where events go.
    pub recorder: Arc<Recorder>,
    /// The session.
    pub session_id: String,
    /// The command events are attributed to (the latest started).
    pub current_command: Arc<Mutex<Option<String>>>,
}

impl EventSink for AuditSink {
    /// One `llm_request` (or `llm_request_blocked`) event, then one `dlp_redaction` event per
    /// detector and direction with a finding, attributed to the same command.
    fn emit(&self, ev: LlmEvent) {
        let command = self.current_command.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut e = Event::new(ev.event_type(), &self.session_id);
        e.command_id = command.clone();
        e.domain = ev.sni.clone();
        e.policy = Some(EventPolicy {
            decision: ev.decision.as_str().into(),
            rule: ev.rule.clone(),
            message: ev.message.clone(),
        });
        e.fields = ev.fields();
        self.recorder.record(e);
        for r in ev.redaction_events() {
            let mut e = Event::new(DLP_REDACTION, &self.session_id);
            e.command_id = command.clone();
            e.domain = ev.sni.clone();
            e.policy =
                Some(EventPolicy { decision: r.decision.as_str().into(), rule: r.rule, message: None });
            e.fields = r.fields;
            self.recorder.record(e);
        }
    }
}
