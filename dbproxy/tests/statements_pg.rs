//! Prepared statements and statement events on a real cluster: an extended-protocol statement
//! is decided again at every Execute, so swapping the rules (a policy reload) applies to what
//! was prepared before; SQL `PREPARE`/`EXECUTE`/`DEALLOCATE` are tracked so `EXECUTE` is
//! decided on what was prepared; and every statement's event carries the digest, the redacted
//! text, Bind parameters counted but never shown, rows, duration and SQLSTATE.

mod common;

use std::sync::Arc;

use common::{
    pg::{APP_PASSWORD, PgCluster},
    proxy::{ProxyFixture, Raw, error_of, rows, start_proxy, status_of, temp_dir},
};
use dbproxy::{
    DbEvent, DbEventKind,
    classify::digest,
    proxy::{ParamSummary, StatementProtocol},
    wire::{self, Bind, Execute, Parse},
};
use policies::{engine::db::DbRules, load_policy};

const SCHEMA: &str = "
CREATE TABLE items (id int PRIMARY KEY, name text);
INSERT INTO items VALUES (1, 'a'), (2, 'b');
ALTER TABLE items OWNER TO app;
";

/// Reads and DEALLOCATE, plus the rules in `rest`.
macro_rules! rules {
    ($rest:literal) => {
        concat!(
            "
database_connection_rules:
  - {name: agent-connect, db_service: appdb, decision: allow}
database_rules:
  - {name: reads, db_service: appdb, operations: [READ], decision: allow}
  - {name: prepared, db_service: appdb, operations: [session], subtypes: [deallocate], decision: allow}
",
            $rest
        )
    };
}

const RULES: &str = rules!(
    "  - {name: edit-items, db_service: appdb, operations: [UPDATE, DELETE], objects: [items], decision: allow}\n"
);

/// The same minus the writes, and an explicit deny on deletes.
const RELOADED: &str =
    rules!("  - {name: no-delete, db_service: appdb, operations: [DELETE], decision: deny}\n");

fn policy(port: u16, pw: &std::path::Path, rules: &str) -> String {
    format!(
        "db_services:\n  appdb: {{family: postgres, upstream: '127.0.0.1:{port}', tls_mode: terminate_plaintext_upstream, credentials: {{user: app, password_file: '{}'}}}}\n{rules}",
        pw.display()
    )
}

async fn setup(rules: &str) -> Option<(PgCluster, ProxyFixture, std::path::PathBuf)> {
    let pg = PgCluster::start_or_skip()?;
    pg.psql_ok("appdb", SCHEMA);
    let pw = temp_dir("pw").join("password");
    std::fs::write(&pw, APP_PASSWORD).unwrap();
    let fx = start_proxy(&policy(pg.port, &pw, rules)).await;
    Some((pg, fx, pw))
}

fn reload(fx: &ProxyFixture, port: u16, pw: &std::path::Path, rules: &str) {
    let p = load_policy(&policy(port, pw, rules), "reloaded.yaml").unwrap();
    fx.proxy.set_rules(Arc::new(DbRules::new(&p)));
}

fn bind<'a>(statement: &'a str, params: Vec<Option<&'a [u8]>>) -> Bind<'a> {
    Bind { portal: "", statement, param_formats: vec![], params, result_formats: vec![] }
}

/// Bind + Execute + Sync of `statement` with text `params`.
async fn run(c: &mut Raw, statement: &str, params: &[&str]) -> Vec<common::proxy::Msg> {
    let mut out = Vec::new();
    bind(statement, params.iter().map(|p| Some(p.as_bytes())).collect()).encode(&mut out);
    Execute { portal: "", max_rows: 0 }.encode(&mut out);
    wire::Frontend::Sync.encode(&mut out);
    c.send(&out).await;
    c.until_ready().await
}

