//! Session resolver benchmarks: the pure `handle_query` decision (allowed name in synthetic mode,
//! denied name, redirect), the whole in-process answer path for a synthetic A, and queries per
//! second through `serve_udp` in passthrough mode against a fake upstream on 127.0.0.1 (64
//! queries in flight per iteration). Loopback only.

use std::{
    hint::black_box,
    net::{Ipv4Addr, SocketAddr},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dns::{
    AddressGuard, ResolverConfig, ResolverCtx, SessionResolver, Transport, Upstream, UpstreamConfig,
    handle_query, pool::session_v6_prefix, serve_udp,
};
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{Name, RData, Record, RecordType, rdata::A},
};
use policies::{CompiledPolicy, Policy, config::DnsMode};
use tokio::{net::UdpSocket, runtime::Runtime};

const POLICY: &str = r#"
version: 1
name: dns-bench
network_rules:
  - {name: deny-evil, domains: ["**.evil.example"], decision: deny}
  - {name: web, domains: ["**.example.com"], ports: [443], decision: allow}
dns_redirects:
  - {name: internal, match: '(^|\.)corp\.example$', resolve_to: 10.1.2.3, ttl: 42}
"#;

fn policy() -> Policy {
    policies::load_policy(POLICY, "bench.yaml").unwrap_or_else(|e| panic!("{e}"))
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_str(name).unwrap_or_else(|e| panic!("{e}")), RecordType::A));
    m.to_vec().unwrap_or_else(|e| panic!("{e}"))
}

fn bench_handle_query(c: &mut Criterion) {
    let compiled = CompiledPolicy::new(&policy());
    let ctx = ResolverCtx { policy: &compiled, mode: DnsMode::Synthetic, pool_v6: session_v6_prefix(0) };
    let mut g = c.benchmark_group("dns_handle_query");
    for (label, name) in [
        ("allowed_synthetic", "api.example.com."),
        ("denied", "x.evil.example."),
        ("redirect", "build.corp.example."),
    ] {
        let msg = Message::from_vec(&query(1, name)).unwrap_or_else(|e| panic!("{e}"));
        g.bench_function(label, |b| b.iter(|| black_box(handle_query(&ctx, black_box(&msg)))));
    }
    g.finish();
}

fn resolver(mode: DnsMode, upstream: SocketAddr) -> Arc<SessionResolver> {
    let p = policy();
    let mut up = UpstreamConfig::new(vec![upstream]);
    up.timeout = Duration::from_secs(1);
    let config =
        ResolverConfig { mode, event_rate: 1_000_000, event_burst: 1_000_000, ..ResolverConfig::default() };
    Arc::new(SessionResolver::new(
        Arc::new(CompiledPolicy::new(&p)),
        AddressGuard::new(&p),
        Upstream::new(up),
        config,
        Arc::new(|e| {
            black_box(e);
        }),
    ))
}

fn bench_answer_bytes(c: &mut Criterion) {
    let rt = Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let r = resolver(DnsMode::Synthetic, "127.0.0.1:9".parse().unwrap_or_else(|e| panic!("{e}")));
    let q = query(7, "api.example.com.");
    c.bench_function("dns_answer_bytes/synthetic_a", |b| {
        b.iter(|| rt.block_on(async { black_box(r.answer(black_box(&q), Transport::Udp).await) }))
    });
}

/// A fake upstream on 127.0.0.1 answering every A question with one address.
async fn fake_upstream() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let addr = sock.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((len, peer)) = sock.recv_from(&mut buf).await {
            let Ok(q) = Message::from_vec(&buf[..len]) else { continue };
            let mut r = Message::response(q.metadata.id, OpCode::Query);
            r.queries = q.queries.clone();
            if let Some(first) = q.queries.first() {
                let rec =
                    Record::from_rdata(first.name.clone(), 60, RData::A(A(Ipv4Addr::new(203, 0, 113, 7))));
                r.answers.push(rec);
            }
            if let Ok(bytes) = r.to_vec() {
                let _ = sock.send_to(&bytes, peer).await;
            }
        }
    });
    addr
}

fn bench_serve_udp(c: &mut Criterion) {
    const IN_FLIGHT: u16 = 64;
    let rt = Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let (server, client) = rt.block_on(async {
        let upstream = fake_upstream().await;
        let r = resolver(DnsMode::Passthrough, upstream);
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let server = sock.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(serve_udp(sock, r, std::future::pending()));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        client.connect(server).await.unwrap_or_else(|e| panic!("{e}"));
        (server, client)
    });
    let queries: Vec<Vec<u8>> = (0..IN_FLIGHT).map(|i| query(i, &format!("h{i}.example.com."))).collect();
    let mut g = c.benchmark_group("dns_serve_udp");
    g.throughput(Throughput::Elements(u64::from(IN_FLIGHT)));
    g.bench_function(format!("passthrough_{IN_FLIGHT}_in_flight"), |b| {
        b.iter(|| {
            rt.block_on(async {
                for q in &queries {
                    client.send(q).await.unwrap_or_else(|e| panic!("{e}"));
                }
                let mut buf = [0u8; 1024];
                for _ in 0..IN_FLIGHT {
                    tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
                        .await
                        .unwrap_or_else(|_| panic!("no answer from {server}"))
                        .unwrap_or_else(|e| panic!("{e}"));
                }
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench_handle_query, bench_answer_bytes, bench_serve_udp);
criterion_main!(benches);
