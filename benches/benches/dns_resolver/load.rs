//! The two load generators, used against every target alike: `dnsperf` (a child process, its
//! summary and, with `-v`, its per-query latencies parsed from stdout) for throughput and latency
//! under load, and [`Prober`], a blocking one-query-at-a-time client for unloaded round trips.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::Path,
    process::Command,
    str::FromStr,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{Name, RecordType},
};

/// Errors are plain text: a bench prints them and exits.
pub type Result<T> = std::result::Result<T, String>;

/// What one dnsperf run reported.
#[derive(Debug, Default, Clone)]
pub struct Run {
    /// Seconds the run lasted.
    pub seconds: f64,
    /// Queries answered.
    pub completed: u64,
    /// Queries that timed out.
    pub lost: u64,
    /// dnsperf's mean latency.
    pub mean: Duration,
    /// Per-query latencies (verbose runs only).
    pub latencies: Vec<Duration>,
}

/// How to drive one dnsperf run.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Length of the run.
    pub seconds: u32,
    /// Queries outstanding at once (`-q`).
    pub outstanding: u32,
    /// Offered rate (`-Q`), or as fast as answers come back.
    pub max_qps: Option<u32>,
    /// Report every query's latency (`-v`; costs dnsperf CPU, so not for throughput).
    pub verbose: bool,
}

fn field<T: FromStr>(out: &str, label: &str) -> Result<T> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("dnsperf output has no `{label}`"))
}

/// Run dnsperf from `bin` against `server` with the queries in `data`.
pub fn dnsperf(bin: &Path, server: SocketAddr, data: &Path, load: Load) -> Result<Run> {
    let mut cmd = Command::new(bin);
    cmd.args(["-s", &server.ip().to_string(), "-p", &server.port().to_string()]).arg("-d").arg(data).args([
        "-l",
        &load.seconds.to_string(),
        "-q",
        &load.outstanding.to_string(),
        "-t",
        "1",
    ]);
    if let Some(rate) = load.max_qps {
        cmd.args(["-Q", &rate.to_string()]);
    }
    if load.verbose {
        cmd.arg("-v");
    }
    let out = cmd.output().map_err(|e| format!("running {}: {e}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("dnsperf failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    let latencies = text
        .lines()
        .filter(|l| l.starts_with("> "))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(Duration::from_secs_f64)
        .collect();
    Ok(Run {
        seconds: field(&text, "Run time (s):")?,
        completed: field(&text, "Queries completed:")?,
        lost: field(&text, "Queries lost:")?,
        mean: Duration::from_secs_f64(field(&text, "Average Latency (s):")?),
        latencies,
    })
}

/// The question names both load generators ask, `h0.<zone>` .. `h{n-1}.<zone>`.
pub fn names(zone: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("h{i}.{zone}")).collect()
}

/// A dnsperf data file asking A for every name.
pub fn write_data(path: &Path, names: &[String]) -> Result<()> {
    let text: String = names.iter().map(|n| format!("{n} A\n")).collect();
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// A blocking client that keeps one query outstanding: send, wait for the answer with the same
/// ID, time it. Answers that arrive after their timeout are skipped by ID.
pub struct Prober {
    sock: UdpSocket,
    queries: Vec<Vec<u8>>,
    next: usize,
    id: u16,
}

impl Prober {
    /// A client of `server` asking A for `names` in turn.
    pub fn new(server: SocketAddr, names: &[String]) -> Result<Self> {
        let err = |e: std::io::Error| format!("prober for {server}: {e}");
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(err)?;
        sock.connect(server).map_err(err)?;
        sock.set_read_timeout(Some(Duration::from_secs(1))).map_err(err)?;
        let queries = names
            .iter()
            .map(|n| {
                let mut m = Message::new(0, MessageType::Query, OpCode::Query);
                m.metadata.recursion_desired = true;
                let name = Name::from_str(n).map_err(|e| e.to_string())?;
                m.add_query(Query::query(name, RecordType::A));
                m.to_vec().map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Prober { sock, queries, next: 0, id: 0 })
    }

    /// One round trip; `None` when no answer came within the timeout.
    pub fn once(&mut self) -> Result<Option<Duration>> {
        self.id = self.id.wrapping_add(1);
        let at = self.next;
        self.next = (at + 1) % self.queries.len();
        let q = &mut self.queries[at];
        q[..2].copy_from_slice(&self.id.to_be_bytes());
        let mut buf = [0u8; 1500];
        let start = Instant::now();
        self.sock.send(q).map_err(|e| format!("prober send: {e}"))?;
        loop {
            match self.sock.recv(&mut buf) {
                Ok(n) if n >= 2 && buf[..2] == self.id.to_be_bytes() => return Ok(Some(start.elapsed())),
                Ok(_) => {}
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(format!("prober recv: {e}")),
            }
        }
    }

    /// `n` round trips; the answered ones' latencies and the number lost.
    pub fn run(&mut self, n: u64) -> Result<(Vec<Duration>, u64)> {
        let mut got = Vec::with_capacity(n as usize);
        let mut lost = 0;
        for _ in 0..n {
            match self.once()? {
                Some(d) => got.push(d),
                None => lost += 1,
            }
        }
        Ok((got, lost))
    }
}

/// Nearest-rank percentile of `values` (sorted here).
pub fn percentile(values: &mut [Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort_unstable();
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}
