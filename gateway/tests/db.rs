//! The database proxy in the gateway, end to end as root against a real Postgres cluster (the
//! installed server binaries, a throwaway data dir): psql inside the sandbox reaches the
//! service through the per-session socket (`PGHOST=/run/agentsh/db/<service>`) and through a
//! plain TCP connect to the upstream, which the funnel hands to the proxy; reads pass, a
//! refused statement gets 42501 naming the rule and never runs; the agent holds no password;
//! TLS from the agent is terminated with the session CA and verifies under it; a host process
//! cannot use the session's socket; an unresolvable upstream under `enforce` refuses the
//! session.

mod common;

#[path = "../../dbproxy/tests/common/pg.rs"]
#[allow(dead_code)]
mod pg;

use common::{Daemon, ExecResult, Session, TempDir, dns::FakeDns};
use pg::PgCluster;

const SCHEMA: &str = "
CREATE TABLE items (id int PRIMARY KEY, name text);
INSERT INTO items VALUES (1, 'a'), (2, 'b');
ALTER TABLE items OWNER TO app;
";

struct World {
    pg: PgCluster,
    _dns: FakeDns,
    _pw: TempDir,
    daemon: Daemon,
    session: Session,
}

fn world() -> Option<World> {
    let pg = PgCluster::start_or_skip()?;
    pg.psql_ok("appdb", SCHEMA);
    let pw = TempDir::new("pw");
    let file = pw.write("password", &format!("{}\n", pg::APP_PASSWORD));
    let policy = format!(
        "version: 1\nname: db\n\
         db_services:\n  appdb: {{family: postgres, upstream: '127.0.0.1:{port}', tls_mode: terminate_plaintext_upstream, \
         credentials: {{user: app, password_file: '{file}'}}}}\n\
         database_connection_rules:\n  - {{name: agent-connect, db_service: appdb, database: appdb, decision: allow}}\n\
         database_rules:\n\
         \x20 - {{name: reads, db_service: appdb, operations: [READ], decision: allow}}\n\
         \x20 - {{name: no-delete, db_service: appdb, operations: [DELETE], decision: deny}}\n",
        port = pg.port,
        file = file.display(),
    );
    let dns = FakeDns::start();
    let daemon = Daemon::start_with_config(&dns.server_config("synthetic"));
    let session = daemon.session(&policy);
    Some(World { pg, _dns: dns, _pw: pw, daemon, session })
}

impl World {
    fn psql(&self, conninfo: &str, sql: &str) -> ExecResult {
        self.daemon.exec(
            &self.session,
            &["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", conninfo, "-c", sql],
        )
    }

    fn count(&self) -> String {
        self.pg.psql_ok("appdb", "SELECT count(*) FROM items").trim().to_string()
    }
}

const SOCKET: &str = "host=/run/agentsh/db/appdb user=agent dbname=appdb";

#[test]
fn psql_on_the_session_socket_reads_and_a_refused_delete_never_runs() {
    if !common::privileged("psql_on_the_session_socket_reads_and_a_refused_delete_never_runs") {
        return;
    }
    let Some(w) = world() else { return };
    let r = w.psql(SOCKET, "SELECT name FROM items ORDER BY id");
    r.assert_exit(0);
    assert_eq!(r.stdout, "a\nb\n");
    let e = r.one("db_connect");
    assert_eq!((e.rule(), e.str("service")), ("agent-connect", "appdb"));
    let s = r.one("db_statement");
    assert_eq!((s.rule(), s.str("statement")), ("reads", "SELECT name FROM items ORDER BY id"));

    let r = w.psql(SOCKET, "DELETE FROM items");
    assert_ne!(r.exit_code, 0);
    assert!(r.stderr.contains("no-delete"), "the refusal names the rule: {}", r.stderr);
    assert_eq!(w.count(), "2", "the refused statement never ran");
    let b = r.one("db_statement_blocked");
    assert_eq!((b.rule(), b.decision()), ("no-delete", "deny"));
}

#[test]
fn a_tcp_connect_to_the_upstream_is_handed_to_the_proxy_with_tls_from_the_session_ca() {
    if !common::privileged(
        "a_tcp_connect_to_the_upstream_is_handed_to_the_proxy_with_tls_from_the_session_ca",
    ) {
        return;
    }
    let Some(w) = world() else { return };
    // verify-full against the session CA (PGSSLROOTCERT comes from the gateway) and no
    // password: the proxy terminates TLS and logs in upstream with the injected credentials.
    let tcp = format!("host=127.0.0.1 port={} user=agent dbname=appdb sslmode=verify-full", w.pg.port);
    let r = w.psql(&tcp, "SELECT count(*) FROM items");
    r.assert_exit(0);
    assert_eq!(r.stdout, "2\n");
    let c = r.one("net_connect");
    assert_eq!(c.str("intercepted"), "db:appdb");
    let r = w.psql(&tcp, "DELETE FROM items WHERE id = 1");
    assert_ne!(r.exit_code, 0);
    assert!(r.stderr.contains("no-delete"), "{}", r.stderr);
    assert_eq!(w.count(), "2");
}

