//! Defence in depth on a real cluster: a service whose rules grant no write-class operation
//! gets a read-only upstream session, so side effects the classifier cannot see (a view over a
//! writing function, a user function shadowing an allowlisted name) fail on the server; no
//! statement can lift the mode; startup parameters that change parsing or privileges are
//! refused by name before any upstream contact, and the encoding is pinned to UTF-8.

mod common;

use common::{
    pg::{APP_PASSWORD, PgCluster},
    proxy::{Raw, counting_upstream, error_of, psql, rows, start_proxy, status_of, temp_dir},
};
use dbproxy::{DbEventKind, proxy::READ_ONLY_SESSION, proxy::STARTUP_PARAMETER_REFUSED};

const SCHEMA: &str = "
CREATE TABLE items (id int PRIMARY KEY, name text);
INSERT INTO items VALUES (1, 'a'), (2, 'b');
CREATE FUNCTION wipe() RETURNS int LANGUAGE sql AS 'DELETE FROM items RETURNING 1';
CREATE VIEW wiped AS SELECT wipe() AS n;
CREATE FUNCTION public.lower(int) RETURNS int LANGUAGE sql AS 'DELETE FROM items RETURNING 1';
ALTER TABLE items OWNER TO app;
ALTER VIEW wiped OWNER TO app;
ALTER FUNCTION wipe() OWNER TO app;
";

/// Reads, transactions and LISTEN only: no write-class group is granted.
const READ_ONLY_RULES: &str = "
database_connection_rules:
  - {name: agent-connect, db_service: appdb, decision: allow}
database_rules:
  - {name: reads, db_service: appdb, operations: [READ], decision: allow}
  - {name: tx, db_service: appdb, operations: [transaction], decision: allow}
";

fn policy(port: u16, pw: &std::path::Path, rules: &str) -> String {
    format!(
        "db_services:\n  appdb: {{family: postgres, upstream: '127.0.0.1:{port}', tls_mode: terminate_plaintext_upstream, credentials: {{user: app, password_file: '{}'}}}}\n{rules}",
        pw.display()
    )
}

fn cluster() -> Option<(PgCluster, std::path::PathBuf)> {
    let pg = PgCluster::start_or_skip()?;
    pg.psql_ok("appdb", SCHEMA);
    let pw = temp_dir("pw").join("password");
    std::fs::write(&pw, APP_PASSWORD).unwrap();
    Some((pg, pw))
}

