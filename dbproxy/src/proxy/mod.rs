//! The governed Postgres proxy: one client connection per [`DbProxy::serve`] call, generic
//! over the client stream (a per-session Unix socket or a funnelled TCP connection alike).
//!
//! Order of a session: the client's encryption requests are answered; the connection rule is
//! decided on the startup parameters and the caller's [`ClientCtx`] before any upstream
//! traffic; the proxy logs in upstream with the service's credentials (the agent never holds
//! them and is never asked for a password: the proxy answers AuthenticationOk itself); then
//! every statement is classified and decided (see `session`). CancelRequests are routed
//! through a [`CancelTable`] of proxy-issued keys. `passthrough` services get the connection
//! rule only, then a byte splice. [`SessionPool`] runs sessions on current-thread runtimes of
//! their own threads rather than the caller's.

mod cancel;
mod client;
mod error;
mod events;
mod frame;
mod front;
mod guard;
mod md5;
mod pool;
mod prepared;
mod results;
mod scram;
mod session;
mod tls;
mod upstream;

use std::{
    sync::{
        Arc, OnceLock, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::BytesMut;
use pgwire::messages::{Message, startup::NegotiateProtocolVersion};
use rustls::{ClientConfig, ServerConfig, pki_types::CertificateDer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use policies::{
    Decision, Verdict,
    engine::db::{ConnectionRequest, DbObject, DbRules},
    model::{
        blocks::LogStatements,
        db_ops::OperationGroup,
        db_rules::{DenyModeInTx, MatchKind, ObjectResolution},
        db_service::{DbService, DbTlsMode, SslMode},
    },
};

pub use cancel::{CancelTable, MAX_ENTRIES};
pub use error::{ProxyError, Side};
pub use events::{
    ClientCtx, DbEvent, DbEventKind, EffectSummary, EventSink, NoEvents, ParamSummary,
    STATEMENT_PREVIEW_BYTES, StatementInfo, StatementProtocol, StatementResult,
};
pub use front::UNKNOWN_PORTAL;
pub use guard::{
    READ_ONLY_SESSION, RefusedParameter, STARTUP_PARAMETER_REFUSED, changes_read_only, grants_writes,
    startup_parameters,
};
pub use pool::SessionPool;
pub use scram::ScramError;
pub use session::SessionEnd;

use crate::{
    classify::{AnalysisCache, Effect},
    wire::{Authentication, BackendKeyData, ErrorFields, SQLSTATE_INVALID_AUTHORIZATION},
};

/// Rule name of the refusal of FunctionCall on a service without `allow_function_call_protocol`.
pub const FUNCTION_CALL_DISABLED: &str = "db-service-function-call-protocol";
/// Rule name of the refusal of replication connections (not proxied).
pub const REPLICATION_REFUSED: &str = "db-replication-not-supported";

/// What the caller provides besides the service and its rules.
#[derive(Clone)]
pub struct ProxyOptions {
    /// Terminates the client's TLS (the session CA's leaf); without it an SSLRequest gets `N`.
    pub client_tls: Option<Arc<ServerConfig>>,
    /// Roots trusted for upstream TLS in addition to the system's.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// The cancel-key table, shared with every proxy a cancel may arrive at.
    pub cancel_keys: CancelTable,
    /// Where events go.
    pub events: Arc<dyn EventSink>,
    /// Upper bound for dialling and logging in upstream.
    pub connect_timeout: Duration,
    /// Upper bound for the client's startup (encryption requests and StartupMessage).
    pub startup_timeout: Duration,
    /// Open upstream sessions read-only (`default_transaction_read_only=on`) and refuse any
    /// statement that would lift it. Set it when the service's rules grant no write-class
    /// operation ([`grants_writes`]), so side effects hidden from the classifier (a view over a
    /// volatile function, a trigger) fail on the server.
    pub read_only: bool,
    /// How much statement text events carry (`policies.db.log_statements`).
    pub log_statements: LogStatements,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            client_tls: None,
            extra_roots: Vec::new(),
            cancel_keys: CancelTable::new(),
            events: Arc::new(NoEvents),
            connect_timeout: Duration::from_secs(10),
            startup_timeout: Duration::from_secs(30),
            read_only: false,
            log_statements: LogStatements::default(),
        }
    }
}

/// How a [`DbProxy::serve`] call ended, when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// A session ran.
    Session(SessionEnd),
    /// The connection was refused before any upstream contact, naming the rule.
    Refused {
        /// The deciding rule.
        rule: String,
    },
    /// A CancelRequest was handled (forwarded if allowed and the key was known).
    Cancel {
        /// Whether it was forwarded upstream.
        forwarded: bool,
    },
    /// A passthrough connection was spliced and has ended.
    Passthrough,
}

