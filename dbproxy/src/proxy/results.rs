//! Matching the server's answers to what was forwarded, so a statement's event carries its
//! rows, duration and SQLSTATE. The client side queues one entry per message that draws an
//! answer, in order; the backend side feeds every message it relays to [`Queue::observe`].
//!
//! A simple Query, a FunctionCall and a Sync each end at their ReadyForQuery. An Execute ends
//! at its CommandComplete, EmptyQueryResponse, PortalSuspended or ErrorResponse, or at the
//! batch's ReadyForQuery when an earlier error made the server skip it. A refusal's sentinel
//! in an extended batch ends at its ErrorResponse (or is skipped the same way).

use std::{collections::VecDeque, time::Instant};

use super::events::{DbEvent, StatementResult};

/// What a queued entry waits for.
#[derive(Debug)]
pub(crate) enum Pending {
    /// A statement let through: its event, completed when its answer ends.
    Run {
        event: Box<DbEvent>,
        started: Instant,
        /// Ends at ReadyForQuery (simple Query, FunctionCall) rather than at its own result.
        at_ready: bool,
        result: StatementResult,
        data_rows: u64,
    },
    /// A refused Query or FunctionCall: its sentinel's ReadyForQuery.
    RefusedQuery,
    /// A refusal's sentinel Parse inside an extended batch: its ErrorResponse.
    Sentinel,
    /// A Sync: its ReadyForQuery.
    Sync,
    /// A Query the proxy sent on its own: its answers, up to its ReadyForQuery, are not the
    /// client's.
    Injected,
}

impl Pending {
    /// A statement let through, to be reported when it ends.
    pub(crate) fn run(event: DbEvent, at_ready: bool) -> Pending {
        Pending::Run {
            event: Box::new(event),
            started: Instant::now(),
            at_ready,
            result: StatementResult::default(),
            data_rows: 0,
        }
    }

    fn ends_at_ready(&self) -> bool {
        matches!(
            self,
            Pending::Run { at_ready: true, .. } | Pending::RefusedQuery | Pending::Sync | Pending::Injected
        )
    }
}

/// The entries in order of forwarding.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    q: VecDeque<Pending>,
    /// The first error since the last ReadyForQuery: why the rest of the batch was skipped.
    batch_error: Option<String>,
    /// The last ReadyForQuery said a transaction is open (or failed).
    in_tx: bool,
}

/// Rows from a CommandComplete tag: the last word when it is a number (`SELECT 5`,
/// `INSERT 0 3`, `UPDATE 2`, `COPY 4`), and the verb.
pub(crate) fn command_rows(tag: &str) -> (Option<u64>, Option<String>) {
    let mut words = tag.split_ascii_whitespace();
    let verb = words.next();
    let rows = words.next_back().and_then(|last| last.parse().ok());
    (rows, verb.map(str::to_string))
}

fn finish(p: Pending, complete: bool) -> Option<DbEvent> {
    let Pending::Run { mut event, started, mut result, data_rows, .. } = p else { return None };
    result.duration = started.elapsed();
    result.complete = complete;
    if result.rows.is_none() && data_rows > 0 {
        result.rows = Some(data_rows);
    }
    if let Some(s) = event.statement.as_mut() {
        s.result = Some(result);
    }
    Some(*event)
}

impl Queue {
    /// Queues an entry (before its message is forwarded).
    pub(crate) fn push(&mut self, p: Pending) {
        self.q.push_back(p);
    }

    /// A queue for a session whose last ReadyForQuery said `in_tx`.
    pub(crate) fn new(in_tx: bool) -> Queue {
        Queue { in_tx, ..Queue::default() }
    }

    /// Whether everything forwarded has been answered and no transaction is open: a Query
    /// sent now runs on its own, in no transaction of the client's.
    pub(crate) fn idle(&self) -> bool {
        self.q.is_empty() && !self.in_tx
    }

    /// Whether the next answer belongs to a Query the proxy sent on its own.
    pub(crate) fn injected_next(&self) -> bool {
        matches!(self.q.front(), Some(Pending::Injected))
    }

