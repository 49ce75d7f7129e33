//! What the proxy reports: one [`LlmEvent`] per request, handed to an [`EventSink`]. An event
//! names the provider, model, path, decision and rule, the DLP findings by detector and count
//! (never the matched text), the tokens, the status and the latency. The gateway turns it into
//! its audit `Event` 1:1: `type` from [`LlmEvent::event_type`], `policy` from `decision`, `rule`
//! and `message`, `fields` from [`LlmEvent::fields`]. Besides it, one `dlp_redaction` event per
//! detector, action and direction with a finding ([`LlmEvent::redaction_events`]): the detector,
//! the count and the JSON paths of the fields where it matched.

use std::{collections::BTreeMap, sync::Mutex, time::Duration};

use serde_json::{Value, json};

use crate::{dlp::Action, usage::Usage};

/// The verdict on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Forwarded (possibly redacted).
    Allow,
    /// Forwarded, with something recorded that a stricter mode would have refused.
    Audit,
    /// Refused by the proxy.
    Deny,
}

impl Decision {
    /// `allow`, `audit` or `deny`, as in the audit event's `policy.decision`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Audit => "audit",
            Decision::Deny => "deny",
        }
    }
}

/// Where a finding was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// In the request the agent sent.
    Request,
    /// In the answer from the provider.
    Response,
}

/// Matches of one detector in one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingCount {
    /// Detector name (`email`, `anthropic_key`, a custom pattern's name).
    pub detector: String,
    /// What was done.
    pub action: Action,
    /// Request or response.
    pub direction: Direction,
    /// Number of matches.
    pub count: usize,
    /// JSON paths of the fields where it matched (`messages[1].content`; `$` for a body that is
    /// not JSON), distinct, in the order first seen, at most [`MAX_PATHS`].
    pub paths: Vec<String>,
}

/// Paths kept per finding: a prompt with a secret in every one of thousands of messages must not
/// make its event as large as the prompt.
pub const MAX_PATHS: usize = 8;

/// Audit type of the per-detector events.
pub const DLP_REDACTION: &str = "dlp_redaction";

/// Adds `count` matches of `detector` at `path` to `list`, merging with an existing entry.
pub(crate) fn add_finding(
    list: &mut Vec<FindingCount>,
    detector: &str,
    action: Action,
    direction: Direction,
    count: usize,
    path: &str,
) {
    let f = match list
        .iter()
        .position(|f| f.detector == detector && f.action == action && f.direction == direction)
    {
        Some(i) => &mut list[i],
        None => {
            list.push(FindingCount {
                detector: detector.to_string(),
                action,
                direction,
                count: 0,
                paths: Vec::new(),
            });
            let last = list.len() - 1;
            &mut list[last]
        }
    };
    f.count += count;
    if f.paths.len() < MAX_PATHS && !f.paths.iter().any(|p| p == path) {
        f.paths.push(path.to_string());
    }
}

impl Direction {
    /// `request` or `response`, as in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Request => "request",
            Direction::Response => "response",
        }
    }
}

/// One `dlp_redaction` audit event: a detector's matches in one direction of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct RedactionEvent {
    /// `allow` for redact, `audit` for audit, `deny` for block, as in `policy.decision`.
    pub decision: Decision,
    /// `dlp:<detector>`.
    pub rule: String,
    /// The audit event's `fields`: `type` (the detector), `count`, `action`, `direction`,
    /// `paths`, and the request's `provider`, `model` and `path`. Never the matched text.
    pub fields: BTreeMap<String, Value>,
}

/// One request through the proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmEvent {
    /// Provider name, when the request was routed to one.
    pub provider: Option<String>,
    /// Endpoint kind (`messages`, `chat_completions`, …; `other`).
    pub endpoint: &'static str,
    /// HTTP method.
    pub method: String,
    /// Request path, without the query (it may hold a key).
    pub path: String,
    /// Model named by the request.
    pub model: Option<String>,
    /// The verdict.
    pub decision: Decision,
    /// The deciding rule: `provider:<name>` when forwarded, else the refusing rule
    /// (`dlp:<detector>`, `models.allow`, `rate_limits.requests_per_minute`, …).
    pub rule: String,
    /// Why, for refusals and errors.
    pub message: Option<String>,
    /// DLP findings, by detector, action and direction.
    pub findings: Vec<FindingCount>,
    /// Tokens charged for the answer.
    pub usage: Option<Usage>,
    /// Status sent to the agent.
    pub status: u16,
    /// From request received to the answer's last byte.
    pub latency: Duration,
    /// The answer was an SSE stream.
    pub streamed: bool,
    /// TLS server name, for intercepted connections.
    pub sni: Option<String>,
    /// The sandbox-side peer of the connection, for attributing the request to a process.
    pub peer: Option<std::net::SocketAddr>,
}

