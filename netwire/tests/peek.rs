//! `classify` decisions and `peek_first_bytes` over real loopback sockets: segmented hellos,
//! silent (server-speaks-first) clients, raw protocols, and nothing consumed.

mod support;

use std::time::{Duration, Instant};

use netwire::peek::{PeekError, Peeked, classify, peek_first_bytes};
use support::hello::rustls_hello;
use support::net::pair;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn classify_rules() {
    let hello = rustls_hello("peek.example", &[b"h2"]);
    assert!(
        matches!(classify(&hello), Peeked::Tls(ref i) if i.sni.as_ref().unwrap().as_str() == "peek.example")
    );
    assert_eq!(classify(&hello[..10]), Peeked::NeedMore);
    assert_eq!(classify(b""), Peeked::NeedMore);
    assert_eq!(classify(b"\x16\x01\x00"), Peeked::Raw);
    assert!(matches!(classify(b"\x16\x03\x01\x00\x00"), Peeked::Malformed(PeekError::Tls(_))));

    assert!(matches!(classify(b"GET / HTTP/1.1\r\nHost: h.example\r\n\r\n"), Peeked::Http(_)));
    assert_eq!(classify(b"GE"), Peeked::NeedMore);
    assert_eq!(classify(b"GET /index"), Peeked::NeedMore);
    assert_eq!(classify(b"GET / HTTP/1.1\r\nHost: h.exa"), Peeked::NeedMore);
    assert!(matches!(
        classify(b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n"),
        Peeked::Malformed(PeekError::Http(_))
    ));
    // Text protocols that are not HTTP stay raw.
    assert_eq!(classify(b"SSH-2.0-OpenSSH_9.6\r\n"), Peeked::Raw);
    assert_eq!(classify(b"PING\r\n"), Peeked::Raw);
    assert_eq!(classify(b"SET key value\r\n"), Peeked::Raw);
    assert_eq!(classify(b"*1\r\n$4\r\nPING\r\n"), Peeked::Raw);
    assert_eq!(classify(b"\x00\x00\x00\x08\x04\xd2\x16\x2f"), Peeked::Raw); // Postgres SSLRequest
    assert_eq!(classify(b"get / HTTP/1.1\r\n"), Peeked::Raw);
}

#[tokio::test]
async fn segmented_hello_is_seen_whole_and_not_consumed() {
    let (mut client, server) = pair().await;
    let hello = rustls_hello("slow.example", &[b"http/1.1"]);
    let sent = hello.clone();
    let writer = tokio::spawn(async move {
        for chunk in sent.chunks(sent.len() / 4 + 1) {
            client.write_all(chunk).await.expect("write");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        client
    });
    let (peeked, n) = peek_first_bytes(&server, 4096, Duration::from_secs(5)).await.expect("peek");
    assert!(
        matches!(peeked, Peeked::Tls(ref i) if i.sni.as_ref().unwrap().as_str() == "slow.example"),
        "{peeked:?}"
    );
    assert_eq!(n, hello.len());
    let _client = writer.await.expect("writer");
    let mut server = server;
    let mut again = vec![0; hello.len()];
    server.read_exact(&mut again).await.expect("bytes still queued");
    assert_eq!(again, hello);
}

#[tokio::test]
async fn silent_client_times_out_as_silent() {
    let (_client, server) = pair().await;
    let t = Instant::now();
    let (peeked, n) = peek_first_bytes(&server, 4096, Duration::from_millis(150)).await.expect("peek");
    assert_eq!((peeked, n), (Peeked::Silent, 0));
    assert!(t.elapsed() >= Duration::from_millis(140));
}

#[tokio::test]
async fn closed_without_bytes_is_silent() {
    let (client, server) = pair().await;
    drop(client);
    let (peeked, n) = peek_first_bytes(&server, 4096, Duration::from_secs(5)).await.expect("peek");
    assert_eq!((peeked, n), (Peeked::Silent, 0));
}

#[tokio::test]
async fn partial_then_timeout_is_need_more() {
    let (mut client, server) = pair().await;
    let partial = b"GET / HTTP/1.1\r\nHost: a.exa";
    client.write_all(partial).await.expect("write");
    let (peeked, n) = peek_first_bytes(&server, 4096, Duration::from_millis(150)).await.expect("peek");
    assert_eq!((peeked, n), (Peeked::NeedMore, partial.len()));
    // The queued bytes must still wake a reader: peeking may not swallow the readiness.
    let mut server = server;
    let mut buf = [0u8; 64];
    let got = tokio::time::timeout(Duration::from_secs(2), server.read(&mut buf)).await.expect("not stuck");
    assert_eq!(got.expect("read"), partial.len());
}

#[tokio::test]
async fn raw_and_http_over_sockets() {
    let (mut client, server) = pair().await;
    client.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").await.expect("write");
    let (peeked, _) = peek_first_bytes(&server, 4096, Duration::from_secs(5)).await.expect("peek");
    assert_eq!(peeked, Peeked::Raw);

    let (mut client, server) = pair().await;
    client.write_all(b"GET /x HTTP/1.1\r\nHost: h.example:8080\r\n\r\n").await.expect("write");
    let (peeked, _) = peek_first_bytes(&server, 4096, Duration::from_secs(5)).await.expect("peek");
    assert!(matches!(peeked, Peeked::Http(ref h) if h.port == Some(8080)), "{peeked:?}");
}

#[tokio::test]
async fn max_bytes_bounds_the_wait() {
    let (mut client, server) = pair().await;
    client.write_all(&rustls_hello("bounded.example", &[])[..64]).await.expect("write");
    let (peeked, n) = peek_first_bytes(&server, 64, Duration::from_secs(5)).await.expect("peek");
    assert_eq!((peeked, n), (Peeked::NeedMore, 64));
}
