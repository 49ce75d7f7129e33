//! Decision tables end to end: SQL → classify → `DbRules::decide_statement`, against small
//! hand-written policies. Each row: the SQL, the expected verdict and the deciding rule.

use dbproxy::classify;
use policies::{
    Policy, Verdict,
    engine::db::{ConnectionRequest, DEFAULT_DENY_CONNECTION, DEFAULT_DENY_STATEMENT, DbRules},
    load_policy,
    model::db_rules::{DbDecision, MatchKind},
};

const SERVICES: &str = "db_services:\n  \
  appdb: {family: postgres, upstream: '127.0.0.1:5432', tls_mode: terminate_plaintext_upstream}\n  \
  other: {family: postgres, upstream: '127.0.0.1:5433', tls_mode: terminate_plaintext_upstream}\n";

fn rules(rules_yaml: &str) -> DbRules {
    let text = format!("{SERVICES}{rules_yaml}");
    let policy: Policy =
        load_policy(&text, "test.yaml").unwrap_or_else(|e| panic!("policy loads: {e}\n{text}"));
    DbRules::new(&policy)
}

fn check(r: &DbRules, service: &str, table: &[(&str, Verdict, &str)]) {
    let mut failures = Vec::new();
    for (sql, verdict, rule) in table {
        let effects = classify(sql);
        let views: Vec<_> = effects.iter().map(|e| e.view()).collect();
        let d = r.decide_statement(service, &views);
        if d.decision.verdict != *verdict || d.decision.rule != *rule {
            failures.push(format!(
                "{sql}\n  expected {verdict} by {rule}\n  got      {} by {} ({:?})",
                d.decision.verdict, d.decision.rule, d.decision.message
            ));
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

const DENY: Verdict = Verdict::Deny;
const ALLOW: Verdict = Verdict::Allow;
const AUDIT: Verdict = Verdict::Audit;
const APPROVE: Verdict = Verdict::Approve;
const IMPLICIT: &str = DEFAULT_DENY_STATEMENT;

#[test]
fn read_only_policy() {
    let r = rules(
        "database_rules:\n  \
         - {name: reads, db_service: appdb, operations: [READ], decision: allow}\n  \
         - {name: tx, db_service: appdb, operations: [transaction], decision: allow}\n",
    );
    check(
        &r,
        "appdb",
        &[
            ("SELECT * FROM users", ALLOW, "reads"),
            ("SELECT 1", ALLOW, "reads"),
            // equally restrictive outcomes: the first effect names the rule.
            ("BEGIN; SELECT * FROM users; COMMIT", ALLOW, "tx"),
            ("SELECT * FROM users; DELETE FROM users", DENY, IMPLICIT),
            ("WITH d AS (DELETE FROM users RETURNING *) SELECT * FROM d", DENY, IMPLICIT),
            ("SELECT pg_read_file('/etc/passwd')", DENY, IMPLICIT),
            ("SELECT wipe()", DENY, IMPLICIT),
            ("SELECT nextval('s')", DENY, IMPLICIT),
            ("SELECT set_config('role', 'admin', false)", DENY, IMPLICIT),
            ("SELECT * FROM users FOR UPDATE", DENY, IMPLICIT),
            ("COPY users TO STDOUT", DENY, IMPLICIT),
            ("SELEC 1", DENY, IMPLICIT),
            ("", DENY, IMPLICIT),
        ],
    );
    // The same rules do not reach another service.
    check(&r, "other", &[("SELECT 1", DENY, IMPLICIT)]);
    check(&r, "nosuch", &[("SELECT 1", DENY, IMPLICIT)]);
}

#[test]
fn deny_wins_over_allow_and_on_any_object() {
    let r = rules(
        "database_rules:\n  \
         - {name: all, db_service: appdb, operations: ['*'], decision: allow}\n  \
         - {name: no-secrets, operations: [READ], objects: [secrets, 'vault.*', 'public.keys'], decision: deny}\n  \
         - {name: no-audit-schema, operations: [MUTATE], schemas: [audit, public], decision: deny}\n  \
         - {name: no-danger, operations: [DANGEROUS], decision: deny}\n",
    );
    check(
        &r,
        "appdb",
        &[
            ("SELECT * FROM users", ALLOW, "all"),
            ("DELETE FROM app.users WHERE id = 1", ALLOW, "all"),
            ("DELETE FROM audit.log WHERE id = 1", DENY, "no-audit-schema"),
            // unqualified names are read as public.<name> by a deny.
            ("DELETE FROM users WHERE id = 1", DENY, "no-audit-schema"),
            ("SELECT * FROM secretsx", ALLOW, "all"),
            ("SELECT * FROM users JOIN secrets ON true", DENY, "no-secrets"),
            ("SELECT * FROM vault.keys", DENY, "no-secrets"),
            ("SELECT * FROM VAULT.Keys", DENY, "no-secrets"),
            ("SELECT * FROM keys", DENY, "no-secrets"),
            ("SELECT * FROM other.keys", ALLOW, "all"),
            ("DROP TABLE users", DENY, "no-danger"),
            ("GRANT SELECT ON users TO mallory", DENY, "no-danger"),
            ("SELECT pg_read_file('/etc/passwd')", DENY, "no-danger"),
            ("COPY users TO PROGRAM 'sh'", DENY, "no-danger"),
            ("DO $$ BEGIN END $$", DENY, "no-danger"),
            // `*` never covers unknown.
            ("SELEC 1", DENY, IMPLICIT),
            ("EXECUTE q(1)", DENY, IMPLICIT),
        ],
    );
}

#[test]
fn strict_coverage_of_every_object() {
    let r = rules(
        "database_rules:\n  \
         - {name: users-read, db_service: appdb, operations: [read], objects: [users, public.orders], decision: allow}\n  \
         - {name: app-schema, db_service: appdb, operations: [read, write], schemas: [app], decision: allow}\n",
    );
    check(
        &r,
        "appdb",
        &[
            ("SELECT * FROM users", ALLOW, "users-read"),
            ("SELECT * FROM public.users", ALLOW, "users-read"),
            ("SELECT * FROM public.orders", ALLOW, "users-read"),
            // an allow naming a schema does not cover the unqualified name.
            ("SELECT * FROM orders", DENY, IMPLICIT),
            ("SELECT * FROM users JOIN payments ON true", DENY, IMPLICIT),
            ("SELECT * FROM app.anything", ALLOW, "app-schema"),
            ("INSERT INTO app.log SELECT * FROM users", ALLOW, "app-schema"),
            ("INSERT INTO app.log SELECT * FROM payments", DENY, IMPLICIT),
            ("INSERT INTO log SELECT * FROM users", DENY, IMPLICIT),
            // object-filtered rules do not cover effects without objects.
            ("SELECT 1", DENY, IMPLICIT),
        ],
    );
}

#[test]
fn most_restrictive_verdict_wins() {
    let r = rules(
        "database_rules:\n  \
         - {name: reads, db_service: appdb, operations: [READ], decision: allow}\n  \
         - {name: watch-users, db_service: appdb, operations: [READ], objects: [users], decision: audit}\n  \
         - {name: writes, db_service: appdb, operations: [INSERT], decision: approve}\n  \
         - {name: mv, db_service: appdb, operations: [READ], objects: [legacy], decision: redirect, redirect: {relation: public.modern}}\n",
    );
    check(
        &r,
        "appdb",
        &[
            ("SELECT * FROM orders", ALLOW, "reads"),
            ("SELECT * FROM users", AUDIT, "watch-users"),
            ("SELECT * FROM orders JOIN users ON true", AUDIT, "watch-users"),
            ("INSERT INTO orders VALUES (1)", APPROVE, "writes"),
            ("INSERT INTO orders SELECT * FROM users", APPROVE, "writes"),
            // redirect is enforced as deny until the rewriter exists.
            ("SELECT * FROM legacy", DENY, "mv"),
            ("SELECT * FROM legacy; INSERT INTO t VALUES (1)", APPROVE, "writes"),
        ],
    );
    let effects = classify("INSERT INTO orders VALUES (1)");
    let views: Vec<_> = effects.iter().map(|e| e.view()).collect();
    let d = r.decide_statement("appdb", &views);
    assert_eq!(d.db_verdict, DbDecision::Approve);
    assert!(!d.permits(), "approve fails closed");
    let effects = classify("SELECT * FROM users");
    let views: Vec<_> = effects.iter().map(|e| e.view()).collect();
    let d = r.decide_statement("appdb", &views);
    assert!(d.permits());
    assert_eq!(d.audit_rules, vec!["watch-users".to_string()]);
}

#[test]
fn aliases_are_narrow() {
    let r = rules(
        "database_rules:\n  \
         - {name: create, db_service: appdb, operations: [CREATE], decision: allow}\n  \
         - {name: mutate, db_service: appdb, operations: [MUTATE], decision: allow}\n",
    );
    check(
        &r,
        "appdb",
        &[
            ("CREATE TABLE t (id int)", ALLOW, "create"),
            ("INSERT INTO t VALUES (1)", ALLOW, "mutate"),
            ("UPDATE t SET a = 1 WHERE id = 1", ALLOW, "mutate"),
            ("DELETE FROM t WHERE id = 1", ALLOW, "mutate"),
            // TRUNCATE is delete; MUTATE covers it.
            ("TRUNCATE t", ALLOW, "mutate"),
            ("DROP TABLE t", DENY, IMPLICIT),
            ("ALTER TABLE t ADD COLUMN b int", DENY, IMPLICIT),
            ("CREATE TABLE t2 AS SELECT * FROM t", DENY, IMPLICIT),
        ],
    );
}

#[test]
fn require_where_on_both_sides() {
    let r = rules(
        "database_rules:\n  \
         - {name: reads, db_service: appdb, operations: [READ], decision: allow}\n  \
         - {name: upd, db_service: appdb, operations: [UPDATE, DELETE], objects: [users], require_where: true, decision: allow}\n  \
         - {name: no-bulk-delete, operations: [DELETE], require_where: true, decision: deny}\n",
    );
    check(
        &r,
        "appdb",
        &[
            ("UPDATE users SET name = 'x' WHERE id = 1", ALLOW, "upd"),
            ("UPDATE users SET name = 'x'", DENY, IMPLICIT),
            ("UPDATE users SET name = 'x' WHERE true", DENY, IMPLICIT),
            ("UPDATE users SET name = 'x' WHERE 1 = 1", DENY, IMPLICIT),
            ("DELETE FROM users WHERE id = 1", ALLOW, "upd"),
            ("DELETE FROM users", DENY, "no-bulk-delete"),
            ("WITH d AS (DELETE FROM users RETURNING *) SELECT * FROM d", DENY, "no-bulk-delete"),
            ("UPDATE orders SET x = 1 WHERE id = 1", DENY, IMPLICIT),
        ],
    );
}

#[test]
fn session_subtypes_and_settings() {
    let r = rules(
        "database_rules:\n  \
         - {name: safe-set, db_service: appdb, operations: [session], subtypes: [set, reset, show, discard_all], objects: [application_name, timezone, statement_timeout], decision: allow}\n  \
         - {name: discard, db_service: appdb, operations: [session], subtypes: [discard_all], decision: allow}\n  \
         - {name: no-role, operations: [privilege, session], subtypes: [set_role, set_config, set_session_authorization], decision: deny}\n",
    );
    check(
        &r,
        "appdb",
        &[
            ("SET application_name = 'x'", ALLOW, "safe-set"),
            ("SET statement_timeout TO '1s'", ALLOW, "safe-set"),
            ("RESET statement_timeout", ALLOW, "safe-set"),
            ("SET TIME ZONE 'UTC'", ALLOW, "safe-set"),
            ("DISCARD ALL", ALLOW, "discard"),
            ("SET work_mem = '1GB'", DENY, IMPLICIT),
            ("SET search_path = evil", DENY, IMPLICIT),
            ("SET ROLE admin", DENY, "no-role"),
            ("SET LOCAL ROLE admin", DENY, "no-role"),
            ("RESET ROLE", DENY, "no-role"),
            ("SET SESSION AUTHORIZATION admin", DENY, "no-role"),
            ("SELECT set_config('role', 'admin', false)", DENY, "no-role"),
            ("SET standard_conforming_strings = off", DENY, IMPLICIT),
        ],
    );
}

#[test]
fn structured_objects_and_unknown() {
    let r = rules(
        "database_rules:\n  \
         - {name: tmp-export, db_service: appdb, operations: [unsafe_io, EXPORT], objects: [{kind: filesystem_path, path: '/tmp/*'}, users], decision: audit}\n  \
         - {name: no-curl, operations: [unsafe_io], objects: [{kind: program, argv0: '*curl*'}], decision: deny}\n  \
         - {name: maint, db_service: appdb, operations: [MAINTENANCE], decision: allow}\n  \
         - {name: unknown-ok, db_service: other, operations: [unknown], decision: audit}\n",
    );
    check(
        &r,
        "appdb",
        &[
            ("COPY users TO '/tmp/u.csv'", AUDIT, "tmp-export"),
            ("COPY users TO '/etc/u.csv'", DENY, IMPLICIT),
            ("COPY users TO PROGRAM 'curl http://x'", DENY, "no-curl"),
            ("VACUUM users", ALLOW, "maint"),
            ("REINDEX TABLE users", ALLOW, "maint"),
            ("SELEC 1", DENY, IMPLICIT),
        ],
    );
    check(&r, "other", &[("SELEC 1", AUDIT, "unknown-ok")]);
}

#[test]
fn connection_rules() {
    let r = rules(
        "database_connection_rules:\n  \
         - {name: app-connect, db_service: appdb, db_user: [app, agent_ro], database: appdb, decision: allow}\n  \
         - {name: psql-audit, db_service: appdb, application_name: 'psql*', decision: audit}\n  \
         - {name: no-admin, db_user: [postgres], decision: deny}\n  \
         - {name: cancel, db_service: appdb, match_kind: cancel, decision: allow}\n",
    );
    let q = |kind, user: Option<&'static str>, db: Option<&'static str>, app: Option<&'static str>| {
        ConnectionRequest { kind, db_user: user, database: db, application_name: app, client_identity: None }
    };
    let table = [
        ("appdb", q(MatchKind::Connect, Some("app"), Some("appdb"), None), ALLOW, "app-connect"),
        ("appdb", q(MatchKind::Connect, Some("app"), Some("appdb"), Some("psql")), AUDIT, "psql-audit"),
        ("appdb", q(MatchKind::Connect, Some("app"), Some("other"), None), DENY, DEFAULT_DENY_CONNECTION),
        ("appdb", q(MatchKind::Connect, Some("postgres"), Some("appdb"), None), DENY, "no-admin"),
        ("appdb", q(MatchKind::Connect, None, Some("appdb"), None), DENY, DEFAULT_DENY_CONNECTION),
        ("appdb", q(MatchKind::Cancel, None, None, None), ALLOW, "cancel"),
        ("appdb", q(MatchKind::Replication, Some("app"), Some("appdb"), None), DENY, DEFAULT_DENY_CONNECTION),
        ("other", q(MatchKind::Connect, Some("app"), Some("appdb"), None), DENY, DEFAULT_DENY_CONNECTION),
        ("other", q(MatchKind::Connect, Some("postgres"), None, None), DENY, "no-admin"),
        ("other", q(MatchKind::Cancel, None, None, None), DENY, DEFAULT_DENY_CONNECTION),
    ];
    for (svc, req, verdict, rule) in table {
        let d = r.decide_connection(svc, &req);
        assert_eq!((d.verdict, d.rule.as_str()), (verdict, rule), "{svc} {req:?}");
    }
}
