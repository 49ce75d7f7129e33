//! The proxy service: one [`LlmProxy`] per session, served on a plain-HTTP loopback listener
//! inside the sandbox ([`LlmProxy::serve_listener`], [`LlmProxy::serve_connection`]) and on
//! intercepted TLS connections to provider hosts ([`LlmProxy::serve_tls`]). HTTP/1.1 and HTTP/2
//! on both, by hyper-util's auto server.
//!
//! Routing: on an intercepted connection the TLS server name picks the provider; on the plain
//! listener the path prefix `/<provider name>/` does (the base URLs from [`LlmProxy::env_vars`]
//! carry it), with a fallback on the well-known endpoint paths (`/v1/messages` → the first
//! Anthropic provider, …).

mod body;
mod handler;
mod reply;
mod respond;
pub mod sse;
pub mod upstream;

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use hyper::{Request, body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use policies::model::llm::ProviderKind;
use rustls::ServerConfig;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
};

pub use body::ProxyBody;
pub use upstream::{DialFuture, Dialer, TcpDialer, Upstream, UpstreamError};

use crate::{
    config::ProxyConfig,
    events::EventSink,
    usage::{Meter, Totals},
};

/// What the gateway knows about a client connection; copied into events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnInfo {
    /// The sandbox-side peer.
    pub peer: Option<SocketAddr>,
    /// TLS server name; set by [`LlmProxy::serve_tls`] from the handshake.
    pub sni: Option<String>,
}

/// Why serving a connection stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The TLS handshake failed.
    #[error("TLS handshake: {0}")]
    Tls(io::Error),
    /// The client did not send a server name; an intercepted connection cannot be routed.
    #[error("TLS client sent no server name")]
    NoSni,
    /// HTTP protocol error on the connection.
    #[error("HTTP connection: {0}")]
    Http(String),
}

/// A session's LLM proxy: configuration, counters, the upstream client and the event sink.
pub struct LlmProxy {
    pub(crate) config: ProxyConfig,
    pub(crate) meter: Meter,
    pub(crate) upstream: Upstream,
    pub(crate) sink: Arc<dyn EventSink>,
    in_flight: AtomicUsize,
}

/// One request in flight; released on drop (for a streamed answer, when its task ends).
pub(crate) struct InFlight(Option<Arc<LlmProxy>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            p.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl std::fmt::Debug for LlmProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmProxy").field("providers", &self.config.providers.len()).finish_non_exhaustive()
    }
}

impl LlmProxy {
    /// A proxy for one session.
    pub fn new(config: ProxyConfig, upstream: Upstream, sink: Arc<dyn EventSink>) -> Arc<LlmProxy> {
        let meter = Meter::new(config.rate_limits, config.budgets, config.fallback_tokens);
        Arc::new(LlmProxy { config, meter, upstream, sink, in_flight: AtomicUsize::new(0) })
    }

    /// Takes an in-flight slot, or `None` when the cap is reached.
    pub(crate) fn enter(self: &Arc<Self>) -> Option<InFlight> {
        let Some(max) = self.config.max_in_flight else { return Some(InFlight(None)) };
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= max {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(InFlight(Some(self.clone())))
    }

    /// The configuration in use.
    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    /// The session's request count and token totals.
    pub fn totals(&self) -> Totals {
        self.meter.totals()
    }

    /// Environment for the sandbox when the plain listener is at `addr`: base URLs for every
    /// provider kind (the first provider of a kind wins) and its placeholder key when the gateway
    /// injects the real one. Generic providers get `<NAME>_API_URL`.
    pub fn env_vars(&self, addr: SocketAddr) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut put = |k: &str, v: String| {
            if !out.iter().any(|(x, _)| x == k) {
                out.push((k.to_string(), v));
            }
        };
        for p in &self.config.providers {
            let base = format!("http://{addr}/{}", p.name);
            let (urls, keys): (&[&str], &[&str]) = match p.kind {
                ProviderKind::Anthropic => (&["ANTHROPIC_BASE_URL"], &["ANTHROPIC_API_KEY"]),
                ProviderKind::Openai => (&["OPENAI_BASE_URL", "OPENAI_API_BASE"], &["OPENAI_API_KEY"]),
                ProviderKind::Gemini => (&["GOOGLE_GEMINI_BASE_URL"], &["GEMINI_API_KEY", "GOOGLE_API_KEY"]),
                ProviderKind::Generic => (&[], &[]),
            };
            // OpenAI clients expect the version segment in the base URL.
            let url = if p.kind == ProviderKind::Openai { format!("{base}/v1") } else { base.clone() };
            for k in urls {
                put(k, url.clone());
            }
            if p.kind == ProviderKind::Generic {
                let name: String = p
                    .name
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' })
                    .collect();
                put(&format!("{name}_API_URL"), base);
            }
            if let Some(ph) = p.placeholder() {
                for k in keys {
                    put(k, ph.to_string());
                }
            }
        }
        out
    }

    /// Serves one connection (HTTP/1.1, or HTTP/2 by prior knowledge or ALPN) until it closes.
    /// Plain loopback connections leave `conn.sni` empty and are routed by path; a caller that
    /// terminated TLS itself passes the decrypted stream with `conn.sni` set, which routes every
    /// request on it to the provider serving that name.
    pub async fn serve_connection<IO>(self: &Arc<Self>, io: IO, conn: ConnInfo) -> Result<(), ServeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let this = self.clone();
        let conn = Arc::new(conn);
        let svc = service_fn(move |req: Request<Incoming>| {
            let (this, conn) = (this.clone(), conn.clone());
            async move { Ok::<_, Infallible>(handler::handle(this, conn, req).await) }
        });
        auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(io), svc)
            .await
            .map_err(|e| ServeError::Http(e.to_string()))
    }

    /// Terminates TLS on an intercepted connection with `server_config` (normally the session
    /// CA's, offering `h2` and `http/1.1`), then serves it; the server name picks the provider.
    pub async fn serve_tls<IO>(
        self: &Arc<Self>,
        io: IO,
        server_config: Arc<ServerConfig>,
        mut conn: ConnInfo,
    ) -> Result<(), ServeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let tls = tokio_rustls::TlsAcceptor::from(server_config).accept(io).await.map_err(ServeError::Tls)?;
        let sni = tls.get_ref().1.server_name().map(str::to_string).ok_or(ServeError::NoSni)?;
        conn.sni = Some(sni);
        self.serve_connection(tls, conn).await
    }

    /// Accepts on `listener` until `shutdown` resolves, serving each connection on its own task.
    pub async fn serve_listener(
        self: &Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                r = listener.accept() => r?,
            };
            let _ = stream.set_nodelay(true);
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.serve_connection(stream, ConnInfo { peer: Some(peer), sni: None }).await
                {
                    tracing::debug!(peer = %peer, error = %e, "llm proxy connection ended");
                }
            });
        }
    }
}