/// The proxy of one `db_services` entry.
pub struct DbProxy {
    service_name: Arc<str>,
    service: DbService,
    rules: RwLock<Arc<DbRules>>,
    read_only: AtomicBool,
    opts: ProxyOptions,
    upstream_tls: OnceLock<Result<Arc<ClientConfig>, String>>,
    /// Statement texts classified recently, by every session of this service.
    analyses: AnalysisCache,
}

/// The client's startup facts, for decisions and events.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnInfo {
    client: Arc<ClientCtx>,
    db_user: Option<Arc<str>>,
    database: Option<Arc<str>>,
    application_name: Option<Arc<str>>,
    /// The upstream session is read-only (opened so, or switched when the service turned
    /// read-only while it was open).
    read_only: Arc<AtomicBool>,
    /// It was switched: its defaults (what `RESET ALL` restores) are still read-write.
    switched: Arc<AtomicBool>,
}

/// Everything a statement decision needs.
pub(crate) struct Policy<'a> {
    proxy: &'a DbProxy,
    info: &'a ConnInfo,
}

fn fatal_fields(code: &'static str, message: String, detail: Option<String>) -> Vec<u8> {
    let mut out = Vec::new();
    ErrorFields::new("FATAL", code, message, detail).encode(b'E', &mut out);
    out
}

impl DbProxy {
    /// A proxy for service `name`, deciding with `rules` (compiled from the same policy).
    pub fn new(
        name: impl Into<String>,
        service: DbService,
        rules: Arc<DbRules>,
        opts: ProxyOptions,
    ) -> DbProxy {
        let read_only = AtomicBool::new(opts.read_only);
        DbProxy {
            service_name: Arc::from(name.into()),
            service,
            rules: RwLock::new(rules),
            read_only,
            opts,
            upstream_tls: OnceLock::new(),
            analyses: AnalysisCache::default(),
        }
    }

    /// Swaps the rules (a policy reload): every later decision uses them, including the
    /// re-decision of already prepared statements at Execute.
    pub fn set_rules(&self, rules: Arc<DbRules>) {
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = rules;
    }

    /// Whether the service's sessions are read-only (see [`ProxyOptions::read_only`]). Turning
    /// it on also switches every open session: at its next statement outside a transaction
    /// the proxy first sends `SET default_transaction_read_only = on` on its own (the client
    /// never sees its answer), and from then on refuses statements that would lift it. Turning
    /// it off applies to sessions opened afterwards; open ones stay read-only.
    pub fn set_read_only(&self, on: bool) {
        self.read_only.store(on, Ordering::Relaxed);
    }

