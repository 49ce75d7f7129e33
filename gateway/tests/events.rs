//! `agentsh events`: recorded events filtered by session and type, and `--follow` delivering
//! events of a command that runs after it started.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
    sync::mpsc,
    time::Duration,
};

use common::{Daemon, dns::FakeDns};
use serde_json::Value;

const POLICY: &str =
    "version: 1\nname: ev\nnetwork_rules:\n  - {name: no-testnet, cidrs: [203.0.113.0/24], decision: deny}\n";

fn lines(out: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn events_filter_by_session_and_type_and_follow_new_ones() {
    if !common::privileged("events_filter_by_session_and_type_and_follow_new_ones") {
        return;
    }
    let dns = FakeDns::start();
    let d = Daemon::start_with_config(&dns.server_config("synthetic"));
    let a = d.session(POLICY);
    let b = d.session(POLICY);
    d.exec(&a, &["sh", "-c", "getent hosts nothing.test; curl -s -m 2 http://203.0.113.9/ || true"]);
    d.exec(&b, &["true"]);

    let all = lines(&d.cli(&["events", "--session", &a.id, "--json"]));
    assert!(all.len() >= 3, "{all:#?}");
    assert!(all.iter().all(|e| e["session_id"] == a.id.as_str()), "{all:#?}");
    assert!(all.iter().any(|e| e["type"] == "session_created"));
    let blocked = lines(&d.cli(&["events", "--session", &a.id, "--type", "net_connect_blocked", "--json"]));
    assert_eq!(blocked.len(), 1, "{blocked:#?}");
    assert_eq!(blocked[0]["remote"], "203.0.113.9:80");
    let text = String::from_utf8_lossy(&d.cli(&["events", "--type", "session_created"]).stdout).to_string();
    assert_eq!(text.lines().count(), 2, "{text}");

    // Follow: started first, then a command runs; its event arrives on the stream.
    let mut follower = d
        .command()
        .args(["events", "--follow", "--json", "--session", &b.id, "--type", "net_connect_blocked"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = follower.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    d.exec(&b, &["sh", "-c", "curl -s -m 2 http://203.0.113.77/ || true"]);
    let line = rx.recv_timeout(Duration::from_secs(10)).expect("the followed event arrives");
    let e: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (e["type"].as_str(), e["remote"].as_str()),
        (Some("net_connect_blocked"), Some("203.0.113.77:80"))
    );
    let _ = follower.kill();
    let _ = follower.wait();
}
