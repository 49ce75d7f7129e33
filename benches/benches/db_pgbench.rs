//! pgbench, side by side in one run on one throwaway cluster: direct (the server's
//! Unix socket, and loopback TCP with SCRAM), through the DB proxy (client → proxy Unix
//! socket → loopback TCP), and through pgbouncer in session mode (client → pgbouncer Unix
//! socket → loopback TCP). Three workloads: select-only (`-S`) with the simple and with the
//! prepared (`-M prepared`) protocol, and pgbench's TPC-B-like default script (`tpcb`: BEGIN,
//! three updates, a select, an insert and END per transaction, prepared), where the proxy's share of
//! the work is what a write-heavy client sees.
//! The proxy runs twice: its sessions on a `SessionPool` (as the gateway serves them) and
//! spawned on a two-worker runtime, to show what the scheduler costs. Prints a table of TPS, each one's ratio to direct, and for the
//! proxy and pgbouncer the CPU time their process spent per transaction (from
//! `/proc/<pid>/task/*/schedstat`; a figure a busy machine disturbs less than TPS). A bare
//! relay (client → Unix socket → loopback TCP, bytes copied on one thread with tokio, no
//! protocol handling; the client logs in with SCRAM itself) runs beside them as the floor of
//! what any relay on this runtime costs, so the proxy's own share is the difference. Not a
//! criterion bench: pgbench does the measuring. Skips (prints why) without a cluster;
//! pgbouncer's rows are skipped when it is not installed (`scripts/deps` installs it).
//!
//! `AGENTSH_PGBENCH_SECONDS` (default 10), `AGENTSH_PGBENCH_CLIENTS` (default 4) and
//! `AGENTSH_PGBENCH_ROUNDS` (default 3) tune it; `AGENTSH_PGBENCH_ONLY` (comma-separated
//! words, e.g. `proxy,bouncer`) keeps the targets whose name contains one of them, and
//! `AGENTSH_PGBENCH_MODES` (`simple`, `prepared`, `tpcb`) the workloads, for profiling one;
//! `AGENTSH_PGBENCH_POOL_THREADS` (default 1) sizes the session pool.

mod db_common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use db_common::{pg, start_proxy};

fn env_num(key: &str, default: u32) -> u32 {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One pgbench target: where to connect and as whom.
struct Target {
    name: &'static str,
    host: String,
    port: u16,
    user: &'static str,
    password: Option<&'static str>,
    /// The process whose CPU time the run is charged to (the proxy's, pgbouncer's).
    cpu_of: Option<u32>,
}

/// A proxy listening in `dir`, whose CPU time is this process's.
fn proxy_target(name: &'static str, dir: &Path) -> Target {
    let cpu_of = Some(std::process::id());
    Target { name, host: dir.display().to_string(), port: 5432, user: "agent", password: None, cpu_of }
}

/// The bare relay in `<cluster>/relay`: each connection to its Unix socket is copied to and
/// from a loopback TCP connection to the server, on one thread of its own (as the session
/// pool's), with nothing read or decided.
fn start_relay(cluster: &pg::PgCluster) -> PathBuf {
    let dir = cluster.dir.join("relay");
    std::fs::create_dir_all(&dir).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(dir.join(".s.PGSQL.5432")).expect("bind");
    listener.set_nonblocking(true).unwrap();
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], cluster.port));
    std::thread::Builder::new()
        .name("relay".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::UnixListener::from_std(listener).unwrap();
                while let Ok((mut client, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else { return };
                        let _ = server.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    });
                }
            });
        })
        .unwrap();
    dir
}

/// What one pgbench run measured.
struct Run {
    tps: f64,
    /// CPU time of the target's process per transaction, in µs.
    cpu_us: Option<f64>,
}

/// CPU time `pid`'s threads have run, in ns.
fn cpu_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut sum = 0;
    for t in tasks.flatten() {
        let stat = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
        sum += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(sum)
}

