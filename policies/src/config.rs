//! The server config (`agentsh server --config FILE`): what is not policy. Loaded by the same
//! strict core as policies ([`crate::load::load_yaml`]); every key has a default.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    str::FromStr,
};

use serde::Deserialize;

use crate::load::{LoadErrors, Validate, Validator, YamlPath, load_yaml};

/// Load a server config. `file` is only used to name the file in errors.
pub fn load_server_config(text: &str, file: &str) -> Result<ServerConfig, LoadErrors> {
    load_yaml(text, file)
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/run/agentsh")
}

/// The whole server config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Where sessions keep their sockets and state (default `/run/agentsh`).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Where sessions keep what can grow large: what commands create in the rebuilt home, and
    /// the `soft_delete` trash. Each session's part is removed with the session. Unset, `agentsh
    /// server` uses `/var/lib/agentsh` when it runs as root (the state dir is often a `/run`
    /// held in memory), else the state dir; see [`ServerConfig::data_dir`].
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Control API listeners.
    #[serde(default)]
    pub listeners: Listeners,
    /// Session resolver settings.
    #[serde(default)]
    pub dns: DnsConfig,
    /// Audit sinks.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Redirect backend selection.
    #[serde(default)]
    pub security: SecurityConfig,
    /// LLM proxy limits.
    #[serde(default)]
    pub llm: LlmProxyConfig,
    /// TLS the gateway originates (upstreams of intercepted connections).
    #[serde(default)]
    pub tls: TlsConfig,
    /// How policy files are trusted.
    #[serde(default)]
    pub policies: PoliciesConfig,
    /// File-system layers of the sandbox.
    #[serde(default)]
    pub files: FilesConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            state_dir: default_state_dir(),
            data_dir: None,
            listeners: Listeners::default(),
            dns: DnsConfig::default(),
            audit: AuditConfig::default(),
            security: SecurityConfig::default(),
            llm: LlmProxyConfig::default(),
            tls: TlsConfig::default(),
            policies: PoliciesConfig::default(),
            files: FilesConfig::default(),
        }
    }
}

impl ServerConfig {
    /// Where sessions keep what can grow large: `data_dir`, else the state dir.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.as_deref().unwrap_or(&self.state_dir)
    }

    /// The control socket: `listeners.control_socket`, else `<state_dir>/agentsh.sock`.
    pub fn control_socket(&self) -> PathBuf {
        self.listeners.control_socket.clone().unwrap_or_else(|| self.state_dir.join("agentsh.sock"))
    }
}

/// `listeners`: the control API is a Unix socket, optionally also loopback TCP.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listeners {
    /// Control socket path (default `<state_dir>/agentsh.sock`).
    #[serde(default)]
    pub control_socket: Option<PathBuf>,
    /// Optional TCP address; loopback only, since the API has no authentication.
    #[serde(default)]
    pub tcp: Option<SocketAddr>,
}

/// How allowed names are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsMode {
    /// Answer with per-session pool addresses bound to the name (the default).
    #[default]
    Synthetic,
    /// Answer with the upstream's real addresses.
    Passthrough,
}

/// A DNS upstream: `ip:port`, or a bare IP meaning port 53.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DnsUpstream(pub SocketAddr);

impl FromStr for DnsUpstream {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(DnsUpstream(sa));
        }
        s.parse::<IpAddr>()
            .map(|ip| DnsUpstream(SocketAddr::new(ip, 53)))
            .map_err(|_| format!("invalid DNS upstream {s:?}: expected ip:port such as 1.1.1.1:53"))
    }
}

impl<'de> Deserialize<'de> for DnsUpstream {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `dns`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Resolvers the gateway forwards to; empty = the host's `/etc/resolv.conf`.
    #[serde(default)]
    pub upstream: Vec<DnsUpstream>,
    /// Answer mode.
    #[serde(default)]
    pub mode: DnsMode,
}

/// The kind of an audit sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkType {
    /// One JSON event per line, appended to `path`.
    Jsonl,
    /// One JSON event per line on stderr.
    Stderr,
}

/// One audit sink; `path` is required for `jsonl` and refused for `stderr`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSink {
    /// Sink kind.
    #[serde(rename = "type")]
    pub kind: SinkType,
    /// File for `jsonl`; relative paths are under `state_dir`.
    #[serde(default)]
    pub path: Option<PathBuf>,
}

fn default_sinks() -> Vec<AuditSink> {
    // The JSONL file under the state dir is always written; more sinks are opt-in.
    Vec::new()
}