impl LlmEvent {
    /// The audit event type: `llm_request`, or `llm_request_blocked` when refused.
    pub fn event_type(&self) -> &'static str {
        if self.decision == Decision::Deny { "llm_request_blocked" } else { "llm_request" }
    }

    /// Matches redacted, both directions.
    pub fn redactions(&self) -> usize {
        self.findings.iter().filter(|f| f.action == Action::Redact).map(|f| f.count).sum()
    }

    /// The audit event's `fields`.
    pub fn fields(&self) -> BTreeMap<String, Value> {
        let mut f = BTreeMap::new();
        let mut put = |k: &str, v: Value| {
            f.insert(k.to_string(), v);
        };
        if let Some(p) = &self.provider {
            put("provider", json!(p));
        }
        put("endpoint", json!(self.endpoint));
        put("method", json!(self.method));
        put("path", json!(self.path));
        if let Some(m) = &self.model {
            put("model", json!(m));
        }
        put("status", json!(self.status));
        put("duration_ms", json!(u64::try_from(self.latency.as_millis()).unwrap_or(u64::MAX)));
        put("streamed", json!(self.streamed));
        if let Some(s) = &self.sni {
            put("sni", json!(s));
        }
        if let Some(p) = &self.peer {
            put("peer", json!(p.to_string()));
        }
        if let Some(u) = &self.usage {
            put(
                "usage",
                json!({"input_tokens": u.input, "output_tokens": u.output,
                       "cache_read_tokens": u.cache_read, "cache_write_tokens": u.cache_write}),
            );
        }
        if !self.findings.is_empty() {
            let list: Vec<Value> = self
                .findings
                .iter()
                .map(|x| {
                    json!({"type": x.detector, "count": x.count, "action": x.action.as_str(),
                           "direction": x.direction.as_str(), "paths": x.paths})
                })
                .collect();
            put("dlp", Value::Array(list));
        }
        f
    }

    /// The `dlp_redaction` events that go with this one ([`DLP_REDACTION`]), one per finding.
    pub fn redaction_events(&self) -> Vec<RedactionEvent> {
        self.findings
            .iter()
            .map(|x| {
                let mut fields = BTreeMap::new();
                fields.insert("type".to_string(), json!(x.detector));
                fields.insert("count".to_string(), json!(x.count));
                fields.insert("action".to_string(), json!(x.action.as_str()));
                fields.insert("direction".to_string(), json!(x.direction.as_str()));
                fields.insert("paths".to_string(), json!(x.paths));
                if let Some(p) = &self.provider {
                    fields.insert("provider".to_string(), json!(p));
                }
                if let Some(m) = &self.model {
                    fields.insert("model".to_string(), json!(m));
                }
                fields.insert("path".to_string(), json!(self.path));
                let decision = match x.action {
                    Action::Redact => Decision::Allow,
                    Action::Audit => Decision::Audit,
                    Action::Block => Decision::Deny,
                };
                RedactionEvent { decision, rule: format!("dlp:{}", x.detector), fields }
            })
            .collect()
    }
}

/// Receives events. Called on the request's task: implementations must not block for long
/// (queue, or write to a buffered sink).
pub trait EventSink: Send + Sync {
    /// Takes one event.
    fn emit(&self, event: LlmEvent);
}

/// Keeps every event in memory, for per-command summaries and tests.
#[derive(Debug, Default)]
pub struct CollectSink(Mutex<Vec<LlmEvent>>);

impl CollectSink {
    /// The events so far, in order.
    pub fn events(&self) -> Vec<LlmEvent> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl EventSink for CollectSink {
    fn emit(&self, event: LlmEvent) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(event);
    }
}

/// Drops every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSink;

impl EventSink for NoSink {
    fn emit(&self, _event: LlmEvent) {}
}