    /// Feeds one backend message (`tag`, `body`; for an error, `sqlstate` is what the client
    /// is shown); returns the events of the statements that ended.
    pub(crate) fn observe(&mut self, tag: u8, body: &[u8], sqlstate: Option<&str>) -> Vec<DbEvent> {
        let mut done = Vec::new();
        match tag {
            b'D' => {
                if let Some(Pending::Run { data_rows, .. }) = self.q.front_mut() {
                    *data_rows += 1;
                }
            }
            b'C' | b'I' | b's' | b'E' => {
                if tag == b'E' && self.batch_error.is_none() {
                    self.batch_error = sqlstate.map(str::to_string);
                }
                let Some(front) = self.q.front_mut() else { return done };
                match front {
                    Pending::Run { result, .. } => {
                        if tag == b'C' {
                            let text = body.strip_suffix(b"\0").unwrap_or(body);
                            let (rows, verb) = command_rows(&String::from_utf8_lossy(text));
                            if let Some(n) = rows {
                                result.rows = Some(result.rows.unwrap_or(0) + n);
                            }
                            result.command = verb;
                        }
                        if tag == b'E' && result.sqlstate.is_none() {
                            result.sqlstate = sqlstate.map(str::to_string);
                        }
                    }
                    Pending::Sentinel if tag == b'E' => {
                        self.q.pop_front();
                        return done;
                    }
                    _ => return done,
                }
                if !front.ends_at_ready() {
                    done.extend(self.q.pop_front().and_then(|p| finish(p, true)));
                }
            }
            b'Z' => {
                self.in_tx = body.first().is_some_and(|&s| s != b'I');
                // Everything up to the entry this ReadyForQuery answers has ended; an Execute
                // still waiting was skipped by the server after an earlier error.
                let batch_error = self.batch_error.take();
                while let Some(mut p) = self.q.pop_front() {
                    let last = p.ends_at_ready();
                    if let Pending::Run { result, .. } = &mut p
                        && !last
                        && result.sqlstate.is_none()
                    {
                        result.sqlstate = batch_error.clone();
                    }
                    done.extend(finish(p, true));
                    if last {
                        break;
                    }
                }
            }
            _ => {}
        }
        done
    }

    /// The session ended: the statements still waiting, reported without an answer.
    pub(crate) fn abandon(&mut self) -> Vec<DbEvent> {
        self.q.drain(..).filter_map(|p| finish(p, false)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::{
        ClientCtx, DbEventKind,
        events::{StatementInfo, StatementProtocol},
    };

    fn ev(text: &str) -> DbEvent {
        DbEvent {
            kind: DbEventKind::Statement,
            service: "s".into(),
            client: ClientCtx::default().into(),
            db_user: None,
            database: None,
            application_name: None,
            decision: None,
            statement: Some(StatementInfo::new(StatementProtocol::Simple, None, text, &[])),
            error: None,
        }
    }

    fn result(e: &DbEvent) -> StatementResult {
        e.statement.as_ref().unwrap().result.clone().unwrap()
    }

    #[test]
    fn tags_give_rows_and_verb() {
        assert_eq!(command_rows("SELECT 5"), (Some(5), Some("SELECT".into())));
        assert_eq!(command_rows("INSERT 0 3"), (Some(3), Some("INSERT".into())));
        assert_eq!(command_rows("BEGIN"), (None, Some("BEGIN".into())));
        assert_eq!(command_rows("CREATE TABLE"), (None, Some("CREATE".into())));
    }

    #[test]
    fn a_simple_query_sums_its_statements_and_ends_at_ready() {
        let mut q = Queue::default();
        q.push(Pending::run(ev("a"), true));
        assert!(q.observe(b'C', b"UPDATE 2\0", None).is_empty());
        assert!(q.observe(b'C', b"DELETE 3\0", None).is_empty());
        let done = q.observe(b'Z', b"I", None);
        let r = result(&done[0]);
        assert_eq!(
            (r.rows, r.command.as_deref(), r.sqlstate, r.complete),
            (Some(5), Some("DELETE"), None, true)
        );
    }

    #[test]
    fn executes_end_at_their_result_or_with_the_batch_error() {
        let mut q = Queue::default();
        q.push(Pending::run(ev("a"), false));
        q.push(Pending::Sentinel);
        q.push(Pending::run(ev("b"), false));
        q.push(Pending::Sync);
        q.push(Pending::run(ev("c"), true));
        assert!(q.observe(b'D', b"", None).is_empty());
        assert!(q.observe(b'D', b"", None).is_empty());
        let a = q.observe(b's', b"", None);
        assert_eq!(result(&a[0]).rows, Some(2), "portal suspended: rows seen");
        assert!(q.observe(b'E', b"", Some("42501")).is_empty(), "the sentinel's error");
        let b = q.observe(b'Z', b"E", None);
        assert_eq!(b.len(), 1);
        let skipped = result(&b[0]);
        assert_eq!(
            (skipped.sqlstate.as_deref(), skipped.rows),
            (Some("42501"), None),
            "skipped by the refusal"
        );
        assert!(q.observe(b'E', b"", Some("22012")).is_empty());
        let c = q.observe(b'Z', b"I", None);
        assert_eq!(result(&c[0]).sqlstate.as_deref(), Some("22012"));
        q.push(Pending::run(ev("d"), false));
        let d = q.abandon();
        assert!(!result(&d[0]).complete);
    }
}
