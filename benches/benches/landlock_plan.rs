//! The Landlock plan every command launches under: the default policy's `file_rules` over the
//! system trees and a home of 10, 100 or 400 entries holding `~/.ssh` (so the home is split,
//! one rule check per entry and operation class). Built afresh for each `exec`, so its time is
//! part of every command's start.

use std::{hint::black_box, path::PathBuf};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use policies::engine::file::FileRules;
use sandbox::landlock_plan::LandlockPlan;

/// A home of `n` entries (half directories, half files) plus `.ssh`, under /var/tmp.
fn home(n: usize) -> PathBuf {
    let h = PathBuf::from(format!("/var/tmp/agentsh-bench-home-{n}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&h);
    std::fs::create_dir_all(h.join(".ssh")).unwrap();
    std::fs::write(h.join(".ssh/id_ed25519"), "key").unwrap();
    for i in 0..n / 2 {
        std::fs::create_dir_all(h.join(format!("dir{i}"))).unwrap();
        std::fs::write(h.join(format!("file{i}")), "x").unwrap();
    }
    h
}

fn bench(c: &mut Criterion) {
    let policy = policies::load_policy(policies::embedded::source("default").unwrap(), "default").unwrap();
    let ws = PathBuf::from("/var/tmp/agentsh-bench-ws");
    let mut g = c.benchmark_group("landlock_plan_default_policy");
    for n in [10, 100, 400] {
        let h = home(n);
        let text = h.display().to_string();
        let rules = FileRules::new(&policy.file_rules, &ws, &|v| (v == "HOME").then(|| text.clone()));
        g.bench_with_input(BenchmarkId::from_parameter(n), &h, |b, h| {
            b.iter(|| black_box(LandlockPlan::for_session(&ws, Some(h), &[]).narrowed(&rules)))
        });
        let _ = std::fs::remove_dir_all(&h);
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
