//! The upstream side: a pooled hyper client speaking HTTP/1.1 or HTTP/2 (by ALPN) over rustls,
//! with every TCP connection opened by the caller's [`Dialer`] so the gateway applies its network
//! policy and its own name resolution there.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::Uri;
use http_body_util::Full;
use hyper_util::{
    client::legacy::{
        Client,
        connect::{Connected, Connection},
    },
    rt::{TokioExecutor, TokioIo},
};
use netwire::stream::MaybeTls;
use rustls::{ClientConfig, RootCertStore, pki_types::CertificateDer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

/// A boxed future, as returned by [`Dialer::dial`].
pub type DialFuture<'a> = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send + 'a>>;

/// Opens the TCP connection to an upstream `host:port`. The gateway's implementation resolves
/// the name itself and applies network policy; refusing is an `io::Error`.
pub trait Dialer: Send + Sync + 'static {
    /// Connects to `host` (a name or an IP literal without brackets) on `port`.
    fn dial<'a>(&'a self, host: &'a str, port: u16) -> DialFuture<'a>;
}

/// Plain `TcpStream::connect` with the system resolver, for tests and tools.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    fn dial<'a>(&'a self, host: &'a str, port: u16) -> DialFuture<'a> {
        Box::pin(async move {
            let s = TcpStream::connect((host, port)).await?;
            s.set_nodelay(true)?;
            Ok(s)
        })
    }
}

/// Why the upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// rustls refused the configuration.
    #[error("upstream TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// No trust anchors at all: neither system roots nor extra ones.
    #[error("no trusted root certificates (system store empty and no extra roots)")]
    NoRoots,
}

/// The pooled upstream client; cheap to clone and shared by every request of a session (or of
/// the whole gateway).
#[derive(Clone)]
pub struct Upstream {
    pub(crate) client: Client<Connector, Full<Bytes>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").finish_non_exhaustive()
    }
}

impl Upstream {
    /// A client trusting the system roots plus `extra_roots`, dialing through `dialer`.
    pub fn new(
        dialer: Arc<dyn Dialer>,
        extra_roots: &[CertificateDer<'static>],
    ) -> Result<Upstream, UpstreamError> {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        roots.add_parsable_certificates(extra_roots.iter().cloned());
        if roots.is_empty() {
            return Err(UpstreamError::NoRoots);
        }
        Self::with_roots(dialer, roots)
    }

    /// A client trusting exactly `roots`.
    pub fn with_roots(dialer: Arc<dyn Dialer>, roots: RootCertStore) -> Result<Upstream, UpstreamError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self::with_tls(dialer, Arc::new(tls)))
    }

    /// A client with a ready TLS configuration (its ALPN list decides HTTP/2 use).
    pub fn with_tls(dialer: Arc<dyn Dialer>, tls: Arc<ClientConfig>) -> Upstream {
        let connector = Connector { dialer, tls: TlsConnector::from(tls) };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(32)
            .build(connector);
        Upstream { client }
    }
}

/// hyper's connector: dial, then TLS for `https`.
#[derive(Clone)]
pub(crate) struct Connector {
    dialer: Arc<dyn Dialer>,
    tls: TlsConnector,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<UpstreamIo>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidInput, m.to_string());
            let host = uri.host().ok_or_else(|| bad("upstream URI without host"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            let https = uri.scheme_str() == Some("https");
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let tcp = this.dialer.dial(&host, port).await?;
            if !https {
                return Ok(TokioIo::new(UpstreamIo(MaybeTls::Plain(tcp))));
            }
            let name =
                rustls::pki_types::ServerName::try_from(host).map_err(|_| bad("bad TLS server name"))?;
            let tls = this.tls.connect(name, tcp).await?;
            Ok(TokioIo::new(UpstreamIo(MaybeTls::Tls(Box::new(tls)))))
        })
    }
}

/// An upstream connection, plain or TLS (a newtype, so hyper's `Connection` can be told when
/// TLS negotiated HTTP/2).
pub(crate) struct UpstreamIo(MaybeTls<TcpStream, TlsStream<TcpStream>>);

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        match &self.0 {
            MaybeTls::Tls(t) if t.get_ref().1.alpn_protocol() == Some(b"h2") => {
                Connected::new().negotiated_h2()
            }
            _ => Connected::new(),
        }
    }
}

impl AsyncRead for UpstreamIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
