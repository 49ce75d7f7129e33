//! DLP scan throughput, side by side: the engine (aho-corasick + `RegexSet` prefilter, raw JSON
//! walk skipping base64 media) against the naive baseline (every detector's regex over every
//! string of a `serde_json::Value`, media included). Inputs: a clean 10 KB prompt, the same
//! prompt with secrets, 10 KB of the digit-dense false-positive corpus (worst case for the number
//! detectors), and a 1 MB body carrying a base64 image. Criterion reports MiB/s; a
//! summary in ns/byte and MB/s is printed at the end.

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use llmproxy::dlp::{Engine, scan_json};

/// A typical coding-agent prompt: prose, code, a few small numbers and identifiers.
const PROSE: &str = "Please refactor the retry logic in the scheduler so that taskSchedulerImplementationFactory \
no longer sleeps on the async runtime. Keep the public API stable, add a unit test for the backoff, and \
update the changelog for version 2.4.0. The current implementation looks like this:\n\
fn retry<F: Fn() -> Result<(), Error>>(f: F, attempts: u32) -> Result<(), Error> {\n\
    for i in 0..attempts { match f() { Ok(()) => return Ok(()), Err(e) if i + 1 < attempts => \
    std::thread::sleep(Duration::from_millis(100 << i)), Err(e) => return Err(e) } }\n    unreachable!()\n}\n\
The tests in src/scheduler/tests.rs cover three cases; run them with cargo test -p scheduler.\n";

/// The false-positive corpus, dense: timestamps, UUIDs, hashes, dates, versions, addresses.
const NEGATIVES: &str = "The scheduler in taskSchedulerImplementationFactory retries each job up to 3 times \
(see RFC 7231 section 6.6, version 1.2.3, build 2024-01-15T12:30:45Z). Request 550e8400-e29b-41d4-a716-446655440000 \
hit commit da39a3ee5e6b4b0d3255bfef95601890afd80709 at 1700000000123 ms; p99 was 0.94 ms over 10.0.0.1:8080. \
fn main() { let total: u64 = items.iter().map(|i| i.price * i.qty).sum(); println!(\"{total}\"); }\n";

fn prompt(target: usize, secrets: bool) -> String {
    repeat(PROSE, target, secrets)
}

fn repeat(base: &str, target: usize, secrets: bool) -> String {
    let mut text = String::new();
    let mut i = 0;
    while text.len() < target {
        text.push_str(base);
        if secrets && i % 4 == 0 {
            text.push_str(
                "Contact alice@example.com or +1 415 555 2671, card 4111 1111 1111 1111, key AKIAIOSFODNN7EXAMPLE, \
                 db postgres://app:s3cr3t@db.internal/app.\n",
            );
        }
        i += 1;
    }
    text
}

fn body(text: &str) -> Vec<u8> {
    let v = serde_json::json!({
        "model": "claude-sonnet",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

fn image_body(size: usize) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let data: String = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            alphabet[(x % 64) as usize] as char
        })
        .collect();
    let v = serde_json::json!({
        "model": "claude-sonnet",
        "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}},
            {"type": "text", "text": prompt(2000, false)},
        ]}],
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The baseline: parse to a `Value`, run every detector's regex on every string value.
fn naive(body: &[u8], engine: &Engine) -> usize {
    fn walk(v: &serde_json::Value, e: &Engine, n: &mut usize) {
        match v {
            serde_json::Value::String(s) => *n += e.find_naive(s).len(),
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, e, n)),
            serde_json::Value::Object(o) => o.values().for_each(|x| walk(x, e, n)),
            _ => {}
        }
    }
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let mut n = 0;
    walk(&v, engine, &mut n);
    n
}

fn engine_scan(body: &[u8], engine: &Engine) -> usize {
    scan_json(body, engine).map(|o| o.findings.len()).unwrap_or_default()
}

fn inputs() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("clean_10k", body(&prompt(10_000, false))),
        ("secrets_10k", body(&prompt(10_000, true))),
        ("negatives_10k", body(&repeat(NEGATIVES, 10_000, false))),
        ("image_1m", image_body(1 << 20)),
    ]
}

fn bench(c: &mut Criterion) {
    let engine = Engine::builtin();
    let mut g = c.benchmark_group("dlp");
    for (name, input) in inputs() {
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function(format!("{name}/engine"), |b| b.iter(|| engine_scan(black_box(&input), &engine)));
        g.bench_function(format!("{name}/naive"), |b| b.iter(|| naive(black_box(&input), &engine)));
    }
    g.finish();
    let text = prompt(10_000, false);
    let mut g = c.benchmark_group("dlp_text");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("clean_10k/find", |b| b.iter(|| engine.find(black_box(&text))));
    g.bench_function("clean_10k/find_naive", |b| b.iter(|| engine.find_naive(black_box(&text))));
    g.finish();
    summary(&engine);
}

/// One line per input and method: ns/byte and MB/s (10^6 bytes) over about 0.5 s.
fn summary(engine: &Engine) {
    println!("\n{:<14} {:>8} {:>10} {:>10} {:>10}", "input", "method", "bytes", "ns/byte", "MB/s");
    for (name, input) in inputs() {
        for (method, f) in [("engine", engine_scan as fn(&[u8], &Engine) -> usize), ("naive", naive)] {
            let start = Instant::now();
            let mut runs = 0u32;
            while start.elapsed() < Duration::from_millis(500) {
                black_box(f(black_box(&input), engine));
                runs += 1;
            }
            let ns = start.elapsed().as_nanos() as f64 / f64::from(runs) / input.len() as f64;
            println!("{name:<14} {method:>8} {:>10} {ns:>10.3} {:>10.1}", input.len(), 1e3 / ns);
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
