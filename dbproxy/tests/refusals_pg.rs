//! Every write, DDL and side-effect route of the classification corpus
//! (`testdata/classify_corpus.sql`: each statement that is not a pure read) is refused with
//! 42501 by a read-only service, through the simple protocol (this crate's client) and the
//! extended one (tokio-postgres), and the database is left exactly as it was: the state
//! fingerprint (row counts and content hashes of every table, and the catalog) is unchanged.

mod common;

use common::{
    corpus,
    pg::{APP_PASSWORD, PgCluster},
    proxy::{Raw, error_of, rows, start_proxy, status_of, temp_dir},
};
use dbproxy::DbEventKind;
use policies::model::db_ops::OperationGroup;

/// Tables the corpus names, with rows, a sequence, a function and a view.
const SCHEMA: &str = "
CREATE TABLE users (id serial PRIMARY KEY, name text, email text, created_at timestamptz DEFAULT now());
CREATE TABLE orders (id serial PRIMARY KEY, user_id int REFERENCES users, total numeric, created_at timestamptz DEFAULT now());
CREATE SCHEMA app;
CREATE TABLE app.users (id int PRIMARY KEY, name text);
INSERT INTO users (name, email) SELECT 'u' || g, 'u' || g || '@example.test' FROM generate_series(1, 20) g;
INSERT INTO orders (user_id, total) SELECT 1 + g % 20, g * 1.5 FROM generate_series(1, 50) g;
INSERT INTO app.users VALUES (1, 'x');
CREATE FUNCTION wipe() RETURNS int LANGUAGE sql AS 'DELETE FROM orders RETURNING 1';
CREATE VIEW recent AS SELECT * FROM orders ORDER BY id DESC LIMIT 5;
ALTER TABLE users OWNER TO app;
ALTER TABLE orders OWNER TO app;
ALTER SCHEMA app OWNER TO app;
ALTER TABLE app.users OWNER TO app;
ALTER FUNCTION wipe() OWNER TO app;
ALTER VIEW recent OWNER TO app;
";

const READS_ONLY: &str = "
database_connection_rules:
  - {name: agent-connect, db_service: appdb, decision: allow}
database_rules:
  - {name: reads, db_service: appdb, operations: [READ], decision: allow}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_refused_corpus_statement_leaves_the_state_fingerprint_unchanged() {
    let Some(pg) = PgCluster::start_or_skip() else { return };
    pg.psql_ok("appdb", SCHEMA);
    let pw = temp_dir("pw").join("password");
    std::fs::write(&pw, APP_PASSWORD).unwrap();
    let before = pg.fingerprint("appdb");
    assert!(
        before.contains("rows public.users 20:") && before.contains("rows public.orders 50:"),
        "{before}"
    );

    let yaml = format!(
        "db_services:\n  appdb: {{family: postgres, upstream: '127.0.0.1:{}', tls_mode: terminate_plaintext_upstream, credentials: {{user: app, password_file: '{}'}}}}\n{READS_ONLY}",
        pg.port,
        pw.display()
    );
    let fx = start_proxy(&yaml).await;
    let refused: Vec<_> = corpus::load()
        .into_iter()
        .filter(|c| dbproxy::classify(&c.sql).iter().any(|e| e.group != OperationGroup::Read))
        .collect();
    assert!(refused.len() >= 100, "only {} write/DDL/side-effect statements", refused.len());

    let mut simple = Raw::connect(&fx.dir).await;
    simple.startup("agent", 0, &[]).await;
    let mut cfg = tokio_postgres::Config::new();
    cfg.host_path(&fx.dir).port(5432).user("agent").dbname("appdb");
    let (extended, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);

    let mut failures = Vec::new();
    for c in &refused {
        let msgs = simple.query(&c.sql).await;
        match error_of(&msgs) {
            Some(e) if e.code().as_deref() == Some("42501") && status_of(&msgs) == Some(b'I') => {}
            _ => failures.push(format!("simple: {}\n  {msgs:?}", c.sql)),
        }
        match extended.execute(c.sql.as_str(), &[]).await {
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => {}
            other => failures.push(format!("extended: {}\n  {other:?}", c.sql)),
        }
    }
    assert!(failures.is_empty(), "{} not refused:\n{}", failures.len(), failures.join("\n"));
    // Both sessions are still usable, and nothing reached the server.
    // (`users` alone is app.users: the search path starts with the login role's schema.)
    assert_eq!(rows(&simple.query("SELECT count(*) FROM public.users").await), ["20"]);
    assert_eq!(extended.query_one("SELECT count(*) FROM orders", &[]).await.unwrap().get::<_, i64>(0), 50);
    assert_eq!(pg.fingerprint("appdb"), before, "a refused statement changed the database");
    // The fingerprint does see a changed row, and a changed role setting.
    pg.psql_ok("appdb", "UPDATE orders SET total = total WHERE id = 7");
    assert_eq!(pg.fingerprint("appdb"), before, "an update to the same values changes nothing");
    pg.psql_ok("appdb", "UPDATE orders SET total = total + 1 WHERE id = 7");
    let changed = pg.fingerprint("appdb");
    assert_ne!(changed, before);
    pg.psql_ok("appdb", "ALTER ROLE app SET statement_timeout = 5000");
    assert_ne!(pg.fingerprint("appdb"), changed);
    let blocked = fx.events.all().iter().filter(|e| e.kind == DbEventKind::StatementBlocked).count();
    assert_eq!(blocked, 2 * refused.len());
}
