//! ns/op of `rewrite_sni` on a typical rustls ClientHello (one record), the same hello re-split
//! into 64-byte records, and a hello past 2^14 octets that rustls itself splits.

#[path = "../tests/support/hello.rs"]
#[allow(dead_code)]
mod hello;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use netwire::{Hostname, rewrite_sni};

fn rewrite(c: &mut Criterion) {
    let one_record = hello::rustls_hello("api.anthropic.com", &[b"h2", b"http/1.1"]);
    let split = hello::records(&hello::unframe(&one_record), 64);
    let names: Vec<Vec<u8>> =
        (0..100).map(|i| format!("proto-{i:03}-{}", "x".repeat(180)).into_bytes()).collect();
    let refs: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
    let large = hello::rustls_hello("api.anthropic.com", &refs);
    let new = Hostname::from_wire(b"mirror.internal.example").expect("name");
    let mut g = c.benchmark_group("sni_rewrite");
    g.bench_function("1_record", |b| b.iter(|| rewrite_sni(black_box(&one_record), &new)));
    g.bench_function("64B_records", |b| b.iter(|| rewrite_sni(black_box(&split), &new)));
    g.bench_function("large_2_records", |b| b.iter(|| rewrite_sni(black_box(&large), &new)));
    g.finish();
}

criterion_group!(benches, rewrite);
criterion_main!(benches);
