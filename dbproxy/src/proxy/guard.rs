//! Defence in depth beside the statement rules: what a classifier cannot see (side effects of
//! views, triggers and functions a read calls) is stopped by the server itself, by opening the
//! upstream session read-only when the service's rules grant no write-class operation; and the
//! client's startup parameters cannot change parsing, privileges or that read-only mode.
//! Pure functions, decided before any upstream contact.

use policies::{
    Policy,
    engine::db::DbObject,
    model::{db_ops::OperationGroup as G, db_rules::DbDecision},
};

use crate::classify::Effect;

/// Rule name of a refusal to change the read-only mode of a read-only session.
pub const READ_ONLY_SESSION: &str = "db-read-only-session";
/// Rule name of the refusal of a startup parameter.
pub const STARTUP_PARAMETER_REFUSED: &str = "db-startup-parameter";

/// Groups whose grant means the service may change the database (or its catalog): with none of
/// them granted, sessions are opened read-only.
const WRITE_CLASS: &[G] = &[
    G::Write,
    G::Modify,
    G::Delete,
    G::BulkLoad,
    G::SchemaCreate,
    G::SchemaAlter,
    G::SchemaDestroy,
    G::Procedural,
    G::Privilege,
    G::Maintenance,
    G::Lock,
    G::UnsafeIo,
    G::Unknown,
];

/// Whether any `database_rules` entry in scope for `service` lets a write-class operation
/// through (`allow`, `audit` or `approve`; a `deny` or a `redirect`, which only rewrites reads,
/// grants nothing). An unknown service grants nothing.
pub fn grants_writes(policy: &Policy, service: &str) -> bool {
    let Some(svc) = policy.db_services.get(service) else { return false };
    policy.database_rules.iter().any(|r| {
        let in_scope = r.db_service.as_deref().is_none_or(|s| s == service)
            && r.db_family.is_none_or(|f| f == svc.family)
            && r.db_dialect.is_none_or(|d| d == svc.dialect);
        let grants = matches!(r.decision, DbDecision::Allow | DbDecision::Audit | DbDecision::Approve);
        in_scope && grants && r.operations.iter().flat_map(|o| o.groups()).any(|g| WRITE_CLASS.contains(g))
    })
}

/// Settings that hold the read-only mode; `*` is a `set_config` whose name is not a literal.
const READ_ONLY_SETTINGS: &[&str] = &["default_transaction_read_only", "transaction_read_only", "*"];

/// Whether a statement resets every setting to the session's defaults (`RESET ALL`, `DISCARD
/// ALL`): harmless for a session opened read-only (its default is read-only), a lift for one
/// switched to read-only while it was open (its default is still read-write).
pub fn resets_all(effects: &[Effect]) -> bool {
    effects.iter().any(|e| matches!(e.subtype.as_deref(), Some("reset_all" | "discard_all")))
}

/// Whether a statement would change the read-only mode (`SET`/`RESET`/`set_config` of it,
/// `SET SESSION CHARACTERISTICS … READ WRITE`, `BEGIN`/`START TRANSACTION`/`SET TRANSACTION
/// … READ WRITE`): the classifier names the setting as an object of each.
pub fn changes_read_only(effects: &[Effect]) -> bool {
    // Every effect naming the setting changes it, except reading it with SHOW.
    effects.iter().filter(|e| e.subtype.as_deref() != Some("show")).flat_map(|e| &e.objects).any(
        |o| matches!(o, DbObject::Setting(s) if READ_ONLY_SETTINGS.contains(&s.to_ascii_lowercase().as_str())),
    )
}

/// Startup parameters passed upstream as the client sent them. Parameters not named here and
/// not refused by [`startup_parameters`] are dropped.
const FORWARDED: &[&str] =
    &["application_name", "datestyle", "timezone", "intervalstyle", "extra_float_digits"];

/// Parameters the proxy sets itself, whatever the client asked: the classifier reads UTF-8
/// with standard-conforming strings, so the server must parse the same way.
const PINNED: &[(&str, &str)] = &[("client_encoding", "UTF8"), ("standard_conforming_strings", "on")];

/// A startup parameter the proxy refuses, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedParameter {
    /// The parameter as the client named it.
    pub name: String,
    /// Why it is refused.
    pub why: &'static str,
}

fn refused_because(name: &str, value: &str) -> Option<&'static str> {
    let on = matches!(value.trim().to_ascii_lowercase().as_str(), "on" | "true" | "yes" | "1");
    match name {
        "options" => Some("command-line options would set arbitrary settings behind the statement rules"),
        "search_path" => Some("it changes which objects unqualified names resolve to"),
        "role" | "session_authorization" => Some("it changes the privileges of the session"),
        "standard_conforming_strings" if !on => Some("it changes how string literals are parsed"),
        "default_transaction_read_only" | "transaction_read_only" if !on => {
            Some("it would lift the read-only mode")
        }
        "backslash_quote" | "row_security" | "session_replication_role" => {
            Some("it changes parsing or privilege checks")
        }
        _ => None,
    }
}

