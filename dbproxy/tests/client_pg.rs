//! The proxy end to end with tokio-postgres, a client implementation independent of libpq and
//! of this crate's codec: simple and extended queries (refusals included), COPY both ways,
//! cancel, NOTIFY to an idle client, and TLS on both legs (the client's terminated by the
//! proxy with a test CA's leaf; upstream to a cluster with `ssl=on`, verified against that CA).

mod common;

use std::time::Duration;

use common::{
    pg::{APP_PASSWORD, PgCluster},
    proxy::{ProxyFixture, start_proxy, start_proxy_with, temp_dir},
    tls::{RustlsConnect, TestCa},
};
use dbproxy::ProxyOptions;
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use rustls::pki_types::ServerName;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, SimpleQueryMessage, error::SqlState};

const SCHEMA: &str = "
CREATE TABLE items (id int PRIMARY KEY, name text);
INSERT INTO items VALUES (1, 'a'), (2, 'b');
ALTER TABLE items OWNER TO app;
";

const RULES: &str = "
database_connection_rules:
  - {name: agent-connect, db_service: appdb, decision: allow}
  - {name: agent-cancel, db_service: appdb, match_kind: cancel, decision: allow}
database_rules:
  - {name: reads, db_service: appdb, operations: [READ], decision: allow}
  - {name: tx, db_service: appdb, operations: [transaction], decision: allow}
  - {name: listen, db_service: appdb, operations: [LISTEN_NOTIFY], decision: allow}
  - {name: copy-items, db_service: appdb, operations: [EXPORT, LOAD], objects: [items], decision: allow}
  - {name: no-delete, db_service: appdb, operations: [DELETE], decision: deny}
";

fn policy(port: u16, pw: &std::path::Path, service_extra: &str) -> String {
    format!(
        "db_services:\n  appdb: {{family: postgres, upstream: '127.0.0.1:{port}', credentials: {{user: app, password_file: '{}'}}, {service_extra}}}\n{RULES}",
        pw.display()
    )
}

const PLAINTEXT: &str = "tls_mode: terminate_plaintext_upstream";

fn password_file() -> std::path::PathBuf {
    let pw = temp_dir("pw").join("password");
    std::fs::write(&pw, APP_PASSWORD).unwrap();
    pw
}

async fn setup() -> Option<(PgCluster, ProxyFixture)> {
    let pg = PgCluster::start_or_skip()?;
    pg.psql_ok("appdb", SCHEMA);
    let fx = start_proxy(&policy(pg.port, &password_file(), PLAINTEXT)).await;
    Some((pg, fx))
}

fn config(fx: &ProxyFixture) -> Config {
    let mut c = Config::new();
    c.host_path(&fx.dir).port(5432).user("agent").dbname("appdb").password("ignored-by-the-proxy");
    c
}

/// Connects over the proxy socket; the connection task forwards async messages to `notes`.
async fn connect(fx: &ProxyFixture) -> (Client, tokio::sync::mpsc::UnboundedReceiver<AsyncMessage>) {
    let (client, mut conn) = config(fx).connect(NoTls).await.expect("connects through the proxy");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            let _ = tx.send(m);
        }
    });
    (client, rx)
}

fn assert_refused(e: &tokio_postgres::Error, rule: &str) {
    let db = e.as_db_error().unwrap_or_else(|| panic!("not a server error: {e}"));
    assert_eq!(db.code(), &SqlState::INSUFFICIENT_PRIVILEGE, "{db:?}");
    assert!(db.message().contains(rule), "{db:?}");
}

