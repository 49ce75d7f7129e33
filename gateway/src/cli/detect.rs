//! `agentsh detect [--output table|json|yaml]` and `agentsh detect config [--output FILE]`: what
//! this machine can enforce. Each probe runs in a fresh copy of this binary (`detect --probe
//! NAME`), all at once, each bounded by a timeout, so a probe that installs a filter, enters a
//! namespace, crashes or hangs changes nothing here.

use std::{
    collections::BTreeMap,
    io::Read,
    path::Path,
    process::{Command, ExitCode, Stdio},
    time::Instant,
};

use anyhow::Context;
use clap::ValueEnum;
use sandbox::detect::{ProbeName, ProbeResult, Report, config_snippet, probe, report};

/// Output formats of `detect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable table.
    Table,
    /// The report as JSON.
    Json,
    /// The report as YAML.
    Yaml,
}

/// Run one probe in this process and print its result as JSON (the child side).
pub fn run_probe(name: &str) -> anyhow::Result<ExitCode> {
    let Some(p) = ProbeName::parse(name) else { anyhow::bail!("unknown probe {name:?}") };
    println!("{}", serde_json::to_string(&probe::run(p))?);
    Ok(ExitCode::SUCCESS)
}

/// Probe everything and print the report.
pub fn run(output: Output) -> anyhow::Result<ExitCode> {
    let r = detect()?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&r)?),
        Output::Yaml => print!("{}", serde_norway::to_string(&r)?),
        Output::Table => print!("{}", table(&r)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Probe everything and write a server config snippet to `out` (stdout when `None`).
pub fn config(out: Option<&Path>) -> anyhow::Result<ExitCode> {
    let snippet = config_snippet(&detect()?);
    match out {
        Some(path) => std::fs::write(path, snippet).with_context(|| format!("writing {}", path.display()))?,
        None => print!("{snippet}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn detect() -> anyhow::Result<Report> {
    let exe = std::env::current_exe().context("finding this binary to run the probes")?;
    let mut children = Vec::new();
    for p in ProbeName::ALL {
        let child = Command::new(&exe)
            .args(["detect", "--probe", p.as_str()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting the {} probe", p.as_str()))?;
        children.push((p, child));
    }
    let deadline = Instant::now() + probe::PROBE_TIMEOUT;
    let mut results = BTreeMap::new();
    for (p, mut child) in children {
        let outcome = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(format!("probe timed out after {:?}", probe::PROBE_TIMEOUT));
                }
                Ok(None) => std::thread::sleep(std::time::Duration::from_millis(5)),
                Err(e) => break Err(format!("waiting for the probe: {e}")),
            }
        };
        let mut stdout = String::new();
        if let Some(mut s) = child.stdout.take() {
            let _ = s.read_to_string(&mut stdout);
        }
        let result = match outcome {
            Ok(status) if status.success() => serde_json::from_str::<ProbeResult>(stdout.trim())
                .unwrap_or_else(|e| ProbeResult::no(format!("unreadable probe answer: {e}"))),
            Ok(status) => ProbeResult::no(format!("the probe process failed ({status})")),
            Err(why) => ProbeResult::no(why),
        };
        results.insert(p, result);
    }
    Ok(report(&results, &platform()))
}

fn platform() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("linux {} {}", release.trim(), std::env::consts::ARCH)
}

fn table(r: &Report) -> String {
    let mut s = format!(
        "agentsh detect: {}\nProtection score: {}/100    security mode: {}\n",
        r.platform, r.protection_score, r.security_mode
    );
    for d in &r.domains {
        s.push_str(&format!("\n{} ({}/{})\n", d.name, d.score, d.weight));
        for b in &d.backends {
            let mark = if b.available { "✓" } else { "✗" };
            s.push_str(&format!("  {mark} {:<18} {}\n", b.name, b.detail));
        }
    }
    if !r.tips.is_empty() {
        s.push_str("\nTips\n");
        for t in &r.tips {
            s.push_str(&format!("  {} (+{} points): {}\n    {}\n", t.feature, t.points, t.impact, t.action));
        }
    }
    s
}
