//! The answer side end to end: SSE scanned event by event (a secret split across events, early
//! release, valid SSE after redaction), gzip and br answers decoded and scanned, and usage from
//! every provider shape, OpenAI stream usage included.

mod harness;

use std::{io::Write, sync::Arc, time::Duration};

use bytes::Bytes;
use harness::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use llmproxy::{dlp::Action, events::Direction};
use serde_json::json;
use tokio::sync::Notify;

const ANTHROPIC: &str = "providers: [{name: anthropic, base_url: '{UPSTREAM}'}]\n";
const ALL: &str = "
providers:
  - {name: anthropic, base_url: '{UPSTREAM}'}
  - {name: openai, base_url: '{UPSTREAM}'}
  - {name: gemini, base_url: '{UPSTREAM}'}
";

fn anthropic_stream(deltas: &[&str]) -> Vec<String> {
    let mut evs = vec![event(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
            "model": "claude-test", "content": [], "usage": {"input_tokens": 25, "output_tokens": 1}}}),
    )];
    evs.extend(deltas.iter().map(|d| text_delta(d)));
    evs.push(event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 42}}),
    ));
    evs.push(event("message_stop", json!({"type": "message_stop"})));
    evs
}

#[tokio::test]
async fn a_secret_split_across_two_events_is_redacted_and_the_stream_stays_valid() {
    let key = anthropic_key();
    let (a, b) = key.split_at(40);
    let stream = anthropic_stream(&["Your key is ", a, b, ". Mail carol@example.com if lost."]);
    let h = start(ANTHROPIC, &[], Arc::new(move |_| Reply::sse(&stream)), |_| {}).await;
    let ans = post_json(h.addr, "/anthropic/v1/messages", &[], json!({"model": "m", "stream": true})).await;
    assert_eq!(ans.status, StatusCode::OK);
    assert!(ans.headers["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let body = ans.text();
    assert!(!body.contains(&key[..20]) && !body.contains(&key[45..]) && !body.contains("carol@"), "{body}");
    let events = parse_sse(&body);
    assert_eq!(events.len(), 7, "no event lost or added: {body}");
    let text: String = events.iter().filter_map(|e| e["delta"]["text"].as_str()).collect();
    assert_eq!(text, "Your key is [REDACTED:anthropic_key]. Mail [REDACTED:email] if lost.");
    assert!(body.starts_with("event: message_start\n"), "untouched events pass byte for byte");
    let ev = &h.sink.events()[0];
    assert!(ev.streamed);
    let found: Vec<_> = ev.findings.iter().map(|f| (f.detector.as_str(), f.direction, f.count)).collect();
    assert!(found.contains(&("anthropic_key", Direction::Response, 1)), "{found:?}");
    assert!(ev.findings.iter().all(|f| f.paths == ["delta.text"]), "{:?}", ev.findings);
    assert_eq!(ev.usage.unwrap().input, 25);
    assert_eq!(ev.usage.unwrap().output, 42);
}

/// Starts a streamed Messages request and returns the answer with its body unread.
async fn open_stream(addr: std::net::SocketAddr) -> http::Response<hyper::body::Incoming> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::post("/anthropic/v1/messages")
        .header("host", "x")
        .body(Full::new(Bytes::from(json!({"model": "m", "stream": true}).to_string())))
        .unwrap();
    tx.send_request(req).await.unwrap()
}

#[tokio::test]
async fn early_events_are_released_before_the_stream_ends() {
    let gate = Arc::new(Notify::new());
    let mut stream = anthropic_stream(&["Hello", &"a fine answer ".repeat(40)]);
    stream.insert(3, text_delta(" and more"));
    let g = gate.clone();
    let responder: Responder = Arc::new(move |_| Reply { gate: Some((3, g.clone())), ..Reply::sse(&stream) });
    let h = start(ANTHROPIC, &[], responder, |_| {}).await;
    let mut body = open_stream(h.addr).await.into_body();
    // The upstream holds its fourth event until we have seen the first; held-back text of 256
    // bytes is already past "Hello", so the first events must come through now.
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("first event delayed until the stream ends")
        .unwrap()
        .unwrap();
    let first = String::from_utf8(first.into_data().unwrap().to_vec()).unwrap();
    assert!(first.starts_with("event: message_start"), "{first}");
    gate.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    let all = first + &String::from_utf8_lossy(&rest);
    assert_eq!(parse_sse(&all).len(), 6);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::BrotliCompress(&mut &data[..], &mut out, &Default::default()).unwrap();
    out
}

#[tokio::test]
async fn gzip_and_br_answers_are_decoded_and_scanned() {
    let responder: Responder = Arc::new(|r| {
        let body = anthropic_answer("reach dave@example.com", 3, 4).to_string().into_bytes();
        let sse = anthropic_stream(&["write to ", "erin@exam", "ple.com now"]).concat().into_bytes();
        let (coding, data) = match r.uri.as_str() {
            "/v1/messages?c=gzip" => ("gzip", gzip(&body)),
            "/v1/messages?c=br" => ("br", brotli(&body)),
            _ => ("gzip", gzip(&sse)),
        };
        let ct = if r.uri.contains("sse") { "text/event-stream" } else { "application/json" };
        // Split the compressed bytes so decoding happens across chunks.
        let mid = data.len() / 2;
        Reply {
            status: 200,
            headers: vec![("content-type", ct.into()), ("content-encoding", coding.into())],
            chunks: vec![data[..mid].to_vec(), data[mid..].to_vec()],
            gate: None,
        }
    });
    let h = start(ANTHROPIC, &[], responder, |_| {}).await;
    for c in ["gzip", "br"] {
        let ans =
            post_json(h.addr, &format!("/anthropic/v1/messages?c={c}"), &[], json!({"model": "m"})).await;
        assert_eq!(ans.status, StatusCode::OK);
        assert!(ans.headers.get("content-encoding").is_none(), "{c}: decoded for the client");
        assert_eq!(ans.json()["content"][0]["text"], "reach [REDACTED:email]", "{c}");
    }
    let ans =
        post_json(h.addr, "/anthropic/v1/messages?c=sse", &[], json!({"model": "m", "stream": true})).await;
    let text: String = parse_sse(&ans.text()).iter().filter_map(|e| e["delta"]["text"].as_str()).collect();
    assert_eq!(text, "write to [REDACTED:email] now");
    let asked = &h.upstream.seen()[0].headers["accept-encoding"];
    assert_eq!(asked, "gzip, deflate, br", "only codings the proxy can decode are offered");
    let evs = h.sink.events();
    assert!(
        evs.iter().all(|e| e.findings.iter().any(|f| f.detector == "email" && f.action == Action::Redact))
    );
}

#[tokio::test]
async fn usage_is_read_from_every_provider_shape() {
    let responder: Responder = Arc::new(|r| {
        let stream = r.body.windows(13).any(|w| w == b"\"stream\":true");
        match (r.uri.as_str(), stream) {
            ("/v1/messages", false) => Reply::json(json!({"type": "message", "content": [],
                "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 90}})),
            ("/v1/messages", true) => Reply::sse(&anthropic_stream(&["hi"])),
            ("/v1/chat/completions", false) => Reply::json(json!({"choices": [],
                "usage": {"prompt_tokens": 7, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 2}}})),
            ("/v1/chat/completions", true) => Reply::sse(&[
                format!(
                    "data: {}\n\n",
                    json!({"choices": [{"index": 0, "delta": {"content": "hey"}}], "usage": null})
                ),
                format!(
                    "data: {}\n\n",
                    json!({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 4}})
                ),
                "data: [DONE]\n\n".to_string(),
            ]),
            ("/v1/responses", _) => Reply::sse(&[
                event(
                    "response.output_text.delta",
                    json!({"type": "response.output_text.delta", "delta": "yo"}),
                ),
                event(
                    "response.completed",
                    json!({"type": "response.completed", "response": {"id": "r",
                    "usage": {"input_tokens": 6, "output_tokens": 2, "input_tokens_details": {"cached_tokens": 1}}}}),
                ),
            ]),
            _ => Reply::json(json!({"candidates": [{"content": {"parts": [{"text": "x"}]}}],
                "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 4, "thoughtsTokenCount": 1}})),
        }
    });
    let h = start(ALL, &[], responder, |_| {}).await;
    let cases: [(&str, serde_json::Value, (u64, u64, u64)); 6] = [
        ("/anthropic/v1/messages", json!({"model": "c"}), (100, 5, 90)),
        ("/anthropic/v1/messages", json!({"model": "c", "stream": true}), (25, 42, 0)),
        ("/openai/v1/chat/completions", json!({"model": "g"}), (7, 3, 2)),
        ("/openai/v1/chat/completions", json!({"model": "g", "stream": true}), (11, 4, 0)),
        ("/openai/v1/responses", json!({"model": "g", "stream": true}), (6, 2, 1)),
        ("/gemini/v1beta/models/gem:generateContent", json!({"contents": []}), (8, 5, 0)),
    ];
    for (path, body, _) in &cases {
        let a = post_json(h.addr, path, &[], body.clone()).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
    }
    let evs = h.sink.events();
    assert_eq!(evs.len(), cases.len());
    for (ev, (path, _, (input, output, cached))) in evs.iter().zip(&cases) {
        let u = ev.usage.unwrap_or_else(|| panic!("{path}: no usage"));
        assert_eq!((u.input, u.output, u.cache_read), (*input, *output, *cached), "{path}");
    }
    let chat_stream = h.upstream.seen()[3].json();
    assert_eq!(chat_stream["stream_options"]["include_usage"], true, "stream usage requested");
    assert_eq!(evs[5].model.as_deref(), Some("gem"));
    let total: u64 = cases.iter().map(|(_, _, (i, o, _))| i + o).sum();
    assert_eq!(h.proxy.totals().usage.total(), total);
    assert_eq!(h.proxy.totals().requests, 6);
}

#[tokio::test]
async fn a_block_finding_in_a_stream_ends_it_with_an_error_event() {
    let yaml = format!("{ANTHROPIC}dlp: {{mode: block}}\n");
    let key = anthropic_key();
    let (a, b) = key.split_at(30);
    let stream = anthropic_stream(&["leaking ", a, b, " now"]);
    let h = start(&yaml, &[], Arc::new(move |_| Reply::sse(&stream)), |_| {}).await;
    let ans = post_json(h.addr, "/anthropic/v1/messages", &[], json!({"model": "m", "stream": true})).await;
    let body = ans.text();
    assert!(!body.contains(&key[..20]), "{body}");
    let events = parse_sse(&body);
    let last = events.last().unwrap();
    assert_eq!(last["error"]["rule"], "dlp:anthropic_key");
    let ev = &h.sink.events()[0];
    assert_eq!(ev.rule, "dlp:anthropic_key");
}

#[tokio::test]
async fn requests_beyond_the_in_flight_cap_get_429_until_a_stream_ends() {
    let gate = Arc::new(Notify::new());
    let stream = anthropic_stream(&["a long enough answer to be streamed in parts"]);
    let g = gate.clone();
    let responder: Responder = Arc::new(move |r| match r.text().contains("\"stream\":true") {
        true => Reply { gate: Some((2, g.clone())), ..Reply::sse(&stream) },
        false => Reply::json(anthropic_answer("done", 1, 1)),
    });
    let h = start(ANTHROPIC, &[], responder, |c| c.max_in_flight = Some(1)).await;
    // The answer's headers are out; its stream waits at the upstream's gate.
    let open = open_stream(h.addr).await;
    assert_eq!(open.status(), StatusCode::OK);
    let a = post_json(h.addr, "/anthropic/v1/messages", &[], json!({"model": "m"})).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.headers["retry-after"], "1");
    assert_eq!(a.json()["error"]["rule"], "max_in_flight");
    gate.notify_one();
    let body = open.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(parse_sse(&String::from_utf8_lossy(&body)).len(), 4);
    // The slot is free once the stream's task has finished.
    tokio::time::timeout(Duration::from_secs(10), async {
        while h.sink.events().iter().all(|e| !e.streamed) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    let a = post_json(h.addr, "/anthropic/v1/messages", &[], json!({"model": "m"})).await;
    assert_eq!(a.status, StatusCode::OK);
}