fn count(pg: &PgCluster) -> String {
    pg.psql_ok("appdb", "SELECT count(*) FROM items").trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hidden_side_effects_of_reads_fail_with_the_servers_read_only_error() {
    let Some((pg, pw)) = cluster() else { return };
    let fx = start_proxy(&policy(pg.port, &pw, READ_ONLY_RULES)).await;
    let mut c = Raw::connect(&fx.dir).await;
    c.startup("agent", 0, &[]).await;
    assert_eq!(rows(&c.query("SELECT current_setting('default_transaction_read_only')").await), ["on"]);
    // Both classify as plain reads and are allowed by the `reads` rule; the server refuses the
    // DELETE inside them (25006 read_only_sql_transaction).
    for sql in ["SELECT * FROM wiped", "SELECT lower(1)", "SELECT n FROM wiped WHERE n > 0"] {
        let msgs = c.query(sql).await;
        let e = error_of(&msgs).unwrap_or_else(|| panic!("{sql} ran: {msgs:?}"));
        assert_eq!(e.code().as_deref(), Some("25006"), "{sql}: {e:?}");
        assert!(e.message().unwrap().contains("read-only transaction"), "{e:?}");
        assert_eq!(status_of(&msgs), Some(b'I'));
    }
    // Inside an explicit transaction too.
    assert_eq!(status_of(&c.query("BEGIN").await), Some(b'T'));
    let msgs = c.query("SELECT * FROM wiped").await;
    assert_eq!(error_of(&msgs).and_then(|e| e.code()).as_deref(), Some("25006"));
    assert_eq!(status_of(&c.query("ROLLBACK").await), Some(b'I'));
    assert_eq!(count(&pg), "2");
    let allowed = fx
        .events
        .all()
        .iter()
        .filter(|e| e.kind == DbEventKind::Statement)
        .any(|e| e.statement.as_ref().is_some_and(|s| &*s.text == "SELECT * FROM wiped"));
    assert!(allowed, "the read itself was allowed by the rules");

    // The same read on a service that grants writes runs the function: the mode is what stopped it.
    let writes = format!(
        "{READ_ONLY_RULES}  - {{name: ins, db_service: appdb, operations: [INSERT], objects: [audit_log], decision: allow}}\n"
    );
    let fx = start_proxy(&policy(pg.port, &pw, &writes)).await;
    let mut c = Raw::connect(&fx.dir).await;
    c.startup("agent", 0, &[]).await;
    assert_eq!(rows(&c.query("SELECT current_setting('default_transaction_read_only')").await), ["off"]);
    assert_eq!(rows(&c.query("SELECT lower(1)").await), ["1"]);
    assert_eq!(count(&pg), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_statement_lifts_the_read_only_mode() {
    let Some((pg, pw)) = cluster() else { return };
    let fx = start_proxy(&policy(pg.port, &pw, READ_ONLY_RULES)).await;
    let mut c = Raw::connect(&fx.dir).await;
    c.startup("agent", 0, &[]).await;
    let cases = [
        "SET default_transaction_read_only = off",
        "SET SESSION transaction_read_only = off",
        "RESET default_transaction_read_only",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
        "SELECT set_config('transaction_read_only', 'off', true)",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        // Transaction statements are allowed by the `tx` rule, except in READ WRITE.
        "BEGIN READ WRITE",
        "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
        "SELECT 1; BEGIN TRANSACTION READ WRITE",
    ];
    for sql in cases {
        let msgs = c.query(sql).await;
        let e = error_of(&msgs).unwrap_or_else(|| panic!("{sql}: {msgs:?}"));
        assert_eq!(e.code().as_deref(), Some("42501"), "{sql}");
        assert!(e.message().unwrap().contains(READ_ONLY_SESSION), "{sql}: {e:?}");
        assert_eq!(status_of(&msgs), Some(b'I'), "{sql}");
    }
    // SET TRANSACTION READ WRITE inside a transaction: refused, and FATAL (deny in a transaction).
    assert_eq!(status_of(&c.query("BEGIN").await), Some(b'T'));
    let msgs = c.query("SET TRANSACTION READ WRITE").await;
    assert!(error_of(&msgs).unwrap().message().unwrap().contains(READ_ONLY_SESSION));
    let mut c = Raw::connect(&fx.dir).await;
    c.startup("agent", 0, &[]).await;
    assert_eq!(rows(&c.query("SELECT current_setting('default_transaction_read_only')").await), ["on"]);
    assert_eq!(status_of(&c.query("BEGIN READ ONLY").await), Some(b'T'));
    assert_eq!(rows(&c.query("SELECT current_setting('transaction_read_only')").await), ["on"]);
    assert_eq!(status_of(&c.query("COMMIT").await), Some(b'I'));
    let blocked = fx.events.all().iter().filter(|e| e.kind == DbEventKind::StatementBlocked).count();
    assert_eq!(blocked, cases.len() + 1);
    assert_eq!(count(&pg), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn startup_parameters_that_alter_parsing_or_privileges_are_refused_by_name() {
    // An upstream that only counts connections: refusals happen before any contact.
    let (port, contacts) = counting_upstream().await;
    let pw = temp_dir("pw").join("password");
    std::fs::write(&pw, "x").unwrap();
    let fx = start_proxy(&policy(port, &pw, READ_ONLY_RULES)).await;
    let cases = [
        ("options", "-c default_transaction_read_only=off"),
        ("search_path", "evil, public"),
        ("role", "postgres"),
        ("session_authorization", "postgres"),
        ("standard_conforming_strings", "off"),
        ("default_transaction_read_only", "off"),
    ];
    for (k, v) in cases {
        let mut c = Raw::connect(&fx.dir).await;
        let msgs = c.startup("agent", 0, &[(k, v)]).await;
        let e = error_of(&msgs).unwrap_or_else(|| panic!("{k}: {msgs:?}"));
        assert_eq!((e.code().as_deref(), e.severity().as_deref()), (Some("28000"), Some("FATAL")), "{k}");
        assert!(e.message().unwrap().contains(STARTUP_PARAMETER_REFUSED), "{k}: {e:?}");
        let detail = String::from_utf8_lossy(&e.body).into_owned();
        assert!(detail.contains(&format!("startup parameter {k} is refused")), "{k}: {detail}");
        assert!(c.recv().await.is_none());
    }
    assert_eq!(contacts.load(std::sync::atomic::Ordering::SeqCst), 0);
    let blocked: Vec<_> =
        fx.events.all().into_iter().filter(|e| e.kind == DbEventKind::ConnectBlocked).collect();
    assert_eq!(blocked.len(), cases.len());
    assert!(blocked.iter().all(|e| e.decision.as_ref().unwrap().rule == STARTUP_PARAMETER_REFUSED));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn psql_with_pgoptions_is_refused_and_the_encoding_is_pinned_to_utf8() {
    let Some((pg, pw)) = cluster() else { return };
    let fx = start_proxy(&policy(pg.port, &pw, READ_ONLY_RULES)).await;
    // libpq sends PGOPTIONS as the `options` startup parameter.
    let mut cmd = tokio::process::Command::new(pg.bin.join("psql"));
    cmd.args(["-X", "-A", "-t", "-h"]).arg(&fx.dir).args(["-U", "agent", "-d", "appdb", "-c", "SELECT 1"]);
    let out = cmd.env("PGOPTIONS", "-c default_transaction_read_only=off").output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(STARTUP_PARAMETER_REFUSED) && stderr.contains("options"), "{stderr}");

    // A client asking for SJIS (whose multibyte characters may hold a backslash byte) talks
    // UTF-8 to a server that parses UTF-8, as the classifier does.
    let mut c = Raw::connect(&fx.dir).await;
    let hello = c.startup("agent", 0, &[("client_encoding", "SJIS")]).await;
    assert_eq!(status_of(&hello), Some(b'I'), "{hello:?}");
    assert_eq!(rows(&c.query("SELECT current_setting('client_encoding')").await), ["UTF8"]);
    assert_eq!(rows(&c.query("SELECT current_setting('standard_conforming_strings')").await), ["on"]);
    // psql with the default (locale-derived) encoding still works.
    let out = psql(&pg.bin, &fx.dir, "agent", "", &["SELECT count(*) FROM items"], "").await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_sessions_follow_the_service_when_it_turns_read_only() {
    let Some((pg, pw)) = cluster() else { return };
    let writes = format!(
        "{READ_ONLY_RULES}  - {{name: ins, db_service: appdb, operations: [INSERT], objects: [items], decision: allow}}\n"
    );
    let fx = start_proxy(&policy(pg.port, &pw, &writes)).await;
    // An idle session, one inside a transaction, and one on the extended protocol with a
    // statement prepared while the service still granted writes.
    let mut idle = Raw::connect(&fx.dir).await;
    idle.startup("agent", 0, &[]).await;
    assert_eq!(rows(&idle.query("SELECT current_setting('default_transaction_read_only')").await), ["off"]);
    assert_eq!(status_of(&idle.query("INSERT INTO items VALUES (3, 'c')").await), Some(b'I'));
    let mut in_tx = Raw::connect(&fx.dir).await;
    in_tx.startup("agent", 0, &[]).await;
    assert_eq!(status_of(&in_tx.query("BEGIN").await), Some(b'T'));
    let mut cfg = tokio_postgres::Config::new();
    cfg.host_path(&fx.dir).port(5432).user("agent").dbname("appdb");
    let (ext, conn) = cfg.connect(tokio_postgres::NoTls).await.expect("connects through the proxy");
    tokio::spawn(conn);
    let wiped = ext.prepare("SELECT n FROM wiped").await.unwrap();

    // The policy is reloaded without any write grant (settings may be changed and reset).
    let settings = format!(
        "{READ_ONLY_RULES}  - {{name: settings, db_service: appdb, operations: [session, privilege], decision: allow}}\n"
    );
    let reloaded = policies::load_policy(&policy(pg.port, &pw, &settings), "reload.yaml").unwrap();
    fx.proxy.set_rules(std::sync::Arc::new(policies::engine::db::DbRules::new(&reloaded)));
    fx.proxy.set_read_only(true);

    // The idle session's next statement runs read-only; the switch's own answer never reaches
    // the client (each query below reads exactly its own answer).
    assert_eq!(rows(&idle.query("SELECT current_setting('default_transaction_read_only')").await), ["on"]);
    let e = error_of(&idle.query("SELECT * FROM wiped").await).cloned().expect("refused by the server");
    assert_eq!(e.code().as_deref(), Some("25006"), "{e:?}");
    // Neither naming the setting nor resetting every setting (whose default is still off for
    // this session) lifts it.
    for sql in ["SET default_transaction_read_only = off", "RESET ALL", "DISCARD ALL"] {
        let lift = idle.query(sql).await;
        let e = error_of(&lift).unwrap_or_else(|| panic!("{sql} ran: {lift:?}"));
        assert!(e.message().unwrap().contains(READ_ONLY_SESSION), "{sql}: {lift:?}");
    }
    assert_eq!(
        status_of(&idle.query("RESET statement_timeout").await),
        Some(b'I'),
        "other settings still reset"
    );
    assert_eq!(rows(&idle.query("SELECT current_setting('default_transaction_read_only')").await), ["on"]);
    assert_eq!(rows(&idle.query("SELECT count(*) FROM items").await), ["3"]);

    // Inside its transaction the other session is left as it is (its statements are decided by
    // the new rules); once the transaction ends, it follows.
    assert_eq!(rows(&in_tx.query("SELECT current_setting('transaction_read_only')").await), ["off"]);
    assert_eq!(status_of(&in_tx.query("COMMIT").await), Some(b'I'));
    assert_eq!(rows(&in_tx.query("SELECT current_setting('default_transaction_read_only')").await), ["on"]);

    // The extended-protocol session: the statement prepared before runs read-only now.
    let e = ext.query(&wiped, &[]).await.expect_err("the hidden DELETE is refused");
    assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION), "{e:?}");
    let on: String =
        ext.query_one("SELECT current_setting('default_transaction_read_only')", &[]).await.unwrap().get(0);
    assert_eq!(on, "on");
    assert_eq!(count(&pg), "3");

    // A session opened read-only may reset everything: its defaults are read-only.
    let mut fresh = Raw::connect(&fx.dir).await;
    fresh.startup("agent", 0, &[]).await;
    assert_eq!(status_of(&fresh.query("RESET ALL").await), Some(b'I'));
    assert_eq!(rows(&fresh.query("SELECT current_setting('default_transaction_read_only')").await), ["on"]);

    // Turning it off again does not make open sessions writable.
    fx.proxy.set_read_only(false);
    assert_eq!(rows(&idle.query("SELECT current_setting('default_transaction_read_only')").await), ["on"]);
}
