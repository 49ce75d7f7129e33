//! Side-by-side macro benchmark of the session resolver (issue 5, "Bench"): queries per second
//! and latency through `dns::serve_udp` over a `SessionResolver` (passthrough and synthetic)
//! against dnsmasq (no cache, and its default cache) forwarding to the same local upstream, and
//! against that upstream directly, all on 127.0.0.1 in one run.
//!
//! 1. throughput: dnsperf, [`OUTSTANDING`] queries outstanding, [`THROUGHPUT_ROUNDS`] ×
//!    [`THROUGHPUT_SECS`] s per target, rounds interleaved across targets so drift hits all alike
//!    (target: passthrough ≥ dnsmasq no-cache).
//! 2. latency under load: dnsperf `-v` at a fixed [`LOADED_QPS`], p50/p99 of every answer.
//! 3. unloaded round trips: one query outstanding, p50/p99 and the p99 added over the upstream
//!    (target < 100 µs); criterion times the same round trips with `iter_custom`.
//!
//! The upstream is an authoritative responder for `bench.example.` on a thread of this process;
//! [`NAMES`] names are asked in turn, few enough for dnsmasq's default cache (150) to hold them.
//! Run with `cargo bench -p benches --bench dns_resolver`; in test mode (no `--bench`) or
//! without `dnsmasq` and `dnsperf` (Debian packages of those names) it prints why and skips.
//! The pids are printed for `perf record -p`; `DNS_RESOLVER_TARGETS=passthrough,cache-size`
//! measures only the targets whose label contains one of the words. About 100 s.

#[path = "dns_resolver/cpu.rs"]
mod cpu;
#[path = "dns_resolver/load.rs"]
mod load;
#[path = "dns_resolver/targets.rs"]
mod targets;
#[path = "dns_resolver/upstream.rs"]
mod upstream;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use criterion::Criterion;
use load::{Load, Prober, Result, Run, percentile};

/// Distinct question names.
const NAMES: usize = 100;
/// dnsperf's window of outstanding queries in the throughput runs (its default).
const OUTSTANDING: u32 = 100;
/// Throughput rounds per target.
const THROUGHPUT_ROUNDS: u32 = 2;
/// Seconds of one throughput round.
const THROUGHPUT_SECS: u32 = 5;
/// Offered rate of the latency-under-load runs, below every target's saturation.
const LOADED_QPS: u32 = 10_000;
/// Seconds of one latency-under-load run.
const LOADED_SECS: u32 = 3;
/// Unloaded round trips per target for the table.
const SEQUENTIAL_N: u64 = 20_000;
/// Rounds the unloaded round trips are split into, interleaved across targets.
const SEQUENTIAL_ROUNDS: u64 = 4;

/// Why this run does not measure, if it does not; otherwise the dnsmasq and dnsperf binaries.
fn tools() -> std::result::Result<(PathBuf, PathBuf), String> {
    if !std::env::args().any(|a| a == "--bench") {
        return Err(
            "test mode (no --bench); run `cargo bench -p benches --bench dns_resolver` to measure".into()
        );
    }
    let find = |name: &str| {
        targets::find_binary(name)
            .ok_or_else(|| format!("`{name}` not found (Debian: apt-get install dnsmasq dnsperf)"))
    };
    Ok((find("dnsmasq")?, find("dnsperf")?))
}

fn main() {
    let (dnsmasq, dnsperf) = match tools() {
        Ok(t) => t,
        Err(why) => {
            println!("dns_resolver: skipped: {why}");
            return;
        }
    };
    if let Err(e) = run(&dnsmasq, &dnsperf) {
        eprintln!("dns_resolver: {e}");
        std::process::exit(1);
    }
}

/// One server under test and what was measured against it.
struct Target {
    label: &'static str,
    addr: SocketAddr,
    cpu: Option<cpu::Probe>,
    throughput: Vec<Run>,
    throughput_cpu: cpu::Reading,
    loaded: Run,
    sequential: Vec<Duration>,
    sequential_lost: u64,
}