/// Runs pgbench against `t` in `mode`: `simple` or `prepared` select-only, or `tpcb`.
fn pgbench(bin: &Path, t: &Target, mode: &str, seconds: u32, clients: u32) -> Result<Run, String> {
    let mut c = Command::new(bin.join("pgbench"));
    let threads = clients.min(std::thread::available_parallelism().map_or(2, |n| n.get() as u32));
    let workload: &[&str] = match mode {
        "tpcb" => &["-M", "prepared"],
        "simple" | "prepared" => &["-S", "-M", mode],
        _ => return Err(format!("unknown mode {mode:?} (simple, prepared or tpcb)")),
    };
    c.arg("-n")
        .args(workload)
        .args(["-c", &clients.to_string(), "-j", &threads.to_string(), "-T", &seconds.to_string()])
        .args(["-h", &t.host, "-p", &t.port.to_string(), "-U", t.user, "appdb"]);
    c.env_remove("PGPASSWORD");
    if let Some(pw) = t.password {
        c.env("PGPASSWORD", pw);
    }
    let cpu_before = t.cpu_of.and_then(cpu_ns);
    let out = c.output().map_err(|e| format!("pgbench: {e}"))?;
    let cpu = t.cpu_of.and_then(cpu_ns).zip(cpu_before).map(|(after, before)| after - before);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("pgbench failed: {}{}", stdout, String::from_utf8_lossy(&out.stderr)));
    }
    let field = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
    };
    let tps = field("tps = ").ok_or_else(|| format!("no tps in pgbench output:\n{stdout}"))?;
    let txns = field("number of transactions actually processed: ").filter(|n| *n > 0.0);
    let cpu_us = cpu.zip(txns).map(|(ns, n)| ns as f64 / 1000.0 / n);
    Ok(Run { tps, cpu_us })
}

