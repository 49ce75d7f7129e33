//! `database_connection_rules` compiled for one service: every matching rule counts and the
//! most restrictive verdict wins (deny > approve > audit > allow); no match refuses.

use super::{DEFAULT_DENY_CONNECTION, glob::glob_match};
use crate::{
    Decision, Verdict,
    model::db_rules::{DbConnectionRule, MatchKind},
};

/// What a client asks for: a session (StartupMessage), a cancel, or a replication stream.
/// Values the client did not send are `None`; a rule that filters on one never matches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionRequest<'a> {
    /// connect, cancel or replication.
    pub kind: MatchKind,
    /// Startup `user`.
    pub db_user: Option<&'a str>,
    /// Startup `database` (libpq defaults it to the user name; the proxy passes what it saw).
    pub database: Option<&'a str>,
    /// Startup `application_name`.
    pub application_name: Option<&'a str>,
    /// Who the client is to the gateway (`uid:1000`).
    pub client_identity: Option<&'a str>,
}

#[derive(Debug, Clone)]
pub(crate) struct ConnectionRule {
    kind: MatchKind,
    users: Vec<String>,
    database: Option<String>,
    application_name: Option<String>,
    client_identity: Option<String>,
    decision: Decision,
}

fn opt_glob(glob: &Option<String>, value: Option<&str>) -> bool {
    match glob {
        None => true,
        Some(g) => value.is_some_and(|v| glob_match(g, v)),
    }
}

impl ConnectionRule {
    pub(crate) fn new(r: &DbConnectionRule) -> ConnectionRule {
        ConnectionRule {
            kind: r.match_kind,
            users: r.db_user.clone(),
            database: r.database.clone(),
            application_name: r.application_name.as_ref().map(|g| g.as_str().to_string()),
            client_identity: r.client_identity.as_ref().map(|g| g.as_str().to_string()),
            decision: Decision { verdict: r.decision, rule: r.name.clone(), message: r.message.clone() },
        }
    }

    fn matches(&self, q: &ConnectionRequest<'_>) -> bool {
        // User and database names are exact: Postgres compares them exactly.
        self.kind == q.kind
            && (self.users.is_empty() || q.db_user.is_some_and(|u| self.users.iter().any(|x| x == u)))
            && self.database.as_deref().is_none_or(|d| q.database == Some(d))
            && opt_glob(&self.application_name, q.application_name)
            && opt_glob(&self.client_identity, q.client_identity)
    }
}

fn rank(v: Verdict) -> u8 {
    match v {
        Verdict::Allow => 0,
        Verdict::Audit => 1,
        Verdict::Approve => 2,
        Verdict::Deny => 3,
    }
}

pub(crate) fn decide(rules: &[ConnectionRule], q: &ConnectionRequest<'_>) -> Decision {
    let mut best: Option<&Decision> = None;
    for r in rules.iter().filter(|r| r.matches(q)) {
        if best.is_none_or(|b| rank(r.decision.verdict) > rank(b.verdict)) {
            best = Some(&r.decision);
        }
    }
    match best {
        Some(d) => d.clone(),
        None => Decision {
            verdict: Verdict::Deny,
            rule: DEFAULT_DENY_CONNECTION.to_string(),
            message: Some("no connection rule matched".to_string()),
        },
    }
}