impl Target {
    fn new(label: &'static str, addr: SocketAddr, cpu: Option<cpu::Probe>) -> Self {
        Target {
            label,
            addr,
            cpu,
            throughput: vec![],
            throughput_cpu: cpu::Reading::default(),
            loaded: Run::default(),
            sequential: vec![],
            sequential_lost: 0,
        }
    }

    fn qps(&self) -> f64 {
        let done: u64 = self.throughput.iter().map(|r| r.completed).sum();
        let secs: f64 = self.throughput.iter().map(|r| r.seconds).sum();
        done as f64 / secs.max(f64::MIN_POSITIVE)
    }

    fn completed(&self) -> u64 {
        self.throughput.iter().map(|r| r.completed).sum()
    }
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(dnsmasq_bin: &Path, dnsperf_bin: &Path) -> Result<()> {
    let names = load::names(upstream::ZONE, NAMES);
    let scratch = Scratch(std::env::temp_dir().join(format!("dns_resolver_bench.{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0).map_err(|e| e.to_string())?;
    let data = scratch.0.join("queries.txt");
    load::write_data(&data, &names)?;

    let up = upstream::start().map_err(|e| format!("starting the upstream: {e}"))?;
    let resolvers = targets::Resolvers::start(up)?;
    let nocache = targets::Dnsmasq::start(dnsmasq_bin, up, Some(0), &names[0])?;
    let cached = targets::Dnsmasq::start(dnsmasq_bin, up, None, &names[0])?;
    eprintln!(
        "dns_resolver: bench pid {} (upstream thread, session resolvers), dnsmasq pids {} (no cache), {} (cached)",
        std::process::id(),
        nocache.pid(),
        cached.pid()
    );
    let me = std::process::id();
    let probe = |pid, prefix| Some(cpu::Probe { pid, prefix });
    let all = [
        Target::new("upstream direct", up, None),
        Target::new("session resolver passthrough", resolvers.passthrough, probe(me, targets::WORKER)),
        Target::new("session resolver synthetic", resolvers.synthetic, probe(me, targets::WORKER)),
        Target::new("dnsmasq --cache-size=0", nocache.addr, probe(nocache.pid(), "")),
        Target::new("dnsmasq default cache (150)", cached.addr, probe(cached.pid(), "")),
    ];
    // For profiling one path: `DNS_RESOLVER_TARGETS=passthrough,cache-size` keeps the targets
    // whose label contains one of the words (the upstream direct row is always kept).
    let keep = std::env::var("DNS_RESOLVER_TARGETS").unwrap_or_default();
    let mut all: Vec<Target> = all
        .into_iter()
        .filter(|t| keep.is_empty() || t.cpu.is_none() || keep.split(',').any(|w| t.label.contains(w)))
        .collect();
    let mut probers = all.iter().map(|t| Prober::new(t.addr, &names)).collect::<Result<Vec<_>>>()?;
    // Warm every path: caches filled, synthetic bindings made, sockets and runtimes touched.
    for (t, p) in all.iter().zip(&mut probers) {
        let (_, lost) = p.run(NAMES as u64 * 10)?;
        if lost > 0 {
            return Err(format!("{}: {lost} warm-up queries unanswered", t.label));
        }
    }

    eprintln!(
        "dns_resolver: throughput, dnsperf -q {OUTSTANDING}, {THROUGHPUT_ROUNDS} × {THROUGHPUT_SECS} s per target"
    );
    let saturate = Load { seconds: THROUGHPUT_SECS, outstanding: OUTSTANDING, max_qps: None, verbose: false };
    for _ in 0..THROUGHPUT_ROUNDS {
        for t in &mut all {
            let probe = t.cpu.unwrap_or(cpu::Probe { pid: 0, prefix: "" });
            let before = probe.read();
            t.throughput.push(load::dnsperf(dnsperf_bin, t.addr, &data, saturate)?);
            t.throughput_cpu += probe.read() - before;
        }
    }
    eprintln!("dns_resolver: latency at {LOADED_QPS} qps, dnsperf -v, {LOADED_SECS} s per target");
    let paced =
        Load { seconds: LOADED_SECS, outstanding: OUTSTANDING, max_qps: Some(LOADED_QPS), verbose: true };
    for t in &mut all {
        t.loaded = load::dnsperf(dnsperf_bin, t.addr, &data, paced)?;
    }
    eprintln!("dns_resolver: unloaded round trips, {SEQUENTIAL_N} per target");
    for _ in 0..SEQUENTIAL_ROUNDS {
        for (t, p) in all.iter_mut().zip(&mut probers) {
            let (got, lost) = p.run(SEQUENTIAL_N / SEQUENTIAL_ROUNDS)?;
            t.sequential.extend(got);
            t.sequential_lost += lost;
        }
    }

    let mut c = Criterion::default().configure_from_args();
    {
        let mut g = c.benchmark_group("dns_resolver_round_trip");
        g.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
        for (t, p) in all.iter().zip(&mut probers) {
            g.bench_function(t.label, |b| {
                b.iter_custom(|n| {
                    let (got, lost) = p.run(n).unwrap_or_else(|e| panic!("{e}"));
                    assert_eq!(lost, 0, "{}: round trips lost", t.label);
                    got.iter().sum()
                })
            });
        }
        g.finish();
    }
    c.final_summary();

    print_report(&mut all);
    Ok(())
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn print_report(all: &mut [Target]) {
    println!();
    println!(
        "dns_resolver bench summary ({} CPUs, {NAMES} names, all on 127.0.0.1)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<30} {:>8} {:>8} {:>8} {:>6} {:>8} {:>6} | {:>9} {:>9} | {:>9} {:>9} {:>11}",
        "",
        "qps",
        "server",
        "upstream",
        "idle",
        "mean",
        "lost",
        format!("p50@{}k", LOADED_QPS / 1000),
        format!("p99@{}k", LOADED_QPS / 1000),
        "p50 seq",
        "p99 seq",
        "+p99 seq"
    );
    let mut direct_p99 = Duration::ZERO;
    for t in all.iter_mut() {
        let mean = t.throughput.iter().map(|r| r.mean).sum::<Duration>() / t.throughput.len().max(1) as u32;
        let lost: u64 = t.throughput.iter().map(|r| r.lost).sum::<u64>() + t.loaded.lost + t.sequential_lost;
        let p99 = percentile(&mut t.sequential, 99.0);
        if t.label == "upstream direct" {
            direct_p99 = p99;
        }
        let c = t.throughput_cpu;
        let per_query = |d: Duration| d.as_secs_f64() * 1e6 / t.completed().max(1) as f64;
        println!(
            "{:<30} {:>8.0} {:>8} {:>8} {:>6} {:>8} {:>6} | {:>9} {:>9} | {:>9} {:>9} {:>11}",
            t.label,
            t.qps(),
            if t.cpu.is_some() { format!("{:.1} µs", per_query(c.server)) } else { "-".into() },
            format!("{:.1} µs", per_query(c.upstream)),
            format!("{:.0} %", 100.0 * c.idle as f64 / c.total.max(1) as f64),
            us(mean),
            lost,
            us(percentile(&mut t.loaded.latencies, 50.0)),
            us(percentile(&mut t.loaded.latencies, 99.0)),
            us(percentile(&mut t.sequential, 50.0)),
            us(p99),
            format!("{:+.0} µs", (p99.as_secs_f64() - direct_p99.as_secs_f64()) * 1e6),
        );
    }
    let qps = |label: &str| all.iter().find(|t| t.label.starts_with(label)).map_or(0.0, Target::qps);
    println!(
        "passthrough / dnsmasq no-cache qps: {:.2} (target ≥ 1); synthetic / dnsmasq cached: {:.2}",
        qps("session resolver passthrough") / qps("dnsmasq --cache").max(1.0),
        qps("session resolver synthetic") / qps("dnsmasq default").max(1.0)
    );
    println!(
        "qps and mean: dnsperf -q {OUTSTANDING}, {THROUGHPUT_ROUNDS} × {THROUGHPUT_SECS} s; server/upstream: their \
         on-CPU time per answered query in those runs; idle: the machine's idle share then; p50/p99@: dnsperf -v -Q {LOADED_QPS}; \
         seq: one query outstanding, {SEQUENTIAL_N} round trips; +p99 seq: over the upstream direct (target < 100 µs)"
    );
}
