//! The client → upstream direction of a session: every Query, Parse, Execute and FunctionCall
//! is decided before anything of it moves (Execute again, on the rules in force when it runs,
//! from what its portal's statement was classified as), a refused one is replaced by its
//! sentinel (see `session`), and every message that draws an answer is queued for `results`.

use std::sync::{Arc, atomic::Ordering};

use bytes::{Buf, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    sync::mpsc,
};

use super::{
    Checked, Policy,
    error::{ProxyError, Side},
    events::{StatementInfo, StatementProtocol},
    frame::{Framer, StreamError},
    prepared::{Prepared, Slot, Statements},
    results::Pending,
    session::{Cmd, Refusal, Shared, protocol_error, register},
};
use crate::{
    classify::Effect,
    wire::{self, Direction, Frontend, Parse, Phase, Query, WireError},
};

/// What the proxy sends to switch an open session to read-only.
pub(crate) const READ_ONLY_SWITCH: &str = "SET default_transaction_read_only = on";

/// Rule name of the refusal of an Execute whose portal the proxy holds no decision for.
pub const UNKNOWN_PORTAL: &str = "db-unknown-portal";

/// The client → upstream direction.
pub(crate) async fn run<CR, UW>(
    policy: &Policy<'_>,
    mut cr: CR,
    buf: BytesMut,
    mut uw: UW,
    shared: &Shared,
    tx: mpsc::UnboundedSender<Cmd>,
) -> Result<(), ProxyError>
where
    CR: AsyncRead + Unpin,
    UW: AsyncWrite + Unpin,
{
    let mut f = Framer::new(Direction::Frontend, buf);
    let mut st = Front {
        policy,
        shared,
        out: Vec::with_capacity(16 * 1024),
        syncs: 0,
        in_batch: false,
        stmts: Statements::default(),
    };
    let refuse = |e: WireError| {
        let _ = tx.send(Cmd::Close(protocol_error(&e)));
        ProxyError::Protocol { side: Side::Client, source: e }
    };
    loop {
        // Every whole message buffered, in place; the buffer is advanced past them once.
        let mut off = 0;
        loop {
            let n = match f.next_at(off, Phase::Normal) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => return Err(refuse(e)),
            };
            let msg = &f.buf[off..off + n];
            off += n;
            let parsed = match wire::parse_frontend(msg, Phase::Normal) {
                Ok(Some((m, _))) => m,
                Ok(None) => {
                    return Err(refuse(WireError::Malformed { message: "message", why: "incomplete" }));
                }
                Err(e) => return Err(refuse(e)),
            };
            if let Frontend::Terminate = parsed {
                st.out.extend_from_slice(msg);
                shared.client_done.store(true, Ordering::Relaxed);
                uw.write_all(&st.out).await.map_err(ProxyError::upstream_io("forwarding Terminate"))?;
                let _ = uw.shutdown().await;
                return Ok(());
            }
            if st.message(parsed)? {
                st.out.extend_from_slice(msg);
            }
        }
        f.buf.advance(off);
        if !st.out.is_empty() {
            uw.write_all(&st.out).await.map_err(ProxyError::upstream_io("forwarding to upstream"))?;
            st.out.clear();
        }
        if let Some(total) = f.streamed() {
            match f.stream(total, &mut cr, &mut uw).await {
                Ok(true) => continue,
                Ok(false) => {
                    // The client left inside a message: the server gets no more of it.
                    shared.client_done.store(true, Ordering::Relaxed);
                    let _ = uw.shutdown().await;
                    return Ok(());
                }
                Err(StreamError::Read(e)) => {
                    shared.client_done.store(true, Ordering::Relaxed);
                    return Err(ProxyError::client_io("reading from the client")(e));
                }
                Err(StreamError::Write(e)) => {
                    return Err(ProxyError::upstream_io("forwarding to upstream")(e));
                }
            }
        }
        match f.fill(&mut cr, Phase::Normal).await {
            Ok(true) => {}
            Ok(false) => {
                shared.client_done.store(true, Ordering::Relaxed);
                let _ = uw.shutdown().await;
                return Ok(());
            }
            Err(e) => {
                shared.client_done.store(true, Ordering::Relaxed);
                return Err(ProxyError::client_io("reading from the client")(e));
            }
        }
    }
}