#[test]
fn a_host_process_cannot_use_the_sessions_socket() {
    if !common::privileged("a_host_process_cannot_use_the_sessions_socket") {
        return;
    }
    let Some(w) = world() else { return };
    let dir = w.daemon.state.path().join("sessions").join(&w.session.id).join("db").join("appdb");
    assert!(dir.join(".s.PGSQL.5432").exists());
    // A host process that is not the session's: psql as root (the state dir is closed to
    // everyone else), outside the session cgroup and not the daemon (through a short link: the
    // real path is longer than sun_path allows).
    let link = std::path::PathBuf::from(format!("/var/tmp/agx-{}", std::process::id()));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    let out = std::process::Command::new("psql")
        .args(["-X", "-A", "-t"])
        .arg(format!("host={} user=agent dbname=appdb", link.display()))
        .args(["-c", "SELECT 1"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&link);
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("closed the connection") || stderr.contains("terminated abnormally"), "{stderr}");
    let audit = std::fs::read_to_string(w.daemon.state.path().join("audit.jsonl")).unwrap();
    assert!(
        audit.lines().any(|l| l.contains("\"listener_auth_fail\"") && l.contains(&w.session.id)),
        "refused and audited: {audit}"
    );
    assert!(!audit.contains("\"db_connect\""), "the proxy never served it");
}

#[test]
fn enforce_refuses_a_session_whose_upstream_does_not_resolve() {
    if !common::privileged("enforce_refuses_a_session_whose_upstream_does_not_resolve") {
        return;
    }
    let dns = FakeDns::start();
    let daemon = Daemon::start_with_config(&dns.server_config("synthetic"));
    let stderr = daemon.refused_session(
        "version: 1\nname: db\npolicies:\n  db: {unavoidability: enforce}\n\
         db_services:\n  appdb: {family: postgres, upstream: 'db.nowhere.example:5432', tls_mode: terminate_plaintext_upstream}\n",
    );
    assert!(stderr.contains("db_services.appdb") && stderr.contains("db.nowhere.example"), "{stderr}");
}

/// Every statement of the classification corpus (`dbproxy/testdata/classify_corpus.sql`) that
/// is not a pure read, sent by psql inside the sandbox under a read-only policy: each one is
/// refused with 42501, and the database's state fingerprint (relations, functions, roles, large
/// objects, and the rows of `items`) is unchanged.
#[test]
fn every_non_read_statement_of_the_corpus_is_refused_and_changes_nothing() {
    if !common::privileged("every_non_read_statement_of_the_corpus_is_refused_and_changes_nothing") {
        return;
    }
    let Some(w) = world() else { return };
    let corpus = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dbproxy/testdata/classify_corpus.sql"
    ))
    .unwrap();
    let mut statements = Vec::new();
    for block in corpus.split("\n====\n") {
        let expect = block.lines().find_map(|l| l.strip_prefix("-- expect: ")).unwrap_or("");
        let sql: String =
            block.lines().filter(|l| !l.starts_with("-- expect: ")).collect::<Vec<_>>().join("\n");
        let sql = sql.trim();
        if sql.is_empty() || expect.split(" ; ").all(|e| e.starts_with("read")) {
            continue;
        }
        statements.push(sql.to_string());
    }
    assert!(statements.len() > 50, "the corpus has its writes: {}", statements.len());
    let fingerprint = || {
        w.pg.psql_ok(
            "appdb",
            "SELECT md5(string_agg(x, '|' ORDER BY x)) FROM ( \
               SELECT 'rel:' || c.oid::regclass::text || ':' || c.relkind::text FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') \
               UNION ALL SELECT 'fn:' || p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace \
               UNION ALL SELECT 'role:' || rolname || ':' || rolsuper::text FROM pg_roles \
               UNION ALL SELECT 'lo:' || count(*) FROM pg_largeobject_metadata \
               UNION ALL SELECT 'items:' || coalesce(md5(string_agg(i::text, ',' ORDER BY id)), '') FROM items i \
             ) f(x)",
        )
    };
    let before = fingerprint();
    let mut argv: Vec<&str> = vec!["psql", "-X", "-q", "-A", "-t", SOCKET];
    for s in &statements {
        argv.push("-c");
        argv.push(s);
    }
    let r = w.daemon.exec(&w.session, &argv);
    let refused = r.stderr.matches("ERROR:  denied by agentsh policy").count();
    assert_eq!(refused, statements.len(), "every one refused with 42501: {}", r.stderr);
    assert_eq!(r.of("db_statement_blocked").len(), statements.len());
    assert!(r.of("db_statement").is_empty(), "none let through: {:#?}", r.of("db_statement"));
    assert_eq!(fingerprint(), before, "the database is unchanged");
}
