//! The proxy's compiled configuration: providers resolved from `llm.providers` (upstream URL,
//! hosts, API shape, the real key and the placeholder the sandbox sees), the DLP engine, rate
//! limits, budgets, model rules and the buffering bounds. Built once per session.

use std::{path::Path, time::Duration};

use policies::{
    matchers::domain::{DomainPattern, Hostname},
    model::llm::{Budgets, LlmPolicy, ModelRules, Provider, ProviderKind, RateLimits},
};

use crate::dlp::{DlpError, Engine};

/// Default bound on a buffered request or response body (after decompression).
pub const DEFAULT_MAX_BODY: usize = 32 << 20;
/// Default SSE hold-back: bytes of answer text kept after an event before it is released.
pub const DEFAULT_HOLDBACK: usize = 256;
/// Default cap on requests in flight while a token limit is on.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;
/// Tokens charged for a successful answer that reports no usage while a token limit is on, so
/// an upstream (or a path) without usage fields cannot be used to bypass the limit.
pub const DEFAULT_FALLBACK_TOKENS: u64 = 200;

/// Why a configuration could not be built. Every variant names the provider or detector.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `base_url` is not an `http(s)://host[:port][/path]` URL.
    #[error("llm provider {provider:?}: invalid base_url {url:?}: {reason}")]
    BaseUrl {
        /// Provider name.
        provider: String,
        /// The URL as written.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Both `api_key_env` and `api_key_file` are set.
    #[error("llm provider {provider:?}: api_key_env and api_key_file are mutually exclusive")]
    TwoKeySources {
        /// Provider name.
        provider: String,
    },
    /// The key source is set but yields no key.
    #[error("llm provider {provider:?}: no API key: {reason}")]
    MissingKey {
        /// Provider name.
        provider: String,
        /// Where it was looked for.
        reason: String,
    },
    /// Two providers share a name.
    #[error("llm provider {0:?} is declared twice")]
    DuplicateName(String),
    /// The DLP engine could not be built.
    #[error(transparent)]
    Dlp(#[from] DlpError),
}

/// A parsed upstream base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// `true` for `https`.
    pub tls: bool,
    /// Host name or IP literal (no brackets).
    pub host: String,
    /// Port (default 443 / 80).
    pub port: u16,
    /// Path prefix without a trailing slash (`""` for none).
    pub path: String,
}

impl BaseUrl {
    /// Parses `http(s)://host[:port][/path]`; no user info, query or fragment.
    pub fn parse(url: &str) -> Result<BaseUrl, &'static str> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err("scheme must be http or https");
        };
        if rest.contains(['?', '#', '@']) {
            return Err("query, fragment and user info are not allowed");
        }
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("unclosed [")?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err("empty host");
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| "bad port")?,
            None if tls => 443,
            None => 80,
        };
        Ok(BaseUrl {
            tls,
            host: host.to_ascii_lowercase(),
            port,
            path: path.trim_end_matches('/').to_string(),
        })
    }

    /// `host:port` as used in a URI authority (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Where the real key comes from; the proxy never shows it to the sandbox.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The real key.
    pub(crate) real: String,
    /// The stand-in the sandbox gets in its environment.
    pub(crate) placeholder: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential").field("placeholder", &self.placeholder).finish_non_exhaustive()
    }
}

/// One provider, ready to use.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Name from the policy; also the path prefix on the plain-HTTP listener (`/<name>/…`).
    pub name: String,
    /// API shape.
    pub kind: ProviderKind,
    /// Upstream.
    pub upstream: BaseUrl,
    /// Host globs whose intercepted TLS goes to this provider.
    pub hosts: Vec<DomainPattern>,
    /// Injected credential; `None` forwards the agent's own key.
    pub credential: Option<Credential>,
}

impl ProviderConfig {
    /// The placeholder key the sandbox should use, when the gateway injects the real one.
    pub fn placeholder(&self) -> Option<&str> {
        self.credential.as_ref().map(|c| c.placeholder.as_str())
    }

    /// Whether an intercepted connection to `host` belongs to this provider.
    pub fn serves_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if self.hosts.is_empty() {
            return host == self.upstream.host;
        }
        Hostname::parse(&host).is_ok_and(|h| self.hosts.iter().any(|p| p.matches(&h)))
    }
}

