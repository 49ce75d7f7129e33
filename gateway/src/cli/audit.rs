//! `agentsh audit verify FILE --key-file K | --key-env VAR [--algorithm A]`: walk the log and
//! its rotated files (`FILE.N` oldest … `FILE.1`, then `FILE`), check every line's HMAC, the
//! sequence, the links between lines and between files, and the end of each file against its
//! `.chain` sidecar. Prints the first problem as `FILE:LINE: why` and exits 1, or a summary
//! and exits 0.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context;
use policies::config::{IntegrityAlgorithm, IntegrityConfig};

use crate::{daemon::audit, integrity::Verifier};

/// The files of the rotation set of `file`, oldest first.
fn rotation_set(file: &Path) -> Vec<PathBuf> {
    let numbered = |n: u32| PathBuf::from(format!("{}.{n}", file.display()));
    let mut n = 1;
    while numbered(n).exists() {
        n += 1;
    }
    let mut set: Vec<PathBuf> = (1..n).rev().map(numbered).collect();
    set.push(file.to_path_buf());
    set
}

/// Run `audit verify`.
pub fn verify(
    file: &Path,
    key_file: Option<PathBuf>,
    key_env: Option<String>,
    algorithm: &str,
) -> anyhow::Result<ExitCode> {
    let algorithm = match algorithm {
        "hmac-sha256" => IntegrityAlgorithm::HmacSha256,
        "hmac-sha512" => IntegrityAlgorithm::HmacSha512,
        other => anyhow::bail!("unknown algorithm {other:?} (expected hmac-sha256 or hmac-sha512)"),
    };
    let key = audit::load_key(&IntegrityConfig { enabled: true, algorithm, key_file, key_env })?;
    if !file.exists() {
        anyhow::bail!("{}: no such file", file.display());
    }
    let files = rotation_set(file);
    let mut v = Verifier::default();
    for (i, path) in files.iter().enumerate() {
        let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut first = true;
        for (n, line) in BufReader::new(f).lines().enumerate() {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            if let Err(why) = v.next(&key, &line, first && i > 0) {
                println!("{}:{}: {why}", path.display(), n + 1);
                return Ok(ExitCode::from(1));
            }
            first = false;
        }
        if let Some(problem) =
            check_sidecar(path, v.last().map(|e| (e.sequence, e.entry_hash.as_str())), key.fingerprint())
        {
            println!("{}: {problem}", path.display());
            return Ok(ExitCode::from(1));
        }
    }
    println!("ok: {} entries in {} file(s), chain intact ({})", v.entries, files.len(), key.fingerprint());
    Ok(ExitCode::SUCCESS)
}

/// What the `.chain` sidecar of `path` says against the file's last line, if it disagrees.
fn check_sidecar(path: &Path, last: Option<(u64, &str)>, fingerprint: &str) -> Option<String> {
    let text = std::fs::read_to_string(audit::sidecar(path)).ok()?;
    let side: serde_json::Value = serde_json::from_str(&text).ok()?;
    if side["key_fingerprint"].as_str().is_some_and(|fp| fp != fingerprint) {
        return Some(format!(
            "written with another key ({}); this one is {fingerprint}",
            side["key_fingerprint"]
        ));
    }
    let (seq, hash) = (side["sequence"].as_u64()?, side["prev_hash"].as_str()?);
    match last {
        Some((s, h)) if s == seq && h == hash => None,
        Some((s, _)) if s < seq => {
            Some(format!("lines are missing at the end: the last is sequence {s}, the chain reached {seq}"))
        }
        Some((s, _)) => {
            Some(format!("the last line (sequence {s}) is not the one the chain recorded (sequence {seq})"))
        }
        None => Some(format!("the file is empty but the chain reached sequence {seq}")),
    }
}