/// The state of the client side.
struct Front<'p, 's> {
    policy: &'p Policy<'p>,
    shared: &'s Shared,
    /// Bytes to write upstream.
    out: Vec<u8>,
    /// Messages sent so far that end in ReadyForQuery (the current batch's number).
    syncs: u64,
    /// Extended-query messages were forwarded since the last Sync.
    in_batch: bool,
    stmts: Statements,
}

impl Front<'_, '_> {
    fn queue(&self, p: Pending) {
        self.shared.results().push(p);
    }

    /// Handles one message; `true` forwards it as it is.
    fn message(&mut self, m: Frontend<'_>) -> Result<bool, ProxyError> {
        let extended = matches!(
            m,
            Frontend::Parse(_)
                | Frontend::Bind(_)
                | Frontend::Describe(_)
                | Frontend::Execute(_)
                | Frontend::Close(_)
        );
        if extended || matches!(m, Frontend::Query(_) | Frontend::FunctionCall(_)) {
            self.follow_read_only();
        }
        self.in_batch |= extended;
        Ok(match m {
            Frontend::Query(q) => {
                self.syncs += 1;
                let a = self.policy.proxy.analyses.analyze(q.sql);
                let effects = self.stmts.resolve_analysis(&a);
                let checked = self.policy.check(&effects, None);
                let info = self.policy.info_of(StatementProtocol::Simple, None, q.sql, &a, &effects);
                let pass = self.until_ready(&checked, info)?;
                if pass {
                    self.stmts.ran(q.sql, &a.statements);
                }
                pass
            }
            Frontend::Parse(p) => {
                let a = self.policy.proxy.analyses.analyze(p.sql);
                let effects = self.stmts.resolve_analysis(&a);
                let checked = self.policy.check(&effects, None);
                match checked.refusal() {
                    Some(r) => {
                        let info =
                            self.policy.info_of(StatementProtocol::Parse, Some(p.name), p.sql, &a, &effects);
                        self.policy.report(&checked, info);
                        self.stmts.prepared(p.name, None);
                        self.parse_sentinel(p.name, r)?;
                        false
                    }
                    None => {
                        // What each Execute reports, made once.
                        let info = self.policy.info_of(
                            StatementProtocol::Execute,
                            Some(p.name),
                            p.sql,
                            &a,
                            &effects,
                        );
                        let statements = &a.statements;
                        let ops = statements
                            .iter()
                            .any(|c| c.prepared.is_some())
                            .then(|| statements.as_slice().into());
                        let prepared = Prepared {
                            text: p.sql.into(),
                            effects: effects.into_owned().into(),
                            param_types: p.param_types.clone().into(),
                            sql_ops: ops,
                            info: Some(Arc::new(info)),
                        };
                        self.stmts.prepared(p.name, Some(prepared));
                        true
                    }
                }
            }
            Frontend::Bind(b) => {
                self.stmts.bound(&b);
                true
            }
            Frontend::Execute(e) => self.execute(e.portal)?,
            Frontend::Close(c) => {
                self.stmts.closed(c.target, c.name);
                true
            }
            Frontend::FunctionCall(fc) => {
                self.syncs += 1;
                let (effects, preset) = self.policy.function_call(fc.oid);
                let checked = self.policy.check(&effects, preset);
                let text = format!("FunctionCall oid {}", fc.oid);
                let info = self.policy.info(StatementProtocol::FunctionCall, None, &text, &effects);
                self.until_ready(&checked, info)?
            }
            Frontend::Sync => {
                self.in_batch = false;
                self.syncs += 1;
                self.queue(Pending::Sync);
                true
            }
            // The proxy authenticated the client itself: a password is never forwarded.
            Frontend::Password(_) => false,
            _ => true,
        })
    }

