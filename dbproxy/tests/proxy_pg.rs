//! The proxy end to end against a real Postgres cluster: psql (a real libpq client) and a raw
//! protocol client talk to the proxy's Unix socket; the proxy logs in upstream over TCP with
//! SCRAM and injected credentials; every outcome is checked on the server itself.

mod common;

use std::time::Duration;

use common::{
    pg::{APP_PASSWORD, PgCluster},
    proxy::{Raw, counting_upstream, error_of, psql, rows, start_proxy, status_of, temp_dir},
};
use dbproxy::{
    DbEventKind,
    proxy::{FUNCTION_CALL_DISABLED, REPLICATION_REFUSED},
    wire::{self, Bind, Execute, FunctionCall, Parse},
};
use policies::engine::db::{DEFAULT_DENY_CONNECTION, DEFAULT_DENY_STATEMENT};

const SCHEMA: &str = "
CREATE TABLE items (id int PRIMARY KEY, name text);
INSERT INTO items VALUES (1, 'a'), (2, 'b');
CREATE FUNCTION wipe() RETURNS int LANGUAGE sql AS 'DELETE FROM items RETURNING 1';
ALTER TABLE items OWNER TO app;
ALTER FUNCTION wipe() OWNER TO app;
";

const RULES: &str = "
database_connection_rules:
  - {name: agent-connect, db_service: appdb, db_user: [agent], database: appdb, decision: allow}
  - {name: agent-cancel, db_service: appdb, match_kind: cancel, decision: allow}
database_rules:
  - {name: reads, db_service: appdb, operations: [READ], decision: allow}
  - {name: tx, db_service: appdb, operations: [transaction], decision: allow}
  - {name: no-delete, db_service: appdb, operations: [DELETE], decision: deny}
  - {name: listen, db_service: appdb, operations: [LISTEN_NOTIFY], decision: allow}
  - {name: copy-items, db_service: appdb, operations: [EXPORT, LOAD], objects: [items], decision: allow}
  - {name: no-update-in-tx, db_service: appdb, operations: [UPDATE], decision: deny, deny_mode_in_tx: rollback_then_continue}
";

/// A policy for `appdb` at `upstream` with `credentials` (YAML flow map) and `rules`.
fn policy(upstream: &str, credentials: &str, rules: &str) -> String {
    format!(
        "db_services:\n  appdb: {{family: postgres, upstream: '{upstream}', tls_mode: terminate_plaintext_upstream, credentials: {credentials}}}\n{rules}"
    )
}

/// The cluster with the schema, and a password file holding `password`.
fn cluster(password: &str) -> Option<(PgCluster, std::path::PathBuf)> {
    let pg = PgCluster::start_or_skip()?;
    pg.psql_ok("appdb", SCHEMA);
    let pw = temp_dir("pw").join("password");
    std::fs::write(&pw, format!("{password}\n")).unwrap();
    Some((pg, pw))
}

fn creds_file(pw: &std::path::Path) -> String {
    format!("{{user: app, password_file: '{}'}}", pw.display())
}

