//! The request side end to end: a real proxy on loopback in front of a fake provider over real
//! TLS. DLP redact/block/audit as seen by the upstream, key injection and the leak guard,
//! limits, model rules, body bounds and a dead upstream.

mod harness;

use std::sync::Arc;

use bytes::Bytes;
use harness::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use llmproxy::{Decision, dlp::Action, events::Direction};
use serde_json::json;

const ANTHROPIC: &str = "
providers: [{name: anthropic, base_url: '{UPSTREAM}'}]
";

fn echo_usage(input: u64, output: u64) -> Responder {
    Arc::new(move |_| Reply::json(anthropic_answer("ok", input, output)))
}

#[tokio::test]
async fn secrets_and_pii_are_redacted_before_the_upstream() {
    let h = start(ANTHROPIC, &[], echo_usage(10, 2), |_| {}).await;
    let key = anthropic_key();
    let body = json!({"model": "claude-test", "max_tokens": 10, "n": 12345678901234567890u64,
        "messages": [{"role": "user", "content": format!("mail alice@example.com, key {key}")}]});
    let a = post_json(h.addr, "/anthropic/v1/messages", &[], body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let seen = h.upstream.seen();
    assert_eq!(seen.len(), 1);
    let got = &seen[0];
    assert_eq!(got.uri, "/v1/messages");
    let text = got.text();
    assert!(!text.contains("alice@example.com") && !text.contains(&key[..20]), "{text}");
    assert!(text.contains("[REDACTED:email]") && text.contains("[REDACTED:anthropic_key]"), "{text}");
    // Valid JSON, the big integer spelled as sent, and a matching content-length.
    assert_eq!(got.json()["messages"][0]["role"], "user");
    assert!(text.contains("12345678901234567890"));
    if let Some(cl) = got.headers.get("content-length") {
        assert_eq!(cl.to_str().unwrap().parse::<usize>().unwrap(), got.body.len());
    }
    let ev = &h.sink.events()[0];
    assert_eq!(
        (ev.decision, ev.provider.as_deref(), ev.endpoint),
        (Decision::Allow, Some("anthropic"), "messages")
    );
    assert_eq!(ev.redactions(), 2);
    assert!(ev.findings.iter().all(|f| f.direction == Direction::Request));
    let fields = serde_json::to_string(&ev.fields()).unwrap();
    assert!(!fields.contains("alice@") && !fields.contains(&key[..20]), "secret in event: {fields}");
    // One dlp_redaction event per detector, naming the field it was found in.
    let redactions = ev.redaction_events();
    let mut seen: Vec<_> = redactions
        .iter()
        .map(|r| (r.fields["type"].as_str().unwrap(), r.fields["count"].as_u64().unwrap(), r.rule.as_str()))
        .collect();
    seen.sort();
    assert_eq!(seen, [("anthropic_key", 1, "dlp:anthropic_key"), ("email", 1, "dlp:email")]);
    for r in &redactions {
        assert_eq!(r.decision, Decision::Allow);
        assert_eq!(r.fields["paths"], json!(["messages[0].content"]));
        assert_eq!(
            (r.fields["action"].as_str(), r.fields["direction"].as_str()),
            (Some("redact"), Some("request"))
        );
        let text = serde_json::to_string(&r.fields).unwrap();
        assert!(!text.contains("alice@") && !text.contains(&key[..20]), "secret in event: {text}");
    }
}

#[tokio::test]
async fn redaction_paths_are_distinct_bounded_and_merged_per_detector() {
    let h = start(ANTHROPIC, &[], echo_usage(1, 1), |_| {}).await;
    let messages: Vec<_> = (0..12)
        .map(|i| json!({"role": "user", "content": format!("me{i}@example.com and you{i}@example.com")}))
        .collect();
    let a =
        post_json(h.addr, "/anthropic/v1/messages", &[], json!({"model": "m", "messages": messages})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let nested = json!({"model": "m", "system": "ops@example.net", "messages": [{"role": "user",
        "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "z@example.org"}]}]});
    let a = post_json(h.addr, "/anthropic/v1/messages", &[], nested).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let events = h.sink.events();
    let paths = |n: usize| {
        assert_eq!(events[n].findings.len(), 1, "{:?}", events[n].findings);
        let f = &events[n].findings[0];
        assert_eq!(f.detector, "email");
        (f.count, f.paths.clone())
    };
    let first: Vec<_> = (0..llmproxy::events::MAX_PATHS).map(|i| format!("messages[{i}].content")).collect();
    assert_eq!(paths(0), (24, first), "every match counted; paths distinct, first seen, bounded");
    assert_eq!(paths(1), (2, vec!["messages[0].content[1].text".to_string(), "system".to_string()]));
}

#[tokio::test]
async fn block_mode_refuses_without_contacting_the_upstream() {
    let yaml = format!("{ANTHROPIC}dlp: {{mode: block}}\n");
    let h = start(&yaml, &[], echo_usage(1, 1), |_| {}).await;
    let body =
        json!({"model": "claude-test", "messages": [{"role": "user", "content": "I am bob@example.org"}]});
    let a = post_json(h.addr, "/anthropic/v1/messages", &[], body).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.json()["error"]["rule"], "dlp:email");
    assert!(!a.text().contains("bob@"), "the refusal must not echo the secret");
    assert!(h.upstream.seen().is_empty());
    let ev = &h.sink.events()[0];
    assert_eq!((ev.decision, ev.rule.as_str(), ev.status), (Decision::Deny, "dlp:email", 403));
    assert_eq!(ev.event_type(), "llm_request_blocked");
    assert_eq!(h.proxy.totals().requests, 0, "a refused request is not counted");
}

#[tokio::test]
async fn audit_mode_forwards_unchanged_and_records() {
    let yaml = format!("{ANTHROPIC}dlp: {{mode: audit}}\n");
    let h = start(&yaml, &[], echo_usage(1, 1), |_| {}).await;
    let raw = r#"{"model":"claude-test","messages":[{"role":"user","content":"card 4111 1111 1111 1111"}]}"#;
    let req = Request::post("/anthropic/v1/messages")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(raw)))
        .unwrap();
    assert_eq!(send(h.addr, req).await.status, StatusCode::OK);
    assert_eq!(h.upstream.seen()[0].body, raw.as_bytes(), "audit forwards byte for byte");
    let ev = &h.sink.events()[0];
    assert_eq!(ev.decision, Decision::Audit);
    let f = &ev.findings[0];
    assert_eq!((f.detector.as_str(), f.action, f.count), ("credit_card", Action::Audit, 1));
}

const KEYED: &str = "
providers:
  - {name: anthropic, base_url: '{UPSTREAM}', api_key_env: REAL_ANTHROPIC}
  - {name: openai, base_url: '{UPSTREAM}', api_key_env: REAL_OPENAI}
  - {name: gemini, base_url: '{UPSTREAM}', api_key_env: REAL_GEMINI}
";
const REAL_A: &str = "real-anthropic-key-0123456789";
const REAL_O: &str = "real-openai-key-0123456789";
const REAL_G: &str = "real-gemini-key-0123456789";
const KEYS: [(&str, &str); 3] =
    [("REAL_ANTHROPIC", REAL_A), ("REAL_OPENAI", REAL_O), ("REAL_GEMINI", REAL_G)];

#[tokio::test]
async fn real_keys_are_injected_and_placeholders_work() {
    let h = start(KEYED, &KEYS, echo_usage(1, 1), |_| {}).await;
    let env = h.proxy.env_vars(h.addr);
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
    assert_eq!(get("ANTHROPIC_BASE_URL"), format!("http://{}/anthropic", h.addr));
    assert_eq!(get("OPENAI_BASE_URL"), format!("http://{}/openai/v1", h.addr));
    assert_eq!(get("OPENAI_API_BASE"), get("OPENAI_BASE_URL"));
    let (pa, po, pg) = (get("ANTHROPIC_API_KEY"), get("OPENAI_API_KEY"), get("GEMINI_API_KEY"));
    for p in [&pa, &po, &pg] {
        assert!(!KEYS.iter().any(|(_, real)| p.contains(real)), "placeholder reveals a key");
    }
    let msg = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let a = post_json(h.addr, "/anthropic/v1/messages", &[("x-api-key", &pa)], msg.clone()).await;
    assert_eq!(a.status, StatusCode::OK);
    let auth = format!("Bearer {po}");
    let a = post_json(h.addr, "/openai/v1/chat/completions", &[("authorization", &auth)], msg.clone()).await;
    assert_eq!(a.status, StatusCode::OK);
    let path = format!("/gemini/v1beta/models/gemini-x:generateContent?key={pg}&alt=json");
    let a = post_json(h.addr, &path, &[], json!({"contents": [{"parts": [{"text": "hi"}]}]})).await;
    assert_eq!(a.status, StatusCode::OK);
    let seen = h.upstream.seen();
    assert_eq!(seen[0].headers["x-api-key"], REAL_A);
    assert!(seen[0].headers.get("authorization").is_none());
    assert_eq!(seen[1].headers["authorization"], format!("Bearer {REAL_O}").as_str());
    assert_eq!(seen[2].headers["x-goog-api-key"], REAL_G);
    assert_eq!(seen[2].uri, "/v1beta/models/gemini-x:generateContent?alt=json");
    assert!(seen.iter().all(|r| !String::from_utf8_lossy(&r.body).contains("placeholder")));
}

#[tokio::test]
async fn a_request_carrying_a_real_key_is_refused() {
    let h = start(KEYED, &KEYS, echo_usage(1, 1), |_| {}).await;
    let msg = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let a = post_json(h.addr, "/anthropic/v1/messages", &[("x-api-key", REAL_A)], msg).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.json()["error"]["rule"], "credential-leak");
    // Another provider's key inside the prompt is a leak too.
    let msg = json!({"model": "m", "messages": [{"role": "user", "content": format!("use {REAL_O}")}]});
    let a = post_json(h.addr, "/anthropic/v1/messages", &[], msg).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let path = format!("/gemini/v1beta/models/g:generateContent?key=%72{}", &REAL_G[1..]);
    let a = post_json(h.addr, &path, &[], json!({})).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "percent-encoded key in the query");
    assert!(h.upstream.seen().is_empty());
    assert!(h.sink.events().iter().all(|e| e.rule == "credential-leak" && e.decision == Decision::Deny));
}

#[tokio::test]
async fn a_missing_key_source_is_a_configuration_error() {
    let up = FakeUpstream::start(&[b"http/1.1"], echo_usage(1, 1)).await;
    let err = llmproxy::ProxyConfig::with_env(&policy(KEYED, &up), &|_| None).unwrap_err();
    assert!(err.to_string().contains("REAL_ANTHROPIC"), "{err}");
}

/// Sends `ok` requests that must pass, then one that must be refused with 429 by `rule`.
async fn pass_then_429(h: &Harness, ok: usize, rule: &str) -> Answer {
    let msg = json!({"model": "m", "messages": []});
    for _ in 0..ok {
        assert_eq!(
            post_json(h.addr, "/anthropic/v1/messages", &[], msg.clone()).await.status,
            StatusCode::OK
        );
    }
    let a = post_json(h.addr, "/anthropic/v1/messages", &[], msg).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(a.headers.contains_key("retry-after"));
    assert_eq!(a.json()["error"]["rule"], rule);
    a
}

#[tokio::test]
async fn requests_per_minute_answer_429_with_retry_after() {
    let yaml = format!("{ANTHROPIC}rate_limits: {{requests_per_minute: 2}}\n");
    let h = start(&yaml, &[], echo_usage(1, 1), |_| {}).await;
    let a = pass_then_429(&h, 2, "rate_limits.requests_per_minute").await;
    let retry: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(h.upstream.seen().len(), 2);
}

#[tokio::test]
async fn tokens_per_minute_and_budget_answer_429() {
    let yaml = format!("{ANTHROPIC}rate_limits: {{tokens_per_minute: 500}}\n");
    let h = start(&yaml, &[], echo_usage(400, 200), |_| {}).await;
    pass_then_429(&h, 1, "rate_limits.tokens_per_minute").await;

    let yaml = format!("{ANTHROPIC}budgets: {{per_session_tokens: 1000}}\n");
    let h = start(&yaml, &[], echo_usage(400, 200), |_| {}).await;
    pass_then_429(&h, 2, "budgets.per_session_tokens").await;
    assert_eq!(h.proxy.totals().usage.total(), 1200);
    assert_eq!(h.upstream.seen().len(), 2);
}

#[tokio::test]
async fn model_allowlist_refuses_with_403_json() {
    let yaml = format!("{ANTHROPIC}models: {{allow: ['claude-sonnet-*']}}\n");
    let h = start(&yaml, &[], echo_usage(1, 1), |_| {}).await;
    let ok =
        post_json(h.addr, "/anthropic/v1/messages", &[], json!({"model": "claude-sonnet-4", "messages": []}))
            .await;
    assert_eq!(ok.status, StatusCode::OK);
    let a =
        post_json(h.addr, "/anthropic/v1/messages", &[], json!({"model": "claude-opus-4", "messages": []}))
            .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.headers["content-type"], "application/json");
    let err = a.json();
    assert_eq!(err["error"]["rule"], "models.allow");
    assert!(err["error"]["message"].as_str().unwrap().contains("claude-opus-4"));
    assert_eq!(h.upstream.seen().len(), 1);
    let ev = h.sink.events().pop().unwrap();
    assert_eq!((ev.decision, ev.model.as_deref()), (Decision::Deny, Some("claude-opus-4")));
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let h = start(ANTHROPIC, &[], echo_usage(1, 1), |c| c.max_body = 64 << 10).await;
    let big = json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(100 << 10)}]});
    let a = post_json(h.addr, "/anthropic/v1/messages", &[], big.clone()).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(a.json()["error"]["rule"], "max_body");
    // Without a content-length (chunked), the bound holds while reading.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let chunks = big.to_string().into_bytes();
    tokio::spawn(async move {
        for c in chunks.chunks(8192) {
            if tx.send(Ok(Bytes::copy_from_slice(c))).await.is_err() {
                return;
            }
        }
    });
    let req = Request::post("/anthropic/v1/messages").body(llmproxy::proxy::ProxyBody::Stream(rx)).unwrap();
    let tcp = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let (mut s, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let a = collect(s.send_request(req).await.unwrap()).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(h.upstream.seen().is_empty());
}