fn yes() -> bool {
    true
}

/// `audit`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Sinks every event goes to besides `<state_dir>/audit.jsonl` (default: none).
    #[serde(default = "default_sinks")]
    pub sinks: Vec<AuditSink>,
    /// Also record allowed operations, not only denials and redirects (default true).
    #[serde(default = "yes")]
    pub log_allowed: bool,
    /// Tamper evidence: an HMAC chain over every JSONL line (default off).
    #[serde(default)]
    pub integrity: IntegrityConfig,
    /// Rotate a JSONL file when it reaches this many MiB (default 0: never).
    #[serde(default)]
    pub max_size_mb: u64,
    /// Rotated files kept (`<file>.1` newest … `<file>.N` oldest; default 5).
    #[serde(default = "default_backups")]
    pub max_backups: u32,
    /// Export every event as an OpenTelemetry log record (OTLP/HTTP, JSON encoding).
    #[serde(default)]
    pub otlp: Option<OtlpConfig>,
}

fn default_otlp_batch() -> usize {
    256
}

fn default_otlp_flush_ms() -> u64 {
    1000
}

/// `audit.otlp`: where and how to send log records.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's base URL (`http://host:4318` or `https://…`); records go to
    /// `<endpoint>/v1/logs`.
    pub endpoint: String,
    /// Extra HTTP headers (an API key, say).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Records per request (default 256).
    #[serde(default = "default_otlp_batch")]
    pub batch_size: usize,
    /// Longest a record waits before its batch is sent, in milliseconds (default 1000).
    #[serde(default = "default_otlp_flush_ms")]
    pub flush_interval_ms: u64,
}

fn default_backups() -> u32 {
    5
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            sinks: default_sinks(),
            log_allowed: true,
            integrity: IntegrityConfig::default(),
            max_size_mb: 0,
            max_backups: default_backups(),
            otlp: None,
        }
    }
}

/// The HMAC of `audit.integrity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
pub enum IntegrityAlgorithm {
    /// HMAC-SHA256 (the default).
    #[default]
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    /// HMAC-SHA512.
    #[serde(rename = "hmac-sha512")]
    HmacSha512,
}

/// `audit.integrity`: each JSONL line carries `{sequence, prev_hash, entry_hash}`, the HMAC of
/// the line's canonical encoding chained to the previous line's. The key (at least 32 bytes)
/// comes from exactly one of `key_file` and `key_env`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrityConfig {
    /// Turn the chain on.
    #[serde(default)]
    pub enabled: bool,
    /// The HMAC.
    #[serde(default)]
    pub algorithm: IntegrityAlgorithm,
    /// File holding the key.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Environment variable (of the server) holding the key.
    #[serde(default)]
    pub key_env: Option<String>,
}

/// A redirect backend (DESIGN.md §2), strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityMode {
    /// The best backend `detect` finds (the default).
    #[default]
    Auto,
    /// seccomp user-notify.
    Seccomp,
    /// eBPF cgroup/sock_addr.
    Ebpf,
    /// ptrace (weakest).
    Ptrace,
}

impl SecurityMode {
    /// Strength for `minimum_mode` comparisons (higher is stronger; `auto` has none).
    pub fn strength(self) -> Option<u8> {
        match self {
            SecurityMode::Auto => None,
            SecurityMode::Seccomp => Some(3),
            SecurityMode::Ebpf => Some(2),
            SecurityMode::Ptrace => Some(1),
        }
    }
}

/// `security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// Backend to use.
    #[serde(default)]
    pub mode: SecurityMode,
    /// Refuse to start sessions with a weaker backend than this.
    #[serde(default)]
    pub minimum_mode: Option<SecurityMode>,
    /// Treat every degraded protection (no Landlock, no PID namespace, ...) as fatal.
    #[serde(default)]
    pub strict: bool,
}

fn default_max_body() -> u64 {
    32 << 20
}

fn default_fallback_tokens() -> u64 {
    200
}

fn default_in_flight() -> u32 {
    16
}

/// `llm`: limits of the LLM proxy that are operational, not policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmProxyConfig {
    /// Largest request body accepted (default 32 MiB).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// Tokens charged for a response without parsable usage (default 200).
    #[serde(default = "default_fallback_tokens")]
    pub usage_fallback_tokens: u64,
    /// Concurrent upstream requests per session (default 16).
    #[serde(default = "default_in_flight")]
    pub max_in_flight: u32,
}

