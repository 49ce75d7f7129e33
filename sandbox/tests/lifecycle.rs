//! Lifecycle tests: the init reaps orphans, and concurrent launches from several threads do
//! not keep each other's pipes open (the init closes inherited descriptors first thing).
mod common;

use std::time::{Duration, Instant};

use common::{StateDir, privileged, run, sh};

#[test]
fn orphans_are_reaped_by_the_init() {
    if !privileged("orphans_are_reaped_by_the_init") {
        return;
    }
    let state = StateDir::new();
    let script = "(sleep 0.05 &); sleep 0.5; \
        for f in /proc/[0-9]*/stat; do read -r l < $f; case \"$l\" in *') Z '*) echo zombie;; esac; done; \
        echo checked";
    let out = run(sh(script, &state));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "checked\n");
}

#[test]
fn concurrent_launches_finish_independently() {
    if !privileged("concurrent_launches_finish_independently") {
        return;
    }
    let started = Instant::now();
    let handles: Vec<_> = (0..6)
        .map(|i| {
            std::thread::spawn(move || {
                let state = StateDir::new();
                // One long-lived sandbox must not delay the others' end-of-file.
                let script = if i == 0 { "sleep 3; echo 0".to_string() } else { format!("echo {i}") };
                let t0 = Instant::now();
                let out = run(sh(&script, &state));
                (i, t0.elapsed(), out)
            })
        })
        .collect();
    for h in handles {
        let (i, took, out) = h.join().unwrap();
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(out.stdout, format!("{i}\n"));
        if i != 0 {
            assert!(took < Duration::from_secs(2), "launch {i} waited on another sandbox");
        }
    }
    assert!(started.elapsed() >= Duration::from_secs(3));
}
