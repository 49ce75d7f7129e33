//! Test harness for the proxy: a fake provider upstream (real hyper server over real TLS with a
//! CA made at run time) that records every request it receives and answers as scripted, the
//! proxy on a loopback listener, and small HTTP/1.1 and HTTP/2 clients.
#![allow(dead_code)]

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use llmproxy::{CollectSink, LlmProxy, ProxyConfig, TcpDialer, Upstream, ca::SessionCa, proxy::ProxyBody};
use policies::model::llm::LlmPolicy;
use rustls::RootCertStore;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Notify, mpsc},
};

/// What the fake upstream received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub version: Version,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("upstream received valid JSON")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A scripted answer: chunks sent in order; before chunk `gate.0` the upstream waits for
/// `gate.1` to be notified.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub chunks: Vec<Vec<u8>>,
    pub gate: Option<(usize, Arc<Notify>)>,
}

impl Reply {
    pub fn json(v: serde_json::Value) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type", "application/json".into())],
            chunks: vec![v.to_string().into_bytes()],
            gate: None,
        }
    }

    /// An SSE answer, one chunk per event.
    pub fn sse(events: &[String]) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type", "text/event-stream".into())],
            chunks: events.iter().map(|e| e.clone().into_bytes()).collect(),
            gate: None,
        }
    }
}

pub type Responder = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// The fake provider.
pub struct FakeUpstream {
    pub port: u16,
    pub ca: Arc<SessionCa>,
    seen: Arc<Mutex<Vec<Recorded>>>,
}

impl FakeUpstream {
    /// Starts on 127.0.0.1 offering `alpn` (`h2`, `http/1.1`).
    pub async fn start(alpn: &[&[u8]], responder: Responder) -> FakeUpstream {
        let ca = Arc::new(SessionCa::generate("fake-upstream").unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor =
            tokio_rustls::TlsAcceptor::from(ca.server_config(alpn.iter().map(|p| p.to_vec()).collect()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (acceptor, seen, responder) = (acceptor.clone(), seen2.clone(), responder.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (seen, responder) = (seen.clone(), responder.clone());
                        async move { Ok::<_, Infallible>(answer(req, &seen, &responder).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        FakeUpstream { port, ca, seen }
    }

    pub fn base_url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    pub fn seen(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.cert_der().clone()).unwrap();
        roots
    }
}

async fn answer(
    req: Request<Incoming>,
    seen: &Mutex<Vec<Recorded>>,
    responder: &Responder,
) -> Response<ProxyBody> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    let rec = Recorded {
        method: parts.method.to_string(),
        uri: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        headers: parts.headers,
        body,
        version: parts.version,
    };
    let reply = responder(&rec);
    seen.lock().unwrap().push(rec);
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        for (i, chunk) in reply.chunks.into_iter().enumerate() {
            if let Some((at, gate)) = &reply.gate
                && *at == i
            {
                gate.notified().await;
            }
            if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                return;
            }
        }
    });
    let mut r = Response::new(ProxyBody::Stream(rx));
    *r.status_mut() = StatusCode::from_u16(reply.status).unwrap();
    for (k, v) in reply.headers {
        r.headers_mut().insert(k, v.parse().unwrap());
    }
    r
}

/// The proxy under test with its sink and upstream.
pub struct Harness {
    pub proxy: Arc<LlmProxy>,
    pub addr: SocketAddr,
    pub sink: Arc<CollectSink>,
    pub upstream: FakeUpstream,
}

/// Parses a policy `llm:` section; `{UPSTREAM}` becomes the fake upstream's base URL.
pub fn policy(yaml: &str, upstream: &FakeUpstream) -> LlmPolicy {
    serde_norway::from_str(&yaml.replace("{UPSTREAM}", &upstream.base_url())).unwrap()
}

/// Starts the fake upstream and a proxy for `yaml` with server environment `env`; `tune`
/// adjusts the compiled configuration.
pub async fn start(
    yaml: &str,
    env: &[(&str, &str)],
    responder: Responder,
    tune: impl FnOnce(&mut ProxyConfig),
) -> Harness {
    let upstream = FakeUpstream::start(&[b"h2", b"http/1.1"], responder).await;
    start_with(yaml, env, upstream, tune).await
}

pub async fn start_with(
    yaml: &str,
    env: &[(&str, &str)],
    upstream: FakeUpstream,
    tune: impl FnOnce(&mut ProxyConfig),
) -> Harness {
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let mut config = ProxyConfig::with_env(&policy(yaml, &upstream), &lookup).unwrap();
    tune(&mut config);
    let client = Upstream::with_roots(Arc::new(TcpDialer), upstream.roots()).unwrap();
    let sink = Arc::new(CollectSink::default());
    let proxy = LlmProxy::new(config, client, sink.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let p = proxy.clone();
    tokio::spawn(async move { p.serve_listener(listener, std::future::pending()).await });
    Harness { proxy, addr, sink, upstream }
}

/// A collected answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("answer not JSON ({e}): {:?}", self.body))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one HTTP/1.1 request on a fresh connection.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Answer {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let mut req = req;
    req.headers_mut().insert("host", addr.to_string().parse().unwrap());
    let resp = tx.send_request(req).await.unwrap();
    collect(resp).await
}

pub async fn collect(resp: Response<Incoming>) -> Answer {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer { status: parts.status, headers: parts.headers, body }
}

/// POSTs JSON to `path`.
pub async fn post_json(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: serde_json::Value,
) -> Answer {
    let mut b = Request::post(path).header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(addr, b.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await
}

/// An Anthropic key the DLP recognises.
pub fn anthropic_key() -> String {
    format!(
        "sk-ant-api03-{}AA",
        "Zx9Kq2Lm7Np4Rs1Tv6Wy3Ab8Cd5Ef0Gh".repeat(3).chars().take(93).collect::<String>()
    )
}

/// An Anthropic Messages answer with usage.
pub fn anthropic_answer(text: &str, input: u64, output: u64) -> serde_json::Value {
    serde_json::json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
        "usage": {"input_tokens": input, "output_tokens": output}})
}

/// One SSE event with `data` as JSON.
pub fn event(name: &str, data: serde_json::Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// An Anthropic text delta event.
pub fn text_delta(text: &str) -> String {
    event(
        "content_block_delta",
        serde_json::json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
    )
}

/// Splits an SSE body into events and checks each is well formed with JSON data (or
/// `[DONE]`); returns the parsed data of each.
pub fn parse_sse(body: &str) -> Vec<serde_json::Value> {
    assert!(body.is_empty() || body.ends_with("\n\n"), "stream does not end an event: {body:?}");
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .filter_map(|e| {
            let data: Vec<&str> = e.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
            assert!(!data.is_empty(), "event without data: {e:?}");
            let data = data.join("\n");
            if data == "[DONE]" {
                return None;
            }
            Some(serde_json::from_str(&data).unwrap_or_else(|err| panic!("bad event data ({err}): {data}")))
        })
        .collect()
}