impl Default for LlmProxyConfig {
    fn default() -> Self {
        LlmProxyConfig {
            max_body_bytes: default_max_body(),
            usage_fallback_tokens: default_fallback_tokens(),
            max_in_flight: default_in_flight(),
        }
    }
}

/// `files`: the kernel-enforced file layers. Under Landlock (`landlock`, on by default where
/// the kernel offers it) every command runs under a ruleset made from the policy's
/// `file_rules`: system trees read and execute, `/proc` and `/sys` read, `/dev` devices, the
/// workspace, the private `/tmp` and the caller's home read-write, trees the rules deny removed
/// (a tree with a denied part split into the rest), and nothing else; `read_paths` adds trees
/// to read and execute from (a language runtime installed elsewhere, say).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// Whether commands run under the Landlock layer (default `auto`).
    #[serde(default)]
    pub landlock: LandlockMode,
    /// More trees the command may read and execute from (absolute paths).
    #[serde(default)]
    pub read_paths: Vec<PathBuf>,
    /// Present the workspace through the FUSE layer: `file_rules` per operation, `file_*`
    /// events, `soft_delete` into a per-session trash (`agentsh session trash`). Unix sockets in
    /// the workspace stay reachable (one bound on the host side through the connect
    /// supervisor). Default `auto`: for the sessions whose rules reach into the workspace.
    #[serde(default)]
    pub fuse_workspace: FuseMode,
    /// Serve `user.` extended attributes through the FUSE layer (default off: they cost a
    /// request per `ls -l` entry and per written file).
    #[serde(default)]
    pub fuse_xattrs: bool,
}

/// `files.landlock`: `auto`, `required` (or `true`), `off` (or `false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LandlockMode {
    /// On when the kernel offers Landlock, else off with a warning (the default).
    #[default]
    Auto,
    /// On; the server does not start without Landlock.
    Required,
    /// Off: `file_rules` are not enforced by Landlock.
    Off,
}

impl LandlockMode {
    /// The name the config and reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            LandlockMode::Auto => "auto",
            LandlockMode::Required => "required",
            LandlockMode::Off => "off",
        }
    }
}

impl FromStr for LandlockMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(LandlockMode::Auto),
            "required" | "true" => Ok(LandlockMode::Required),
            "off" | "false" => Ok(LandlockMode::Off),
            _ => Err(format!("unknown value {s:?} (expected auto, required or true, off or false)")),
        }
    }
}

impl From<bool> for LandlockMode {
    fn from(on: bool) -> LandlockMode {
        if on { LandlockMode::Required } else { LandlockMode::Off }
    }
}

impl<'de> Deserialize<'de> for LandlockMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(WordOrBool::<LandlockMode>::new("auto, required or true, off or false"))
    }
}

/// `files.fuse_workspace`: `auto`, `on` (or `true`), `off` (or `false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FuseMode {
    /// For a session whose `file_rules` reach into its workspace (a deny, audit or soft delete
    /// there): only the FUSE layer applies those, so the session fails to start without it.
    #[default]
    Auto,
    /// For every session.
    On,
    /// Never: rules inside the workspace are not applied (a warning names them).
    Off,
}

impl FuseMode {
    /// The name the config and reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            FuseMode::Auto => "auto",
            FuseMode::On => "on",
            FuseMode::Off => "off",
        }
    }
}

impl FromStr for FuseMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(FuseMode::Auto),
            "on" | "true" => Ok(FuseMode::On),
            "off" | "false" => Ok(FuseMode::Off),
            _ => Err(format!("unknown value {s:?} (expected auto, on or true, off or false)")),
        }
    }
}

impl From<bool> for FuseMode {
    fn from(on: bool) -> FuseMode {
        if on { FuseMode::On } else { FuseMode::Off }
    }
}

impl<'de> Deserialize<'de> for FuseMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(WordOrBool::<FuseMode>::new("auto, on or true, off or false"))
    }
}

/// Reads a mode written as one of its words or as a boolean.
struct WordOrBool<T> {
    expecting: &'static str,
    mode: std::marker::PhantomData<T>,
}

impl<T> WordOrBool<T> {
    fn new(expecting: &'static str) -> WordOrBool<T> {
        WordOrBool { expecting, mode: std::marker::PhantomData }
    }
}

