//! HTTP proxy for LLM APIs: provider adapters, the DLP engine, SSE stream scanning, usage
//! accounting, credential injection and TLS termination with the session CA.
//!
//! The gateway builds a [`ProxyConfig`] from the policy's `llm:` section, an [`Upstream`] client
//! around its own [`Dialer`], and one [`LlmProxy`] per session; it then hands the proxy plain
//! loopback connections ([`LlmProxy::serve_connection`]) or intercepted TLS to provider hosts
//! ([`LlmProxy::serve_tls`]), gives the sandbox [`LlmProxy::env_vars`], and maps each
//! [`LlmEvent`] its [`EventSink`] receives onto an audit event.
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use llmproxy::{CollectSink, ConnInfo, LlmProxy, ProxyConfig, TcpDialer, Upstream, ca::SessionCa};
//!
//! async fn wire(
//!     policy: &policies::model::llm::LlmPolicy,
//!     ca: Arc<SessionCa>,
//!     intercepted: tokio::net::TcpStream,
//! ) -> Result<(), Box<dyn std::error::Error>> {
//!     let config = ProxyConfig::from_policy(policy)?; // reads api_key_env / api_key_file
//!     let upstream = Upstream::new(Arc::new(TcpDialer), &[])?; // the gateway's own Dialer here
//!     let proxy = LlmProxy::new(config, upstream, Arc::new(CollectSink::default()));
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//!     let _env = proxy.env_vars(listener.local_addr()?); // into the sandbox's environment
//!     let p = proxy.clone();
//!     tokio::spawn(async move { p.serve_listener(listener, std::future::pending()).await });
//!     // A connection to a provider host, intercepted by the funnel:
//!     let tls = ca.server_config(vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
//!     proxy.serve_tls(intercepted, tls, ConnInfo::default()).await?;
//!     Ok(())
//! }
//! ```
#![forbid(unsafe_code)]

pub mod ca;
pub mod config;
pub mod dlp;
pub mod events;
pub mod providers;
pub mod proxy;
pub mod usage;

pub use config::{ConfigError, ProviderConfig, ProxyConfig};
pub use events::{CollectSink, DLP_REDACTION, Decision, EventSink, LlmEvent, NoSink, RedactionEvent};
pub use proxy::{ConnInfo, Dialer, LlmProxy, ServeError, TcpDialer, Upstream, UpstreamError};
