//! The session CA against a real rustls client: a leaf per SNI that verifies under the CA
//! alone, no handshake without SNI, and no trust from any other session's CA.

use std::sync::Arc;

use llmproxy::ca::SessionCa;
use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn client_trusting(ca: &SessionCa, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// Serves one echo-once TLS connection with `ca` and returns the port.
async fn serve_once(
    ca: Arc<SessionCa>,
    alpn: Vec<Vec<u8>>,
) -> (u16, tokio::task::JoinHandle<Option<Option<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = TlsAcceptor::from(ca.server_config(alpn));
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.ok()?;
        let negotiated = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.ok()?;
        tls.write_all(&buf).await.ok()?;
        tls.shutdown().await.ok()?;
        Some(negotiated)
    });
    (port, task)
}

#[tokio::test]
async fn leaf_for_the_sni_verifies_under_the_session_ca() {
    let ca = Arc::new(SessionCa::generate("sess-a").unwrap());
    let (port, server) = serve_once(ca.clone(), vec![b"h2".to_vec(), b"http/1.1".to_vec()]).await;
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = ServerName::try_from("api.example.com").unwrap();
    let mut tls = client_trusting(&ca, &[b"http/1.1"]).connect(name, tcp).await.unwrap();
    tls.write_all(b"hello").await.unwrap();
    let mut back = [0u8; 5];
    tls.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"hello");
    assert_eq!(server.await.unwrap(), Some(Some(b"http/1.1".to_vec())));
}

#[tokio::test]
async fn another_sessions_ca_is_not_trusted() {
    let ca = Arc::new(SessionCa::generate("sess-a").unwrap());
    let other = SessionCa::generate("sess-b").unwrap();
    let (port, server) = serve_once(ca, vec![]).await;
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = ServerName::try_from("api.example.com").unwrap();
    let err = client_trusting(&other, &[]).connect(name, tcp).await.unwrap_err();
    assert!(
        err.to_string().contains("UnknownIssuer") || err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
    assert_eq!(server.await.unwrap(), None);
}

#[tokio::test]
async fn a_client_without_sni_gets_no_certificate() {
    let ca = Arc::new(SessionCa::generate("sess-a").unwrap());
    let (port, server) = serve_once(ca.clone(), vec![]).await;
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // An IP-address server name makes rustls send no SNI extension.
    let name = ServerName::try_from("127.0.0.1").unwrap();
    assert!(client_trusting(&ca, &[]).connect(name, tcp).await.is_err());
    assert_eq!(server.await.unwrap(), None);
}