impl<T: FromStr<Err = String> + From<bool>> serde::de::Visitor<'_> for WordOrBool<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<T, E> {
        Ok(T::from(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
}

/// `policies`: how policy files are trusted.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoliciesConfig {
    /// Signatures on policy files.
    #[serde(default)]
    pub signing: SigningConfig,
}

/// What an unsigned or badly signed policy file gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SigningMode {
    /// Signatures are not checked (the default).
    #[default]
    Off,
    /// Checked; a failure is an event, the session still starts.
    Warn,
    /// Checked; a failure refuses the session. Embedded policies are always trusted.
    Enforce,
}

/// `policies.signing`: Ed25519 detached signatures (`<policy>.sig`) checked against a trust
/// store of public keys.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// The mode.
    #[serde(default)]
    pub mode: SigningMode,
    /// Directory of trusted public keys (`agentsh policy keygen` writes them); required unless
    /// `mode` is `off`. In `enforce` it must not be writable by group or others.
    #[serde(default)]
    pub trust_store: Option<PathBuf>,
}

/// `tls`: trust for the TLS connections the gateway makes itself, when it terminates a
/// connection (`connect_redirects` with `tls.mode: rewrite_sni`, the LLM proxy) and dials the
/// upstream anew. The host's system roots are always trusted.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM files of further CA certificates to trust (absolute paths; read at start-up, and a
    /// file that is missing or holds no certificate stops the server).
    #[serde(default)]
    pub extra_roots: Vec<PathBuf>,
}

impl Validate for ServerConfig {
    fn validate(&self, v: &mut Validator) {
        let root = YamlPath::root();
        if !self.state_dir.is_absolute() {
            v.error(root.key("state_dir"), "must be an absolute path");
        }
        if self.data_dir.as_ref().is_some_and(|d| !d.is_absolute()) {
            v.error(root.key("data_dir"), "must be an absolute path");
        }
        if let Some(tcp) = self.listeners.tcp
            && !tcp.ip().is_loopback()
        {
            v.error(
                root.key("listeners").key("tcp"),
                format!("{tcp} is not loopback (the control API has no authentication)"),
            );
        }
        let sinks = root.key("audit").key("sinks");
        for (i, s) in self.audit.sinks.iter().enumerate() {
            match (s.kind, &s.path) {
                (SinkType::Jsonl, None) => v.error(sinks.index(i), "a jsonl sink requires path"),
                (SinkType::Stderr, Some(_)) => {
                    v.error(sinks.index(i).key("path"), "a stderr sink takes no path")
                }
                _ => {}
            }
        }
        let integrity = &self.audit.integrity;
        if integrity.enabled && integrity.key_file.is_some() == integrity.key_env.is_some() {
            v.error(root.key("audit").key("integrity"), "set exactly one of key_file and key_env");
        }
        if let Some(p) = &integrity.key_file
            && !p.is_absolute()
        {
            v.error(root.key("audit").key("integrity").key("key_file"), "must be an absolute path");
        }
        if let Some(otlp) = &self.audit.otlp {
            let at = root.key("audit").key("otlp");
            if !(otlp.endpoint.starts_with("http://") || otlp.endpoint.starts_with("https://")) {
                v.error(at.key("endpoint"), "must be an http:// or https:// URL");
            }
            if otlp.batch_size == 0 {
                v.error(at.key("batch_size"), "must be at least 1");
            }
        }
        for (i, p) in self.files.read_paths.iter().enumerate() {
            if !p.is_absolute() {
                v.error(root.key("files").key("read_paths").index(i), "must be an absolute path");
            }
        }
        let signing = &self.policies.signing;
        if signing.mode != SigningMode::Off && signing.trust_store.is_none() {
            v.error(root.key("policies").key("signing"), "trust_store is required unless mode is off");
        }
        let sec = root.key("security");
        if let Some(min) = self.security.minimum_mode {
            match (min.strength(), self.security.mode.strength()) {
                (None, _) => v.error(
                    sec.key("minimum_mode"),
                    "minimum_mode must name a backend (seccomp, ebpf, ptrace)",
                ),
                (Some(need), Some(have)) if have < need => {
                    v.error(sec.key("mode"), "mode is weaker than minimum_mode")
                }
                _ => {}
            }
        }
        for (i, p) in self.tls.extra_roots.iter().enumerate() {
            if !p.is_absolute() {
                v.error(root.key("tls").key("extra_roots").index(i), "must be an absolute path");
            }
        }
        if self.llm.max_in_flight == 0 {
            v.error(root.key("llm").key("max_in_flight"), "must be at least 1");
        }
    }
}
