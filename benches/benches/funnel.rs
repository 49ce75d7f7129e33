//! Side-by-side macro benchmark of the egress funnel (issue 4, "Bench"): the same client, once
//! on the host (direct) and once inside `agentsh exec` (every connect redirected by seccomp
//! user-notify to the session gateway, which dials the host upstream and splices), in one run.
//!
//! 1. connect + first byte: N sequential connect → send 1 byte → receive 1 byte → close against
//!    a loopback echo; p50/p99 and the latency added at p50 (target ≤ 30 µs). Probes with a
//!    server that speaks first and with an undecided first byte show the peek timeout.
//! 2. bulk: 1 GiB one way over one connection; GB/s and funnel/direct (target ≥ 80 %).
//! 3. memory: VmRSS of a fresh daemon with 100 idle sessions (target < 30 MB).
//!
//! The measuring client is the `funnel_client` binary of this crate: criterion cannot time a
//! process in another network namespace, so the client times itself and criterion's
//! `iter_custom` returns its figures. The daemon is `target/release/agentsh`, built once when
//! missing. Run with `cargo bench -p benches --bench funnel` as root; in test mode (no `--bench`)
//! or without root it prints why and skips. An existing binary is not rebuilt: rebuild it after
//! changing the gateway. `AGENTSH_BENCH_KEEP=1` keeps the state dirs (server.log, audit.jsonl);
//! the daemon's pid is printed for `perf record -p`. About 45 s on 2 cores.

#[path = "funnel/harness.rs"]
mod harness;
#[path = "funnel/upstream.rs"]
mod upstream;

use std::{process::Command, time::Duration};

use criterion::{Criterion, SamplingMode, Throughput};
use harness::{Client, Daemon, Result, Sample, TempDir};

/// Round trips per side for the percentile table (in rounds, alternating sides).
const LATENCY_N: u64 = 2_000;
/// Rounds the table's round trips are split into, so drift hits both sides alike.
const LATENCY_ROUNDS: u64 = 4;
/// Untimed round trips per side before the table's.
const WARM_UP_N: u64 = 200;
/// Round trips of each peek-timeout probe (each may cost the funnel's 500 ms peek timeout).
const PROBE_N: u64 = 4;
/// The first byte of the round trips: lowercase, so neither TLS nor an HTTP method.
const RAW_BYTE: u8 = b'x';
/// A first byte that could still start an HTTP method, so the funnel's peek waits for more.
const UNDECIDED_BYTE: u8 = b'G';
/// Bytes of one bulk transfer.
const BULK_BYTES: u64 = 1 << 30;
/// Bulk transfers per side for the table (the median is reported).
const BULK_RUNS: usize = 3;
/// Idle sessions for the memory figure.
const IDLE_SESSIONS: usize = 100;

/// Why this run does not measure, if it does not.
fn skip_reason() -> Option<&'static str> {
    if !std::env::args().any(|a| a == "--bench") {
        return Some(
            "test mode (no --bench); run `cargo bench -p benches --bench funnel` as root to measure",
        );
    }
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root: sessions use namespaces, a cgroup and seccomp user-notify");
    }
    None
}

fn main() {
    if let Some(why) = skip_reason() {
        println!("funnel: skipped: {why}");
        return;
    }
    if let Err(e) = run() {
        eprintln!("funnel: {e}");
        std::process::exit(1);
    }
}

/// Figures for the plain summary table.
#[derive(Default)]
struct Report {
    direct: Vec<Sample>,
    funnel: Vec<Sample>,
    server_first: [Vec<Sample>; 2],
    undecided: [Vec<Sample>; 2],
    bulk: [Vec<Duration>; 2],
    gateway_cpu_latency: Duration,
    gateway_cpu_bulk: Duration,
    daemon_after_traffic_kib: (u64, u64),
    fresh_daemon_kib: u64,
    idle_sessions_kib: (u64, u64),
    session_create: Duration,
}

