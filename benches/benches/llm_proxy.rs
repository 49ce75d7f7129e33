//! LLM proxy overhead, side by side: a chat request round trip and a whole SSE answer, from a
//! client straight to a local provider over TLS, and from a client through the LLM proxy (plain
//! HTTP on loopback, as the sandbox reaches it) which scans the request, injects the key,
//! forwards over its pooled TLS client, scans and measures the answer. Both clients keep one
//! HTTP/1.1 connection open; the provider is a hyper server on 127.0.0.1 with a CA made at
//! start. Requests of about 4 KB and 50 KB are measured. The SSE scanner alone is also timed
//! per event, in memory. A summary of the added latency per round trip (p50, p99) and per SSE
//! event is printed at the end.

use std::{
    convert::Infallible,
    hint::black_box,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, client::conn::http1::SendRequest, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use llmproxy::{LlmProxy, NoSink, ProxyConfig, TcpDialer, Upstream, ca::SessionCa};
use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use serde_json::json;
use tokio::{
    net::{TcpListener, TcpStream},
    runtime::Runtime,
};

/// A coding-agent style request: a system prompt and a few turns, about 4 KB.
fn chat_request() -> Bytes {
    let turn = "Refactor the retry loop in src/scheduler.rs so it no longer blocks the runtime; keep the \
                public API and add a test for the backoff. ";
    let body = json!({"model": "claude-sonnet-4", "max_tokens": 1024, "system": turn.repeat(8),
        "messages": [{"role": "user", "content": turn.repeat(12)},
                     {"role": "assistant", "content": turn.repeat(6)},
                     {"role": "user", "content": "Go ahead."}]});
    Bytes::from(body.to_string())
}

/// A long agent context of about 50 KB: a system prompt, tool output and many turns, with no
/// findings, as most requests are.
fn large_request() -> Bytes {
    let code = "fn retry<F: Fn() -> Result<(), Error>>(f: F, attempts: u32) -> Result<(), Error> {\n    \
                for i in 0..attempts { if f().is_ok() { return Ok(()); } sleep(backoff(i)); }\n    \
                Err(Error::Exhausted)\n}\n";
    let prose = "The scheduler retries failed jobs with exponential backoff capped at thirty seconds. ";
    let mut messages = Vec::new();
    for i in 0..48 {
        messages.push(json!({"role": "user", "content": format!("Step {i}: {}", prose.repeat(4))}));
        messages.push(json!({"role": "assistant", "content": [{"type": "text", "text": code.repeat(3)}]}));
    }
    let body = json!({"model": "claude-sonnet-4", "max_tokens": 1024, "system": prose.repeat(20),
        "messages": messages});
    Bytes::from(body.to_string())
}

fn chat_answer() -> Bytes {
    let text =
        "Here is the change: the loop now awaits tokio::time::sleep with exponential backoff. ".repeat(10);
    Bytes::from(
        json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4",
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 1200, "output_tokens": 210}})
        .to_string(),
    )
}

/// 200 text deltas of ~40 bytes between `message_start` and `message_stop`.
fn sse_answer() -> Bytes {
    let mut s = String::new();
    s.push_str(&format!(
        "event: message_start\ndata: {}\n\n",
        json!({"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 1200, "output_tokens": 1}}})
    ));
    for i in 0..200 {
        let d = json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": format!("token {i} of a streamed answer, ok. ")}});
        s.push_str(&format!("event: content_block_delta\ndata: {d}\n\n"));
    }
    s.push_str(&format!(
        "event: message_delta\ndata: {}\n\n",
        json!({"type": "message_delta", "usage": {"output_tokens": 800}})
    ));
    s.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    Bytes::from(s)
}

async fn provider(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let stream = req.uri().query() == Some("stream");
    let _ = req.into_body().collect().await;
    let (ct, body) =
        if stream { ("text/event-stream", sse_answer()) } else { ("application/json", chat_answer()) };
    let mut r = Response::new(Full::new(body));
    r.headers_mut().insert("content-type", ct.parse().unwrap());
    Ok(r)
}

struct Setup {
    rt: Runtime,
    direct: SendRequest<Full<Bytes>>,
    proxied: SendRequest<Full<Bytes>>,
    proxy_addr: SocketAddr,
}

fn setup() -> Setup {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (direct, proxied, proxy_addr) = rt.block_on(async {
        let ca = Arc::new(SessionCa::generate("bench-provider").unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(vec![b"http/1.1".to_vec()]));
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service_fn(provider))
                        .await;
                });
            }
        });
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();

        let yaml = format!(
            "providers: [{{name: anthropic, base_url: 'https://localhost:{port}', api_key_env: BENCH_KEY}}]"
        );
        let policy = serde_norway::from_str(&yaml).unwrap();
        let config = ProxyConfig::with_env(&policy, &|_| Some("bench-real-key".to_string())).unwrap();
        let upstream = Upstream::with_roots(Arc::new(TcpDialer), roots.clone()).unwrap();
        let proxy = LlmProxy::new(config, upstream, Arc::new(NoSink));
        let pl = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = pl.local_addr().unwrap();
        tokio::spawn(async move { proxy.serve_listener(pl, std::future::pending()).await });

        let mut tls = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (direct, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        let tcp = TcpStream::connect(proxy_addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let (proxied, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        (direct, proxied, proxy_addr)
    });
    Setup { rt, direct, proxied, proxy_addr }
}

