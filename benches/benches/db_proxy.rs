//! A simple SELECT round trip on a real throwaway cluster, direct and through the DB proxy,
//! side by side: the latency the proxy adds per statement (framing, classification, decision,
//! one more hop). Direct is libpq's usual local path (the server's Unix socket); through the
//! proxy is client → proxy Unix socket → proxy → server over loopback TCP, with SCRAM done
//! once at login. Skips (prints why) when no cluster can be started.

#[path = "../../dbproxy/tests/common/pg.rs"]
#[allow(dead_code)]
mod pg;

use std::{
    hint::black_box,
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::Path,
    sync::Arc,
};

use criterion::{Criterion, criterion_group, criterion_main};
use dbproxy::{
    DbProxy, ProxyOptions,
    proxy::ClientCtx,
    wire::{self, Direction, Phase},
};
use policies::{Policy, engine::db::DbRules, load_policy};

/// A blocking raw client: enough protocol for login without a password and simple queries.
struct Client {
    s: UnixStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(path: &Path, user: &str) -> Client {
        let mut c = Client { s: UnixStream::connect(path).expect("connect"), buf: Vec::with_capacity(4096) };
        let mut out = Vec::new();
        let params = vec![("user", user), ("database", "appdb")];
        wire::Frontend::Startup(wire::Startup { major: 3, minor: 0, params }).encode(&mut out);
        c.s.write_all(&out).unwrap();
        c.until_ready();
        c
    }

    /// Reads to ReadyForQuery; returns how many messages came.
    fn until_ready(&mut self) -> usize {
        let mut n = 0;
        loop {
            while let Some(len) = wire::check(&self.buf, Direction::Backend, Phase::Normal).unwrap() {
                let tag = self.buf[0];
                assert_ne!(
                    tag,
                    b'E',
                    "error from the server: {:?}",
                    String::from_utf8_lossy(&self.buf[..len])
                );
                self.buf.drain(..len);
                n += 1;
                if tag == b'Z' {
                    return n;
                }
            }
            let mut chunk = [0u8; 4096];
            let got = self.s.read(&mut chunk).unwrap();
            assert!(got > 0, "closed");
            self.buf.extend_from_slice(&chunk[..got]);
        }
    }

    fn query(&mut self, q: &[u8]) -> usize {
        self.s.write_all(q).unwrap();
        self.until_ready()
    }
}

fn bench(c: &mut Criterion) {
    let Some(cluster) = pg::PgCluster::start_or_skip() else { return };
    let pw = cluster.dir.join("app-password");
    std::fs::write(&pw, pg::APP_PASSWORD).unwrap();
    let yaml = format!(
        "db_services:\n  appdb: {{family: postgres, upstream: '127.0.0.1:{}', tls_mode: terminate_plaintext_upstream, credentials: {{user: app, password_file: '{}'}}}}\n\
database_connection_rules:\n  - {{name: connect, db_service: appdb, decision: allow}}\n\
database_rules:\n  - {{name: reads, db_service: appdb, operations: [READ], decision: allow}}\n",
        cluster.port,
        pw.display()
    );
    let policy: Policy = load_policy(&yaml, "bench.yaml").expect("bench policy loads");
    let service = policy.db_services["appdb"].clone();
    let proxy =
        Arc::new(DbProxy::new("appdb", service, Arc::new(DbRules::new(&policy)), ProxyOptions::default()));

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let sock_dir = cluster.dir.join("proxy");
    std::fs::create_dir_all(&sock_dir).unwrap();
    let sock = sock_dir.join(".s.PGSQL.5432");
    let listener = rt.block_on(async { tokio::net::UnixListener::bind(&sock) }).expect("bind");
    rt.spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let p = proxy.clone();
            tokio::spawn(async move {
                let _ = p.serve(s, ClientCtx::default()).await;
            });
        }
    });

    let mut direct = Client::connect(&cluster.dir.join(format!(".s.PGSQL.{}", cluster.port)), "app");
    let mut proxied = Client::connect(&sock, "agent");
    let mut q = Vec::new();
    wire::Query { sql: "SELECT 1" }.encode(&mut q);

    let mut g = c.benchmark_group("db_proxy_select_1_round_trip");
    g.bench_function("direct_unix_socket", |b| b.iter(|| black_box(direct.query(&q))));
    g.bench_function("through_proxy", |b| b.iter(|| black_box(proxied.query(&q))));
    g.finish();
    drop(rt);
}

criterion_group!(benches, bench);
criterion_main!(benches);