fn count(pg: &PgCluster) -> String {
    pg.psql_ok("appdb", "SELECT count(*) FROM items").trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn psql_reads_with_injected_scram_credentials_and_the_client_password_is_ignored() {
    let Some((pg, pw)) = cluster(APP_PASSWORD) else { return };
    let fx = start_proxy(&policy(&format!("127.0.0.1:{}", pg.port), &creds_file(&pw), RULES)).await;
    let out = psql(
        &pg.bin,
        &fx.dir,
        "agent",
        "not-the-password",
        &["SELECT current_user, count(*) FROM items"],
        "",
    )
    .await;
    assert!(out.ok, "psql failed: {}", out.stderr);
    // Logged in upstream as `app` (the injected user), over TCP, where the server wants SCRAM.
    assert_eq!(out.stdout.trim(), "app|2");
    let log = std::fs::read_to_string(pg.dir.join("server.log")).unwrap_or_default();
    assert!(!log.contains("not-the-password"), "the client's password reached the server");
    let ev = fx.events.all();
    let connect = ev.iter().find(|e| e.kind == DbEventKind::Connect).expect("connect event");
    assert_eq!(connect.decision.as_ref().unwrap().rule, "agent-connect");
    assert_eq!(connect.db_user.as_deref(), Some("agent"));
    let st = ev.iter().find(|e| e.kind == DbEventKind::Statement).expect("statement event");
    assert_eq!(st.decision.as_ref().unwrap().rule, "reads");
    assert_eq!(st.statement.as_ref().unwrap().effects[0].group, "read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_or_missing_credentials_give_a_clear_error() {
    let Some((pg, pw)) = cluster("wrong-password") else { return };
    let upstream = format!("127.0.0.1:{}", pg.port);
    let fx = start_proxy(&policy(&upstream, &creds_file(&pw), RULES)).await;
    let out = psql(&pg.bin, &fx.dir, "agent", "", &["SELECT 1"], "").await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains("upstream login for db service appdb failed")
            && out.stderr.contains("password authentication failed for user \"app\""),
        "{}",
        out.stderr
    );

    let missing = "{user: app, password_env: AGENTSH_TEST_SURELY_UNSET_PASSWORD}";
    let fx = start_proxy(&policy(&upstream, missing, RULES)).await;
    let out = psql(&pg.bin, &fx.dir, "agent", "", &["SELECT 1"], "").await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains("environment variable AGENTSH_TEST_SURELY_UNSET_PASSWORD is not set"),
        "{}",
        out.stderr
    );
    assert!(fx.events.all().iter().any(|e| e.kind == DbEventKind::HandshakeFail));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn denied_statements_get_42501_naming_the_rule_run_nothing_and_the_session_continues() {
    let Some((pg, pw)) = cluster(APP_PASSWORD) else { return };
    let fx = start_proxy(&policy(&format!("127.0.0.1:{}", pg.port), &creds_file(&pw), RULES)).await;

    // psql, one session: the denied DELETE fails, the SELECT after it still runs.
    let out =
        psql(&pg.bin, &fx.dir, "agent", "", &["DELETE FROM items", "SELECT count(*) FROM items"], "").await;
    assert!(out.stderr.contains("denied by agentsh policy: no-delete"), "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "2");

    let mut c = Raw::connect(&fx.dir).await;
    let hello = c.startup("agent", 0, &[]).await;
    assert_eq!(status_of(&hello), Some(b'I'), "{hello:?}");
    let cases = [
        ("DELETE FROM items", "no-delete"),
        // One denied statement refuses the whole string: the INSERT before it does not run.
        ("INSERT INTO items VALUES (3, 'c'); SELECT 1; DELETE FROM items", DEFAULT_DENY_STATEMENT),
        ("SELECT 1; DELETE FROM items", "no-delete"),
        ("SELECT 1; INSERT INTO items VALUES (3, 'c')", DEFAULT_DENY_STATEMENT),
        ("WITH d AS (DELETE FROM items RETURNING *) SELECT * FROM d", "no-delete"),
        ("SELECT wipe()", DEFAULT_DENY_STATEMENT),
    ];
    for (sql, rule) in cases {
        let msgs = c.query(sql).await;
        let e = error_of(&msgs).unwrap_or_else(|| panic!("{sql}: no error in {msgs:?}"));
        assert_eq!(e.code().as_deref(), Some("42501"), "{sql}");
        assert_eq!(e.severity().as_deref(), Some("ERROR"), "{sql}");
        assert!(e.message().unwrap().contains(rule), "{sql}: {:?}", e.message());
        assert_eq!(status_of(&msgs), Some(b'I'), "{sql}");
        assert_eq!(rows(&c.query("SELECT count(*) FROM items").await), ["2"], "after {sql}");
    }
    assert_eq!(count(&pg), "2");
    assert_eq!(pg.psql_ok("appdb", "SELECT count(*) FROM items WHERE id = 3").trim(), "0");
    let blocked = fx.events.all().into_iter().filter(|e| e.kind == DbEventKind::StatementBlocked).count();
    assert_eq!(blocked, 1 + cases.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn extended_query_denied_at_parse_discards_until_sync_and_recovers() {
    let Some((pg, pw)) = cluster(APP_PASSWORD) else { return };
    let fx = start_proxy(&policy(&format!("127.0.0.1:{}", pg.port), &creds_file(&pw), RULES)).await;
    let mut c = Raw::connect(&fx.dir).await;
    c.startup("agent", 0, &[]).await;

    let bind = |stmt: &'static str| Bind {
        portal: "",
        statement: stmt,
        param_formats: vec![],
        params: vec![],
        result_formats: vec![],
    };
    let mut out = Vec::new();
    // An allowed statement, then a refused one, in one batch.
    Parse { name: "ok", sql: "SELECT count(*) FROM items", param_types: vec![] }.encode(&mut out);
    bind("ok").encode(&mut out);
    Execute { portal: "", max_rows: 0 }.encode(&mut out);
    Parse { name: "bad", sql: "DELETE FROM items", param_types: vec![] }.encode(&mut out);
    bind("bad").encode(&mut out);
    Execute { portal: "", max_rows: 0 }.encode(&mut out);
    wire::Frontend::Sync.encode(&mut out);
    c.send(&out).await;
    let msgs = c.until_ready().await;
    let tags: Vec<char> = msgs.iter().map(|m| m.tag as char).collect();
    assert_eq!(tags, ['1', '2', 'D', 'C', 'E', 'Z'], "{msgs:?}");
    assert_eq!(rows(&msgs), ["2"]);
    let e = error_of(&msgs).unwrap();
    assert_eq!(e.code().as_deref(), Some("42501"));
    assert!(e.message().unwrap().contains("no-delete"));
    assert_eq!(status_of(&msgs), Some(b'I'));

    // The refused statement never existed on the server; the allowed one still does.
    let mut out = Vec::new();
    bind("bad").encode(&mut out);
    Execute { portal: "", max_rows: 0 }.encode(&mut out);
    wire::Frontend::Sync.encode(&mut out);
    bind("ok").encode(&mut out);
    Execute { portal: "", max_rows: 0 }.encode(&mut out);
    wire::Frontend::Sync.encode(&mut out);
    c.send(&out).await;
    let first = c.until_ready().await;
    assert_eq!(error_of(&first).and_then(|e| e.code()).as_deref(), Some("26000"), "{first:?}");
    let second = c.until_ready().await;
    assert_eq!(rows(&second), ["2"], "{second:?}");
    assert_eq!(count(&pg), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deny_inside_a_transaction_follows_deny_mode_in_tx() {
    let Some((pg, pw)) = cluster(APP_PASSWORD) else { return };
    let fx = start_proxy(&policy(&format!("127.0.0.1:{}", pg.port), &creds_file(&pw), RULES)).await;

    // rollback_then_continue: the error fails the transaction, which commits nothing.
    let mut c = Raw::connect(&fx.dir).await;
    c.startup("agent", 0, &[]).await;
    assert_eq!(status_of(&c.query("BEGIN").await), Some(b'T'));
    let msgs = c.query("UPDATE items SET name = 'x'").await;
    assert_eq!(error_of(&msgs).and_then(|e| e.code()).as_deref(), Some("42501"));
    assert_eq!(status_of(&msgs), Some(b'E'), "{msgs:?}");
    assert_eq!(status_of(&c.query("ROLLBACK").await), Some(b'I'));
    assert_eq!(rows(&c.query("SELECT count(*) FROM items").await), ["2"]);

    // terminate (the default): FATAL and the connection is closed.
    assert_eq!(status_of(&c.query("BEGIN").await), Some(b'T'));
    let msgs = c.query("DELETE FROM items").await;
    let e = error_of(&msgs).expect("an error");
    assert_eq!((e.code().as_deref(), e.severity().as_deref()), (Some("42501"), Some("FATAL")));
    assert!(status_of(&msgs).is_none(), "connection must close: {msgs:?}");
    assert!(c.recv().await.is_none());
    assert_eq!(count(&pg), "2");
    assert_eq!(pg.psql_ok("appdb", "SELECT count(*) FROM items WHERE name = 'x'").trim(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copy_out_and_in_pass_through_when_allowed() {
    let Some((pg, pw)) = cluster(APP_PASSWORD) else { return };
    let fx = start_proxy(&policy(&format!("127.0.0.1:{}", pg.port), &creds_file(&pw), RULES)).await;
    let out = psql(&pg.bin, &fx.dir, "agent", "", &["COPY items TO STDOUT"], "").await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout, "1\ta\n2\tb\n");
    let out = psql(&pg.bin, &fx.dir, "agent", "", &["COPY items FROM STDIN"], "3\tc\n4\td\n\\.\n").await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(count(&pg), "4");
    assert_eq!(pg.psql_ok("appdb", "SELECT name FROM items WHERE id = 4").trim(), "d");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notify_reaches_an_idle_client() {
    let Some((pg, pw)) = cluster(APP_PASSWORD) else { return };
    let fx = start_proxy(&policy(&format!("127.0.0.1:{}", pg.port), &creds_file(&pw), RULES)).await;
    let mut c = Raw::connect(&fx.dir).await;
    c.startup("agent", 0, &[]).await;
    assert!(error_of(&c.query("LISTEN jobs").await).is_none());
    // Another session (straight to the server) notifies; the client sends nothing meanwhile.
    pg.psql_ok("appdb", "NOTIFY jobs, 'hello'");
    let m = c.recv().await.expect("a notification");
    assert_eq!(m.tag, b'A', "{m:?}");
    let text = String::from_utf8_lossy(&m.body[4..]).into_owned();
    assert!(text.starts_with("jobs\0hello\0"), "{text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_request_cancels_pg_sleep_through_the_proxy() {
    let Some((pg, pw)) = cluster(APP_PASSWORD) else { return };
    let fx = start_proxy(&policy(&format!("127.0.0.1:{}", pg.port), &creds_file(&pw), RULES)).await;
    let mut c = Raw::connect(&fx.dir).await;
    let hello = c.startup("agent", 0, &[]).await;
    let key = hello.iter().find(|m| m.tag == b'K').expect("BackendKeyData");
    let pid = u32::from_be_bytes(key.body[0..4].try_into().unwrap());
    let secret = key.body[4..].to_vec();
    let backend = rows(&c.query("SELECT pg_backend_pid()").await);
    assert_ne!(backend, [pid.to_string()], "the client must not see the server's key");
    assert_eq!(fx.proxy.cancel_keys().len(), 1);

    let mut q = Vec::new();
    wire::Query { sql: "SELECT pg_sleep(30)" }.encode(&mut q);
    c.send(&q).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut cancel = Vec::new();
    wire::Frontend::CancelRequest(wire::CancelRequest { pid, secret: &secret }).encode(&mut cancel);
    // A wrong secret is not forwarded.
    let mut wrong = cancel.clone();
    *wrong.last_mut().unwrap() ^= 0xff;
    let mut w = Raw::connect(&fx.dir).await;
    w.send(&wrong).await;
    assert!(w.recv().await.is_none());
    let started = std::time::Instant::now();
    let mut k = Raw::connect(&fx.dir).await;
    k.send(&cancel).await;
    assert!(k.recv().await.is_none(), "the proxy answers a cancel by closing");
    let msgs = c.until_ready().await;
    assert_eq!(error_of(&msgs).and_then(|e| e.code()).as_deref(), Some("57014"), "{msgs:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let cancels: Vec<_> = fx.events.all().into_iter().filter(|e| e.kind == DbEventKind::Cancel).collect();
    assert_eq!(cancels.len(), 2);
    assert!(cancels.iter().any(|e| e.error.is_none()) && cancels.iter().any(|e| e.error.is_some()));
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_down_gives_an_error_response() {
    let Some(bin) = common::pg::find_bin() else {
        common::pg::skip::<()>("no Postgres client binaries");
        return;
    };
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let pw = temp_dir("pw").join("password");
    std::fs::write(&pw, "x").unwrap();
    let fx = start_proxy(&policy(&format!("127.0.0.1:{port}"), &creds_file(&pw), RULES)).await;
    let out = psql(&bin, &fx.dir, "agent", "", &["SELECT 1"], "").await;
    assert!(!out.ok);
    assert!(out.stderr.contains("cannot connect to db service appdb"), "{}", out.stderr);
    let mut c = Raw::connect(&fx.dir).await;
    let msgs = c.startup("agent", 0, &[]).await;
    let e = error_of(&msgs).expect("an ErrorResponse");
    assert_eq!((e.code().as_deref(), e.severity().as_deref()), (Some("08001"), Some("FATAL")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connection_rules_refuse_before_any_upstream_contact() {
    // The upstream is a listener that only counts connections.
    let (port, contacts) = counting_upstream().await;
    let pw = temp_dir("pw").join("password");
    std::fs::write(&pw, "x").unwrap();
    let fx = start_proxy(&policy(&format!("127.0.0.1:{port}"), &creds_file(&pw), RULES)).await;
    for (user, extra, rule) in [
        ("intruder", vec![], DEFAULT_DENY_CONNECTION),
        ("agent", vec![("replication", "database")], REPLICATION_REFUSED),
    ] {
        let mut c = Raw::connect(&fx.dir).await;
        let msgs = c.startup(user, 0, &extra).await;
        let e = error_of(&msgs).unwrap_or_else(|| panic!("{user}: {msgs:?}"));
        assert_eq!((e.code().as_deref(), e.severity().as_deref()), (Some("28000"), Some("FATAL")));
        assert!(e.message().unwrap().contains(rule), "{:?}", e.message());
        assert!(c.recv().await.is_none());
    }
    // Another database than the rule names.
    let mut c = Raw::connect(&fx.dir).await;
    let mut out = Vec::new();
    wire::Frontend::Startup(wire::Startup {
        major: 3,
        minor: 0,
        params: vec![("user", "agent"), ("database", "postgres")],
    })
    .encode(&mut out);
    c.send(&out).await;
    let msgs = c.until_ready().await;
    assert_eq!(error_of(&msgs).and_then(|e| e.code()).as_deref(), Some("28000"));
    assert_eq!(contacts.load(std::sync::atomic::Ordering::SeqCst), 0, "upstream was contacted");
    assert_eq!(fx.events.all().iter().filter(|e| e.kind == DbEventKind::ConnectBlocked).count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_bytes_get_an_error_and_leave_other_sessions_alone() {
    let Some((pg, pw)) = cluster(APP_PASSWORD) else { return };
    let fx = start_proxy(&policy(&format!("127.0.0.1:{}", pg.port), &creds_file(&pw), RULES)).await;
    let mut good = Raw::connect(&fx.dir).await;
    good.startup("agent", 0, &[]).await;

    // Garbage as a startup message: a length over the startup limit.
    let mut c = Raw::connect(&fx.dir).await;
    c.send(&[0xff, 0xff, 0xff, 0xff, 0, 3, 0, 0]).await;
    let e = c.recv().await.expect("an error");
    assert_eq!(e.code().as_deref(), Some("08P01"), "{e:?}");
    assert!(c.recv().await.is_none());

    // After login: a Query declaring 2 GiB, an unknown tag, and a malformed Bind.
    for bytes in [&b"Q\x7f\xff\xff\xf0SELECT"[..], b"z\0\0\0\x04", b"B\0\0\0\x06\0\0"] {
        let mut c = Raw::connect(&fx.dir).await;
        c.startup("agent", 0, &[]).await;
        c.send(bytes).await;
        let e = c.recv().await.expect("an error");
        assert_eq!(e.severity().as_deref(), Some("FATAL"), "{e:?}");
        assert!(matches!(e.code().as_deref(), Some("54000" | "08P01")), "{e:?}");
        assert!(e.message().unwrap().contains("invalid message from the client"), "{e:?}");
        assert!(c.recv().await.is_none());
    }

    // Protocol 3.2 with an unknown option is negotiated down to 3.0 and works.
    let mut c = Raw::connect(&fx.dir).await;
    let hello = c.startup("agent", 2, &[("_pq_.something", "on")]).await;
    assert_eq!(hello[0].tag, b'v', "{hello:?}");
    assert_eq!(rows(&c.query("SELECT 41 + 1").await), ["42"]);

    // FunctionCall is refused on this service; the session goes on.
    let mut out = Vec::new();
    FunctionCall { oid: 1, arg_formats: vec![], args: vec![], result_format: 0 }.encode(&mut out);
    c.send(&out).await;
    let msgs = c.until_ready().await;
    let e = error_of(&msgs).expect("refused");
    assert!(e.message().unwrap().contains(FUNCTION_CALL_DISABLED), "{e:?}");
    assert_eq!(rows(&c.query("SELECT 1").await), ["1"]);

    // The first session never noticed.
    assert_eq!(rows(&good.query("SELECT count(*) FROM items").await), ["2"]);
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_non_ascii_upstream_password_is_saslprepped_as_the_server_stored_it() {
    let Some((pg, _)) = cluster(APP_PASSWORD) else { return };
    // The server SASLprep'd it into its verifier: NO-BREAK SPACE became a space and ROMAN
    // NUMERAL FOUR "IV"; the bytes as written would not log in.
    let password = "p\u{00e4}ss\u{00a0}w\u{2163}rd";
    pg.psql_ok("postgres", &format!("CREATE ROLE intl LOGIN PASSWORD '{password}'"));
    let pw = temp_dir("pw").join("password");
    std::fs::write(&pw, password).unwrap();
    let creds = format!("{{user: intl, password_file: '{}'}}", pw.display());
    let fx = start_proxy(&policy(&format!("127.0.0.1:{}", pg.port), &creds, RULES)).await;
    let mut c = Raw::connect(&fx.dir).await;
    let hello = c.startup("agent", 0, &[]).await;
    assert!(error_of(&hello).is_none(), "{:?}", error_of(&hello).and_then(|e| e.message()));
    assert_eq!(rows(&c.query("SELECT current_user").await), ["intl"]);
}