fn percentile(values: &mut [Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort_unstable();
    // Nearest rank.
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

fn totals(s: &[Sample]) -> Vec<Duration> {
    s.iter().map(|x| x.total).collect()
}

fn connects(s: &[Sample]) -> Vec<Duration> {
    s.iter().map(|x| x.connect).collect()
}

fn after_connect(s: &[Sample]) -> Vec<Duration> {
    s.iter().map(|x| x.total.saturating_sub(x.connect)).collect()
}

fn sum(s: &[Sample]) -> Duration {
    s.iter().map(|x| x.total).sum()
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// `b - a` with its sign, in µs.
fn delta(a: Duration, b: Duration) -> String {
    format!("{:+.1} µs", (b.as_secs_f64() - a.as_secs_f64()) * 1e6)
}

fn gbps(d: Duration) -> f64 {
    BULK_BYTES as f64 / d.as_secs_f64() / 1e9
}

fn mb(kib: u64) -> String {
    format!("{:.1} MB", kib as f64 * 1024.0 / 1e6)
}

fn policy_yaml(ups: &upstream::Upstreams) -> String {
    format!(
        "network_rules:\n  - {{name: up, cidrs: [127.0.0.1/32], ports: [{}, {}, {}], decision: allow}}\n",
        ups.echo.port(),
        ups.speak_first.port(),
        ups.sink.port()
    )
}

fn run() -> Result<()> {
    let bin = harness::agentsh_binary()?;
    let client_bin = env!("CARGO_BIN_EXE_funnel_client");
    let ups = upstream::start().map_err(|e| format!("starting the upstreams: {e}"))?;
    let daemon = Daemon::start(&bin, "funnel")?;
    let workspace = TempDir::new("ws")?;
    let policy_dir = TempDir::new("policy")?;
    let policy = policy_dir.path().join("policy.yaml");
    std::fs::write(&policy, policy_yaml(&ups)).map_err(|e| e.to_string())?;
    let sid = daemon.create_session(workspace.path(), &policy)?;
    // Inside the session the client runs from the workspace: Landlock leaves the target dir
    // out of the sandbox. Copied by `cp`, not by this process, whose threads could hand a
    // still-open copy to a fork (ETXTBSY when it is run).
    let sandboxed_client = workspace.path().join("funnel_client");
    let copied = Command::new("cp").arg(client_bin).arg(&sandboxed_client).status();
    if !copied.is_ok_and(|s| s.success()) {
        return Err(format!("copying {client_bin} into the workspace"));
    }
    let sandboxed_client = sandboxed_client.to_str().ok_or("a workspace path that is not UTF-8")?;

    let mut direct = Client::spawn(Command::new(client_bin), "direct")?;
    let mut exec = daemon.command();
    exec.args(["exec", "--events", "none", &sid, "--", sandboxed_client]);
    let mut funnel = Client::spawn(exec, "funnel")?;
    let mut report = Report::default();
    eprintln!("funnel: daemon pid {} (for perf record -p), session {sid}", daemon.pid());

    eprintln!("funnel: connect + first byte, {LATENCY_N} round trips per side");
    direct.latency(ups.echo, WARM_UP_N, RAW_BYTE)?;
    funnel.latency(ups.echo, WARM_UP_N, RAW_BYTE)?;
    for _ in 0..LATENCY_ROUNDS {
        report.direct.extend(direct.latency(ups.echo, LATENCY_N / LATENCY_ROUNDS, RAW_BYTE)?);
        let cpu = daemon.cpu()?;
        report.funnel.extend(funnel.latency(ups.echo, LATENCY_N / LATENCY_ROUNDS, RAW_BYTE)?);
        report.gateway_cpu_latency += daemon.cpu()?.saturating_sub(cpu);
    }
    eprintln!("funnel: peek-timeout probes, {PROBE_N} round trips per side");
    report.server_first =
        [direct.server_first(ups.speak_first, PROBE_N)?, funnel.server_first(ups.speak_first, PROBE_N)?];
    report.undecided = [
        direct.latency(ups.echo, PROBE_N, UNDECIDED_BYTE)?,
        funnel.latency(ups.echo, PROBE_N, UNDECIDED_BYTE)?,
    ];
    eprintln!("funnel: bulk, {BULK_RUNS} × 1 GiB per side");
    for _ in 0..BULK_RUNS {
        report.bulk[0].push(direct.bulk(ups.sink, BULK_BYTES)?);
        let cpu = daemon.cpu()?;
        report.bulk[1].push(funnel.bulk(ups.sink, BULK_BYTES)?);
        report.gateway_cpu_bulk += daemon.cpu()?.saturating_sub(cpu);
    }

    let mut c = Criterion::default().configure_from_args();
    {
        let mut g = c.benchmark_group("funnel_connect_first_byte");
        g.sample_size(20).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
        g.bench_function("direct", |b| {
            b.iter_custom(|n| sum(&direct.latency(ups.echo, n, RAW_BYTE).unwrap_or_else(|e| panic!("{e}"))))
        });
        g.bench_function("funnel", |b| {
            b.iter_custom(|n| sum(&funnel.latency(ups.echo, n, RAW_BYTE).unwrap_or_else(|e| panic!("{e}"))))
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group("funnel_bulk_1GiB");
        g.throughput(Throughput::Bytes(BULK_BYTES)).sampling_mode(SamplingMode::Flat).sample_size(10);
        for (label, client, runs) in
            [("direct", &mut direct, &report.bulk[0]), ("funnel", &mut funnel, &report.bulk[1])]
        {
            // One transfer per sample: aim the target time at ten of them (criterion then warns
            // that it cannot fit ten samples, which is expected for one-iteration samples).
            let mut median = runs.clone();
            let target = percentile(&mut median, 50.0) * 10;
            g.warm_up_time(Duration::from_millis(1)).measurement_time(target);
            g.bench_function(label, |b| {
                b.iter_custom(|n| {
                    (0..n).map(|_| client.bulk(ups.sink, BULK_BYTES).unwrap_or_else(|e| panic!("{e}"))).sum()
                })
            });
        }
        g.finish();
    }
    c.final_summary();

    drop(funnel);
    drop(direct);
    report.daemon_after_traffic_kib = daemon.memory_kib()?;
    drop(daemon);

    eprintln!("funnel: memory with {IDLE_SESSIONS} idle sessions");
    let fresh = Daemon::start(&bin, "rss")?;
    // Let the daemon finish starting its runtime before the first reading.
    std::thread::sleep(Duration::from_millis(200));
    report.fresh_daemon_kib = fresh.memory_kib()?.0;
    let start = std::time::Instant::now();
    for _ in 0..IDLE_SESSIONS {
        fresh.create_session(workspace.path(), &policy)?;
    }
    report.session_create = start.elapsed() / IDLE_SESSIONS as u32;
    std::thread::sleep(Duration::from_millis(200));
    report.idle_sessions_kib = fresh.memory_kib()?;
    drop(fresh);

    print_report(&mut report);
    Ok(())
}

fn print_report(r: &mut Report) {
    let (mut dt, mut ft) = (totals(&r.direct), totals(&r.funnel));
    let (mut dc, mut fc) = (connects(&r.direct), connects(&r.funnel));
    let (d50, f50) = (percentile(&mut dt, 50.0), percentile(&mut ft, 50.0));
    let (d99, f99) = (percentile(&mut dt, 99.0), percentile(&mut ft, 99.0));
    let (dc50, fc50) = (percentile(&mut dc, 50.0), percentile(&mut fc, 50.0));
    let row = |name: &str, d: String, f: String, extra: String| {
        println!("{name:<40} {d:>12} {f:>12}   {extra}");
    };
    println!();
    println!("funnel bench summary ({} CPUs)", std::thread::available_parallelism().map_or(0, |n| n.get()));
    row("", "direct".into(), "funnel".into(), "added / ratio".into());
    let n = r.direct.len();
    row(
        &format!("connect+first byte p50 (N={n})"),
        us(d50),
        us(f50),
        format!("{} (target ≤ +30 µs)", delta(d50, f50)),
    );
    row("connect+first byte p99", us(d99), us(f99), delta(d99, f99));
    row("  connect() alone p50", us(dc50), us(fc50), delta(dc50, fc50));
    let (dr50, fr50) =
        (percentile(&mut after_connect(&r.direct), 50.0), percentile(&mut after_connect(&r.funnel), 50.0));
    row("  send → receive → close p50", us(dr50), us(fr50), delta(dr50, fr50));
    let [sd, sf] = &r.server_first;
    row(
        &format!("server speaks first p50 (N={PROBE_N})"),
        us(percentile(&mut totals(sd), 50.0)),
        us(percentile(&mut totals(sf), 50.0)),
        "funnel peek waits for client bytes".into(),
    );
    let [ud, uf] = &r.undecided;
    row(
        &format!("first byte 'G' p50 (N={PROBE_N})"),
        us(percentile(&mut totals(ud), 50.0)),
        us(percentile(&mut totals(uf), 50.0)),
        "could be an HTTP method: peek waits".into(),
    );
    let (bd, bf) = (percentile(&mut r.bulk[0], 50.0), percentile(&mut r.bulk[1], 50.0));
    row(
        &format!("bulk 1 GiB, median of {BULK_RUNS}"),
        format!("{:.2} GB/s", gbps(bd)),
        format!("{:.2} GB/s", gbps(bf)),
        format!("{:.0} % of direct (target ≥ 80 %)", 100.0 * gbps(bf) / gbps(bd)),
    );
    println!(
        "gateway CPU (all daemon threads): {} per funneled round trip, {:.2} s per funneled GiB",
        us(r.gateway_cpu_latency / u32::try_from(r.funnel.len().max(1)).unwrap_or(u32::MAX)),
        r.gateway_cpu_bulk.as_secs_f64() / r.bulk[1].len().max(1) as f64
    );
    let (rss, hwm) = r.idle_sessions_kib;
    println!(
        "gateway VmRSS: fresh daemon {}, with {IDLE_SESSIONS} idle sessions {} (peak {}; target < 30 MB); \
         session create {} each",
        mb(r.fresh_daemon_kib),
        mb(rss),
        mb(hwm),
        us(r.session_create)
    );
    let (rss, hwm) = r.daemon_after_traffic_kib;
    println!("bench daemon after all traffic: VmRSS {}, peak {}", mb(rss), mb(hwm));
}