    /// Whether the service's sessions are read-only.
    pub(crate) fn is_read_only(&self) -> bool {
        self.read_only.load(Ordering::Relaxed)
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<DbRules> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The service name.
    pub fn service_name(&self) -> &str {
        &self.service_name
    }

    /// The cancel-key table this proxy issues keys into.
    pub fn cancel_keys(&self) -> &CancelTable {
        &self.opts.cancel_keys
    }

    fn emit(&self, info: &ConnInfo, kind: DbEventKind, decision: Option<Decision>, error: Option<String>) {
        self.opts.events.emit(DbEvent {
            kind,
            service: self.service_name.clone(),
            client: info.client.clone(),
            db_user: info.db_user.clone(),
            database: info.database.clone(),
            application_name: info.application_name.clone(),
            decision,
            statement: None,
            error,
        });
    }

    /// Serves one client connection to its end. Policy refusals are answered to the client
    /// and end `Ok`; failures are answered with a FATAL error where the stream allows and
    /// returned.
    pub async fn serve<C>(&self, client: C, ctx: ClientCtx) -> Result<Served, ProxyError>
    where
        C: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let info = ConnInfo { client: Arc::new(ctx), ..ConnInfo::default() };
        let passthrough = self.service.tls_mode == DbTlsMode::Passthrough;
        let tls = if passthrough { None } else { self.opts.client_tls.as_ref() };
        let opened =
            tokio::time::timeout(self.opts.startup_timeout, client::open(client, tls, passthrough)).await;
        let (mut s, opened) = match opened {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => return Err(self.handshake_fail(&info, e)),
            Err(_) => return Err(self.handshake_fail(&info, ProxyError::Timeout("client startup"))),
        };
        let (leftover, opening) = match opened {
            Ok(x) => x,
            Err(e) => {
                let code = if matches!(e, ProxyError::Protocol { .. } | ProxyError::Sequence { .. }) {
                    "08P01"
                } else {
                    "08006"
                };
                let _ =
                    s.write_all(&fatal_fields(code, format!("invalid connection startup: {e}"), None)).await;
                let _ = s.shutdown().await;
                return Err(self.handshake_fail(&info, e));
            }
        };
        match opening {
            client::Opening::Cancel { pid, secret } => Ok(self.cancel(&info, pid, &secret).await),
            client::Opening::Passthrough { first, cancel } => {
                self.passthrough(s, info, first, leftover, cancel).await
            }
            client::Opening::Startup { minor, params } => {
                self.session(s, leftover, info, minor, params).await
            }
        }
    }

    fn handshake_fail(&self, info: &ConnInfo, e: ProxyError) -> ProxyError {
        tracing::info!(service = %self.service_name, error = %e, "db handshake failed");
        self.emit(info, DbEventKind::HandshakeFail, None, Some(e.to_string()));
        e
    }

