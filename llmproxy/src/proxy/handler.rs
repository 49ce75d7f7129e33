//! One request through the proxy: route to a provider, read the body (bounded, decoded), leak
//! guard, model rules, request DLP, limits, credential injection, then upstream. Every refusal
//! happens before any upstream contact and is answered with a JSON error naming its rule.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use policies::model::llm::{ModelRules, ProviderKind};
use serde_json::Value;

use super::{
    ConnInfo, LlmProxy,
    body::{self, BodyError, Coding, ProxyBody},
    reply, respond,
};
use crate::{
    config::{ProviderConfig, ProxyConfig},
    dlp::{self, Action, Finding},
    events::{Decision, Direction, LlmEvent, add_finding},
    providers::{self, Endpoint},
    usage::Admission,
};

/// A refusal: status, error type, the rule that made it and why; answered as JSON.
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) kind: &'static str,
    pub(crate) rule: String,
    pub(crate) message: String,
    /// For 429: seconds until a retry can succeed.
    pub(crate) retry_after: Option<u64>,
    /// A failure on the way (upstream down, bad answer), not a policy verdict.
    pub(crate) failure: bool,
}

impl Refusal {
    pub(crate) fn new(
        status: StatusCode,
        kind: &'static str,
        rule: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Refusal {
            status,
            kind,
            rule: rule.into(),
            message: message.into(),
            retry_after: None,
            failure: false,
        }
    }

    /// The upstream could not be used: 502/504 naming rule `upstream`; the event keeps the
    /// request's decision, since no policy refused it.
    pub(crate) fn upstream(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal { failure: true, ..Refusal::new(status, "api_error", "upstream", message) }
    }

    fn response(&self) -> Response<ProxyBody> {
        match self.retry_after {
            Some(secs) => reply::too_many(&self.rule, secs),
            None => reply::error(self.status, self.kind, &self.rule, &self.message),
        }
    }
}

/// What the forwarding step produced.
pub(crate) enum Outcome {
    /// A complete answer; the caller emits the event.
    Done(Response<ProxyBody>),
    /// A streamed answer; its task emits the event when the stream ends.
    Streaming(Response<ProxyBody>),
}

/// Headers never forwarded in either direction (hop-by-hop, or recomputed by the proxy).
const HOP: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "content-encoding",
];

/// Copies `from` without hop-by-hop headers and those the `Connection` header names.
pub(crate) fn end_to_end(from: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect();
    let mut out = HeaderMap::with_capacity(from.len());
    for (k, v) in from {
        if !HOP.contains(&k.as_str()) && !named.iter().any(|n| n == k.as_str()) {
            out.append(k.clone(), v.clone());
        }
    }
    out
}

/// Entry point for every request.
pub(crate) async fn handle(
    proxy: Arc<LlmProxy>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let start = Instant::now();
    let mut ev = LlmEvent {
        provider: None,
        endpoint: Endpoint::Other.as_str(),
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        model: None,
        decision: Decision::Allow,
        rule: String::new(),
        message: None,
        findings: Vec::new(),
        usage: None,
        status: 0,
        latency: Duration::ZERO,
        streamed: false,
        sni: conn.sni.clone(),
        peer: conn.peer,
    };
    let resp = match forward(&proxy, &conn, req, &mut ev, start).await {
        Ok(Outcome::Streaming(resp)) => return resp,
        Ok(Outcome::Done(resp)) => resp,
        Err(r) => {
            let resp = r.response();
            if r.failure {
                tracing::debug!(path = %ev.path, error = %r.message, "llm upstream failed");
            } else {
                tracing::info!(rule = %r.rule, path = %ev.path, "llm request refused");
                ev.decision = Decision::Deny;
                ev.rule = r.rule;
            }
            ev.message = Some(r.message);
            resp
        }
    };
    ev.status = resp.status().as_u16();
    ev.latency = start.elapsed();
    proxy.sink.emit(ev);
    resp
}

