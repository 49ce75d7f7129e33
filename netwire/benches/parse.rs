//! ns/op of the pure first-bytes parsers: a real rustls ClientHello (one record and re-split
//! into 64-byte records) and a typical HTTP/1.1 request head.

#[path = "../tests/support/hello.rs"]
#[allow(dead_code)]
mod hello;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use netwire::{classify, parse_client_hello, parse_request_head};

fn parsers(c: &mut Criterion) {
    let one_record = hello::rustls_hello("api.anthropic.com", &[b"h2", b"http/1.1"]);
    let split = hello::records(&hello::unframe(&one_record), 64);
    let http = b"POST /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\nUser-Agent: bench/1\r\n\
Content-Type: application/json\r\nAccept: */*\r\nContent-Length: 120\r\n\r\n";
    let mut g = c.benchmark_group("parse");
    g.bench_function("client_hello_1_record", |b| b.iter(|| parse_client_hello(black_box(&one_record))));
    g.bench_function("client_hello_64B_records", |b| b.iter(|| parse_client_hello(black_box(&split))));
    g.bench_function("request_head", |b| b.iter(|| parse_request_head(black_box(http))));
    g.bench_function("classify_tls", |b| b.iter(|| classify(black_box(&one_record))));
    g.finish();
}

criterion_group!(benches, parsers);
criterion_main!(benches);
