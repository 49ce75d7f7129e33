//! `rewrite_sni` between a real rustls client and a real rustls server on 127.0.0.1, through an
//! in-test proxy that rewrites the first flight and then relays bytes.
//!
//! What this shows: the server receives the rewritten name (it picks its certificate for it),
//! and the handshake then fails. That failure is TLS working as
//! designed, not a bug in the rewriter: client and server each hash the ClientHello they saw
//! into the transcript, so their TLS 1.3 handshake keys disagree (in TLS 1.2, the `Finished` MACs would). Two controls pin
//! the cause: the same proxy relaying untouched bytes completes, and so does the same proxy
//! running `rewrite_sni` to the name the client already sent (which re-encodes to identical
//! bytes). So a gateway cannot use a byte-level SNI rewrite to steer an unmodified client to an
//! upstream that serves another name (the `connect_redirects` + `tls.mode: rewrite_sni` plan of
//! issue 5): that needs the gateway to terminate TLS, or an upstream that serves the client's
//! original name (`tls.mode: passthrough`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use netwire::{Hostname, rewrite_sni};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ORIGINAL: &str = "original.test";
const REWRITTEN: &str = "rewritten.test";
const LIMIT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA made for this test run and a leaf for [`REWRITTEN`] only.
struct Pki {
    ca: CertificateDer<'static>,
    leaf: Arc<CertifiedKey>,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("self-sign ca");
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec![REWRITTEN.to_owned()]).expect("leaf params");
    let leaf = leaf.signed_by(&leaf_key, &issuer).expect("sign leaf");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let signer = provider().key_provider.load_private_key(key).expect("signing key");
    Pki { ca: ca_cert.der().clone(), leaf: Arc::new(CertifiedKey::new(vec![leaf.der().clone()], signer)) }
}

/// Serves the one leaf and records the SNI of every ClientHello it is asked about.
#[derive(Debug)]
struct RecordingResolver {
    leaf: Arc<CertifiedKey>,
    seen: Mutex<Vec<Option<String>>>,
}

impl ResolvesServerCert for RecordingResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.seen.lock().expect("lock").push(hello.server_name().map(str::to_owned));
        Some(self.leaf.clone())
    }
}

/// Accepts the test CA's certificate for [`REWRITTEN`] whatever name the client asked for.
///
/// A client connecting to `original.test` would rightly refuse a certificate for
/// `rewritten.test`; this verifier takes that question off the table, so that what the test
/// observes is only the effect of the rewritten bytes on the handshake itself.
#[derive(Debug)]
struct EitherName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for EitherName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let rewritten = ServerName::try_from(REWRITTEN).expect("name");
        self.0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            .or_else(|_| self.0.verify_server_cert(end_entity, intermediates, &rewritten, ocsp, now))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// What each side of one connection saw.
struct Outcome {
    server_sni: Vec<Option<String>>,
    server: Result<String, String>,
    client: Result<String, String>,
}

/// Run one client → proxy → server connection. `rewrite_to`: the proxy's new SNI, or `None`
/// to relay the bytes untouched.
async fn run(
    pki: &Pki,
    rewrite_to: Option<&str>,
    version: &'static rustls::SupportedProtocolVersion,
) -> Outcome {
    let resolver = Arc::new(RecordingResolver { leaf: pki.leaf.clone(), seen: Mutex::new(Vec::new()) });
    let server_config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[version])
        .expect("versions")
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let server_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server_addr = server_listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (tcp, _) = server_listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let mut line = [0u8; 5];
        tls.read_exact(&mut line).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong\n").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(String::from_utf8_lossy(&line).into_owned())
    });

    let proxy_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let proxy_addr = proxy_listener.local_addr().expect("addr");
    let new_sni = rewrite_to.map(|n| Hostname::from_wire(n.as_bytes()).expect("name"));
    tokio::spawn(async move {
        let (mut client, _) = proxy_listener.accept().await.expect("accept");
        let mut upstream = TcpStream::connect(server_addr).await.expect("connect upstream");
        if let Some(new_sni) = new_sni {
            let mut buf = Vec::new();
            let rewritten = loop {
                let mut chunk = [0u8; 4096];
                let n = client.read(&mut chunk).await.expect("read hello");
                assert!(n > 0, "client closed before its hello was complete");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(rw) = rewrite_sni(&buf, &new_sni).expect("rewritable hello") {
                    break rw;
                }
            };
            upstream.write_all(&rewritten.bytes).await.expect("write hello");
            upstream.write_all(&buf[rewritten.consumed..]).await.expect("write rest");
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    });

    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.clone()).expect("trust ca");
    let webpki =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider()).build().expect("verifier");
    let client_config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[version])
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(EitherName(webpki)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let client = async {
        let tcp = TcpStream::connect(proxy_addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from(ORIGINAL).expect("name");
        let mut tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
        tls.write_all(b"ping\n").await.map_err(|e| e.to_string())?;
        let mut reply = String::new();
        tls.read_to_string(&mut reply).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(reply)
    };
    let client = tokio::time::timeout(LIMIT, client).await.expect("client timed out");
    let server = tokio::time::timeout(LIMIT, server).await.expect("server timed out").expect("server task");
    let server_sni = resolver.seen.lock().expect("lock").clone();
    Outcome { server_sni, server, client }
}

// TLS 1.3 only: the workspace builds rustls without its `tls12` feature, and turning it on for
// this test would unify into every other crate's test build. TLS 1.2 fails the same way, one
// step later (its `Finished` MAC covers the ClientHello).
const VERSIONS: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];

#[tokio::test]
async fn relaying_untouched_completes() {
    let pki = pki();
    for version in VERSIONS {
        let out = run(&pki, None, version).await;
        assert_eq!(out.server_sni, vec![Some(ORIGINAL.to_owned())], "{version:?}");
        assert_eq!(out.server, Ok("ping\n".to_owned()), "{version:?}");
        assert_eq!(out.client, Ok("pong\n".to_owned()), "{version:?}");
    }
}

#[tokio::test]
async fn rewriting_to_the_same_name_completes() {
    let pki = pki();
    for version in VERSIONS {
        let out = run(&pki, Some(ORIGINAL), version).await;
        assert_eq!(out.server_sni, vec![Some(ORIGINAL.to_owned())], "{version:?}");
        assert_eq!(out.client, Ok("pong\n".to_owned()), "{version:?}");
    }
}

#[tokio::test]
async fn rewritten_name_reaches_the_server_and_the_transcript_check_fails() {
    let pki = pki();
    for version in VERSIONS {
        let out = run(&pki, Some(REWRITTEN), version).await;
        assert_eq!(out.server_sni, vec![Some(REWRITTEN.to_owned())], "{version:?}");
        // The client derives its handshake keys from the hello it sent and cannot open the
        // server's EncryptedExtensions; its (encrypted) alert is then opaque to the server.
        let decrypt = rustls::Error::DecryptError.to_string();
        assert_eq!(out.client, Err(decrypt.clone()), "{version:?}");
        assert_eq!(out.server, Err(decrypt), "{version:?}");
    }
}