/// Which provider a request goes to, and the path to use upstream (below the base URL's).
fn route<'c>(cfg: &'c ProxyConfig, conn: &ConnInfo, path: &str) -> Option<(&'c ProviderConfig, String)> {
    if let Some(sni) = &conn.sni {
        return cfg.providers.iter().find(|p| p.serves_host(sni)).map(|p| (p, path.to_string()));
    }
    let tail = path.strip_prefix('/')?;
    let (first, rest) = tail.split_once('/').unwrap_or((tail, ""));
    if let Some(p) = cfg.provider(first) {
        return Some((p, format!("/{rest}")));
    }
    let kind = providers::guess_kind(path)?;
    cfg.providers.iter().find(|p| p.kind == kind).map(|p| (p, path.to_string()))
}

/// `*` any run, `?` one character.
fn glob(pat: &[u8], s: &[u8]) -> bool {
    match pat.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && glob(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

/// The model rules' verdict: `Err((rule, message))` refuses.
fn check_model(rules: &ModelRules, model: Option<&str>, endpoint: Endpoint) -> Result<(), (String, String)> {
    if rules.allow.is_empty() && rules.deny.is_empty() {
        return Ok(());
    }
    let Some(model) = model else {
        if endpoint.is_inference() {
            return Err(("models.allow".into(), "request names no model; model rules are in force".into()));
        }
        return Ok(());
    };
    if let Some(g) = rules.deny.iter().find(|g| glob(g.as_str().as_bytes(), model.as_bytes())) {
        return Err((format!("models.deny:{g}"), format!("model {model:?} is denied")));
    }
    if !rules.allow.is_empty() && !rules.allow.iter().any(|g| glob(g.as_str().as_bytes(), model.as_bytes())) {
        return Err(("models.allow".into(), format!("model {model:?} is not in the allow list")));
    }
    Ok(())
}

/// The first real key (of any provider) found in the request's headers, URI or body.
fn leaked_key<'c>(cfg: &'c ProxyConfig, headers: &HeaderMap, uri: &Uri, body: &[u8]) -> Option<&'c str> {
    cfg.providers.iter().filter_map(|p| p.credential.as_ref()).find_map(|c| {
        let key = c.real.as_bytes();
        let hit = |hay: &[u8]| memchr::memmem::find(hay, key).is_some();
        let found = headers.values().any(|v| hit(v.as_bytes()))
            || hit(uri.to_string().as_bytes())
            || hit(body)
            || percent_decoded(uri).is_some_and(|u| hit(&u));
        found.then_some(p_name(cfg, c))
    })
}

fn p_name<'c>(cfg: &'c ProxyConfig, c: &crate::config::Credential) -> &'c str {
    cfg.providers.iter().find(|p| p.credential.as_ref() == Some(c)).map_or("", |p| p.name.as_str())
}

fn percent_decoded(uri: &Uri) -> Option<Vec<u8>> {
    let s = uri.path_and_query()?.as_str().as_bytes();
    if !s.contains(&b'%') {
        return None;
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let hex = s
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (s[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

fn record_findings(ev: &mut LlmEvent, findings: &[Finding], direction: Direction) {
    for f in findings {
        add_finding(&mut ev.findings, &f.detector, f.action, direction, f.count, &f.path);
        if f.action == Action::Audit && ev.decision == Decision::Allow {
            ev.decision = Decision::Audit;
        }
    }
}

/// Request DLP: the body to forward, or the refusal.
fn scan_request(
    cfg: &ProxyConfig,
    body: Vec<u8>,
    is_json: bool,
    ev: &mut LlmEvent,
) -> Result<Vec<u8>, Refusal> {
    let engine = &cfg.dlp;
    let json = if is_json { dlp::scan_json(&body, engine).ok() } else { None };
    let (out, block) = if let Some(o) = json {
        record_findings(ev, &o.findings, Direction::Request);
        (o.body.into_owned(), o.block)
    } else if let Ok(text) = std::str::from_utf8(&body) {
        let o = dlp::scan_text(text, engine);
        record_findings(ev, &o.findings, Direction::Request);
        (o.body.into_owned().into_bytes(), o.block)
    } else {
        // Bytes that are not text cannot be redacted in place: any redact or block finding in
        // their readable parts refuses the request.
        let text = String::from_utf8_lossy(&body);
        let o = dlp::scan_text(&text, engine);
        record_findings(ev, &o.findings, Direction::Request);
        if let Some(f) = o.findings.iter().find(|f| f.action != Action::Audit) {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "dlp_blocked",
                format!("dlp:{}", f.detector),
                format!("binary request body holds {} and cannot be redacted", f.detector),
            ));
        }
        drop(o);
        drop(text);
        (body, None)
    };
    if let Some(b) = block {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "dlp_blocked",
            format!("dlp:{}", b.detector),
            format!("request blocked: {} found at {}", b.detector, b.path),
        ));
    }
    Ok(out)
}

