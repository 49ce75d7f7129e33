//! The steady state of a session: both directions pumped concurrently (so NOTIFY reaches an
//! idle client); the client side (`front`) decides every Query, Parse, Execute and
//! FunctionCall before anything of it moves, and this side reports each statement let through
//! when its answer ends (`results`).
//!
//! A refused message is not forwarded. In its place the proxy sends a sentinel, a statement
//! made only of a random identifier, which the server rejects as a syntax error before
//! running anything. The server's answer to it then arrives exactly where the refused
//! statement's answer would have: after the results of everything sent before it, inside the
//! same extended-query batch, with the transaction failed as for any error and the rest of
//! the batch discarded until Sync. The backend pump swaps that error for the 42501 refusal
//! naming the rule. No ordering state is needed for pipelined clients, and the server keeps
//! its own transaction semantics. Inside a transaction a rule's `deny_mode_in_tx: terminate`
//! (the default) turns the refusal FATAL and closes both sides.

use std::sync::{
    Mutex,
    atomic::{AtomicBool, Ordering},
};

use bytes::{Buf, BytesMut};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    sync::mpsc,
};

use super::{
    Policy,
    error::{ProxyError, Side},
    events::EventSink,
    frame::{Framer, StreamError},
    results::Queue,
};
use crate::wire::{self, Direction, ErrorFields, Phase, TxStatus, WireError};

/// SQLSTATE `syntax_error`: the server's answer to a sentinel.
const SQLSTATE_SYNTAX_ERROR: &str = "42601";

/// How long the backend pump may drain after the client left.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// A refusal waiting for the server's answer to its sentinel.
struct Denial {
    nonce: String,
    /// The number of ReadyForQuery sent before the sentinel's own (its batch).
    batch: u64,
    rule: String,
    message: Option<String>,
    terminate_in_tx: bool,
}

/// What the client side asks the backend pump to write to the client.
pub(crate) enum Cmd {
    /// Write these bytes, then end the session.
    Close(Vec<u8>),
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The client sent Terminate or closed.
    ClientClosed,
    /// The upstream closed.
    UpstreamClosed,
    /// A refusal inside a transaction closed the session (`deny_mode_in_tx: terminate`).
    TerminatedByPolicy,
}

