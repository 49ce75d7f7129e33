//! What the proxy reports: one [`DbEvent`] per connection decision, handshake failure, cancel
//! and statement decision, handed to an [`EventSink`] the caller provides. The gateway maps
//! each one to its audit `Event` (type [`DbEventKind::as_str`], `policy` from `decision`).

use std::{sync::Arc, time::Duration};

use policies::{Decision, model::blocks::LogStatements};

pub use crate::classify::EffectSummary;
use crate::classify::{Effect, digest, redact};

/// The longest statement text carried in an event, in bytes (cut at a character boundary).
pub const STATEMENT_PREVIEW_BYTES: usize = 200;

/// The kind of a [`DbEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbEventKind {
    /// A session was allowed and logged in upstream.
    Connect,
    /// A session was refused by a connection rule, or as a replication connection.
    ConnectBlocked,
    /// The session could not be set up (upstream down, credentials, bad client bytes).
    HandshakeFail,
    /// A CancelRequest was handled (see `decision` and `error`).
    Cancel,
    /// A statement was let through.
    Statement,
    /// A statement was refused.
    StatementBlocked,
    /// A session ended.
    Disconnect,
}

impl DbEventKind {
    /// The audit event type: `db_connect`, `db_connect_blocked`, `db_handshake_fail`,
    /// `db_cancel`, `db_statement`, `db_statement_blocked`, `db_disconnect`.
    pub fn as_str(self) -> &'static str {
        match self {
            DbEventKind::Connect => "db_connect",
            DbEventKind::ConnectBlocked => "db_connect_blocked",
            DbEventKind::HandshakeFail => "db_handshake_fail",
            DbEventKind::Cancel => "db_cancel",
            DbEventKind::Statement => "db_statement",
            DbEventKind::StatementBlocked => "db_statement_blocked",
            DbEventKind::Disconnect => "db_disconnect",
        }
    }
}

/// How a statement reached the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementProtocol {
    /// Simple Query (`Q`): every statement of the string was decided together.
    Simple,
    /// Extended query Parse (`P`): only refusals are reported here; what runs is reported
    /// at Execute.
    Parse,
    /// Extended query Execute (`E`) of a portal, decided again on its statement's effects.
    Execute,
    /// The FunctionCall (`F`) sub-protocol.
    FunctionCall,
}

impl StatementProtocol {
    /// Its name in events: `simple`, `parse`, `execute`, `functioncall`.
    pub fn as_str(self) -> &'static str {
        match self {
            StatementProtocol::Simple => "simple",
            StatementProtocol::Parse => "parse",
            StatementProtocol::Execute => "execute",
            StatementProtocol::FunctionCall => "functioncall",
        }
    }
}

/// Bind parameters as logged: never their values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParamSummary {
    /// How many parameters were bound.
    pub count: usize,
    /// Their type OIDs as declared at Parse (0: left to the server).
    pub types: Arc<[u32]>,
    /// How many were sent in binary format.
    pub binary: usize,
    /// How many were NULL.
    pub nulls: usize,
}

/// How a statement that was let through ended, from the server's answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatementResult {
    /// Rows, from the CommandComplete tag (`SELECT 5`, `UPDATE 2`, …; summed over the
    /// statements of a simple Query), else the DataRows seen.
    pub rows: Option<u64>,
    /// The command tag's verb (`SELECT`, `INSERT`, …) of the last CommandComplete.
    pub command: Option<String>,
    /// From forwarding to the end of the answer.
    pub duration: Duration,
    /// SQLSTATE of the first error, if the statement failed (`42501` for a refusal in the
    /// same batch that made it skip).
    pub sqlstate: Option<String>,
    /// Whether the server's answer was seen in full (`false` when the session ended first).
    pub complete: bool,
}

/// The statement part of a statement event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementInfo {
    /// Simple, Parse, Execute or FunctionCall.
    pub protocol: StatementProtocol,
    /// The prepared statement name (Parse and Execute; empty is the unnamed statement).
    pub statement_name: Option<Arc<str>>,
    /// The text as `policies.db.log_statements` allows (literals as `$n` by default, the full
    /// text, or nothing), cut to [`STATEMENT_PREVIEW_BYTES`].
    pub text: Arc<str>,
    /// `sha256:` of the normalised text (see [`crate::classify::normalize`]).
    pub digest: Arc<str>,
    /// Bind parameters, counted, never their values (Execute only).
    pub params: Option<ParamSummary>,
    /// How it ended (statements let through, once the server has answered).
    pub result: Option<StatementResult>,
    /// Whether `text` was cut.
    pub truncated: bool,
    /// Every effect of every statement in the text (shared by every event of the text).
    pub effects: Arc<[EffectSummary]>,
    /// Every `audit` rule that matched.
    pub audit_rules: Vec<String>,
}

