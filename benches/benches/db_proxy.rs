//! A simple SELECT round trip on a real throwaway cluster, direct and through the DB proxy,
//! side by side: the latency the proxy adds per statement (framing, classification, decision,
//! one more hop). Direct is libpq's usual local path (the server's Unix socket); through the
//! proxy is client → proxy Unix socket → proxy → server over loopback TCP, with SCRAM done
//! once at login. Skips (prints why) when no cluster can be started.

mod db_common;

use std::{
    hint::black_box,
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::Path,
};

use criterion::{Criterion, criterion_group, criterion_main};
use db_common::{pg, start_proxy};
use dbproxy::wire::{self, Direction, Phase};

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
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let sock = start_proxy(&rt, &cluster, "proxy", "[READ]", None).join(".s.PGSQL.5432");

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
