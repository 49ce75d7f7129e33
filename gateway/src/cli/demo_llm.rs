//! The demo's stand-in for an LLM provider: an OpenAI-style chat completions endpoint over TLS
//! on 127.0.0.1 that answers with what it received (so the demo shows what left the sandbox
//! after DLP) and with usage figures, and remembers the `authorization` header it was given.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The running provider.
pub struct DemoProvider {
    /// Where it listens.
    pub addr: SocketAddr,
    auth: Arc<Mutex<Vec<String>>>,
}

impl DemoProvider {
    /// The `authorization` headers received so far.
    pub fn authorizations(&self) -> Vec<String> {
        self.auth.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Start the provider with `config` (a certificate for its name) on a background thread.
pub fn start(config: Arc<rustls::ServerConfig>) -> anyhow::Result<DemoProvider> {
    let auth = Arc::new(Mutex::new(Vec::new()));
    let log = auth.clone();
    let addr = super::demo::spawn_tls_server(config, move |mut tls| {
        let log = log.clone();
        async move {
            while let Some((head, body)) = read_request(&mut tls).await {
                if let Some(a) = head.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("authorization").then(|| v.trim().to_string())
                }) {
                    log.lock().unwrap_or_else(|p| p.into_inner()).push(a);
                }
                let reply = completion(&body);
                let out = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
                    reply.len()
                );
                if tls.write_all(out.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    })?;
    Ok(DemoProvider { addr, auth })
}

/// One HTTP/1.1 request with a content-length body, or `None` at the end of the connection.
async fn read_request<S: AsyncReadExt + Unpin>(s: &mut S) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = s.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let len = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0)
        .min(1 << 20);
    while buf.len() < end + len {
        let n = s.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((head, buf[end..end + len].to_vec()))
}

/// A chat completion that repeats the last message it was sent.
fn completion(body: &[u8]) -> String {
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let said = request["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string();
    serde_json::json!({
        "id": "chatcmpl-demo",
        "object": "chat.completion",
        "model": request["model"],
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": format!("the provider received: {said}")}}],
        "usage": {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30}
    })
    .to_string()
}