    fn connection_request<'a>(&self, info: &'a ConnInfo, kind: MatchKind) -> ConnectionRequest<'a> {
        ConnectionRequest {
            kind,
            db_user: info.db_user.as_deref(),
            database: info.database.as_deref(),
            application_name: info.application_name.as_deref(),
            client_identity: info.client.client_identity.as_deref(),
        }
    }

    async fn refuse<W: AsyncWrite + Unpin>(&self, s: &mut W, info: &ConnInfo, d: Decision) -> Served {
        tracing::info!(service = %self.service_name, rule = %d.rule, "db connection refused");
        let msg = fatal_fields(
            SQLSTATE_INVALID_AUTHORIZATION,
            format!("connection refused by agentsh policy: {}", d.rule),
            d.message.clone(),
        );
        // Recorded before the client hears it: a client that saw the refusal finds its event.
        let rule = d.rule.clone();
        self.emit(info, DbEventKind::ConnectBlocked, Some(d), None);
        let _ = s.write_all(&msg).await;
        let _ = s.shutdown().await;
        Served::Refused { rule }
    }

    fn target(&self) -> Result<upstream::Target<'_>, ProxyError> {
        let mode = self.service.sslmode.unwrap_or(match self.service.tls_mode {
            DbTlsMode::TerminateReissue => SslMode::VerifyFull,
            DbTlsMode::TerminatePlaintextUpstream | DbTlsMode::Passthrough => SslMode::Disable,
        });
        let plan = tls::plan(mode);
        let tls = if plan == tls::Plan::Plain {
            None
        } else {
            let cfg = self.upstream_tls.get_or_init(|| tls::client_config(mode, &self.opts.extra_roots));
            Some((plan, cfg.clone().map_err(ProxyError::Tls)?))
        };
        Ok(upstream::Target { upstream: &self.service.upstream, tls })
    }

    /// The upstream password, read now (so a rotated secret is picked up).
    async fn password(&self) -> Result<Option<Vec<u8>>, ProxyError> {
        let Some(c) = &self.service.credentials else { return Ok(None) };
        let bad = |why: String| ProxyError::Credentials { service: self.service_name.to_string(), why };
        let mut pw = if let Some(var) = &c.password_env {
            use std::os::unix::ffi::OsStringExt;
            std::env::var_os(var)
                .ok_or_else(|| bad(format!("environment variable {var} is not set")))?
                .into_vec()
        } else if let Some(path) = &c.password_file {
            tokio::fs::read(path)
                .await
                .map_err(|e| bad(format!("cannot read password file {}: {e}", path.display())))?
        } else {
            return Err(bad("neither password_env nor password_file is set".into()));
        };
        // A file written by `echo` ends with a newline that is not part of the password.
        while pw.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            pw.pop();
        }
        if pw.is_empty() {
            return Err(bad("the password is empty".into()));
        }
        Ok(Some(pw))
    }

    async fn session<C>(
        &self,
        mut s: client::ClientStream<C>,
        leftover: BytesMut,
        mut info: ConnInfo,
        minor: u16,
        params: Vec<(String, String)>,
    ) -> Result<Served, ProxyError>
    where
        C: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let shared = |k: &str| param(k).map(Arc::<str>::from);
        info.db_user = shared("user");
        info.database = shared("database").or_else(|| info.db_user.clone());
        info.application_name = shared("application_name");
        if param("replication")
            .is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "false" | "off" | "no" | "0"))
        {
            let d = Decision {
                verdict: Verdict::Deny,
                rule: REPLICATION_REFUSED.into(),
                message: Some("replication connections are not proxied".into()),
            };
            return Ok(self.refuse(&mut s, &info, d).await);
        }
        let Some(user) = info.db_user.clone() else {
            let d = Decision {
                verdict: Verdict::Deny,
                rule: "startup".into(),
                message: Some("no user name in the startup message".into()),
            };
            return Ok(self.refuse(&mut s, &info, d).await);
        };
        let d = self
            .rules()
            .decide_connection(&self.service_name, &self.connection_request(&info, MatchKind::Connect));
        if !d.verdict.permits() {
            return Ok(self.refuse(&mut s, &info, d).await);
        }
        let read_only = self.is_read_only();
        info.read_only.store(read_only, Ordering::Relaxed);
        let fwd = match guard::startup_parameters(&params, read_only) {
            Ok(fwd) => fwd,
            Err(r) => {
                let d = Decision {
                    verdict: Verdict::Deny,
                    rule: STARTUP_PARAMETER_REFUSED.into(),
                    message: Some(format!("startup parameter {} is refused: {}", r.name, r.why)),
                };
                return Ok(self.refuse(&mut s, &info, d).await);
            }
        };

        let up = tokio::time::timeout(self.opts.connect_timeout, self.login(&user, &info, fwd)).await;
        let up = match up {
            Ok(Ok(up)) => up,
            Ok(Err(e)) => return Err(self.login_failed(&mut s, &info, e).await),
            Err(_) => {
                return Err(self.login_failed(&mut s, &info, ProxyError::Timeout("upstream login")).await);
            }
        };
        let upstream::Upstream { stream: ustream, addr, relay, key, status, leftover: up_leftover } = up;

        let mut hello = Vec::with_capacity(256 + relay.len());
        let unsupported: Vec<String> =
            params.iter().filter(|(k, _)| k.starts_with("_pq_.")).map(|(k, _)| k.clone()).collect();
        if minor > 0 || !unsupported.is_empty() {
            // The proxy speaks 3.0 to both sides (3.2 only lengthens cancel keys).
            let mut b = BytesMut::new();
            NegotiateProtocolVersion::new(0, unsupported).encode(&mut b).map_err(|e| {
                ProxyError::Sequence {
                    side: Side::Internal,
                    why: format!("encoding NegotiateProtocolVersion: {e}"),
                }
            })?;
            hello.extend_from_slice(&b);
        }
        Authentication::Ok.encode(&mut hello);
        hello.extend_from_slice(&relay);
        let _key_guard = match key {
            Some((pid, secret)) => {
                let upstream_key = cancel::UpstreamKey { addr, pid, secret };
                match self.opts.cancel_keys.issue(&self.service_name, upstream_key) {
                    Ok((guard, pid, secret)) => {
                        BackendKeyData { pid, secret: &secret }.encode(&mut hello);
                        Some(guard)
                    }
                    Err(e) => {
                        let _ = s.write_all(&fatal_fields("53300", e.to_string(), None)).await;
                        return Err(self.handshake_fail(&info, e));
                    }
                }
            }
            None => None,
        };
        status.encode(&mut hello);
        s.write_all(&hello).await.map_err(ProxyError::client_io("completing the startup"))?;
        tracing::debug!(service = %self.service_name, rule = %d.rule, "db session started");
        self.emit(&info, DbEventKind::Connect, Some(d), None);

        let (cr, cw) = tokio::io::split(s);
        let (ur, uw) = tokio::io::split(ustream);
        let policy = Policy { proxy: self, info: &info };
        let end = session::run(&policy, cr, leftover, cw, ur, up_leftover, uw, status).await;
        self.emit(&info, DbEventKind::Disconnect, None, end.as_ref().err().map(|e| e.to_string()));
        end.map(Served::Session)
    }

    async fn login(
        &self,
        client_user: &str,
        info: &ConnInfo,
        fwd: Vec<(String, String)>,
    ) -> Result<upstream::Upstream, ProxyError> {
        let password = self.password().await?;
        let creds = self.service.credentials.as_ref();
        let user = creds.map_or(client_user, |c| c.user.as_str());
        let database = creds.and_then(|c| c.database.as_deref()).or(info.database.as_deref()).unwrap_or(user);
        let target = self.target()?;
        upstream::connect(&target, &upstream::Login { user, database, params: fwd, password }).await
    }

    async fn login_failed<W: AsyncWrite + Unpin>(
        &self,
        s: &mut W,
        info: &ConnInfo,
        e: ProxyError,
    ) -> ProxyError {
        let (code, message) = match &e {
            ProxyError::UpstreamRefused { code, message, .. } => (
                code.clone(),
                format!("upstream login for db service {} failed: {message}", self.service_name),
            ),
            other => {
                ("08001".to_string(), format!("cannot connect to db service {}: {other}", self.service_name))
            }
        };
        let mut out = Vec::new();
        ErrorFields {
            fields: vec![
                (b'S', "FATAL".into()),
                (b'V', "FATAL".into()),
                (b'C', code.into()),
                (b'M', message.into()),
            ],
        }
        .encode(b'E', &mut out);
        let _ = s.write_all(&out).await;
        let _ = s.shutdown().await;
        self.handshake_fail(info, e)
    }

    async fn cancel(&self, info: &ConnInfo, pid: u32, secret: &[u8]) -> Served {
        let d = self
            .rules()
            .decide_connection(&self.service_name, &self.connection_request(info, MatchKind::Cancel));
        if !d.verdict.permits() {
            tracing::info!(service = %self.service_name, rule = %d.rule, "db cancel refused");
            self.emit(info, DbEventKind::Cancel, Some(d), None);
            return Served::Cancel { forwarded: false };
        }
        let Some(key) = self.opts.cancel_keys.lookup(&self.service_name, pid, secret) else {
            self.emit(info, DbEventKind::Cancel, Some(d), Some("no session holds this backend key".into()));
            return Served::Cancel { forwarded: false };
        };
        let send = async {
            let target = self.target()?;
            let mut up = upstream::dial_to(&target, key.addr).await?;
            let mut msg = Vec::new();
            crate::wire::CancelRequest { pid: key.pid, secret: &key.secret }.encode(&mut msg);
            up.write_all(&msg).await.map_err(ProxyError::upstream_io("sending CancelRequest"))?;
            let _ = up.shutdown().await;
            Ok::<(), ProxyError>(())
        };
        let r = match tokio::time::timeout(self.opts.connect_timeout, send).await {
            Ok(r) => r,
            Err(_) => Err(ProxyError::Timeout("forwarding a cancel")),
        };
        let forwarded = r.is_ok();
        self.emit(info, DbEventKind::Cancel, Some(d), r.err().map(|e| e.to_string()));
        Served::Cancel { forwarded }
    }

    async fn passthrough<C>(
        &self,
        mut s: client::ClientStream<C>,
        info: ConnInfo,
        first: Vec<u8>,
        leftover: BytesMut,
        cancel: bool,
    ) -> Result<Served, ProxyError>
    where
        C: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let kind = if cancel { MatchKind::Cancel } else { MatchKind::Connect };
        let d = self.rules().decide_connection(&self.service_name, &self.connection_request(&info, kind));
        if !d.verdict.permits() {
            if cancel {
                self.emit(&info, DbEventKind::Cancel, Some(d), None);
                return Ok(Served::Cancel { forwarded: false });
            }
            return Ok(self.refuse(&mut s, &info, d).await);
        }
        let target = upstream::Target { upstream: &self.service.upstream, tls: None };
        let mut up = match tokio::time::timeout(self.opts.connect_timeout, upstream::dial(&target)).await {
            Ok(Ok((up, _))) => up,
            Ok(Err(e)) => return Err(self.login_failed(&mut s, &info, e).await),
            Err(_) => {
                return Err(self.login_failed(&mut s, &info, ProxyError::Timeout("upstream dial")).await);
            }
        };
        up.write_all(&first).await.map_err(ProxyError::upstream_io("forwarding the startup"))?;
        up.write_all(&leftover).await.map_err(ProxyError::upstream_io("forwarding the startup"))?;
        let kind = if cancel { DbEventKind::Cancel } else { DbEventKind::Connect };
        self.emit(&info, kind, Some(d), None);
        // Either side closing or resetting ends the splice; neither is an error of the proxy.
        let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
        Ok(if cancel { Served::Cancel { forwarded: true } } else { Served::Passthrough })
    }
}

