//! `db_services`: the databases the proxy fronts, keyed by service name (dbproxy.md §1), plus the
//! credentials the proxy injects upstream so the agent never holds them.

use serde::Deserialize;

use super::values::HostPort;

/// The database family; only Postgres is supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DbFamily {
    /// PostgreSQL wire protocol.
    Postgres,
}

/// The server flavour behind a Postgres-family service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DbDialect {
    /// PostgreSQL itself (the default).
    #[default]
    Postgres,
    /// Amazon Aurora PostgreSQL.
    AuroraPostgres,
    /// Amazon Redshift (beta in agentsh).
    Redshift,
    /// CockroachDB (beta in agentsh).
    Cockroachdb,
}

/// How TLS is handled between agent, proxy and upstream. Required: there is no default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DbTlsMode {
    /// Terminate the agent's TLS with a session-CA leaf; verified TLS upstream.
    TerminateReissue,
    /// Relay bytes unchanged: no statement visibility, so statement rules are refused.
    Passthrough,
    /// Terminate the agent's TLS; plain TCP upstream (loopback, private or `trusted_network`).
    TerminatePlaintextUpstream,
}

/// libpq's `sslmode` for the upstream leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS only if the server insists.
    Allow,
    /// TLS if the server offers it.
    Prefer,
    /// TLS, certificate not verified.
    Require,
    /// TLS, chain verified.
    VerifyCa,
    /// TLS, chain and host name verified.
    VerifyFull,
}

/// Upstream credentials the proxy authenticates with. Exactly one of `password_env` and
/// `password_file` is set (checked at load); the secret itself never appears in a policy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbCredentials {
    /// Upstream user name.
    pub user: String,
    /// Name of the environment variable (of the agentsh server) holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password.
    #[serde(default)]
    pub password_file: Option<std::path::PathBuf>,
    /// Database to connect to, overriding the one the agent asks for.
    #[serde(default)]
    pub database: Option<String>,
}

/// One `db_services.<name>` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbService {
    /// The family (`postgres`).
    pub family: DbFamily,
    /// The flavour (default `postgres`).
    #[serde(default)]
    pub dialect: DbDialect,
    /// Upstream `host:port`.
    pub upstream: HostPort,
    /// TLS handling (required).
    pub tls_mode: DbTlsMode,
    /// Allow the FunctionCall (`F`) sub-protocol, evaluated as `procedural`.
    #[serde(default)]
    pub allow_function_call_protocol: bool,
    /// Accept GSS encryption requests (accepted, not enforced yet: always refused).
    #[serde(default)]
    pub allow_gss_encryption: bool,
    /// Allow `terminate_plaintext_upstream` to a destination that is not loopback or private.
    #[serde(default)]
    pub trusted_network: bool,
    /// Credentials injected upstream; without them the agent's own authentication is relayed.
    #[serde(default)]
    pub credentials: Option<DbCredentials>,
    /// Upstream `sslmode`.
    #[serde(default)]
    pub sslmode: Option<SslMode>,
}
