//! Local upstreams on the host's loopback: a TLS server whose CA is made at run time, a plain
//! HTTP server and a server-speaks-first banner server. Each counts the connections it accepted.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// What the TLS upstream answers.
pub const TLS_BODY: &str = "hello from the tls upstream";
/// What the HTTP upstream answers.
pub const HTTP_BODY: &str = "hello from the http upstream";
/// What the banner upstream says first.
pub const BANNER: &str = "220 banner from the server-speaks-first upstream\r\n";

/// A server running on its own runtime until dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    _rt: tokio::runtime::Runtime,
}

impl Upstream {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime")
}

/// Bind 127.0.0.1:0 and serve each connection with `handler` on a new runtime.
pub fn serve<F, Fut>(handler: F) -> Upstream
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let rt = runtime();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let handler = Arc::new(handler);
    rt.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(handler(stream));
        }
    });
    Upstream { addr, accepted, _rt: rt }
}

/// Read until the end of an HTTP request head (or EOF, or 64 KiB).
async fn read_head<S: AsyncReadExt + Unpin>(s: &mut S) -> Vec<u8> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    head
}

fn response(body: &str) -> String {
    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
}

/// A certificate authority made for one test, and the PEM a client trusts it by.
pub struct TestCa {
    pub ca_pem: String,
    leaf: CertificateDer<'static>,
    key: Vec<u8>,
}

impl TestCa {
    /// A CA and a leaf for `localhost`, `blocked.test` and 127.0.0.1.
    pub fn new() -> TestCa {
        TestCa::with_names(&["localhost", "blocked.test", "127.0.0.1"])
    }

    /// A CA and a leaf for `names` (host names or IP literals).
    pub fn with_names(names: &[&str]) -> TestCa {
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "agentsh test CA");
        let ca_cert = ca.self_signed(&ca_key).expect("self-sign ca");
        let issuer = Issuer::new(ca, ca_key);
        let names: Vec<String> = names.iter().map(|n| (*n).to_string()).collect();
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf = CertificateParams::new(names).expect("leaf params");
        let leaf = leaf.signed_by(&leaf_key, &issuer).expect("sign leaf");
        TestCa { ca_pem: ca_cert.pem(), leaf: leaf.der().clone(), key: leaf_key.serialize_der() }
    }

    /// Serve [`TLS_BODY`] over TLS to any HTTP request.
    pub fn serve(&self) -> Upstream {
        self.serve_body(TLS_BODY)
    }

    /// A TLS server configuration presenting the leaf (no ALPN).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.leaf.clone()], key)
            .expect("server cert");
        Arc::new(config)
    }

    /// Serve `body` over TLS to any HTTP request.
    pub fn serve_body(&self, body: &'static str) -> Upstream {
        self.serve_with(move |_| body.to_string())
    }

    /// Serve `sni=<the server name the client sent>` over TLS to any HTTP request.
    pub fn serve_sni_echo(&self) -> Upstream {
        self.serve_with(|sni| format!("sni={}", sni.unwrap_or("-")))
    }

    /// Serve over TLS the body `body(sni)` makes, to any HTTP request.
    fn serve_with(&self, body: impl Fn(Option<&str>) -> String + Send + Sync + 'static) -> Upstream {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.server_config());
        let body = Arc::new(body);
        serve(move |tcp| {
            let acceptor = acceptor.clone();
            let body = body.clone();
            async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let text = body(tls.get_ref().1.server_name());
                read_head(&mut tls).await;
                let _ = tls.write_all(response(&text).as_bytes()).await;
                let _ = tls.shutdown().await;
            }
        })
    }
}

/// Serve [`HTTP_BODY`] in plain HTTP/1.1.
pub fn http() -> Upstream {
    serve(|mut tcp| async move {
        read_head(&mut tcp).await;
        let _ = tcp.write_all(response(HTTP_BODY).as_bytes()).await;
        let _ = tcp.shutdown().await;
    })
}

/// A plain HTTP/1.1 server on a Unix socket, counting its connections; stops when dropped.
pub struct UnixUpstream {
    pub path: std::path::PathBuf,
    accepted: Arc<AtomicUsize>,
    _rt: tokio::runtime::Runtime,
}

impl UnixUpstream {
    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Serve `body` in plain HTTP/1.1 on a Unix socket bound at `path`.
pub fn http_unix(path: &std::path::Path, body: &'static str) -> UnixUpstream {
    let rt = runtime();
    let listener = {
        let _g = rt.enter();
        tokio::net::UnixListener::bind(path).expect("bind unix upstream")
    };
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    rt.spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                read_head(&mut stream).await;
                let _ = stream.write_all(response(body).as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    UnixUpstream { path: path.to_path_buf(), accepted, _rt: rt }
}

/// Say [`BANNER`] on accept, then echo one line back and close.
pub fn banner() -> Upstream {
    serve(|mut tcp| async move {
        let _ = tcp.write_all(BANNER.as_bytes()).await;
        let mut buf = [0u8; 1024];
        if let Ok(n) = tcp.read(&mut buf).await {
            let _ = tcp.write_all(&buf[..n]).await;
        }
        let _ = tcp.shutdown().await;
    })
}

/// A loopback port nobody listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}
