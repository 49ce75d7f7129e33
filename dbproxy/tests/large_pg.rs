//! Values larger than any of the proxy's buffers: a 256 MiB value passes through the proxy as
//! one DataRow and as COPY data while the proxy's process grows by far less than that (the
//! message is passed on as it arrives, not held whole). Its own test binary, so the high-water
//! mark is this test's alone.

mod common;

use std::time::Duration;

use common::{
    pg::{APP_PASSWORD, PgCluster},
    proxy::{start_proxy, temp_dir},
};
use dbproxy::DbEventKind;

/// The process's peak resident memory, in KiB.
fn high_water_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_larger_than_any_buffer_streams_through() {
    let Some(pg) = PgCluster::start_or_skip() else { return };
    let pw = temp_dir("pw").join("password");
    std::fs::write(&pw, APP_PASSWORD).unwrap();
    let yaml = format!(
        "db_services:\n  appdb: {{family: postgres, upstream: '127.0.0.1:{}', tls_mode: terminate_plaintext_upstream, credentials: {{user: app, password_file: '{}'}}}}\n\
database_connection_rules:\n  - {{name: connect, db_service: appdb, decision: allow}}\n\
database_rules:\n  - {{name: reads, db_service: appdb, operations: [READ, bulk_export], decision: allow}}\n",
        pg.port,
        pw.display()
    );
    let fx = start_proxy(&yaml).await;
    let before = high_water_kib();
    for (sql, check) in [
        ("SELECT repeat('x', 256 * 1024 * 1024)", "SELECT 1"),
        ("COPY (SELECT repeat('y', 256 * 1024 * 1024)) TO STDOUT", "SELECT 2"),
    ] {
        // psql holds the value, not this process: its output goes to /dev/null.
        let mut c = tokio::process::Command::new(pg.bin.join("psql"));
        c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"]).arg(&fx.dir);
        c.args(["-p", "5432", "-U", "agent", "-d", "appdb", "-o", "/dev/null", "-c", sql, "-c", check]);
        let out =
            tokio::time::timeout(Duration::from_secs(120), c.output()).await.expect("psql ends").unwrap();
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let grown = high_water_kib().saturating_sub(before);
    assert!(grown < 64 * 1024, "the proxy's process grew by {grown} KiB passing 2 × 256 MiB");
    // Each statement was reported, the SELECT with its one row, and the session went on after
    // it (the check statement behind it ran too).
    let statements: Vec<_> =
        fx.events.all().into_iter().filter(|e| e.kind == DbEventKind::Statement).collect();
    let result = |text: &str| {
        statements
            .iter()
            .find_map(|e| {
                e.statement.as_ref().filter(|s| s.text.contains(text)).and_then(|s| s.result.clone())
            })
            .unwrap_or_else(|| panic!("no event for {text}"))
    };
    let big = result("repeat($1");
    assert_eq!((big.rows, big.complete, big.sqlstate), (Some(1), true, None));
    assert_eq!(result("SELECT $1").rows, Some(1));
}
