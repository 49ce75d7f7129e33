//! Transports end to end: HTTP/2 from the agent and to the provider (ALPN), HTTP/1.1 to a
//! provider that offers only that, and the transparent entry: TLS terminated with the session
//! CA, the provider picked by the client's server name.

mod harness;

use std::sync::Arc;

use bytes::Bytes;
use harness::*;
use http::{Request, StatusCode, Version};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use llmproxy::{
    CollectSink, ConnInfo, LlmProxy, ProxyConfig, ServeError, TcpDialer, Upstream, ca::SessionCa,
};
use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

fn ok_answer() -> Responder {
    Arc::new(|_| Reply::json(anthropic_answer("fine", 1, 1)))
}

const ANTHROPIC: &str = "providers: [{name: anthropic, base_url: '{UPSTREAM}'}]\n";

#[tokio::test]
async fn http2_from_the_agent_and_to_the_provider() {
    let h = start(ANTHROPIC, &[], ok_answer(), |_| {}).await;
    let tcp = TcpStream::connect(h.addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    // Several requests multiplexed on the one agent connection.
    let mut answers = Vec::new();
    for i in 0..3 {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": format!("#{i} frank@example.com")}]});
        let req = Request::post(format!("http://{}/anthropic/v1/messages", h.addr))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        answers.push(tx.send_request(req));
    }
    for a in answers {
        let a = collect(a.await.unwrap()).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.json()["content"][0]["text"], "fine");
    }
    let seen = h.upstream.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|r| r.version == Version::HTTP_2), "ALPN h2 to the provider");
    assert!(seen.iter().all(|r| r.text().contains("[REDACTED:email]")));
}

#[tokio::test]
async fn http1_to_a_provider_without_h2() {
    let up = FakeUpstream::start(&[b"http/1.1"], ok_answer()).await;
    let h = start_with(ANTHROPIC, &[], up, |_| {}).await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "call +1 415 555 0134"}]});
    let a = post_json(h.addr, "/anthropic/v1/messages", &[], body).await;
    assert_eq!(a.status, StatusCode::OK);
    let got = &h.upstream.seen()[0];
    assert_eq!(got.version, Version::HTTP_11);
    assert_eq!(got.headers["content-length"].to_str().unwrap(), got.body.len().to_string());
    assert!(got.text().contains("[REDACTED:phone]"), "{}", got.text());
}

/// An HTTP/1.1 sender over TLS to `addr` with server name `sni`, trusting `ca` only.
async fn tls_http1(
    addr: std::net::SocketAddr,
    ca: &SessionCa,
    sni: &'static str,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let tls = client(ca, &[b"http/1.1"])
        .connect(ServerName::try_from(sni).unwrap(), TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    tx
}

/// A TLS client trusting `ca` only, offering `alpn`.
fn client(ca: &SessionCa, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let mut cfg = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

#[tokio::test]
async fn transparent_tls_entry_routes_by_server_name() {
    let up = FakeUpstream::start(&[b"h2", b"http/1.1"], ok_answer()).await;
    let yaml = "
providers:
  - {name: anthropic, base_url: '{UPSTREAM}', hosts: [api.anthropic.com], api_key_env: K}
  - {name: openai, base_url: '{UPSTREAM}', hosts: ['*.openai.com']}
";
    let cfg = ProxyConfig::with_env(&policy(yaml, &up), &|k| {
        (k == "K").then(|| "real-key-for-tls-entry".to_string())
    })
    .unwrap();
    let sink = Arc::new(CollectSink::default());
    let proxy =
        LlmProxy::new(cfg, Upstream::with_roots(Arc::new(TcpDialer), up.roots()).unwrap(), sink.clone());
    let session_ca = Arc::new(SessionCa::generate("session-1").unwrap());
    let server_config = session_ca.server_config(vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let p = proxy.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = listener.accept().await.unwrap();
            let (p, sc) = (p.clone(), server_config.clone());
            tokio::spawn(async move {
                let r = p.serve_tls(tcp, sc, ConnInfo { peer: Some(peer), sni: None }).await;
                if let Err(e) = r {
                    assert!(matches!(e, ServeError::Tls(_) | ServeError::NoSni | ServeError::Http(_)));
                }
            });
        }
    });

    // HTTP/1.1 over TLS to api.anthropic.com, with the agent's own (bogus) key replaced.
    let mut tx = tls_http1(addr, &session_ca, "api.anthropic.com").await;
    let req = Request::post("/v1/messages")
        .header("host", "api.anthropic.com")
        .header("x-api-key", "whatever-the-agent-has")
        .body(Full::new(Bytes::from(json!({"model": "m", "messages": []}).to_string())))
        .unwrap();
    let a = collect(tx.send_request(req).await.unwrap()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());

    // HTTP/2 over TLS (ALPN h2) to a host matched by a glob.
    let tls = client(&session_ca, &[b"h2"])
        .connect(ServerName::try_from("api.openai.com").unwrap(), TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::post("https://api.openai.com/v1/chat/completions")
        .body(Full::new(Bytes::from(json!({"model": "g", "messages": []}).to_string())))
        .unwrap();
    assert_eq!(collect(tx.send_request(req).await.unwrap()).await.status, StatusCode::OK);

    // A server name no provider serves is refused before any upstream contact.
    let mut tx = tls_http1(addr, &session_ca, "example.net").await;
    let req =
        Request::post("/v1/messages").header("host", "example.net").body(Full::new(Bytes::new())).unwrap();
    let a = collect(tx.send_request(req).await.unwrap()).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.json()["error"]["rule"], "no-provider");

    let seen = up.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].uri, "/v1/messages");
    assert_eq!(seen[0].headers["x-api-key"], "real-key-for-tls-entry");
    assert_eq!(seen[1].uri, "/v1/chat/completions");
    let evs = sink.events();
    assert_eq!(evs[0].sni.as_deref(), Some("api.anthropic.com"));
    assert_eq!(evs[1].provider.as_deref(), Some("openai"));
    assert_eq!(evs[2].sni.as_deref(), Some("example.net"));
}