fn item(pg: &PgCluster, id: u32) -> String {
    pg.psql_ok("appdb", &format!("SELECT coalesce((SELECT name FROM items WHERE id = {id}), '<gone>')"))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_applies_to_statements_prepared_before_it() {
    let Some((pg, fx, pw)) = setup(RULES).await else { return };
    let mut c = Raw::connect(&fx.dir).await;
    c.startup("agent", 0, &[]).await;

    // Protocol level: Parse once, Execute before and after the reload.
    let mut out = Vec::new();
    Parse { name: "upd", sql: "UPDATE items SET name = $1 WHERE id = $2", param_types: vec![25, 23] }
        .encode(&mut out);
    wire::Frontend::Sync.encode(&mut out);
    c.send(&out).await;
    assert_eq!(status_of(&c.until_ready().await), Some(b'I'));
    let msgs = run(&mut c, "upd", &["x", "1"]).await;
    assert!(error_of(&msgs).is_none(), "{msgs:?}");
    assert_eq!(item(&pg, 1), "x");

    // SQL level: PREPARE is decided as what it prepares, and so is EXECUTE.
    assert!(error_of(&c.query("PREPARE del AS DELETE FROM items WHERE id = $1").await).is_none());
    assert!(error_of(&c.query("PREPARE one AS SELECT name FROM items WHERE id = $1").await).is_none());
    assert_eq!(rows(&c.query("EXECUTE one(2)").await), ["b"]);

    reload(&fx, pg.port, &pw, RELOADED);
    let msgs = run(&mut c, "upd", &["y", "1"]).await;
    let e = error_of(&msgs).unwrap_or_else(|| panic!("Execute after the reload ran: {msgs:?}"));
    assert_eq!(e.code().as_deref(), Some("42501"));
    assert!(e.message().unwrap().contains("default-deny-statement"), "{e:?}");
    assert_eq!(status_of(&msgs), Some(b'I'));
    assert_eq!(item(&pg, 1), "x", "the refused Execute never ran");
    let msgs = c.query("EXECUTE del(2)").await;
    assert!(error_of(&msgs).unwrap().message().unwrap().contains("no-delete"), "{msgs:?}");
    assert_eq!(item(&pg, 2), "b");
    // An EXECUTE naming the refused statement through the extended protocol, too.
    let mut out = Vec::new();
    Parse { name: "", sql: "EXECUTE del(2)", param_types: vec![] }.encode(&mut out);
    c.send(&out).await;
    let msgs = run(&mut c, "", &[]).await;
    assert!(error_of(&msgs).unwrap().message().unwrap().contains("no-delete"), "{msgs:?}");
    assert_eq!(item(&pg, 2), "b");
    // Reads prepared before still run; after DEALLOCATE, EXECUTE is unknown and refused.
    assert_eq!(rows(&c.query("EXECUTE one(1)").await), ["x"]);
    assert!(error_of(&c.query("DEALLOCATE one").await).is_none());
    let msgs = c.query("EXECUTE one(1)").await;
    assert!(error_of(&msgs).unwrap().message().unwrap().contains("default-deny-statement"));

    // The statements are still there on the server: the reload, not the server, refused them.
    reload(&fx, pg.port, &pw, RULES);
    assert!(error_of(&run(&mut c, "upd", &["z", "1"]).await).is_none());
    assert_eq!(item(&pg, 1), "z");
    assert!(error_of(&c.query("EXECUTE del(2)").await).is_none());
    assert_eq!(item(&pg, 2), "<gone>");
}

fn statements(fx: &ProxyFixture) -> Vec<DbEvent> {
    fx.events
        .all()
        .into_iter()
        .filter(|e| matches!(e.kind, DbEventKind::Statement | DbEventKind::StatementBlocked))
        .collect()
}

/// The statement events once `n` are there (each is reported before its answer is relayed).
async fn settle(fx: &ProxyFixture, n: usize) -> Vec<DbEvent> {
    for _ in 0..100 {
        let s = statements(fx);
        if s.len() >= n {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    statements(fx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statement_events_carry_digest_redacted_text_rows_duration_and_sqlstate() {
    let Some((_pg, fx, _pw)) = setup(RULES).await else { return };
    let mut c = Raw::connect(&fx.dir).await;
    c.startup("agent", 0, &[]).await;
    c.query("SELECT name FROM items WHERE name <> 'hunter2'").await;
    c.query("UPDATE items SET name = 'secret-literal' WHERE id = 1").await;
    c.query("SELECT 1 / 0").await;
    c.query("DELETE FROM orders").await;
    let mut out = Vec::new();
    Parse { name: "s", sql: "SELECT name FROM items WHERE id = $1 OR name = $2", param_types: vec![23] }
        .encode(&mut out);
    Bind {
        portal: "",
        statement: "s",
        param_formats: vec![0],
        params: vec![Some(b"2"), Some(b"bind-secret")],
        result_formats: vec![],
    }
    .encode(&mut out);
    Execute { portal: "", max_rows: 0 }.encode(&mut out);
    wire::Frontend::Sync.encode(&mut out);
    c.send(&out).await;
    assert_eq!(rows(&c.until_ready().await), ["b"]);

    let ev = settle(&fx, 5).await;
    assert_eq!(ev.len(), 5, "{ev:#?}");
    let all = format!("{ev:?}");
    for secret in ["hunter2", "secret-literal", "bind-secret"] {
        assert!(!all.contains(secret), "{secret} reached an event");
    }
    let st = |i: usize| ev[i].statement.clone().unwrap();
    let res = |i: usize| st(i).result.unwrap_or_else(|| panic!("no result: {:?}", ev[i]));

    assert_eq!(&*st(0).text, "SELECT name FROM items WHERE name <> $1");
    assert_eq!(&*st(0).digest, digest("select name from items where name <> 'other'"));
    assert_eq!(
        (res(0).rows, res(0).command.as_deref(), res(0).sqlstate.clone()),
        (Some(2), Some("SELECT"), None)
    );
    assert!(res(0).complete && res(0).duration > std::time::Duration::ZERO);

    assert_eq!(&*st(1).text, "UPDATE items SET name = $1 WHERE id = $2");
    assert_eq!((res(1).rows, res(1).command.as_deref()), (Some(1), Some("UPDATE")));

    assert_eq!(ev[2].kind, DbEventKind::Statement);
    assert_eq!(res(2).sqlstate.as_deref(), Some("22012"), "division by zero");

    assert_eq!(ev[3].kind, DbEventKind::StatementBlocked);
    assert!(st(3).result.is_none(), "a refusal never ran");

    assert_eq!(st(4).protocol, StatementProtocol::Execute);
    assert_eq!(st(4).statement_name.as_deref(), Some("s"));
    assert_eq!(st(4).params, Some(ParamSummary { count: 2, types: vec![23].into(), binary: 0, nulls: 0 }));
    assert_eq!(res(4).rows, Some(1));
    assert_eq!(ev[4].decision.as_ref().unwrap().rule, "reads");
}