/// What both directions share.
pub(crate) struct Shared {
    pending: Mutex<Vec<Denial>>,
    results: Mutex<Queue>,
    pub(crate) client_done: AtomicBool,
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<Denial>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The answers awaited, in order.
    pub(crate) fn results(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.results.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A FATAL error message.
pub(crate) fn fatal(code: &'static str, message: String) -> Vec<u8> {
    let mut out = Vec::new();
    ErrorFields::new("FATAL", code, message, None).encode(b'E', &mut out);
    out
}

pub(crate) fn protocol_error(e: &WireError) -> Vec<u8> {
    let code = if matches!(e, WireError::TooLarge { .. }) { "54000" } else { "08P01" };
    fatal(code, format!("invalid message from the client: {e}"))
}

/// Runs the session until one side ends it.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run<CR, CW, UR, UW>(
    policy: &Policy<'_>,
    client_r: CR,
    client_buf: BytesMut,
    client_w: CW,
    up_r: UR,
    up_buf: BytesMut,
    up_w: UW,
    status: TxStatus,
) -> Result<SessionEnd, ProxyError>
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    UR: AsyncRead + Unpin,
    UW: AsyncWrite + Unpin,
{
    let shared = Shared {
        pending: Mutex::new(Vec::new()),
        results: Mutex::new(Queue::new(status != TxStatus::Idle)),
        client_done: AtomicBool::new(false),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let events = policy.proxy.opts.events.as_ref();
    let front = super::front::run(policy, client_r, client_buf, up_w, &shared, tx);
    let back = back(up_r, up_buf, client_w, &shared, rx, status, events);
    tokio::pin!(front, back);
    let end = tokio::select! {
        r = &mut back => r,
        r = &mut front => {
            let drained = tokio::time::timeout(DRAIN, back).await;
            match (r, drained) {
                (Err(e), _) => Err(e),
                (Ok(()), Ok(r)) => r,
                (Ok(()), Err(_)) => Ok(SessionEnd::ClientClosed),
            }
        }
    };
    for e in shared.results().abandon() {
        events.emit(e);
    }
    end
}

fn nonce() -> Result<String, ProxyError> {
    let mut raw = [0u8; 8];
    SystemRandom::new().fill(&mut raw).map_err(|_| ProxyError::Sequence {
        side: Side::Internal,
        why: "system random source failed".into(),
    })?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

/// The sentinel's text: one identifier, a syntax error in every server state.
fn sentinel_sql(nonce: &str) -> String {
    format!("agentsh_denied_{nonce}")
}

/// A refusal decided by policy: the rule, its message and the in-transaction handling.
pub(crate) struct Refusal {
    pub(crate) rule: String,
    pub(crate) message: Option<String>,
    pub(crate) terminate_in_tx: bool,
}

/// Records a refusal awaiting its sentinel's answer; returns the sentinel's text.
pub(crate) fn register(shared: &Shared, r: Refusal, batch: u64) -> Result<String, ProxyError> {
    let nonce = nonce()?;
    let sql = sentinel_sql(&nonce);
    shared.pending().push(Denial {
        nonce,
        batch,
        rule: r.rule,
        message: r.message,
        terminate_in_tx: r.terminate_in_tx,
    });
    Ok(sql)
}

/// The replacement for a server error that answers a sentinel, and whether it is FATAL.
fn substitute(msg: &[u8], shared: &Shared, status: TxStatus) -> Option<(Vec<u8>, bool)> {
    let mut pending = shared.pending();
    if pending.is_empty() {
        return None;
    }
    let Ok(Some((wire::Backend::ErrorResponse(e), _))) = wire::parse_backend(msg, Phase::Normal) else {
        return None;
    };
    if e.code() != Some(SQLSTATE_SYNTAX_ERROR) {
        return None;
    }
    let text = e.message().unwrap_or("");
    let i = pending.iter().position(|d| text.contains(&sentinel_sql(&d.nonce)))?;
    let d = pending.remove(i);
    let fatal = d.terminate_in_tx && status != TxStatus::Idle;
    let mut out = Vec::new();
    ErrorFields::policy_denied(&d.rule, d.message.as_deref(), fatal).encode(b'E', &mut out);
    Some((out, fatal))
}

/// The SQLSTATE of an ErrorResponse.
fn error_code(msg: &[u8]) -> Option<String> {
    match wire::parse_backend(msg, Phase::Normal) {
        Ok(Some((wire::Backend::ErrorResponse(e), _))) => e.code().map(str::to_string),
        _ => None,
    }
}

/// The upstream → client direction.
async fn back<UR, CW>(
    mut ur: UR,
    buf: BytesMut,
    mut cw: CW,
    shared: &Shared,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    mut status: TxStatus,
    events: &dyn EventSink,
) -> Result<SessionEnd, ProxyError>
where
    UR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
{
    let mut f = Framer::new(Direction::Backend, buf);
    let mut ready: u64 = 0;
    let mut last_fatal = false;
    let mut rx_open = true;
    let mut out: Vec<u8> = Vec::new();
    let mut finished = Vec::new();
    let write_err = ProxyError::client_io;
    loop {
        // Relay every whole message buffered; edit only sentinel answers.
        let mut off = 0;
        let mut run = 0;
        let mut edited = false;
        let mut close = false;
        loop {
            let n = match wire::check(&f.buf[off..], Direction::Backend, Phase::Normal) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => {
                    let _ = cw
                        .write_all(&fatal("08P01", format!("invalid message from the upstream server: {e}")))
                        .await;
                    let _ = cw.shutdown().await;
                    return Err(ProxyError::Protocol { side: Side::Upstream, source: e });
                }
            };
            let m = &f.buf[off..off + n];
            let mut code: Option<String> = None;
            match m[0] {
                b'Z' => {
                    if let Ok(Some((wire::Backend::ReadyForQuery(s), _))) =
                        wire::parse_backend(m, Phase::Normal)
                    {
                        status = s;
                    }
                    ready += 1;
                    // Sentinels of finished batches that drew no error (discarded by the
                    // server after an earlier error) have nothing left to answer.
                    shared.pending().retain(|d| d.batch >= ready);
                }
                b'E' => {
                    last_fatal = m.windows(7).any(|w| w == b"SFATAL\0" || w == b"SPANIC\0");
                    code = error_code(m);
                    if let Some((rep, fatal)) = substitute(m, shared, status) {
                        code = Some(wire::SQLSTATE_INSUFFICIENT_PRIVILEGE.to_string());
                        if !edited {
                            out.clear();
                            edited = true;
                        }
                        out.extend_from_slice(&f.buf[run..off]);
                        out.extend_from_slice(&rep);
                        run = off + n;
                        if fatal {
                            off += n;
                            close = true;
                            break;
                        }
                    }
                }
                _ => {}
            }
            let mut injected = false;
            if !matches!(m[0], b'T' | b'1' | b'2' | b'3' | b'n' | b't' | b'N' | b'A' | b'S') {
                let mut results = shared.results();
                injected = results.injected_next();
                finished.extend(results.observe(m[0], &m[5..], code.as_deref()));
            }
            if injected {
                // The answer to the proxy's own read-only switch: not the client's.
                if !edited {
                    out.clear();
                    edited = true;
                }
                out.extend_from_slice(&f.buf[run..off]);
                run = off + n;
                if m[0] == b'E' {
                    // The session cannot be made read-only: end it rather than go on writable.
                    out.extend_from_slice(&fatal(
                        wire::SQLSTATE_INSUFFICIENT_PRIVILEGE,
                        "the service turned read-only and this session could not follow; reconnect".into(),
                    ));
                    off += n;
                    close = true;
                    break;
                }
            }
            off += n;
        }
        // Reported before the client sees the answer, so the log never lags behind it.
        for e in finished.drain(..) {
            events.emit(e);
        }
        if off > 0 {
            if edited {
                out.extend_from_slice(&f.buf[run..off]);
                cw.write_all(&out).await.map_err(write_err("writing to the client"))?;
            } else {
                cw.write_all(&f.buf[..off]).await.map_err(write_err("writing to the client"))?;
            }
            f.buf.advance(off);
        }
        if close {
            let _ = cw.shutdown().await;
            return Ok(SessionEnd::TerminatedByPolicy);
        }
        if let Some(total) = f.streamed() {
            if f.buf[0] == b'D' {
                finished.extend(shared.results().observe(b'D', &[], None));
            }
            match f.stream(total, &mut ur, &mut cw).await {
                Ok(true) => continue,
                Ok(false) | Err(StreamError::Read(_)) => {
                    // The client holds part of a message: nothing more can be said to it.
                    let _ = cw.shutdown().await;
                    return Ok(SessionEnd::UpstreamClosed);
                }
                Err(StreamError::Write(e)) => return Err(write_err("writing to the client")(e)),
            }
        }
        tokio::select! {
            biased;
            cmd = rx.recv(), if rx_open => match cmd {
                Some(Cmd::Close(bytes)) => {
                    let _ = cw.write_all(&bytes).await;
                    let _ = cw.shutdown().await;
                    return Ok(SessionEnd::ClientClosed);
                }
                None => rx_open = false,
            },
            r = f.fill(&mut ur, Phase::Normal) => match r {
                Ok(true) => {}
                Ok(false) | Err(_) => {
                    if !last_fatal && !shared.client_done.load(Ordering::Relaxed) {
                        let msg = fatal("08006", "the upstream server closed the connection".into());
                        let _ = cw.write_all(&msg).await;
                    }
                    let _ = cw.shutdown().await;
                    return Ok(SessionEnd::UpstreamClosed);
                }
            },
        }
    }
}