#[tokio::test]
async fn a_dead_upstream_answers_502_while_others_keep_working() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let yaml = format!(
        "providers:\n  - {{name: anthropic, base_url: '{{UPSTREAM}}'}}\n  - {{name: openai, base_url: 'https://localhost:{dead_port}'}}\n"
    );
    let h = start(&yaml, &[], echo_usage(1, 1), |_| {}).await;
    let msg = json!({"model": "m", "messages": []});
    let a = post_json(h.addr, "/openai/v1/chat/completions", &[], msg.clone()).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert_eq!(a.json()["error"]["rule"], "upstream");
    let ok = post_json(h.addr, "/anthropic/v1/messages", &[], msg.clone()).await;
    assert_eq!(ok.status, StatusCode::OK);
    let again = post_json(h.addr, "/openai/v1/chat/completions", &[], msg).await;
    assert_eq!(again.status, StatusCode::BAD_GATEWAY);
    assert_eq!(h.upstream.seen().len(), 1);
    let ev = &h.sink.events()[0];
    assert_eq!((ev.decision, ev.rule.as_str(), ev.status), (Decision::Allow, "provider:openai", 502));
    assert!(ev.message.as_deref().unwrap().contains("upstream"), "{ev:?}");
}

#[tokio::test]
async fn unroutable_and_hostile_requests_get_clear_errors() {
    let h = start(ANTHROPIC, &[], echo_usage(1, 1), |_| {}).await;
    let a = post_json(h.addr, "/nowhere/v1/embeddings", &[], json!({})).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.json()["error"]["rule"], "no-provider");
    let a = post_json(h.addr, "/anthropic/../v1/messages", &[], json!({})).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let req = Request::post("/anthropic/v1/messages")
        .header("content-encoding", "gzip")
        .body(Full::new(Bytes::from_static(b"definitely not gzip")))
        .unwrap();
    assert_eq!(send(h.addr, req).await.status, StatusCode::BAD_REQUEST);
    let req = Request::post("/anthropic/v1/messages")
        .header("content-encoding", "zstd")
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    assert_eq!(send(h.addr, req).await.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Malformed JSON to an inference endpoint: 400 with a JSON error, nothing forwarded.
    let req = Request::post("/anthropic/v1/messages")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{\"model\": \"m\", \"messages\": [")))
        .unwrap();
    let a = send(h.addr, req).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json()["error"]["rule"], "request-body");
    assert!(
        a.json()["error"]["message"].as_str().is_some_and(|m| m.contains("not valid JSON")),
        "{:?}",
        a.json()
    );
    assert!(h.upstream.seen().is_empty());
    // A well-known path without a prefix reaches the provider of that kind.
    let a = post_json(h.addr, "/v1/messages", &[], json!({"model": "m", "messages": []})).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(h.upstream.seen().len(), 1);
}

#[tokio::test]
async fn a_compressed_request_is_decoded_scanned_and_forwarded_plain() {
    use std::io::Write;
    let h = start(ANTHROPIC, &[], echo_usage(1, 1), |_| {}).await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "ping grace@example.com"}]});
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.to_string().as_bytes()).unwrap();
    let req = Request::post("/anthropic/v1/messages")
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(Full::new(Bytes::from(gz.finish().unwrap())))
        .unwrap();
    assert_eq!(send(h.addr, req).await.status, StatusCode::OK);
    let got = &h.upstream.seen()[0];
    assert!(got.headers.get("content-encoding").is_none());
    assert_eq!(got.json()["messages"][0]["content"], "ping [REDACTED:email]");
}
