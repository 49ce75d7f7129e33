//! `audit.otlp`: events reach a local OTLP/HTTP collector (a receiver on 127.0.0.1 that this
//! test runs) as log records with their type, session and rule; a collector that is down costs
//! the gateway nothing.

mod common;

use std::{
    io::{Read, Write},
    net::TcpListener,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{Daemon, dns::FakeDns};
use serde_json::Value;

/// `(path, body)` of every POST a collector got.
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// A collector: records `(path, body)` of every POST and answers 200.
fn collector() -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let log = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            let (head, body) = loop {
                let Ok(n) = s.read(&mut chunk) else { break (String::new(), Vec::new()) };
                if n == 0 {
                    break (String::new(), Vec::new());
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_string();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < i + 4 + len {
                        let Ok(n) = s.read(&mut chunk) else { break };
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    break (head, buf[i + 4..].to_vec());
                }
            };
            let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
            if let Ok(v) = serde_json::from_slice(&body) {
                log.lock().unwrap().push((path, v));
            }
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
            );
        }
    });
    (port, got)
}

fn records(got: &Mutex<Vec<(String, Value)>>) -> Vec<Value> {
    let mut out = Vec::new();
    for (_, body) in got.lock().unwrap().iter() {
        for rl in body["resourceLogs"].as_array().into_iter().flatten() {
            for sl in rl["scopeLogs"].as_array().into_iter().flatten() {
                out.extend(sl["logRecords"].as_array().into_iter().flatten().cloned());
            }
        }
    }
    out
}

fn attr<'a>(r: &'a Value, key: &str) -> Option<&'a str> {
    r["attributes"].as_array()?.iter().find(|a| a["key"] == key)?["value"]["stringValue"].as_str()
}

const POLICY: &str =
    "version: 1\nname: o\nnetwork_rules:\n  - {name: no-testnet, cidrs: [203.0.113.0/24], decision: deny}\n";

#[test]
fn events_arrive_at_the_collector_as_log_records() {
    if !common::privileged("events_arrive_at_the_collector_as_log_records") {
        return;
    }
    let (port, got) = collector();
    let dns = FakeDns::start();
    let config = format!(
        "{}audit:\n  otlp: {{endpoint: 'http://127.0.0.1:{port}', flush_interval_ms: 100, headers: {{x-team: agents}}}}\n",
        dns.server_config("synthetic")
    );
    let d = Daemon::start_with_config(&config);
    let s = d.session(POLICY);
    d.exec(&s, &["sh", "-c", "curl -s -m 2 http://203.0.113.5/ || true"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let blocked = loop {
        let rs = records(&got);
        if let Some(r) = rs.iter().find(|r| attr(r, "event.type") == Some("net_connect_blocked")) {
            break r.clone();
        }
        assert!(Instant::now() < deadline, "no net_connect_blocked record: {rs:#?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(attr(&blocked, "session.id"), Some(s.id.as_str()));
    assert_eq!(attr(&blocked, "policy.rule"), Some("no-testnet"));
    assert_eq!(blocked["severityText"], "WARN");
    let body: Value = serde_json::from_str(blocked["body"]["stringValue"].as_str().unwrap()).unwrap();
    assert_eq!(body["remote"], "203.0.113.5:80");
    assert!(got.lock().unwrap().iter().all(|(path, _)| path == "/v1/logs"));
    assert!(records(&got).iter().any(|r| attr(r, "event.type") == Some("session_created")));
}

#[test]
fn a_collector_that_is_down_costs_nothing() {
    if !common::privileged("a_collector_that_is_down_costs_nothing") {
        return;
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dns = FakeDns::start();
    let config = format!(
        "{}audit:\n  otlp: {{endpoint: 'http://127.0.0.1:{closed}', flush_interval_ms: 50}}\n",
        dns.server_config("synthetic")
    );
    let d = Daemon::start_with_config(&config);
    let s = d.session(POLICY);
    let r = d.exec(&s, &["sh", "-c", "curl -s -m 2 http://203.0.113.5/ || true"]);
    r.assert_exit(0);
    assert_eq!(r.of("net_connect_blocked").len(), 1, "the gateway goes on: {r:#?}");
}