fn body_refusal(e: BodyError) -> Refusal {
    match e {
        BodyError::TooLarge(n) => Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            "max_body",
            format!("request body exceeds {n} bytes"),
        ),
        e => Refusal::new(StatusCode::BAD_REQUEST, "invalid_request_error", "request-body", e.to_string()),
    }
}

fn looks_json(headers: &HeaderMap, body: &[u8]) -> bool {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    ct.contains("json")
        || body.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| matches!(b, b'{' | b'['))
}

async fn forward(
    proxy: &Arc<LlmProxy>,
    conn: &ConnInfo,
    req: Request<Incoming>,
    ev: &mut LlmEvent,
    start: Instant,
) -> Result<Outcome, Refusal> {
    let cfg = &proxy.config;
    let path = req.uri().path().to_string();
    if path
        .split('/')
        .any(|s| s == "." || s == ".." || s.eq_ignore_ascii_case("%2e%2e") || s.eq_ignore_ascii_case("%2e"))
    {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "path",
            "dot segments in path",
        ));
    }
    let Some((provider, up_path)) = route(cfg, conn, &path) else {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "no-provider",
            format!("no LLM provider serves {}", conn.sni.as_deref().unwrap_or(&path)),
        ));
    };
    ev.provider = Some(provider.name.clone());
    ev.rule = format!("provider:{}", provider.name);
    let endpoint = providers::classify(provider.kind, &up_path);
    ev.endpoint = endpoint.as_str();

    let (parts, incoming) = req.into_parts();
    if incoming.size_hint().lower() > cfg.max_body as u64 {
        return Err(body_refusal(BodyError::TooLarge(cfg.max_body)));
    }
    let coding = Coding::of(&parts.headers).map_err(|c| {
        Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "content-encoding",
            format!("request content-encoding {c:?} is not supported"),
        )
    })?;
    let body = body::collect(incoming, coding, cfg.max_body).await.map_err(body_refusal)?;

    if let Some(name) = leaked_key(cfg, &parts.headers, &parts.uri, &body) {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "credential-leak",
            format!("request carries the real API key of provider {name:?}; use the placeholder"),
        ));
    }

    let is_json = !body.is_empty() && looks_json(&parts.headers, &body);
    let json: Option<Value> = match is_json {
        true => match serde_json::from_slice(&body) {
            Ok(v) => Some(v),
            // An inference request that says (or looks like) JSON and is not: refused here with
            // a clear error, rather than scanned as text and left for the provider to reject.
            Err(e) if endpoint.is_inference() => {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "request-body",
                    format!("the request body is not valid JSON: {e}"),
                ));
            }
            Err(_) => None,
        },
        false => None,
    };
    ev.model = providers::model(provider.kind, &up_path, json.as_ref());
    check_model(&cfg.models, ev.model.as_deref(), endpoint)
        .map_err(|(rule, msg)| Refusal::new(StatusCode::FORBIDDEN, "permission_error", rule, msg))?;

    let mut body = scan_request(cfg, body, is_json, ev)?;

    let Some(slot) = proxy.enter() else {
        return Err(Refusal {
            retry_after: Some(1),
            ..Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "max_in_flight",
                "too many requests in flight",
            )
        });
    };
    match proxy.meter.admit(Instant::now(), SystemTime::now()) {
        Admission::Refuse { rule, retry_after } => {
            return Err(Refusal {
                retry_after: Some(retry_after),
                ..Refusal::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    rule,
                    format!("retry after {retry_after} s"),
                )
            });
        }
        Admission::Admit { audit: Some(rule) } => {
            ev.decision = Decision::Audit;
            ev.message = Some(format!("{rule} exhausted (audit only)"));
        }
        Admission::Admit { audit: None } => {}
    }

    if endpoint == Endpoint::ChatCompletions
        && let Some(j) = &json
        && let Some(b) = providers::ensure_stream_usage(&body, j)
    {
        body = b;
    }

    let up = build_upstream(provider, &parts.method, &parts.uri, &parts.headers, &up_path, body)?;
    let sent = tokio::time::timeout(cfg.upstream_timeout, proxy.upstream.client.request(up)).await;
    let resp = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let source = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
            return Err(upstream_failed(
                proxy,
                StatusCode::BAD_GATEWAY,
                &format!("upstream request failed: {e}{source}"),
            ));
        }
        Err(_) => return Err(upstream_failed(proxy, StatusCode::GATEWAY_TIMEOUT, "upstream timed out")),
    };
    respond::answer(proxy, provider.kind, resp, ev, start, slot).await
}