fn count(pg: &PgCluster) -> String {
    pg.psql_ok("appdb", "SELECT count(*) FROM items").trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simple_and_extended_queries_with_refusals() {
    let Some((pg, fx)) = setup().await else { return };
    let (client, _notes) = connect(&fx).await;

    // Simple protocol.
    let msgs = client.simple_query("SELECT name FROM items ORDER BY id").await.unwrap();
    let names: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_refused(&client.simple_query("DELETE FROM items").await.unwrap_err(), "no-delete");

    // Extended protocol: a named statement prepared once and run with binary parameters.
    let stmt = client.prepare("SELECT name FROM items WHERE id = $1").await.unwrap();
    for (id, name) in [(1i32, "a"), (2, "b")] {
        let row = client.query_one(&stmt, &[&id]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), name);
    }
    assert_refused(
        &client.execute("DELETE FROM items WHERE id = $1", &[&1i32]).await.unwrap_err(),
        "no-delete",
    );
    let e = client.execute("UPDATE items SET name = $1", &[&"x"]).await.unwrap_err();
    assert_refused(&e, "default-deny-statement");

    // A transaction: a refusal inside it terminates the session (deny_mode_in_tx default).
    client.batch_execute("BEGIN").await.unwrap();
    assert_eq!(client.query_one(&stmt, &[&1i32]).await.unwrap().get::<_, String>(0), "a");
    let e = client.execute("DELETE FROM items", &[]).await.unwrap_err();
    assert_refused(&e, "no-delete");
    assert!(client.simple_query("SELECT 1").await.is_err(), "the session was closed");
    assert_eq!(count(&pg), "2");
    assert_eq!(pg.psql_ok("appdb", "SELECT string_agg(name, ',' ORDER BY id) FROM items").trim(), "a,b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copy_out_and_in() {
    let Some((pg, fx)) = setup().await else { return };
    let (client, _notes) = connect(&fx).await;
    let out: Vec<_> = client.copy_out("COPY items TO STDOUT").await.unwrap().try_collect().await.unwrap();
    let text: Vec<u8> = out.iter().flat_map(|b| b.to_vec()).collect();
    assert_eq!(text, b"1\ta\n2\tb\n");

    let sink = client.copy_in("COPY items FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"3\tc\n4\td\n")).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    assert_eq!(count(&pg), "4");
    // COPY of another table is not covered by the rule.
    let e = client.copy_in::<_, bytes::Bytes>("COPY pg_class FROM STDIN").await.err().expect("refused");
    assert_refused(&e, "default-deny-statement");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_and_notify() {
    let Some((pg, fx)) = setup().await else { return };
    let (client, mut notes) = connect(&fx).await;

    client.batch_execute("LISTEN jobs").await.unwrap();
    pg.psql_ok("appdb", "NOTIFY jobs, 'hello'");
    let note =
        tokio::time::timeout(Duration::from_secs(10), notes.recv()).await.expect("notified while idle");
    match note {
        Some(AsyncMessage::Notification(n)) => assert_eq!((n.channel(), n.payload()), ("jobs", "hello")),
        other => panic!("{other:?}"),
    }

    // tokio-postgres cancels through the same socket, with the key the proxy issued.
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    token.cancel_query(NoTls).await.expect("cancel sent");
    let r = tokio::time::timeout(Duration::from_secs(10), sleeper).await.expect("cancelled in time").unwrap();
    assert_eq!(r.unwrap_err().code(), Some(&SqlState::QUERY_CANCELED));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_on_both_legs_with_a_test_ca() {
    let ca = TestCa::new("agentsh test CA");
    let Some(pg) = PgCluster::start_tls_or_skip(&ca.leaf(&["127.0.0.1"]).tls) else { return };
    pg.psql_ok("appdb", SCHEMA);
    let pw = password_file();
    let opts = ProxyOptions {
        client_tls: Some(ca.server_config(&["appdb.internal"])),
        extra_roots: vec![ca.der.clone()],
        ..ProxyOptions::default()
    };
    let upstream_tls = "tls_mode: terminate_reissue, sslmode: verify-full";
    let fx = start_proxy_with(&policy(pg.port, &pw, upstream_tls), opts.clone()).await;

    let tls = |config| RustlsConnect { config, name: ServerName::try_from("appdb.internal").unwrap() };
    let socket = || tokio::net::UnixStream::connect(fx.dir.join(".s.PGSQL.5432"));
    let mut cfg = config(&fx);
    cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
    let (client, conn) = cfg.connect_raw(socket().await.unwrap(), tls(ca.client_config())).await.unwrap();
    tokio::spawn(conn);
    // The upstream leg is TLS too: the server sees its own session encrypted.
    let row =
        client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap();
    assert!(row.get::<_, bool>(0), "the upstream session is not encrypted");
    assert_refused(&client.simple_query("DELETE FROM items").await.unwrap_err(), "no-delete");

    // A client that trusts another CA does not accept the proxy's certificate.
    let other = TestCa::new("someone else");
    assert!(cfg.connect_raw(socket().await.unwrap(), tls(other.client_config())).await.is_err());

    // Without the CA among the proxy's roots, verify-full refuses the server: 08001.
    let untrusting = ProxyOptions { extra_roots: Vec::new(), ..opts };
    let fx2 = start_proxy_with(&policy(pg.port, &pw, upstream_tls), untrusting).await;
    let mut cfg2 = config(&fx2);
    cfg2.ssl_mode(tokio_postgres::config::SslMode::Disable);
    let e = cfg2.connect(NoTls).await.err().expect("refused");
    assert_eq!(e.code(), Some(&SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION), "{e:?}");
}
