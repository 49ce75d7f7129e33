//! OpenTelemetry export of audit events: each event becomes one OTLP log record (OTLP/HTTP
//! with the JSON encoding, `POST <endpoint>/v1/logs`), so fleets send events to the collector
//! they already run. A background thread batches records (`batch_size`, `flush_interval_ms`);
//! the recorder only enqueues (bounded: when the collector is down and the queue is full, new
//! records are dropped and counted, never blocking the gateway). A failed batch is retried
//! once, then dropped and counted; the count is reported with the next batch that gets through
//! as the `agentsh.dropped_records` resource attribute.

use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use policies::config::OtlpConfig;
use serde_json::{Value, json};

use crate::events::Event;

/// Records queued before new ones are dropped.
const QUEUE: usize = 16_384;
/// Time allowed for one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The exporter's handle: enqueue only.
pub struct Exporter {
    tx: SyncSender<Value>,
    dropped: Arc<AtomicU64>,
}

impl Exporter {
    /// Start the export thread for `config`; `tls` verifies `https://` collectors.
    pub fn start(config: &OtlpConfig, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<Exporter> {
        let target = Target::parse(&config.endpoint)?;
        let (tx, rx) = sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let worker = Worker { target, config: config.clone(), tls, dropped: dropped.clone() };
        std::thread::Builder::new().name("agentsh-otlp".into()).spawn(move || worker.run(rx))?;
        Ok(Exporter { tx, dropped })
    }

    /// Queue `event` for export.
    pub fn export(&self, event: &Event) {
        match self.tx.try_send(record(event)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One event as an OTLP log record: the event's JSON as the body, its type, session, command,
/// decision and rule as attributes, severity WARN for refusals.
pub fn record(e: &Event) -> Value {
    let nanos = humantime::parse_rfc3339_weak(&e.timestamp)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default()
        .as_nanos();
    let mut attrs =
        vec![attr("event.type", &e.kind), attr("event.id", &e.id), attr("session.id", &e.session_id)];
    if let Some(c) = &e.command_id {
        attrs.push(attr("command.id", c));
    }
    if let Some(p) = &e.policy {
        attrs.push(attr("policy.decision", &p.decision));
        attrs.push(attr("policy.rule", &p.rule));
    }
    let blocked = e.is_blocked();
    json!({
        "timeUnixNano": nanos.to_string(),
        "observedTimeUnixNano": now_nanos().to_string(),
        "severityNumber": if blocked { 13 } else { 9 },
        "severityText": if blocked { "WARN" } else { "INFO" },
        "body": {"stringValue": serde_json::to_string(e).unwrap_or_default()},
        "attributes": attrs,
    })
}

fn attr(key: &str, value: &str) -> Value {
    json!({"key": key, "value": {"stringValue": value}})
}

fn now_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos()
}

/// Where to POST.
struct Target {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

impl Target {
    fn parse(endpoint: &str) -> anyhow::Result<Target> {
        let (tls, rest) = match endpoint.split_once("://") {
            Some(("http", r)) => (false, r),
            Some(("https", r)) => (true, r),
            _ => bail!("audit.otlp.endpoint {endpoint:?}: not an http:// or https:// URL"),
        };
        let (authority, base) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h.trim_matches(['[', ']']).to_string(), p.parse().context("audit.otlp.endpoint: bad port")?)
            }
            _ => (authority.trim_matches(['[', ']']).to_string(), if tls { 443 } else { 80 }),
        };
        if host.is_empty() {
            bail!("audit.otlp.endpoint {endpoint:?}: no host");
        }
        let base = base.trim_end_matches('/');
        let path = if base.is_empty() { "/v1/logs".to_string() } else { format!("/{base}/v1/logs") };
        Ok(Target { tls, host, port, path })
    }
}

struct Worker {
    target: Target,
    config: OtlpConfig,
    tls: Arc<rustls::ClientConfig>,
    dropped: Arc<AtomicU64>,
}

impl Worker {
    fn run(self, rx: Receiver<Value>) {
        let flush = Duration::from_millis(self.config.flush_interval_ms.max(1));
        let mut batch = Vec::new();
        let mut deadline = Instant::now() + flush;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(r) => batch.push(r),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.send_batch(std::mem::take(&mut batch));
                    return;
                }
            }
            if batch.len() >= self.config.batch_size || Instant::now() >= deadline {
                self.send_batch(std::mem::take(&mut batch));
                deadline = Instant::now() + flush;
            }
        }
    }

    fn send_batch(&self, batch: Vec<Value>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let mut resource =
            vec![attr("service.name", "agentsh"), attr("service.version", env!("CARGO_PKG_VERSION"))];
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            resource
                .push(json!({"key": "agentsh.dropped_records", "value": {"intValue": dropped.to_string()}}));
        }
        let body = json!({"resourceLogs": [{
            "resource": {"attributes": resource},
            "scopeLogs": [{"scope": {"name": "agentsh", "version": env!("CARGO_PKG_VERSION")}, "logRecords": batch}],
        }]})
        .to_string();
        for attempt in 0..2 {
            match self.post(&body) {
                Ok(()) => {
                    self.dropped.fetch_sub(dropped, Ordering::Relaxed);
                    return;
                }
                Err(e) if attempt == 0 => tracing::debug!(error = %e, "otlp export failed, retrying"),
                Err(e) => tracing::warn!(error = %e, "otlp export failed, batch dropped"),
            }
        }
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    fn post(&self, body: &str) -> anyhow::Result<()> {
        let t = &self.target;
        let tcp = TcpStream::connect((t.host.as_str(), t.port))
            .with_context(|| format!("connecting to {}:{}", t.host, t.port))?;
        tcp.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        tcp.set_write_timeout(Some(REQUEST_TIMEOUT))?;
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
            t.path,
            t.host,
            body.len()
        );
        for (k, v) in &self.config.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let response = if t.tls {
            let name =
                rustls::pki_types::ServerName::try_from(t.host.clone()).context("collector host name")?;
            let conn = rustls::ClientConnection::new(self.tls.clone(), name)?;
            let mut s = rustls::StreamOwned::new(conn, tcp);
            exchange(&mut s, &head, body)?
        } else {
            let mut s = tcp;
            exchange(&mut s, &head, body)?
        };
        let status = response.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok()).unwrap_or(0);
        if !(200..300).contains(&status) {
            bail!("collector answered {}", response.lines().next().unwrap_or("nothing"));
        }
        Ok(())
    }
}

