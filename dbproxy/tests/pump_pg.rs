//! How the session pumps batch, against a real cluster: many messages in one read (each still
//! decided on its own, a refusal in the middle answered in its place), a message split
//! across many reads, messages larger than a read in both directions, one over the limit;
//! the classification memo, which must never carry a decision across a rules change; and
//! sessions handed to a [`SessionPool`]'s threads.

mod common;

use common::{
    pg::{APP_PASSWORD, PgCluster},
    proxy::{ProxyFixture, Raw, error_of, rows, start_proxy, temp_dir},
};
use dbproxy::{
    ClientCtx, DbProxy, Served,
    classify::MAX_SQL_BYTES,
    proxy::SessionPool,
    wire::{self, Bind, Execute, Parse, Query},
};
use policies::{Policy, engine::db::DbRules, load_policy};
use std::sync::Arc;

const SCHEMA: &str = "
CREATE TABLE items (id int PRIMARY KEY, name text);
INSERT INTO items VALUES (1, 'a'), (2, 'b');
ALTER TABLE items OWNER TO app;
";

const ALLOW_DELETE: &str = "
database_connection_rules:
  - {name: agent-connect, db_service: appdb, decision: allow}
database_rules:
  - {name: reads, db_service: appdb, operations: [READ], decision: allow}
  - {name: deletes, db_service: appdb, operations: [DELETE], decision: allow}
";

const DENY_DELETE: &str = "
database_connection_rules:
  - {name: agent-connect, db_service: appdb, decision: allow}
database_rules:
  - {name: reads, db_service: appdb, operations: [READ], decision: allow}
  - {name: no-delete, db_service: appdb, operations: [DELETE], decision: deny}
";

/// The cluster with the schema, and the policy text for it with `rules`.
fn setup(rules: &str) -> Option<(PgCluster, String)> {
    let pg = PgCluster::start_or_skip()?;
    pg.psql_ok("appdb", SCHEMA);
    let pw = temp_dir("pw").join("password");
    std::fs::write(&pw, APP_PASSWORD).unwrap();
    let yaml = format!(
        "db_services:\n  appdb: {{family: postgres, upstream: '127.0.0.1:{}', tls_mode: terminate_plaintext_upstream, credentials: {{user: app, password_file: '{}'}}}}\n{rules}",
        pg.port,
        pw.display()
    );
    Some((pg, yaml))
}

/// A logged-in raw client of a proxy with `rules` in front of a fresh cluster.
async fn session(rules: &str) -> Option<(PgCluster, ProxyFixture, Raw)> {
    let (pg, yaml) = setup(rules)?;
    let fx = start_proxy(&yaml).await;
    let mut c = Raw::connect(&fx.dir).await;
    c.startup("agent", 0, &[]).await;
    Some((pg, fx, c))
}

fn query(sql: &str, out: &mut Vec<u8>) {
    Query { sql }.encode(out);
}