/// A statement decision, before it is reported.
pub(crate) struct Checked {
    decision: Decision,
    audit_rules: Vec<String>,
    terminate_in_tx: bool,
}

impl Checked {
    /// The refusal, when the decision does not let the statement through.
    pub(crate) fn refusal(&self) -> Option<session::Refusal> {
        (!self.decision.verdict.permits()).then(|| session::Refusal {
            rule: self.decision.rule.clone(),
            message: self.decision.message.clone(),
            terminate_in_tx: self.terminate_in_tx,
        })
    }
}

impl Policy<'_> {
    /// The effects of a FunctionCall (`procedural/function_call_protocol` on the function's
    /// OID) and, unless the service allows the sub-protocol, its refusal.
    pub(crate) fn function_call(&self, oid: u32) -> (Vec<Effect>, Option<Decision>) {
        let effect = Effect {
            group: OperationGroup::Procedural,
            subtype: Some("function_call_protocol".into()),
            objects: vec![DbObject::Function { schema: None, name: format!("oid:{oid}") }],
            resolution: ObjectResolution::Unresolved,
            has_where: None,
        };
        let preset = (!self.proxy.service.allow_function_call_protocol).then(|| Decision {
            verdict: Verdict::Deny,
            rule: FUNCTION_CALL_DISABLED.into(),
            message: Some("the FunctionCall protocol is disabled for this service".into()),
        });
        (vec![effect], preset)
    }

    /// Decides a statement on its effects with the rules in force (a `preset` decision, and
    /// the read-only guard of a read-only session, come first). A refusal is logged here.
    /// Whether this session's upstream is read-only.
    pub(crate) fn read_only(&self) -> bool {
        self.info.read_only.load(Ordering::Relaxed)
    }

    /// The session is switched to read-only (its SET is on its way upstream).
    pub(crate) fn set_read_only(&self) {
        self.info.switched.store(true, Ordering::Relaxed);
        self.info.read_only.store(true, Ordering::Relaxed);
    }

    pub(crate) fn check(&self, effects: &[Effect], preset: Option<Decision>) -> Checked {
        let p = self.proxy;
        let preset = preset.or_else(|| {
            let lifts = guard::changes_read_only(effects)
                || (self.info.switched.load(Ordering::Relaxed) && guard::resets_all(effects));
            (self.read_only() && lifts).then(|| Decision {
                verdict: Verdict::Deny,
                rule: READ_ONLY_SESSION.into(),
                message: Some("this service's sessions are read-only".into()),
            })
        });
        let checked = match preset {
            Some(decision) => Checked { decision, audit_rules: Vec::new(), terminate_in_tx: true },
            None => {
                let views: Vec<_> = effects.iter().map(Effect::view).collect();
                let sd = p.rules().decide_statement(&p.service_name, &views);
                Checked {
                    decision: sd.decision,
                    audit_rules: sd.audit_rules,
                    terminate_in_tx: sd.deny_mode_in_tx == DenyModeInTx::Terminate,
                }
            }
        };
        if !checked.decision.verdict.permits() {
            tracing::info!(service = %p.service_name, rule = %checked.decision.rule, "db statement denied");
        }
        checked
    }

    /// The statement part of its event, with the text the policy lets the log carry.
    pub(crate) fn info(
        &self,
        protocol: StatementProtocol,
        name: Option<&str>,
        text: &str,
        effects: &[Effect],
    ) -> StatementInfo {
        StatementInfo::logged(protocol, name, text, effects, self.proxy.opts.log_statements)
    }

    /// [`Policy::info`] of a text already analysed.
    /// `effects` are the text's own (`a.effects`, whose summary is made already) or resolved
    /// from its `EXECUTE`s.
    pub(crate) fn info_of(
        &self,
        protocol: StatementProtocol,
        name: Option<&str>,
        text: &str,
        a: &crate::classify::Analysis,
        effects: &[Effect],
    ) -> StatementInfo {
        let mode = self.proxy.opts.log_statements;
        let summary = if std::ptr::eq(effects, a.effects.as_slice()) {
            a.summary.clone()
        } else {
            effects.iter().map(EffectSummary::from).collect()
        };
        StatementInfo::build(protocol, name, text, a.redacted.clone(), a.digest.clone(), summary, mode)
    }

    /// The event of a decided statement.
    pub(crate) fn event(&self, checked: &Checked, mut statement: StatementInfo) -> DbEvent {
        let permits = checked.decision.verdict.permits();
        statement.audit_rules = checked.audit_rules.clone();
        let info = self.info;
        DbEvent {
            kind: if permits { DbEventKind::Statement } else { DbEventKind::StatementBlocked },
            service: self.proxy.service_name.clone(),
            client: info.client.clone(),
            db_user: info.db_user.clone(),
            database: info.database.clone(),
            application_name: info.application_name.clone(),
            decision: Some(checked.decision.clone()),
            statement: Some(statement),
            error: None,
        }
    }

    /// Reports a decided statement now (a refusal: nothing of it reaches the server).
    pub(crate) fn report(&self, checked: &Checked, statement: StatementInfo) {
        self.proxy.opts.events.emit(self.event(checked, statement));
    }
}