/// Send the request, return the response's status line and headers.
fn exchange<S: Read + Write>(s: &mut S, head: &str, body: &str) -> anyhow::Result<String> {
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    s.flush()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 64 * 1024 {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(String::from_utf8_lossy(&got).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_to_host_port_and_path() {
        let t = Target::parse("http://127.0.0.1:4318").unwrap();
        assert_eq!((t.tls, t.host.as_str(), t.port, t.path.as_str()), (false, "127.0.0.1", 4318, "/v1/logs"));
        let t = Target::parse("https://collector.example/otel/").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.path.as_str()),
            (true, "collector.example", 443, "/otel/v1/logs")
        );
        let t = Target::parse("http://[::1]:4318").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 4318));
        assert!(Target::parse("udp://x").is_err());
    }

    #[test]
    fn a_refusal_is_a_warn_record_with_its_rule() {
        let mut e = Event::new("net_connect_blocked", "session-1");
        e.policy =
            Some(crate::events::EventPolicy { decision: "deny".into(), rule: "no".into(), message: None });
        let r = record(&e);
        assert_eq!(r["severityText"], "WARN");
        let attrs = r["attributes"].as_array().unwrap();
        assert!(
            attrs.contains(&attr("policy.rule", "no"))
                && attrs.contains(&attr("event.type", "net_connect_blocked"))
        );
        let body: Value = serde_json::from_str(r["body"]["stringValue"].as_str().unwrap()).unwrap();
        assert_eq!(body["session_id"], "session-1");
    }
}