/// Everything the proxy needs, compiled.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Providers in policy order.
    pub providers: Vec<ProviderConfig>,
    /// DLP detectors.
    pub dlp: Engine,
    /// Per-session rate limits.
    pub rate_limits: RateLimits,
    /// Token budgets.
    pub budgets: Budgets,
    /// Model allow/deny globs.
    pub models: ModelRules,
    /// Largest request or response body buffered, after decompression (413 / 502 beyond).
    pub max_body: usize,
    /// Bytes of streamed answer text held back so a secret split across events is caught.
    pub stream_holdback: usize,
    /// Tokens charged when a limited answer carries no usage.
    pub fallback_tokens: u64,
    /// How long to wait for upstream response headers.
    pub upstream_timeout: Duration,
    /// Requests in flight at once (a streamed answer counts until its end); more get 429.
    /// Token limits are charged after the answer, so without a cap a burst of parallel
    /// requests could overshoot them. Default: 16 when a token limit or budget is set.
    pub max_in_flight: Option<usize>,
}

impl ProxyConfig {
    /// Compiles `llm:` with keys read from the server's environment and files.
    pub fn from_policy(policy: &LlmPolicy) -> Result<ProxyConfig, ConfigError> {
        Self::with_env(policy, &|k| std::env::var(k).ok())
    }

    /// As [`ProxyConfig::from_policy`], reading `api_key_env` variables through `env`.
    pub fn with_env(
        policy: &LlmPolicy,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ProxyConfig, ConfigError> {
        let mut providers: Vec<ProviderConfig> = Vec::new();
        for p in &policy.providers {
            if providers.iter().any(|q| q.name == p.name) {
                return Err(ConfigError::DuplicateName(p.name.clone()));
            }
            providers.push(provider(p, env)?);
        }
        Ok(ProxyConfig {
            providers,
            dlp: Engine::new(&policy.dlp)?,
            rate_limits: policy.rate_limits,
            budgets: policy.budgets,
            models: policy.models.clone(),
            max_body: DEFAULT_MAX_BODY,
            stream_holdback: DEFAULT_HOLDBACK,
            fallback_tokens: DEFAULT_FALLBACK_TOKENS,
            upstream_timeout: Duration::from_secs(300),
            max_in_flight: (policy.rate_limits.tokens_per_minute.is_some()
                || policy.budgets.per_session_tokens.is_some()
                || policy.budgets.daily_tokens.is_some()
                || policy.budgets.monthly_tokens.is_some())
            .then_some(DEFAULT_MAX_IN_FLIGHT),
        })
    }

    /// The provider named `name`.
    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.name == name)
    }
}

fn provider(p: &Provider, env: &dyn Fn(&str) -> Option<String>) -> Result<ProviderConfig, ConfigError> {
    let upstream = BaseUrl::parse(&p.base_url).map_err(|reason| ConfigError::BaseUrl {
        provider: p.name.clone(),
        url: p.base_url.clone(),
        reason,
    })?;
    let missing = |reason: String| ConfigError::MissingKey { provider: p.name.clone(), reason };
    let real = match (&p.api_key_env, &p.api_key_file) {
        (Some(_), Some(_)) => return Err(ConfigError::TwoKeySources { provider: p.name.clone() }),
        (Some(var), None) => Some(
            env(var)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| missing(format!("environment variable {var} is unset or empty")))?,
        ),
        (None, Some(path)) => Some(read_key(path).map_err(missing)?),
        (None, None) => None,
    };
    let credential = real.map(|real| Credential { placeholder: placeholder(&p.name), real });
    Ok(ProviderConfig {
        name: p.name.clone(),
        kind: p.effective_kind(),
        upstream,
        hosts: p.hosts.clone(),
        credential,
    })
}

fn read_key(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let key = text.trim();
    if key.is_empty() || key.contains(['\n', '\r']) {
        return Err(format!("{}: expected one non-empty line", path.display()));
    }
    Ok(key.to_string())
}

/// A fresh random stand-in key. Random per session so it identifies nothing outside it.
fn placeholder(name: &str) -> String {
    let mut bytes = [0u8; 16];
    // The system RNG only fails when the OS has no entropy source at all; a zero stand-in is
    // still safe because the real key is what matters, and it never leaves the gateway.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let tag: String = name.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!("agentsh-placeholder-{tag}-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let u = BaseUrl::parse("https://api.anthropic.com").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port, u.path.as_str()), (true, "api.anthropic.com", 443, ""));
        let u = BaseUrl::parse("http://127.0.0.1:8080/proxy/").unwrap();
        assert_eq!(
            (u.tls, u.port, u.path.as_str(), u.authority()),
            (false, 8080, "/proxy", "127.0.0.1:8080".into())
        );
        assert_eq!(BaseUrl::parse("https://[::1]:9/").unwrap().authority(), "[::1]:9");
        for bad in ["ftp://x", "https://", "https://u:p@host", "https://h:99999", "https://h/?q"] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