/// Messages up to and including the `n`th ReadyForQuery.
async fn until_ready_n(c: &mut Raw, n: usize) -> Vec<Vec<common::proxy::Msg>> {
    let mut batches = Vec::new();
    for _ in 0..n {
        batches.push(c.until_ready().await);
    }
    batches
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_messages_in_one_read_are_each_decided_and_answered_in_order() {
    let Some((pg, _fx, mut c)) = session(DENY_DELETE).await else { return };

    // 300 simple Queries in one write, a refused one in the middle of them.
    let mut out = Vec::new();
    for i in 0..300 {
        if i == 150 {
            query("DELETE FROM items", &mut out);
        } else {
            query(&format!("SELECT {i}"), &mut out);
        }
    }
    c.send(&out).await;
    let batches = until_ready_n(&mut c, 300).await;
    for (i, msgs) in batches.iter().enumerate() {
        if i == 150 {
            let e = error_of(msgs).expect("refused");
            assert_eq!(e.code().as_deref(), Some("42501"), "{e:?}");
            assert!(e.message().unwrap().contains("no-delete"), "{e:?}");
        } else {
            assert_eq!(rows(msgs), [i.to_string()], "query {i}");
        }
    }

    // 100 extended runs (Parse, Bind, Execute, Sync) in one write.
    let mut out = Vec::new();
    for i in 0..100 {
        let sql = format!("SELECT {i} + $1::int");
        Parse { name: "", sql: &sql, param_types: vec![] }.encode(&mut out);
        let one: &[u8] = b"1";
        Bind {
            portal: "",
            statement: "",
            param_formats: vec![],
            params: vec![Some(one)],
            result_formats: vec![],
        }
        .encode(&mut out);
        Execute { portal: "", max_rows: 0 }.encode(&mut out);
        wire::Frontend::Sync.encode(&mut out);
    }
    c.send(&out).await;
    for (i, msgs) in until_ready_n(&mut c, 100).await.iter().enumerate() {
        assert_eq!(rows(msgs), [(i + 1).to_string()], "run {i}: {msgs:?}");
    }
    assert_eq!(pg.psql_ok("appdb", "SELECT count(*) FROM items").trim(), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_split_across_reads_is_decided_once_whole() {
    let Some((pg, _fx, mut c)) = session(DENY_DELETE).await else { return };

    // One byte per write, a pause between writes so each is its own read.
    let mut out = Vec::new();
    query("SELECT 'split' || 1", &mut out);
    for b in &out {
        c.send(std::slice::from_ref(b)).await;
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert_eq!(rows(&c.until_ready().await), ["split1"]);

    // A batch cut at boundaries that fall inside headers and bodies alike; the refused
    // DELETE is split too.
    let mut out = Vec::new();
    query("SELECT 1", &mut out);
    query("DELETE FROM items WHERE id = 1", &mut out);
    query("SELECT 3", &mut out);
    for chunk in out.chunks(7) {
        c.send(chunk).await;
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let batches = until_ready_n(&mut c, 3).await;
    assert_eq!(rows(&batches[0]), ["1"]);
    assert_eq!(error_of(&batches[1]).and_then(|e| e.code()).as_deref(), Some("42501"));
    assert_eq!(rows(&batches[2]), ["3"]);
    assert_eq!(pg.psql_ok("appdb", "SELECT count(*) FROM items").trim(), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn huge_messages_pass_both_ways_and_one_over_the_limit_is_refused() {
    let Some((_pg, _fx, mut c)) = session(DENY_DELETE).await else { return };

    // A statement of ~900 KB (many reads), then a 6 MB row back (many reads the other way).
    let literal = "x".repeat(900_000);
    let msgs = c.query(&format!("SELECT length('{literal}')")).await;
    assert_eq!(rows(&msgs), ["900000"]);
    let msgs = c.query("SELECT repeat('y', 6000000)").await;
    let row = rows(&msgs);
    assert_eq!(row.len(), 1);
    assert!(row[0].len() == 6_000_000 && row[0].bytes().all(|b| b == b'y'));
    assert_eq!(rows(&c.query("SELECT 'after'").await), ["after"]);

    // Over the classifier's limit: refused as soon as its header is read.
    let mut out = Vec::new();
    query(&format!("SELECT '{}'", "z".repeat(MAX_SQL_BYTES)), &mut out);
    c.send(&out[..64 * 1024]).await;
    let e = c.recv().await.expect("an error");
    assert_eq!((e.severity().as_deref(), e.code().as_deref()), (Some("FATAL"), Some("54000")), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_memoised_text_is_decided_again_on_the_rules_in_force() {
    let Some((pg, yaml)) = setup(ALLOW_DELETE) else { return };
    let fx = start_proxy(&yaml).await;
    let mut c = Raw::connect(&fx.dir).await;
    c.startup("agent", 0, &[]).await;
    let sql = "DELETE FROM items WHERE id = 42";
    // Seen often enough to be memoised, and let through each time.
    for _ in 0..4 {
        assert!(error_of(&c.query(sql).await).is_none());
    }
    let policy: Policy = load_policy(&yaml.replace(ALLOW_DELETE, DENY_DELETE), "test.yaml").unwrap();
    fx.proxy.set_rules(Arc::new(DbRules::new(&policy)));
    let e = c.query(sql).await;
    let e = error_of(&e).expect("refused under the new rules");
    assert_eq!(e.code().as_deref(), Some("42501"));
    assert!(e.message().unwrap().contains("no-delete"), "{e:?}");
    // A text that differs only in a literal is its own entry, decided the same way.
    let e = c.query("DELETE FROM items WHERE id = 1").await;
    assert_eq!(error_of(&e).and_then(|e| e.code()).as_deref(), Some("42501"));
    assert_eq!(pg.psql_ok("appdb", "SELECT count(*) FROM items").trim(), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_handed_to_a_pool_run_on_its_threads_until_it_is_dropped() {
    let Some((_pg, yaml)) = setup(DENY_DELETE) else { return };
    // The fixture's proxy, served here from a listener of our own.
    let fx = start_proxy(&yaml).await;
    let proxy: Arc<DbProxy> = fx.proxy.clone();
    let dir = temp_dir("pool");
    let listener = tokio::net::UnixListener::bind(dir.join(".s.PGSQL.5432")).unwrap();
    let pool = SessionPool::new(2).unwrap();
    let mut clients = Vec::new();
    let mut served = Vec::new();
    for _ in 0..4 {
        let connect = Raw::connect(&dir);
        let (accepted, client) = tokio::join!(listener.accept(), connect);
        let stream = accepted.unwrap().0.into_std().unwrap();
        let open = move || tokio::net::UnixStream::from_std(stream);
        served.push(pool.serve(proxy.clone(), open, ClientCtx::default()));
        clients.push(client);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.startup("agent", 0, &[]).await;
        assert_eq!(rows(&c.query(&format!("SELECT {i}")).await), [i.to_string()]);
        let e = c.query("DELETE FROM items").await;
        assert_eq!(error_of(&e).and_then(|e| e.code()).as_deref(), Some("42501"));
    }
    // A client that leaves ends its session normally.
    let mut out = Vec::new();
    wire::Frontend::Terminate.encode(&mut out);
    clients[0].send(&out).await;
    let first = served.remove(0).await.unwrap();
    assert!(matches!(first, Ok(Served::Session(_))), "{first:?}");
    // Dropping the pool ends the rest: their clients see the connection close.
    drop(pool);
    for c in &mut clients[1..] {
        while c.recv().await.is_some() {}
    }
    let _ = std::fs::remove_dir_all(&dir);
}
