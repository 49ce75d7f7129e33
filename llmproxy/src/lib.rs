//! HTTP proxy for LLM APIs: provider adapters, the DLP engine, SSE stream scanning, usage
//! accounting, credential injection and TLS termination with the session CA.
//!
//! The gateway builds a [`ProxyConfig`] from the policy's `llm:` section, an [`Upstream`] client
//! around its own [`Dialer`], and one [`LlmProxy`] per session; it then hands the proxy plain
//! loopback connections ([`LlmProxy::serve_connection`]) or intercepted TLS to provider hosts
//! ([`LlmProxy::serve_tls`]), gives the sandbox [`LlmProxy::env_vars`], and maps each
//! [`LlmEvent`] its [`EventSink`] receives onto an audit event.
#![forbid(unsafe_code)]

pub mod ca;
pub mod config;
pub mod dlp;
pub mod events;
pub mod providers;
pub mod proxy;
pub mod usage;

pub use config::{ConfigError, ProviderConfig, ProxyConfig};
pub use events::{CollectSink, Decision, EventSink, LlmEvent, NoSink};
pub use proxy::{ConnInfo, Dialer, LlmProxy, ServeError, TcpDialer, Upstream, UpstreamError};