async fn round_trip(tx: &mut SendRequest<Full<Bytes>>, path: &str, host: &str, body: Bytes) -> usize {
    tx.ready().await.unwrap();
    let req = Request::post(path)
        .header("host", host)
        .header("content-type", "application/json")
        .header("x-api-key", "placeholder")
        .body(Full::new(body))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.into_body().collect().await.unwrap().to_bytes().len()
}

fn bench(c: &mut Criterion) {
    let mut s = setup();
    let body = chat_request();
    let host = s.proxy_addr.to_string();
    let large = large_request();
    let cases = [
        ("chat_round_trip", "", body.clone()),
        ("chat_round_trip_50kb", "", large.clone()),
        ("sse_stream_200_events", "?stream", body.clone()),
    ];
    let mut summary = Vec::new();
    for (name, query, body) in cases {
        let mut g = c.benchmark_group(name);
        let direct_path = format!("/v1/messages{query}");
        let proxied_path = format!("/anthropic/v1/messages{query}");
        g.bench_function("direct", |b| {
            b.iter(|| {
                s.rt.block_on(round_trip(&mut s.direct, &direct_path, "localhost", black_box(body.clone())))
            })
        });
        g.bench_function("through_proxy", |b| {
            b.iter(|| {
                s.rt.block_on(round_trip(&mut s.proxied, &proxied_path, &host, black_box(body.clone())))
            })
        });
        g.finish();
        // A plain sample for the summary: medians of 500 round trips each.
        let median = |tx: &mut SendRequest<Full<Bytes>>, path: &str, host: &str| {
            let mut v: Vec<Duration> = (0..500)
                .map(|_| {
                    let t = Instant::now();
                    s.rt.block_on(round_trip(tx, path, host, body.clone()));
                    t.elapsed()
                })
                .collect();
            v.sort();
            (v[v.len() / 2], v[v.len() * 99 / 100])
        };
        let d = median(&mut s.direct, &direct_path, "localhost");
        let p = median(&mut s.proxied, &proxied_path, &host);
        summary.push((name, body.len(), d, p));
    }
    let per_event = sse_scan(c);
    println!("\nllm_proxy summary (p50 / p99 per round trip, 500 samples; target < 0.3 ms added at p50):");
    for (name, size, d, p) in summary {
        println!(
            "  {name:<24} {:>6} B  direct {:>8.1?} / {:>8.1?}   through proxy {:>8.1?} / {:>8.1?}   added p50 {:>8.1?} p99 {:>8.1?}",
            size,
            d.0,
            d.1,
            p.0,
            p.1,
            p.0.saturating_sub(d.0),
            p.1.saturating_sub(d.1),
        );
        if name.starts_with("sse") {
            println!(
                "  {:<24} added per event (p50 / {SSE_EVENTS}) {:>8.1?}",
                "",
                p.0.saturating_sub(d.0) / SSE_EVENTS as u32
            );
        }
    }
    println!("  sse scanner alone: {per_event:.1?} per event (target < 50 µs per SSE event)");
}

/// Events in [`sse_answer`]: 200 deltas, start, delta and stop.
const SSE_EVENTS: usize = 203;

/// The SSE scanner on its own, in memory: the whole answer pushed in 1 KB chunks, as it arrives
/// off the wire. Returns the time per event.
fn sse_scan(c: &mut Criterion) -> Duration {
    let engine = llmproxy::dlp::Engine::builtin();
    let answer = sse_answer();
    let run = || {
        let mut s = llmproxy::proxy::sse::SseScanner::new(
            &engine,
            policies::model::llm::ProviderKind::Anthropic,
            256,
            1 << 20,
        );
        let mut out = 0;
        for chunk in answer.chunks(1024) {
            out += s.push(black_box(chunk)).map(|b| b.len()).unwrap_or_default();
        }
        out + s.finish().map(|b| b.len()).unwrap_or_default()
    };
    assert_eq!(run(), answer.len(), "a clean stream passes byte for byte");
    let mut g = c.benchmark_group("sse_scan");
    g.throughput(criterion::Throughput::Elements(SSE_EVENTS as u64));
    g.bench_function("anthropic_203_events", |b| b.iter(run));
    g.finish();
    let rounds = 200;
    let t = Instant::now();
    for _ in 0..rounds {
        black_box(run());
    }
    t.elapsed() / (rounds * SSE_EVENTS as u32)
}

criterion_group!(benches, bench);
criterion_main!(benches);