/// The parameters to send upstream for the client's `params` (minus `user`, `database` and
/// `replication`, which the proxy handles itself), with the pinned ones and, when `read_only`,
/// `default_transaction_read_only=on`; or the first parameter that is refused. Names compare
/// case-insensitively, as the server does.
pub fn startup_parameters(
    params: &[(String, String)],
    read_only: bool,
) -> Result<Vec<(String, String)>, RefusedParameter> {
    let mut out = Vec::new();
    for (k, v) in params {
        let name = k.to_ascii_lowercase();
        if let Some(why) = refused_because(&name, v) {
            return Err(RefusedParameter { name: k.clone(), why });
        }
        if FORWARDED.contains(&name.as_str()) {
            out.push((k.clone(), v.clone()));
        }
    }
    out.extend(PINNED.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    if read_only {
        out.push(("default_transaction_read_only".into(), "on".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::classify;

    fn p(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn dangerous_startup_parameters_are_refused_by_name() {
        for (k, v) in [
            ("options", "-c default_transaction_read_only=off"),
            ("OPTIONS", ""),
            ("search_path", "evil,public"),
            ("role", "postgres"),
            ("session_authorization", "postgres"),
            ("standard_conforming_strings", "off"),
            ("default_transaction_read_only", "off"),
            ("transaction_read_only", "false"),
            ("backslash_quote", "on"),
            ("session_replication_role", "replica"),
        ] {
            let e = startup_parameters(&p(&[("application_name", "x"), (k, v)]), true).unwrap_err();
            assert_eq!(e.name, k);
        }
    }

    #[test]
    fn encoding_and_quoting_are_pinned_and_read_only_added() {
        let got = startup_parameters(
            &p(&[
                ("application_name", "psql"),
                ("client_encoding", "SJIS"),
                ("standard_conforming_strings", "on"),
                ("default_transaction_read_only", "on"),
                ("DateStyle", "ISO"),
                ("geqo", "off"),
            ]),
            true,
        )
        .unwrap();
        assert_eq!(
            got,
            p(&[
                ("application_name", "psql"),
                ("DateStyle", "ISO"),
                ("client_encoding", "UTF8"),
                ("standard_conforming_strings", "on"),
                ("default_transaction_read_only", "on"),
            ])
        );
        let rw = startup_parameters(&p(&[("client_encoding", "LATIN1")]), false).unwrap();
        assert!(!rw.iter().any(|(k, _)| k == "default_transaction_read_only"), "{rw:?}");
        assert!(rw.contains(&("client_encoding".into(), "UTF8".into())));
    }

    #[test]
    fn statements_that_lift_read_only_are_recognised() {
        for sql in [
            "SET default_transaction_read_only = off",
            "SET SESSION default_transaction_read_only TO DEFAULT",
            "set transaction_read_only = false",
            "RESET default_transaction_read_only",
            "RESET transaction_read_only",
            "SELECT set_config('default_transaction_read_only', 'off', false)",
            "SELECT set_config('Transaction_Read_Only', 'off', true)",
            "SELECT set_config(lower('X'), 'off', false)",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
            "BEGIN READ WRITE",
            "BEGIN ISOLATION LEVEL SERIALIZABLE, READ WRITE",
            "START TRANSACTION READ WRITE",
            "SET TRANSACTION READ WRITE",
            "SELECT 1; BEGIN READ WRITE",
        ] {
            assert!(changes_read_only(&classify(sql)), "{sql}");
        }
        for sql in [
            "BEGIN",
            "BEGIN READ ONLY",
            "START TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SET statement_timeout = 1000",
            "SELECT current_setting('default_transaction_read_only')",
            "SHOW transaction_read_only",
        ] {
            assert!(!changes_read_only(&classify(sql)), "{sql}");
        }
        for sql in ["RESET ALL", "DISCARD ALL", "SELECT 1; reset all"] {
            assert!(resets_all(&classify(sql)) && !changes_read_only(&classify(sql)), "{sql}");
        }
        for sql in ["RESET statement_timeout", "DISCARD PLANS", "SELECT 1"] {
            assert!(!resets_all(&classify(sql)), "{sql}");
        }
    }

    fn policy(rules: &str) -> Policy {
        let yaml = format!(
            "db_services:\n  appdb: {{family: postgres, upstream: '127.0.0.1:5432', tls_mode: terminate_plaintext_upstream}}\n  other: {{family: postgres, upstream: '127.0.0.1:5433', tls_mode: terminate_plaintext_upstream}}\ndatabase_rules:\n{rules}"
        );
        policies::load_policy(&yaml, "t.yaml").unwrap()
    }

    #[test]
    fn only_a_permitting_rule_in_scope_naming_a_write_class_group_grants_writes() {
        let reads = "  - {name: r, db_service: appdb, operations: [READ, transaction, session, LISTEN_NOTIFY, EXPORT], decision: allow}\n";
        assert!(!grants_writes(&policy(reads), "appdb"));
        let deny = format!(
            "{reads}  - {{name: d, db_service: appdb, operations: [DELETE, DANGEROUS], decision: deny}}\n"
        );
        assert!(!grants_writes(&policy(&deny), "appdb"));
        let other =
            format!("{reads}  - {{name: w, db_service: other, operations: [INSERT], decision: allow}}\n");
        assert!(!grants_writes(&policy(&other), "appdb"));
        assert!(grants_writes(&policy(&other), "other"));
        for ops in ["[INSERT]", "[UPDATE]", "[LOAD]", "[CREATE]", "[procedural]", "[unknown]", "[privilege]"]
        {
            let w = format!(
                "{reads}  - {{name: w, db_service: appdb, operations: {ops}, objects: [items], decision: allow}}\n"
            );
            assert!(grants_writes(&policy(&w), "appdb"), "{ops}");
        }
        let audit =
            format!("{reads}  - {{name: a, operations: [MUTATE], db_family: postgres, decision: audit}}\n");
        assert!(grants_writes(&policy(&audit), "appdb"));
        assert!(!grants_writes(&policy(reads), "no-such-service"));
    }
}
