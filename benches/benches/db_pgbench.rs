//! pgbench select-only, side by side in one run on one throwaway cluster: direct (the server's
//! Unix socket, and loopback TCP with SCRAM), through the DB proxy (client → proxy Unix
//! socket → loopback TCP), and through pgbouncer in session mode (client → pgbouncer Unix
//! socket → loopback TCP), each with the simple and the prepared (`-M prepared`) protocol.
//! Prints a table of TPS and each one's ratio to direct. Not a criterion bench: pgbench does
//! the measuring. Skips (prints why) without a cluster; pgbouncer's rows are skipped when it
//! is not installed (`scripts/deps` installs it).
//!
//! `AGENTSH_PGBENCH_SECONDS` (default 10), `AGENTSH_PGBENCH_CLIENTS` (default 4) and
//! `AGENTSH_PGBENCH_ROUNDS` (default 3) tune it.

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
}

/// Runs pgbench select-only against `t` in `mode`; returns the TPS it reports.
fn pgbench(bin: &Path, t: &Target, mode: &str, seconds: u32, clients: u32) -> Result<f64, String> {
    let mut c = Command::new(bin.join("pgbench"));
    let threads = clients.min(std::thread::available_parallelism().map_or(2, |n| n.get() as u32));
    c.args(["-n", "-S", "-M", mode])
        .args(["-c", &clients.to_string(), "-j", &threads.to_string(), "-T", &seconds.to_string()])
        .args(["-h", &t.host, "-p", &t.port.to_string(), "-U", t.user, "appdb"]);
    c.env_remove("PGPASSWORD");
    if let Some(pw) = t.password {
        c.env("PGPASSWORD", pw);
    }
    let out = c.output().map_err(|e| format!("pgbench: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("pgbench failed: {}{}", stdout, String::from_utf8_lossy(&out.stderr)));
    }
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no tps in pgbench output:\n{stdout}"))
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

    // Two workers: the proxy shares the machine with pgbench and the server, as it would.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let proxy_dir = start_proxy(&rt, &cluster);
    let bouncer = start_pgbouncer(&cluster);

    let dir = |p: &Path| p.display().to_string();
    let mut targets = vec![
        Target {
            name: "direct (Unix socket)",
            host: dir(&cluster.dir),
            port: cluster.port,
            user: "app",
            password: None,
        },
        Target {
            name: "direct (TCP loopback)",
            host: "127.0.0.1".into(),
            port: cluster.port,
            user: "app",
            password: Some(pg::APP_PASSWORD),
        },
        Target { name: "agentsh db proxy", host: dir(&proxy_dir), port: 5432, user: "agent", password: None },
    ];
    match &bouncer {
        Some((_, d, port)) => targets.push(Target {
            name: "pgbouncer (session)",
            host: dir(d),
            port: *port,
            user: "app",
            password: None,
        }),
        None => eprintln!("SKIP pgbouncer rows: pgbouncer is not installed or did not start"),
    }

    // Rounds interleave the targets, so a load that comes and goes on the machine is spread
    // over all of them; each figure is the median of its rounds.
    println!(
        "pgbench -S (select-only), {clients} clients, {seconds} s per run, median of {rounds} interleaved rounds, scale 1, {} CPUs",
        num_cpus()
    );
    println!("{:<24} {:>8} {:>12} {:>9}  runs", "target", "mode", "tps", "% direct");
    for mode in ["simple", "prepared"] {
        let mut runs: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
        for _ in 0..rounds {
            for (t, r) in targets.iter().zip(&mut runs) {
                match pgbench(&cluster.bin, t, mode, seconds, clients) {
                    Ok(tps) => r.push(tps),
                    Err(e) => eprintln!("{} {mode}: {e}", t.name),
                }
            }
        }
        let medians: Vec<Option<f64>> = runs.iter().map(|r| median(r)).collect();
        for ((t, m), r) in targets.iter().zip(&medians).zip(&runs) {
            let shown: Vec<String> = r.iter().map(|x| format!("{x:.0}")).collect();
            match (m, medians[0]) {
                (Some(tps), Some(base)) => println!(
                    "{:<24} {:>8} {:>12.0} {:>8.1}%  {}",
                    t.name,
                    mode,
                    tps,
                    100.0 * tps / base,
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
