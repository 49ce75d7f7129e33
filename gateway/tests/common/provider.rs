//! A fake LLM provider over real TLS on 127.0.0.1 that records every request it gets. It speaks
//! just enough of three API shapes for the official SDKs: OpenAI chat completions (JSON, or an
//! SSE stream when the request says `"stream": true`, with an e-mail address split across two
//! chunks and a usage chunk when asked for), and Anthropic messages (JSON).

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    Daemon, Session, TempDir,
    dns::FakeDns,
    upstream::{self, TestCa, Upstream},
};

/// The non-streamed chat completion.
pub const ANSWER: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#;
/// The Anthropic message.
pub const MESSAGE: &str = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"hi from claude"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":4}}"#;
/// What the stream says, in these pieces (the address is split across two events).
pub const STREAM_PIECES: [&str; 4] = ["reach me at car", "ol@example.com", " any", "time"];

/// One request as the provider saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub head: String,
    pub body: String,
}

pub struct Provider {
    pub upstream: Upstream,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Provider {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn port(&self) -> u16 {
        self.upstream.port()
    }
}

async fn read_request<S: AsyncReadExt + Unpin>(tls: &mut S) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tls.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = tls.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(Seen { head, body: String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string() })
}

fn json_reply(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn chunk(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n", data.len())
}

/// The SSE answer to a streaming chat completion, chunked.
fn stream_reply(with_usage: bool) -> String {
    let mut out = String::from(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
    );
    for piece in STREAM_PIECES {
        let ev = serde_json::json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1700000000,
            "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]});
        out.push_str(&chunk(&format!("data: {ev}\n\n")));
    }
    let done = serde_json::json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1700000000,
        "model": "gpt-4o", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    out.push_str(&chunk(&format!("data: {done}\n\n")));
    if with_usage {
        let usage = serde_json::json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1700000000,
            "model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}});
        out.push_str(&chunk(&format!("data: {usage}\n\n")));
    }
    out.push_str(&chunk("data: [DONE]\n\n"));
    out.push_str("0\r\n\r\n");
    out
}

/// Start the provider with a certificate from `ca`.
pub fn start(ca: &TestCa) -> Provider {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config());
    let upstream = upstream::serve(move |tcp| {
        let (acceptor, log) = (acceptor.clone(), log.clone());
        async move {
            let Ok(mut tls) = acceptor.accept(tcp).await else { return };
            while let Some(req) = read_request(&mut tls).await {
                log.lock().unwrap().push(req.clone());
                let json: serde_json::Value = serde_json::from_str(&req.body).unwrap_or_default();
                let reply = if req.head.contains("/messages") {
                    json_reply(MESSAGE)
                } else if json["stream"] == true {
                    stream_reply(json["stream_options"]["include_usage"] == true)
                } else {
                    json_reply(ANSWER)
                };
                if tls.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    });
    Provider { upstream, seen }
}

/// A daemon trusting a fake provider on `api.llm.test` and one session whose policy `policy`
/// writes, given the provider's port and a directory for key files.
pub struct LlmWorld {
    pub _dns: FakeDns,
    pub provider: Provider,
    pub daemon: Daemon,
    pub session: Session,
    pub keys: TempDir,
}

pub fn llm_world(policy: impl FnOnce(u16, &TempDir) -> String) -> LlmWorld {
    let dns = FakeDns::start();
    let ca = TestCa::with_names(&["api.llm.test"]);
    let provider = start(&ca);
    let keys = TempDir::new("keys");
    let roots = keys.write("provider-ca.pem", &ca.ca_pem);
    let policy = policy(provider.port(), &keys);
    let config = format!("{}tls:\n  extra_roots: ['{}']\n", dns.server_config("synthetic"), roots.display());
    let daemon = Daemon::start_with_config(&config);
    let session = daemon.session(&policy);
    LlmWorld { _dns: dns, provider, daemon, session, keys }
}
