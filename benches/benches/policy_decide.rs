//! Decision-engine benchmarks: `decide_connect` and `decide_dns` on generated policies of 100,
//! 1,000 and 10,000 domain rules plus as many CIDR rules, compile time, and the naive linear scan
//! at the same sizes as a baseline.

use std::{hint::black_box, net::IpAddr};

use benches::{generate, linear_decide_connect, name_for_pattern, network_address};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use policies::{CompiledPolicy, ConnectRequest, Verdict, matchers::domain::Hostname};

const SIZES: &[usize] = &[100, 1_000, 10_000];

/// An address no generated CIDR covers.
fn outside() -> IpAddr {
    IpAddr::from([203, 0, 113, 5])
}

fn miss_name() -> Hostname {
    Hostname::parse("nothing.here.example").unwrap_or_else(|e| panic!("{e}"))
}

/// The benchmarked requests for a policy of size `n`, each checked against the linear reference.
fn requests(n: usize, cidrs: &[String]) -> Vec<(&'static str, ConnectRequest)> {
    vec![
        ("hit_early_name", ConnectRequest::by_name_and_ip(name_for_pattern(1), outside(), 443)),
        ("hit_late_name", ConnectRequest::by_name_and_ip(name_for_pattern(n - 1), outside(), 443)),
        ("hit_late_ip", ConnectRequest::by_ip(network_address(&cidrs[n - 2]), 443)),
        ("miss", ConnectRequest::by_name_and_ip(miss_name(), outside(), 443)),
    ]
}

fn bench_connect(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide_connect");
    for &n in SIZES {
        let (policy, cidrs) = generate(n);
        let compiled = CompiledPolicy::new(&policy);
        for (label, req) in requests(n, &cidrs) {
            let expected = linear_decide_connect(&policy, &req);
            assert_eq!(compiled.decide_connect(&req), expected, "{label} at {n}");
            assert_eq!(
                expected.verdict == Verdict::Deny && expected.rule.starts_with("default"),
                label == "miss"
            );
            group.bench_with_input(BenchmarkId::new(label, n), &req, |b, req| {
                b.iter(|| compiled.decide_connect(black_box(req)))
            });
        }
    }
    group.finish();
}

fn bench_linear(c: &mut Criterion) {
    let mut group = c.benchmark_group("linear_baseline");
    for &n in SIZES {
        let (policy, cidrs) = generate(n);
        for (label, req) in requests(n, &cidrs) {
            if label == "hit_late_name" || label == "miss" {
                group.bench_with_input(BenchmarkId::new(label, n), &req, |b, req| {
                    b.iter(|| linear_decide_connect(&policy, black_box(req)))
                });
            }
        }
    }
    group.finish();
}

fn bench_dns(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide_dns");
    for &n in SIZES {
        let (policy, _) = generate(n);
        let compiled = CompiledPolicy::new(&policy);
        for (label, name) in [("hit_late", name_for_pattern(n - 1)), ("miss", miss_name())] {
            group.bench_with_input(BenchmarkId::new(label, n), &name, |b, name| {
                b.iter(|| compiled.decide_dns(black_box(name)))
            });
        }
    }
    group.finish();
}

fn bench_compile(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    for &n in SIZES {
        let (policy, _) = generate(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &policy, |b, policy| {
            b.iter(|| CompiledPolicy::new(black_box(policy)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_connect, bench_dns, bench_compile, bench_linear);
criterion_main!(benches);