/// pgbouncer in session mode in `<cluster>/bouncer`, run as the cluster's user (it refuses
/// root); clients are trusted (as the proxy trusts its socket's peers), the server login is
/// SCRAM with the app password. `None` when pgbouncer is not installed or does not come up.
fn start_pgbouncer(cluster: &pg::PgCluster) -> Option<(Child, PathBuf, u16)> {
    let bin =
        ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"].into_iter().map(Path::new).find(|p| p.exists())?;
    let dir = cluster.dir.join("bouncer");
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).ok()?.port();
    std::fs::write(dir.join("users.txt"), format!("\"app\" \"{}\"\n", pg::APP_PASSWORD)).unwrap();
    let ini = format!(
        "[databases]\nappdb = host=127.0.0.1 port={} dbname=appdb user=app password={}\n\
[pgbouncer]\nlisten_addr =\nlisten_port = {port}\nunix_socket_dir = {d}\nauth_type = trust\nauth_file = {d}/users.txt\n\
pool_mode = session\nmax_client_conn = 200\ndefault_pool_size = 64\nlogfile = {d}/pgbouncer.log\n\
pidfile = {d}/pgbouncer.pid\nignore_startup_parameters = extra_float_digits\n",
        cluster.port,
        pg::APP_PASSWORD,
        d = dir.display()
    );
    std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
    let root = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")));
    let mut cmd = if root {
        let _ = Command::new("chown").args(["-R", "postgres:"]).arg(&dir).status();
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let child = cmd.arg(dir.join("pgbouncer.ini")).spawn().ok()?;
    let sock = dir.join(format!(".s.PGSQL.{port}"));
    for _ in 0..100 {
        if sock.exists() {
            return Some((child, dir, port));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "pgbouncer did not come up: {}",
        std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default()
    );
    None
}

fn main() {
    // Only `cargo bench` (which passes `--bench`) runs it: under `cargo test` it would spend
    // minutes. A filter that does not name this bench skips it too.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("db_pgbench: measured by `cargo bench`, nothing to test");
        return;
    }
    if args.iter().any(|a| !a.starts_with('-') && !"db_pgbench".contains(a.as_str())) {
        return;
    }
    let Some(cluster) = pg::PgCluster::start_or_skip() else { return };
    let seconds = env_num("AGENTSH_PGBENCH_SECONDS", 10);
    let clients = env_num("AGENTSH_PGBENCH_CLIENTS", 4);
    let rounds = env_num("AGENTSH_PGBENCH_ROUNDS", 3).max(1);
    let init = Command::new(cluster.bin.join("pgbench"))
        .args(["-i", "-q", "-s", "1", "-h"])
        .arg(&cluster.dir)
        .args(["-p", &cluster.port.to_string(), "-U", "app", "appdb"])
        .output()
        .expect("pgbench -i runs");
    assert!(init.status.success(), "pgbench -i: {}", String::from_utf8_lossy(&init.stderr));

    // The proxy shares the machine with pgbench and the server, as it would. Its sessions run
    // on a `SessionPool`, as the gateway's do, and spawned on a two-worker runtime beside it,
    // to show what the scheduler costs. One pool thread by default: on two shared CPUs it
    // measured best (its poll returns several sessions' wake-ups at once, as pgbouncer's
    // single loop does); two threads cost as much as the two workers.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // The statements pgbench sends, and no more: reads, and for `tpcb` its updates, insert and
    // transaction.
    let ops = "[READ, UPDATE, INSERT, transaction]";
    let proxy_dir = start_proxy(&rt, &cluster, "proxy", ops, None);
    let pool_threads = env_num("AGENTSH_PGBENCH_POOL_THREADS", 1) as usize;
    let pool = std::sync::Arc::new(dbproxy::proxy::SessionPool::new(pool_threads).expect("session pool"));
    let pool_dir = start_proxy(&rt, &cluster, "proxy-pool", ops, Some(pool));
    let bouncer = start_pgbouncer(&cluster);
    let relay_dir = start_relay(&cluster);

    let dir = |p: &Path| p.display().to_string();
    let mut targets = vec![
        Target {
            name: "direct (Unix socket)",
            host: dir(&cluster.dir),
            port: cluster.port,
            user: "app",
            password: None,
            cpu_of: None,
        },
        Target {
            name: "direct (TCP loopback)",
            host: "127.0.0.1".into(),
            port: cluster.port,
            user: "app",
            password: Some(pg::APP_PASSWORD),
            cpu_of: None,
        },
        // The proxies run on this process's runtimes; its main thread only waits for pgbench, and
        // the runtime not under test is idle.
        proxy_target("agentsh db proxy", &proxy_dir),
        proxy_target("db proxy, session pool", &pool_dir),
        Target {
            password: Some(pg::APP_PASSWORD),
            user: "app",
            ..proxy_target("bare relay (floor)", &relay_dir)
        },
    ];
    match &bouncer {
        Some((_, d, port)) => targets.push(Target {
            name: "pgbouncer (session)",
            host: dir(d),
            port: *port,
            user: "app",
            password: None,
            cpu_of: std::fs::read_to_string(d.join("pgbouncer.pid")).ok().and_then(|p| p.trim().parse().ok()),
        }),
        None => eprintln!("SKIP pgbouncer rows: pgbouncer is not installed or did not start"),
    }
    if let Ok(only) = std::env::var("AGENTSH_PGBENCH_ONLY") {
        // Direct stays first: every ratio is to it.
        let keep = |name: &str| only.split(',').any(|w| !w.is_empty() && name.contains(w));
        let mut first = true;
        targets.retain(|t| std::mem::take(&mut first) || keep(t.name));
    }
    let modes: Vec<String> = std::env::var("AGENTSH_PGBENCH_MODES")
        .map(|m| m.split(',').map(str::to_string).collect())
        .unwrap_or_else(|_| vec!["simple".into(), "prepared".into(), "tpcb".into()]);

    // Rounds interleave the targets, so a load that comes and goes on the machine is spread
    // over all of them; each figure is the median of its rounds.
    println!(
        "pgbench: simple and prepared are select-only (-S), tpcb the TPC-B-like default (prepared); \
         {clients} clients, {seconds} s per run, median of {rounds} interleaved rounds, scale 1, {} CPUs",
        num_cpus()
    );
    println!("{:<24} {:>8} {:>12} {:>9} {:>11}  runs", "target", "mode", "tps", "% direct", "cpu µs/txn");
    for mode in modes.iter().map(String::as_str) {
        let mut runs: Vec<Vec<Run>> = targets.iter().map(|_| Vec::new()).collect();
        for _ in 0..rounds {
            for (t, r) in targets.iter().zip(&mut runs) {
                match pgbench(&cluster.bin, t, mode, seconds, clients) {
                    Ok(run) => r.push(run),
                    Err(e) => eprintln!("{} {mode}: {e}", t.name),
                }
            }
        }
        let medians: Vec<Option<f64>> =
            runs.iter().map(|r| median(&r.iter().map(|x| x.tps).collect::<Vec<_>>())).collect();
        for ((t, m), r) in targets.iter().zip(&medians).zip(&runs) {
            let shown: Vec<String> = r.iter().map(|x| format!("{:.0}", x.tps)).collect();
            let cpu = median(&r.iter().filter_map(|x| x.cpu_us).collect::<Vec<_>>())
                .map_or_else(|| "-".to_string(), |c| format!("{c:.1}"));
            match (m, medians[0]) {
                (Some(tps), Some(base)) => println!(
                    "{:<24} {:>8} {:>12.0} {:>8.1}% {:>11}  {}",
                    t.name,
                    mode,
                    tps,
                    100.0 * tps / base,
                    cpu,
                    shown.join(" ")
                ),
                _ => println!("{:<24} {:>8} failed", t.name, mode),
            }
        }
    }
    if let Some((mut child, dir, _)) = bouncer {
        // SIGTERM to pgbouncer itself (runuser would leave it behind if killed).
        if let Ok(pid) = std::fs::read_to_string(dir.join("pgbouncer.pid")) {
            let _ = Command::new("kill").args(["-TERM", pid.trim()]).status();
        }
        let _ = child.wait();
    }
    drop(rt);
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}
