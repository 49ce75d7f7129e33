//! The answer side: whole answers are buffered (bounded), decoded, DLP-scanned and measured;
//! SSE answers are decoded and scanned event by event on their own task, which records usage
//! and emits the event when the stream ends. Anything not `text/event-stream` counts as whole,
//! Gemini's JSON-array `streamGenerateContent` (without `alt=sse`) included: it reaches the
//! agent when complete. Answers reach the agent without content coding.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    time::{Instant, SystemTime},
};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use hyper::body::{Body, Incoming};
use policies::model::llm::ProviderKind;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{
    InFlight, LlmProxy,
    body::{self, BodyError, Coding, Decoder, ProxyBody},
    handler::{Outcome, Refusal, end_to_end},
    sse::{SseScanner, StreamStop},
};
use crate::{
    dlp::{self, Action},
    events::{Decision, Direction, LlmEvent, add_finding},
    providers,
};

fn is_sse(resp: &Response<Incoming>) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/event-stream"))
}

/// Turns the upstream answer into the agent's.
pub(crate) async fn answer(
    proxy: &Arc<LlmProxy>,
    kind: ProviderKind,
    resp: Response<Incoming>,
    ev: &mut LlmEvent,
    start: Instant,
    slot: InFlight,
) -> Result<Outcome, Refusal> {
    let coding = Coding::of(resp.headers()).map_err(|c| {
        proxy.meter.record(None, false, Instant::now(), SystemTime::now());
        Refusal::upstream(
            StatusCode::BAD_GATEWAY,
            format!("upstream content-encoding {c:?} is not supported"),
        )
    })?;
    if is_sse(&resp) {
        return Ok(Outcome::Streaming(stream(proxy.clone(), kind, resp, coding, ev.clone(), start, slot)));
    }
    let (parts, incoming) = resp.into_parts();
    let cfg = &proxy.config;
    let raw = match body::collect(incoming, coding, cfg.max_body).await {
        Ok(b) => b,
        Err(e) => {
            proxy.meter.record(None, false, Instant::now(), SystemTime::now());
            let msg = match e {
                BodyError::TooLarge(n) => format!("upstream answer exceeds {n} bytes"),
                e => format!("upstream answer: {e}"),
            };
            return Err(Refusal::upstream(StatusCode::BAD_GATEWAY, msg));
        }
    };
    let json: Option<Value> = serde_json::from_slice(&raw).ok();
    let usage = json.as_ref().and_then(|j| providers::usage(kind, j));
    ev.usage = proxy.meter.record(usage, parts.status.is_success(), Instant::now(), SystemTime::now());

    let scanned = match (&json, std::str::from_utf8(&raw)) {
        (Some(_), _) => {
            dlp::scan_json(&raw, &cfg.dlp).ok().map(|o| (o.body.into_owned(), o.findings, o.block))
        }
        (None, Ok(text)) => {
            let o = dlp::scan_text(text, &cfg.dlp);
            Some((o.body.into_owned().into_bytes(), o.findings, o.block))
        }
        (None, Err(_)) => None,
    };
    let out = match scanned {
        Some((out, findings, block)) => {
            for f in &findings {
                add_finding(&mut ev.findings, &f.detector, f.action, Direction::Response, f.count, &f.path);
                if f.action == Action::Audit && ev.decision == Decision::Allow {
                    ev.decision = Decision::Audit;
                }
            }
            if let Some(b) = block {
                return Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    "dlp_blocked",
                    format!("dlp:{}", b.detector),
                    format!("answer blocked: {} found at {}", b.detector, b.path),
                ));
            }
            out
        }
        None => raw,
    };
    let mut r = Response::new(ProxyBody::full(out));
    *r.status_mut() = parts.status;
    *r.headers_mut() = end_to_end(&parts.headers);
    Ok(Outcome::Done(r))
}

/// Starts the streaming task and returns the answer whose body it feeds.
fn stream(
    proxy: Arc<LlmProxy>,
    kind: ProviderKind,
    resp: Response<Incoming>,
    coding: Coding,
    mut ev: LlmEvent,
    start: Instant,
    slot: InFlight,
) -> Response<ProxyBody> {
    let (parts, incoming) = resp.into_parts();
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(16);
    ev.streamed = true;
    ev.status = parts.status.as_u16();
    let success = parts.status.is_success();
    tokio::spawn(async move {
        let stop = pump(&proxy, kind, incoming, coding, &tx, &mut ev).await;
        if let Err(Some(stop)) = &stop {
            let (rule, msg) = match stop {
                StreamStop::Blocked(d) => {
                    (format!("dlp:{d}"), format!("answer blocked: {d} found in the stream"))
                }
                StreamStop::EventTooLarge(n) => {
                    ("max_body".to_string(), format!("stream event exceeds {n} bytes"))
                }
            };
            let err =
                json!({"type": "error", "error": {"type": "dlp_blocked", "message": msg, "rule": rule}});
            let _ = tx.send(Ok(Bytes::from(format!("event: error\ndata: {err}\n\n")))).await;
            tracing::info!(rule = %rule, path = %ev.path, "llm answer stream stopped");
            ev.decision = Decision::Deny;
            ev.rule = rule;
            ev.message = Some(msg);
        }
        let usage = ev.usage.take();
        ev.usage = proxy.meter.record(usage, success && stop.is_ok(), Instant::now(), SystemTime::now());
        ev.latency = start.elapsed();
        drop(slot);
        proxy.sink.emit(ev);
    });
    let mut headers = end_to_end(&parts.headers);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let mut r = Response::new(ProxyBody::Stream(rx));
    *r.status_mut() = parts.status;
    *r.headers_mut() = headers;
    r
}

/// Moves the stream through the scanner. `Err(Some(_))` is a policy stop, `Err(None)` an
/// upstream or client failure (the client's body is aborted, nothing held is released).
async fn pump(
    proxy: &LlmProxy,
    kind: ProviderKind,
    mut incoming: Incoming,
    coding: Coding,
    tx: &mpsc::Sender<io::Result<Bytes>>,
    ev: &mut LlmEvent,
) -> Result<(), Option<StreamStop>> {
    let cfg = &proxy.config;
    let mut scanner = SseScanner::new(&cfg.dlp, kind, cfg.stream_holdback, cfg.max_body);
    let mut dec = Decoder::new(coding, usize::MAX);
    let result = loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut incoming).poll_frame(cx)).await;
        let step = match frame {
            None => dec.finish().map_err(|e| e.to_string()).map(|d| (d, true)),
            Some(Ok(f)) => match f.into_data() {
                Ok(data) => dec.push(&data).map_err(|e| e.to_string()).map(|d| (d, false)),
                Err(_) => continue,
            },
            Some(Err(e)) => Err(e.to_string()),
        };
        let (decoded, last) = match step {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Err(io::Error::other(format!("upstream stream failed: {e}")))).await;
                break Err(None);
            }
        };
        let mut out = match scanner.push(&decoded) {
            Ok(o) => o,
            Err(stop) => break Err(Some(stop)),
        };
        if last {
            match scanner.finish() {
                Ok(rest) => out.extend(rest),
                Err(stop) => break Err(Some(stop)),
            }
        }
        if !out.is_empty() && tx.send(Ok(Bytes::from(out))).await.is_err() {
            break Err(None);
        }
        if last {
            break Ok(());
        }
    };
    ev.findings.extend(std::mem::take(&mut scanner.findings));
    if ev.decision == Decision::Allow && ev.findings.iter().any(|f| f.action == Action::Audit) {
        ev.decision = Decision::Audit;
    }
    ev.usage = scanner.usage;
    result
}