impl StatementInfo {
    /// Builds the info with the full text, cutting it at a character boundary.
    pub fn new(protocol: StatementProtocol, name: Option<&str>, text: &str, effects: &[Effect]) -> Self {
        Self::logged(protocol, name, text, effects, LogStatements::Full)
    }

    /// Builds the info with the text `mode` allows, cut at a character boundary.
    pub fn logged(
        protocol: StatementProtocol,
        name: Option<&str>,
        text: &str,
        effects: &[Effect],
        mode: LogStatements,
    ) -> Self {
        let redacted = if mode == LogStatements::ParametersRedacted { redact(text) } else { String::new() };
        let summary = effects.iter().map(EffectSummary::from).collect();
        Self::build(protocol, name, text, redacted.into(), digest(text).into(), summary, mode)
    }

    /// [`StatementInfo::logged`] with the text's [`redact`]ion and [`digest`] already made
    /// (see [`crate::classify::analyze`]).
    pub fn build(
        protocol: StatementProtocol,
        name: Option<&str>,
        text: &str,
        redacted: Arc<str>,
        digest: Arc<str>,
        effects: Arc<[EffectSummary]>,
        mode: LogStatements,
    ) -> Self {
        let whole: Arc<str> = match mode {
            LogStatements::None => Arc::from(""),
            LogStatements::ParametersRedacted => redacted,
            LogStatements::Full => Arc::from(text),
        };
        let mut end = whole.len().min(STATEMENT_PREVIEW_BYTES);
        while !whole.is_char_boundary(end) {
            end -= 1;
        }
        // Shared with the analysis (the redacted text) unless it has to be cut.
        let truncated = end < whole.len();
        let shown = if truncated { Arc::from(&whole[..end]) } else { whole };
        StatementInfo {
            protocol,
            statement_name: name.map(Arc::from),
            truncated,
            text: shown,
            digest,
            params: None,
            result: None,
            effects,
            audit_rules: Vec::new(),
        }
    }
}

/// Who is on the other end, as the gateway knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCtx {
    /// The gateway session.
    pub session_id: Option<String>,
    /// Who the client is (`uid:1000`), matched by `client_identity` in connection rules.
    pub client_identity: Option<String>,
    /// The client's pid in the host's namespace (from SO_PEERCRED), when known.
    pub peer_pid: Option<i32>,
}

/// One thing the proxy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbEvent {
    /// What happened.
    pub kind: DbEventKind,
    /// The `db_services` entry.
    pub service: Arc<str>,
    /// The client, as given to `serve`.
    pub client: Arc<ClientCtx>,
    /// Startup `user` the client asked for.
    pub db_user: Option<Arc<str>>,
    /// Startup `database` the client asked for.
    pub database: Option<Arc<str>>,
    /// Startup `application_name`.
    pub application_name: Option<Arc<str>>,
    /// The decision, naming its rule (connection, cancel and statement events).
    pub decision: Option<Decision>,
    /// The statement (statement events).
    pub statement: Option<StatementInfo>,
    /// What went wrong (handshake failures, cancel failures).
    pub error: Option<String>,
}

/// Receives the proxy's events. Called inline on the connection's task: keep it cheap.
pub trait EventSink: Send + Sync {
    /// Records one event.
    fn emit(&self, event: DbEvent);
}

/// A sink that drops every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvents;

impl EventSink for NoEvents {
    fn emit(&self, _event: DbEvent) {}
}

#[cfg(test)]
mod tests {
    use super::StatementProtocol;

    /// The names events carry are the variants' own, lower-cased, as they always were.
    #[test]
    fn protocol_names_are_the_lower_cased_variants() {
        use StatementProtocol::*;
        for p in [Simple, Parse, Execute, FunctionCall] {
            assert_eq!(p.as_str(), format!("{p:?}").to_lowercase());
        }
    }
}
