//! `database_rules` (per statement) and `database_connection_rules` (per connection), with the
//! exact agentsh field names of dbproxy.md §1. Statement rules: most restrictive wins and an
//! uncovered statement is denied; connection rules: no match → the connection is refused.

use serde::Deserialize;

use super::{
    db_ops::DbOperation,
    db_service::{DbDialect, DbFamily},
    values::{DurationSpec, NameGlob},
};
use crate::Verdict;

/// What a statement rule says should happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DbDecision {
    /// Let the statement through.
    Allow,
    /// Refuse it (SQLSTATE 42501).
    Deny,
    /// Ask for approval first.
    Approve,
    /// Let it through and flag it.
    Audit,
    /// Rewrite a read of one relation to another (`redirect.relation`).
    Redirect,
}

/// How a deny inside a transaction is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyModeInTx {
    /// Send FATAL and close both sides (the default).
    #[default]
    Terminate,
    /// Roll the transaction back and keep the connection.
    RollbackThenContinue,
}

/// How the objects of a statement were resolved; `*` matches all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectResolution {
    /// Schema-qualified name, taken from the text.
    QualifiedSyntactic,
    /// Unqualified name, taken from the text.
    UnqualifiedSyntactic,
    /// Unqualified and `search_path` was changed earlier.
    AmbiguousAfterSearchPath,
    /// May be shadowed by a temporary table.
    MaybeTempShadowed,
    /// Could not be resolved.
    Unresolved,
    /// Resolved against the catalog.
    CatalogResolved,
    /// The catalog has no such object.
    CatalogUnresolved,
    /// No catalog snapshot was available.
    CatalogUnavailable,
    /// Any resolution.
    #[serde(rename = "*")]
    Any,
}

/// The kind of a structured object pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// A network endpoint reached from the server (`host`, `port`).
    ExternalEndpoint,
    /// A server-side file path (`path`).
    FilesystemPath,
    /// A server-side program (`argv0`).
    Program,
}

/// A structured object pattern, e.g. `{kind: program, argv0: "*"}`. The fields that fit the
/// kind are checked at load.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StructuredObject {
    /// The kind.
    pub kind: ObjectKind,
    /// Host glob (`external_endpoint`).
    #[serde(default)]
    pub host: Option<NameGlob>,
    /// Port (`external_endpoint`).
    #[serde(default)]
    pub port: Option<u16>,
    /// Path glob (`filesystem_path`).
    #[serde(default)]
    pub path: Option<String>,
    /// Program glob (`program`).
    #[serde(default)]
    pub argv0: Option<NameGlob>,
}

/// One entry of `objects`: a name glob (table, GUC) or a structured object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectPattern {
    /// A syntactic glob over table or setting names.
    Name(NameGlob),
    /// A structured object.
    Structured(StructuredObject),
}

impl<'de> Deserialize<'de> for ObjectPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ObjectPattern;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a name glob or a mapping {kind, ...}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ObjectPattern, E> {
                v.parse().map(ObjectPattern::Name).map_err(E::custom)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<ObjectPattern, A::Error> {
                StructuredObject::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(ObjectPattern::Structured)
            }
        }
        d.deserialize_any(V)
    }
}

/// The `redirect` block of a statement rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbRedirect {
    /// Target relation, `schema.name`.
    pub relation: String,
}

/// One `database_rules` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbStatementRule {
    /// Rule name, reported in every decision it makes.
    pub name: String,
    /// Free text for humans.
    #[serde(default)]
    pub description: Option<String>,
    /// Scope: one service (must exist in `db_services`).
    #[serde(default)]
    pub db_service: Option<String>,
    /// Scope: a family.
    #[serde(default)]
    pub db_family: Option<DbFamily>,
    /// Scope: a dialect.
    #[serde(default)]
    pub db_dialect: Option<DbDialect>,
    /// Operation groups or aliases covered (required, non-empty).
    pub operations: Vec<DbOperation>,
    /// Schema globs.
    #[serde(default)]
    pub schemas: Vec<NameGlob>,
    /// Syntactic object patterns.
    #[serde(default)]
    pub objects: Vec<ObjectPattern>,
    /// Catalog-resolved relations, `schema.name` globs.
    #[serde(default)]
    pub relations: Vec<NameGlob>,
    /// Catalog-resolved functions, `schema.name(args)` globs.
    #[serde(default)]
    pub functions: Vec<NameGlob>,
    /// Operation subtypes (`set_role`, `truncate`, ...), lower-case identifiers.
    #[serde(default)]
    pub subtypes: Vec<String>,
    /// Required object resolution.
    #[serde(default)]
    pub match_object_resolution: Option<ObjectResolution>,
    /// Require a top-level `WHERE` on `modify`/`delete`.
    #[serde(default)]
    pub require_where: bool,
    /// The verdict when the rule matches.
    pub decision: DbDecision,
    /// Message template for the audit event.
    #[serde(default)]
    pub message: Option<String>,
    /// How long an `approve` waits (default 60 s, at most 600 s).
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
    /// Target of a `redirect`.
    #[serde(default)]
    pub redirect: Option<DbRedirect>,
    /// Accept `audit` on a high or critical tier without a warning.
    #[serde(default)]
    pub acknowledge_audit_on_dangerous: bool,
    /// Deny handling inside a transaction (deny rules only).
    #[serde(default)]
    pub deny_mode_in_tx: Option<DenyModeInTx>,
}

/// What a connection rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchKind {
    /// A StartupMessage (the default).
    #[default]
    Connect,
    /// A CancelRequest.
    Cancel,
    /// A replication connection.
    Replication,
}

/// One `database_connection_rules` entry. `redirect` is not a connection verdict.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbConnectionRule {
    /// Rule name, reported in every decision it makes.
    pub name: String,
    /// Free text for humans.
    #[serde(default)]
    pub description: Option<String>,
    /// The service (must exist in `db_services`); none = every service.
    #[serde(default)]
    pub db_service: Option<String>,
    /// What is matched.
    #[serde(default)]
    pub match_kind: MatchKind,
    /// Startup `user` values; empty matches any.
    #[serde(default)]
    pub db_user: Vec<String>,
    /// Startup `database`.
    #[serde(default)]
    pub database: Option<String>,
    /// Startup `application_name` glob.
    #[serde(default)]
    pub application_name: Option<NameGlob>,
    /// Client identity glob (`uid:1000`).
    #[serde(default)]
    pub client_identity: Option<NameGlob>,
    /// The verdict when the rule matches.
    pub decision: Verdict,
    /// Message sent with a refusal (SQLSTATE 28000).
    #[serde(default)]
    pub message: Option<String>,
    /// How long an `approve` waits.
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
}