fn upstream_failed(proxy: &LlmProxy, status: StatusCode, msg: &str) -> Refusal {
    proxy.meter.record(None, false, Instant::now(), SystemTime::now());
    Refusal::upstream(status, msg)
}

fn build_upstream(
    p: &ProviderConfig,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    up_path: &str,
    body: Vec<u8>,
) -> Result<Request<Full<Bytes>>, Refusal> {
    let mut query = uri.query().map(str::to_string);
    if p.credential.is_some() && p.kind == ProviderKind::Gemini {
        query = query.map(|q| providers::strip_key_param(&q)).filter(|q| !q.is_empty());
    }
    let target = format!(
        "{}://{}{}{}{}",
        if p.upstream.tls { "https" } else { "http" },
        p.upstream.authority(),
        p.upstream.path,
        up_path,
        query.map(|q| format!("?{q}")).unwrap_or_default()
    );
    let bad = |m: String| Refusal::new(StatusCode::BAD_REQUEST, "invalid_request_error", "request-uri", m);
    let target: Uri = target.parse().map_err(|e| bad(format!("bad upstream URI: {e}")))?;
    let mut h = end_to_end(headers);
    h.remove(header::HOST);
    h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip, deflate, br"));
    if let Some(c) = &p.credential {
        providers::inject_key(p.kind, &mut h, &c.real).map_err(|e| {
            Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "api_error", "credential", e.to_string())
        })?;
    }
    let mut req = Request::new(Full::new(Bytes::from(body)));
    *req.method_mut() = method.clone();
    *req.uri_mut() = target;
    *req.headers_mut() = h;
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob(b"claude-*", b"claude-sonnet-4"));
        assert!(glob(b"gpt-4?", b"gpt-4o"));
        assert!(!glob(b"gpt-4?", b"gpt-4o-mini"));
        assert!(glob(b"*", b""));
        assert!(!glob(b"claude-*", b"gpt-4"));
    }

    #[test]
    fn model_rules() {
        let rules: ModelRules = serde_json::from_value(serde_json::json!({
            "allow": ["claude-*", "gpt-4o*"], "deny": ["claude-opus-*"]}))
        .unwrap();
        assert!(check_model(&rules, Some("claude-sonnet-4"), Endpoint::Messages).is_ok());
        assert_eq!(
            check_model(&rules, Some("claude-opus-4"), Endpoint::Messages).unwrap_err().0,
            "models.deny:claude-opus-*"
        );
        assert_eq!(check_model(&rules, Some("o3"), Endpoint::Responses).unwrap_err().0, "models.allow");
        assert!(check_model(&rules, None, Endpoint::Messages).is_err());
        assert!(check_model(&rules, None, Endpoint::Other).is_ok());
        assert!(check_model(&ModelRules::default(), None, Endpoint::Messages).is_ok());
    }
}
