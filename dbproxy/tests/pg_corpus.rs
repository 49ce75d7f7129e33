//! The classifier's corpus is real SQL: every statement classified as a pure read runs on a
//! real Postgres (inside BEGIN … ROLLBACK, against a small schema), so the corpus is not a
//! dialect of its own. Also checks that the `app` role can log in over TCP with SCRAM.

mod common;

use common::{corpus, pg::PgCluster};

const SCHEMA: &str = "
CREATE SCHEMA app;
CREATE TABLE users (id int PRIMARY KEY, name text, email text, total numeric, created_at timestamptz DEFAULT now());
CREATE TABLE orders (id int PRIMARY KEY, user_id int, total numeric, created_at timestamptz DEFAULT now());
CREATE TABLE app.users (id int PRIMARY KEY, name text);
CREATE TABLE staging (id int, name text);
CREATE TABLE archive (LIKE users);
CREATE SCHEMA \"Mixed\";
CREATE TABLE \"Mixed\".\"CaseTable\" (id int);
INSERT INTO users (id, name, email) VALUES (1, 'alice', 'a@example.com'), (2, 'bob', NULL);
INSERT INTO orders (id, user_id, total) VALUES (10, 1, 9.5), (11, 2, 3);
";

fn is_pure_read(expect: &str) -> bool {
    expect.split(" ; ").all(|e| e == "read" || e.starts_with("read(") || e.starts_with("read/"))
}

#[test]
fn every_read_in_the_corpus_runs_on_postgres() {
    let Some(pg) = PgCluster::start_or_skip() else { return };
    pg.psql_ok("appdb", SCHEMA);
    let reads: Vec<_> = corpus::load().into_iter().filter(|c| is_pure_read(&c.expect)).collect();
    assert!(reads.len() >= 25, "only {} reads in the corpus", reads.len());
    let mut failures = Vec::new();
    for c in &reads {
        let out = pg.psql("appdb", &["BEGIN", &c.sql, "ROLLBACK"]);
        if !out.status.success() {
            failures.push(format!("{}\n  {}", c.sql, String::from_utf8_lossy(&out.stderr).trim()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} reads failed on Postgres:\n{}",
        failures.len(),
        reads.len(),
        failures.join("\n")
    );
    // The tables are unchanged (every read ran inside a rolled-back transaction anyway).
    assert_eq!(pg.psql_ok("appdb", "SELECT count(*) FROM users").trim(), "2");
}

#[test]
fn invalid_corpus_sql_is_refused_by_postgres_too() {
    let Some(pg) = PgCluster::start_or_skip() else { return };
    for c in corpus::load().into_iter().filter(|c| c.expect == "unknown/parse_error") {
        let out = pg.psql("postgres", &["BEGIN", &c.sql, "ROLLBACK"]);
        assert!(
            !out.status.success(),
            "Postgres accepted {:?}, which the classifier calls a parse error",
            c.sql
        );
    }
}

#[test]
fn app_role_logs_in_over_tcp_with_scram() {
    let Some(pg) = PgCluster::start_or_skip() else { return };
    let out = std::process::Command::new(pg.bin.join("psql"))
        .args(["-X", "-At", "-c", "SELECT current_user, current_setting('password_encryption')"])
        .arg(pg.app_tcp_conninfo())
        .output()
        .expect("psql");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "app|scram-sha-256");
    let bad = std::process::Command::new(pg.bin.join("psql"))
        .args(["-X", "-At", "-c", "SELECT 1"])
        .arg(format!("host=127.0.0.1 port={} user=app dbname=appdb password=wrong", pg.port))
        .output()
        .expect("psql");
    assert!(!bad.status.success());
}