    /// The service turned read-only while this session was open: once nothing is in flight
    /// and no transaction is open, switch the upstream session too, ahead of the message at
    /// hand (a Query, a FunctionCall or the first message of an extended batch); a statement
    /// that would lift it (`RESET ALL` and `DISCARD ALL` included: the session's defaults are
    /// still read-write) is refused from now on.
    fn follow_read_only(&mut self) {
        if self.in_batch || self.policy.read_only() || !self.policy.proxy.is_read_only() {
            return;
        }
        let mut results = self.shared.results();
        if !results.idle() {
            return;
        }
        results.push(Pending::Injected);
        drop(results);
        self.syncs += 1;
        Query { sql: READ_ONLY_SWITCH }.encode(&mut self.out);
        self.policy.set_read_only();
        tracing::info!(service = %self.policy.proxy.service_name, "db session switched to read-only");
    }

    /// Decides an Execute again, on the effects its portal's statement was classified with.
    fn execute(&mut self, portal: &str) -> Result<bool, ProxyError> {
        let bound = match self.stmts.portal(portal) {
            Some(Slot::Known(b)) => b.clone(),
            // Refused (and reported) at Parse: the server never had it.
            Some(Slot::Refused) => {
                let r = Refusal { rule: UNKNOWN_PORTAL.into(), message: None, terminate_in_tx: false };
                self.parse_sentinel_unnamed(r)?;
                return Ok(false);
            }
            None => {
                let r = Refusal {
                    rule: UNKNOWN_PORTAL.into(),
                    message: Some(format!("no decision is held for portal \"{portal}\"")),
                    terminate_in_tx: true,
                };
                tracing::info!(service = %self.policy.proxy.service_name, rule = UNKNOWN_PORTAL, "db statement denied");
                self.parse_sentinel_unnamed(r)?;
                return Ok(false);
            }
        };
        let p = &bound.prepared;
        let resolved;
        let effects: &[Effect] = match &p.sql_ops {
            Some(ops) => {
                resolved = self.stmts.resolve(ops);
                &resolved
            }
            None => &p.effects,
        };
        let checked = self.policy.check(effects, None);
        let name = bound.statement.as_deref();
        let mut info = match &p.info {
            Some(made) if p.sql_ops.is_none() => StatementInfo::clone(made),
            _ => self.policy.info(StatementProtocol::Execute, name, &p.text, effects),
        };
        info.params = Some(bound.params.clone());
        match checked.refusal() {
            Some(r) => {
                self.policy.report(&checked, info);
                self.parse_sentinel_unnamed(r)?;
                Ok(false)
            }
            None => {
                if let Some(ops) = &p.sql_ops {
                    self.stmts.ran(&p.text, ops);
                }
                self.queue(Pending::run(self.policy.event(&checked, info), false));
                Ok(true)
            }
        }
    }

    /// A decided Query or FunctionCall (answered up to its own ReadyForQuery): queued to be
    /// reported when it ends, or reported now and replaced by its sentinel Query. `true`
    /// forwards it.
    fn until_ready(&mut self, checked: &Checked, info: StatementInfo) -> Result<bool, ProxyError> {
        let Some(r) = checked.refusal() else {
            self.queue(Pending::run(self.policy.event(checked, info), true));
            return Ok(true);
        };
        self.policy.report(checked, info);
        let sql = register(self.shared, r, self.syncs - 1)?;
        self.queue(Pending::RefusedQuery);
        Query { sql: &sql }.encode(&mut self.out);
        Ok(false)
    }

    /// A refused Parse: a sentinel Parse of the same name (so the unnamed statement is dropped
    /// as a failed Parse would drop it).
    fn parse_sentinel(&mut self, name: &str, r: Refusal) -> Result<(), ProxyError> {
        let sql = register(self.shared, r, self.syncs)?;
        self.queue(Pending::Sentinel);
        Parse { name, sql: &sql, param_types: Vec::new() }.encode(&mut self.out);
        Ok(())
    }

    /// A refused Execute: a sentinel Parse under a name of its own, which touches no statement
    /// of the client's (the server rejects it before storing anything).
    fn parse_sentinel_unnamed(&mut self, r: Refusal) -> Result<(), ProxyError> {
        let sql = register(self.shared, r, self.syncs)?;
        self.queue(Pending::Sentinel);
        Parse { name: &sql, sql: &sql, param_types: Vec::new() }.encode(&mut self.out);
        Ok(())
    }
}
