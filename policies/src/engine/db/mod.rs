//! Governed database access, the deciding half: `database_rules` and
//! `database_connection_rules` compiled per `db_services` entry, and the two pure decisions the
//! DB proxy asks for (dbproxy.md §1). The proxy classifies SQL into [`EffectView`]s; this module
//! never sees SQL text.

mod connection;
mod effect;
mod glob;
mod objects;
mod statement;

use std::collections::HashMap;

pub use connection::ConnectionRequest;
pub use effect::{DbObject, EffectView};
pub use statement::StatementDecision;

use crate::{Decision, Policy, model::db_service::DbService};

/// Rule name of the implicit deny of a statement effect no rule covers.
pub const DEFAULT_DENY_STATEMENT: &str = "default-deny-statement";
/// Rule name of the refusal of a connection no connection rule matches.
pub const DEFAULT_DENY_CONNECTION: &str = "default-deny-db-connection";

/// The rules that apply to one service.
#[derive(Debug, Clone, Default)]
struct ServiceRules {
    statement: Vec<statement::StatementRule>,
    connection: Vec<connection::ConnectionRule>,
}

/// Every service's rules, compiled once per policy. Cheap to share; all methods take `&self`.
#[derive(Debug, Clone, Default)]
pub struct DbRules {
    services: HashMap<String, ServiceRules>,
}

fn in_scope(
    svc_name: &str,
    svc: &DbService,
    service: &Option<String>,
    family: Option<crate::model::db_service::DbFamily>,
    dialect: Option<crate::model::db_service::DbDialect>,
) -> bool {
    service.as_deref().is_none_or(|s| s == svc_name)
        && family.is_none_or(|f| f == svc.family)
        && dialect.is_none_or(|d| d == svc.dialect)
}

impl DbRules {
    /// Compile the database sections of `policy`. Never fails: the policy was validated at load.
    pub fn new(policy: &Policy) -> DbRules {
        let services = policy
            .db_services
            .iter()
            .map(|(name, svc)| {
                let statement = policy
                    .database_rules
                    .iter()
                    .filter(|r| in_scope(name, svc, &r.db_service, r.db_family, r.db_dialect))
                    .map(statement::StatementRule::new)
                    .collect();
                let connection = policy
                    .database_connection_rules
                    .iter()
                    .filter(|r| in_scope(name, svc, &r.db_service, None, None))
                    .map(connection::ConnectionRule::new)
                    .collect();
                (name.clone(), ServiceRules { statement, connection })
            })
            .collect();
        DbRules { services }
    }

    /// Whether `service` is a `db_services` entry.
    pub fn has_service(&self, service: &str) -> bool {
        self.services.contains_key(service)
    }

    /// Decide a statement on `service` from its effects (all statements of the query string).
    /// An unknown service has no rules, so every statement is denied.
    pub fn decide_statement(&self, service: &str, effects: &[EffectView<'_>]) -> StatementDecision {
        let rules = self.services.get(service).map_or(&[][..], |s| &s.statement[..]);
        statement::decide(rules, effects)
    }

    /// Decide a connection, cancel or replication request on `service`; no matching rule
    /// refuses it (`default-deny-db-connection`).
    pub fn decide_connection(&self, service: &str, request: &ConnectionRequest<'_>) -> Decision {
        let rules = self.services.get(service).map_or(&[][..], |s| &s.connection[..]);
        connection::decide(rules, request)
    }
}
