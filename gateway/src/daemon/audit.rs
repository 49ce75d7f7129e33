//! The audit recorder: every event goes to the JSONL audit file under the state dir, to the
//! configured sinks, and to the collector of the command that caused it (for `exec --events`).
//!
//! Files are written by a thread of their own: [`Recorder::record`] hands the event over (a
//! busy source, such as a statement per database round trip or a file operation, pays no
//! encoding, no `write` and no chain bookkeeping), and the writer encodes what has queued up
//! and appends it with one `write` per file. The queue is bounded: a writer that cannot keep
//! up slows the recorders down rather than growing without limit. [`Recorder::flush`] waits
//! until everything recorded before it is written; the control API flushes before every
//! answer, so what a command did is in the log when `exec` returns, and so does the daemon
//! before it exits.
//!
//! With `audit.integrity` each JSONL file carries its own HMAC chain ([`crate::integrity`]),
//! with its state mirrored in a `<file>.chain` sidecar (0600, replaced atomically). At start the
//! chain continues from the file's last line when that line verifies and the sidecar does not
//! claim more lines than the file has; otherwise a new chain starts with an
//! `integrity_chain_rotated` event saying why (`initial`, `key_rotated`, `log_truncated`,
//! `post_tamper_recovery`) and what the old chain's last line was. With `audit.max_size_mb`
//! a file that reaches the size is renamed to `<file>.1` (older ones shift up to
//! `audit.max_backups`) and the new file's chain starts with a `rotation` event linking to the
//! last line of the old one.

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    io::{self, Read, Seek, SeekFrom, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::{
        Mutex,
        mpsc::{Receiver, SyncSender},
    },
};

use anyhow::Context;
use policies::config::{AuditConfig, IntegrityConfig, SinkType};
use serde_json::{Map, Value, json};

use crate::{
    events::{Event, EventPolicy},
    integrity::{self, ChainState, Key, ROTATED},
};

/// Most events kept per running command; later ones still reach the audit file.
const MAX_COLLECTED: usize = 10_000;

/// Fans events out to files, stderr and per-command collectors.
pub struct Recorder {
    log_allowed: bool,
    collectors: Mutex<HashMap<String, Collector>>,
    followers: Mutex<Vec<std::sync::mpsc::SyncSender<Event>>>,
    otlp: std::sync::OnceLock<super::otlp::Exporter>,
    writer: SyncSender<Msg>,
}

/// Events waiting for the writer before [`Recorder::record`] waits for room.
const QUEUE: usize = 16 * 1024;
/// Most events the writer encodes before it writes them out.
const BATCH: usize = 1024;
/// How long the writer lets events queue up after a batch before it looks again.
const LINGER: std::time::Duration = std::time::Duration::from_micros(500);

/// What the writer thread is handed.
enum Msg {
    /// An event, encoded by its recorder: the writer then frees one string, not the many
    /// small allocations of an event (freeing another thread's memory is what costs).
    Event(String),
    /// Answer once everything before is written.
    Flush(SyncSender<()>),
}

/// The writer thread's own: the files, their chains, and where else lines go.
struct Writer {
    files: Vec<Sink>,
    key: Option<Key>,
    stderr: bool,
    max_size: u64,
    max_backups: u32,
}

/// Events a follower may fall behind by before it is dropped (a slow reader never slows the
/// recorder).
const FOLLOW_BACKLOG: usize = 4096;

/// One JSONL file and its chain.
struct Sink {
    path: PathBuf,
    file: File,
    /// Bytes in the file and in `pending`.
    size: u64,
    chain: Option<ChainState>,
    /// Lines encoded, not yet written.
    pending: Vec<u8>,
    /// The chain state to mirror in the sidecar once `pending` is written.
    sidecar: Option<Value>,
}

/// What one running command keeps of its events for `exec --events`.
struct Collector {
    blocked_only: bool,
    limit: usize,
    events: Vec<Event>,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

/// The key `config` names.
pub fn load_key(config: &IntegrityConfig) -> anyhow::Result<Key> {
    let bytes = match (&config.key_file, &config.key_env) {
        (Some(path), _) => std::fs::read(path)
            .with_context(|| format!("audit.integrity.key_file: reading {}", path.display()))?,
        (None, Some(var)) => std::env::var(var)
            .with_context(|| format!("audit.integrity.key_env: {var} is not set"))?
            .into_bytes(),
        (None, None) => anyhow::bail!("audit.integrity: set key_file or key_env"),
    };
    Key::new(config.algorithm, &bytes).map_err(|e| anyhow::anyhow!("audit.integrity: {e}"))
}

impl Recorder {
    /// Open `<state_dir>/audit.jsonl` and the sinks of `config`, resuming or starting chains,
    /// and start the writer thread.
    pub fn open(state_dir: &Path, config: &AuditConfig) -> anyhow::Result<Recorder> {
        Recorder::open_sized(state_dir, config, config.max_size_mb.saturating_mul(1 << 20))
    }

    /// [`Recorder::open`] with files rotated at `max_size` bytes (0: never).
    fn open_sized(state_dir: &Path, config: &AuditConfig, max_size: u64) -> anyhow::Result<Recorder> {
        let default = state_dir.join("audit.jsonl");
        let mut paths: Vec<PathBuf> = vec![default];
        let mut stderr = false;
        for sink in &config.sinks {
            match (sink.kind, &sink.path) {
                (SinkType::Stderr, _) => stderr = true,
                (SinkType::Jsonl, Some(p)) if !paths.contains(p) => paths.push(p.clone()),
                (SinkType::Jsonl, _) => {}
            }
        }
        let key = if config.integrity.enabled { Some(load_key(&config.integrity)?) } else { None };
        let mut files = Vec::new();
        for path in paths {
            let file = open_append(&path).with_context(|| format!("opening {}", path.display()))?;
            let size = file.metadata()?.len();
            let mut sink = Sink { path, file, size, chain: None, pending: Vec::new(), sidecar: None };
            if let Some(key) = &key {
                let (state, reason) = recover(&sink.path, key);
                sink.chain = Some(state);
                if let Some((reason, prior)) = reason {
                    sink.write_line(key, rotated_event(reason, prior));
                    sink.write_out()?;
                }
            }
            files.push(sink);
        }
        let writer = Writer { files, key, stderr, max_size, max_backups: config.max_backups };
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("agentsh-audit".into())
            .spawn(move || writer.run(rx))
            .context("starting the audit writer")?;
        Ok(Recorder {
            log_allowed: config.log_allowed,
            collectors: Mutex::default(),
            followers: Mutex::default(),
            otlp: std::sync::OnceLock::new(),
            writer: tx,
        })
    }

    /// Waits until every event recorded before the call is in the files (and their chain
    /// state in the sidecars).
    pub fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if self.writer.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// Whether an event of `kind` with `policy`, of command `command_id`, would be kept: an
    /// allowed decision is only collected for its command unless `log_allowed`. A busy source
    /// (a statement per database round trip) asks before building an event that would be
    /// dropped.
    pub fn keeps(&self, kind: &str, policy: Option<&EventPolicy>, command_id: Option<&str>) -> bool {
        if !self.only_collected(kind, policy) {
            return true;
        }
        let Some(cmd) = command_id else { return false };
        let collectors = self.collectors.lock().unwrap_or_else(|p| p.into_inner());
        collectors.get(cmd).is_some_and(|c| c.events.len() < c.limit && !c.blocked_only)
    }

    /// Whether such an event goes only to its command's collector (an allowed decision while
    /// allowed decisions are not logged).
    fn only_collected(&self, kind: &str, policy: Option<&EventPolicy>) -> bool {
        !self.log_allowed && policy.is_some() && !crate::events::is_blocked(kind, policy)
    }

    /// Record one event.
    pub fn record(&self, event: Event) {
        if self.only_collected(&event.kind, event.policy.as_ref()) {
            self.collect(event);
            return;
        }
        self.notify(&event);
        if let Some(x) = self.otlp.get() {
            x.export(&event);
        }
        self.collect_copy(&event);
        let line = match serde_json::to_string(&event) {
            Ok(line) => line,
            Err(_) => {
                eprintln!("agentsh: audit encode failed for a {} event", event.kind);
                return;
            }
        };
        drop(event);
        if self.writer.send(Msg::Event(line)).is_err() {
            eprintln!("agentsh: the audit writer has stopped; an event was not written");
        }
    }

    /// Also export every event through `exporter` from now on.
    pub fn export_to(&self, exporter: super::otlp::Exporter) {
        let _ = self.otlp.set(exporter);
    }

    /// A stream of every event recorded from now on (see [`FOLLOW_BACKLOG`]).
    pub fn follow(&self) -> std::sync::mpsc::Receiver<Event> {
        let (tx, rx) = std::sync::mpsc::sync_channel(FOLLOW_BACKLOG);
        self.followers.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        rx
    }

    fn notify(&self, event: &Event) {
        let mut followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
        if !followers.is_empty() {
            followers.retain(|tx| tx.try_send(event.clone()).is_ok());
        }
    }

    fn collect(&self, event: Event) {
        let Some(cmd) = event.command_id.clone() else { return };
        let mut collectors = self.collectors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = collectors.get_mut(&cmd)
            && c.wants(&event)
        {
            c.events.push(event);
        }
    }

    /// [`Recorder::collect`] of a copy, made only when a collector keeps it.
    fn collect_copy(&self, event: &Event) {
        let Some(cmd) = event.command_id.as_deref() else { return };
        let mut collectors = self.collectors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = collectors.get_mut(cmd)
            && c.wants(event)
        {
            c.events.push(event.clone());
        }
    }

    /// Start keeping the events of `command_id`: all of them (up to a bound), or only blocked
    /// ones up to `limit`. Nothing is kept for a command that asked for no events.
    pub fn start_collecting(&self, command_id: &str, blocked_only: bool, limit: usize) {
        let c = Collector { blocked_only, limit: limit.min(MAX_COLLECTED), events: Vec::new() };
        self.collectors.lock().unwrap_or_else(|p| p.into_inner()).insert(command_id.to_string(), c);
    }

    /// Stop keeping the events of `command_id` and return them.
    pub fn finish(&self, command_id: &str) -> Vec<Event> {
        self.collectors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(command_id)
            .map(|c| c.events)
            .unwrap_or_default()
    }
}

impl Collector {
    fn wants(&self, event: &Event) -> bool {
        self.events.len() < self.limit && (!self.blocked_only || event.is_blocked())
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
    }
}

impl Writer {
    /// Writes what arrives until every [`Recorder`] is gone: each batch (what queued up while
    /// the last was written, up to [`BATCH`]) is encoded, then written out, then its flushes
    /// are answered.
    fn run(mut self, rx: Receiver<Msg>) {
        let mut flushed = Vec::new();
        // Idle, the thread waits on the queue, and the first event wakes it.
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            loop {
                let mut n = 0;
                while let Some(msg) = next.take() {
                    match msg {
                        Msg::Event(line) => self.add(line),
                        Msg::Flush(done) => flushed.push(done),
                    }
                    n += 1;
                    if n < BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                self.write_out();
                for done in flushed.drain(..) {
                    let _ = done.send(());
                }
                // Busy, it lingers instead: events queue up meanwhile without each waking it
                // (a wake costs the recorder more than handing the event over).
                std::thread::sleep(LINGER);
                match rx.try_recv() {
                    Ok(msg) => next = Some(msg),
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                }
            }
        }
        self.write_out();
    }

    /// Appends the encoded event `line` to every file (sealed into each chain with
    /// integrity), and to stderr when asked.
    fn add(&mut self, line: String) {
        // Sealing works on the object: decoded once, here, off the recorder's path.
        let object = match &self.key {
            Some(_) => match serde_json::from_str::<Value>(&line) {
                Ok(Value::Object(map)) => Some(map),
                _ => {
                    eprintln!("agentsh: audit: an event did not decode for sealing");
                    return;
                }
            },
            None => None,
        };
        for i in 0..self.files.len() {
            if let Err(e) = self.append(i, &line, object.as_ref()) {
                eprintln!("agentsh: audit write to {} failed: {e}", self.files[i].path.display());
            }
        }
        if self.stderr {
            eprintln!("{line}");
        }
    }

    fn append(&mut self, i: usize, line: &str, object: Option<&Map<String, Value>>) -> io::Result<()> {
        if self.max_size > 0 && self.files[i].size >= self.max_size {
            self.rotate(i)?;
        }
        let sink = &mut self.files[i];
        match (&self.key, object) {
            (Some(key), Some(object)) => sink.write_line(key, object.clone()),
            _ => sink.write_plain(line),
        }
        Ok(())
    }

    fn write_out(&mut self) {
        for sink in &mut self.files {
            if let Err(e) = sink.write_out() {
                eprintln!("agentsh: audit write to {} failed: {e}", sink.path.display());
            }
        }
    }

    /// `<file>` → `<file>.1`, older ones shifted, the oldest beyond `max_backups` dropped; the
    /// new file's chain starts with a link to the old one's last line.
    fn rotate(&mut self, i: usize) -> io::Result<()> {
        let sink = &mut self.files[i];
        sink.write_out()?;
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", sink.path.display()));
        let keep = self.max_backups.max(1);
        let _ = std::fs::remove_file(numbered(keep));
        let _ = std::fs::remove_file(sidecar(&numbered(keep)));
        for n in (1..keep).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
            let _ = std::fs::rename(sidecar(&numbered(n)), sidecar(&numbered(n + 1)));
        }
        std::fs::rename(&sink.path, numbered(1))?;
        let _ = std::fs::rename(sidecar(&sink.path), sidecar(&numbered(1)));
        sink.file = open_append(&sink.path)?;
        sink.size = 0;
        if let (Some(key), Some(chain)) = (&self.key, sink.chain.take()) {
            let prior = json!({"last_sequence_seen_in_log": chain.next.checked_sub(1),
                               "last_entry_hash_seen_in_log": chain.prev_hash});
            sink.chain = Some(ChainState::default());
            sink.write_line(key, rotated_event("rotation", prior));
        }
        Ok(())
    }
}

impl Sink {
    fn write_plain(&mut self, line: &str) {
        self.pending.extend_from_slice(line.as_bytes());
        self.pending.push(b'\n');
        self.size += line.len() as u64 + 1;
    }

    /// Seal `event` into the chain and queue it; the chain state is mirrored in the sidecar
    /// when the line is written.
    fn write_line(&mut self, key: &Key, event: Map<String, Value>) {
        let chain = self.chain.get_or_insert_with(ChainState::default);
        let line = integrity::seal(key, chain, event);
        self.sidecar = Some(json!({"format_version": integrity::FORMAT_VERSION, "sequence": chain.next - 1,
                           "prev_hash": chain.prev_hash, "key_fingerprint": key.fingerprint(),
                           "updated_at": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()}));
        self.write_plain(&line);
    }

    /// Appends the queued lines (one `write`), then mirrors the chain state they end with.
    fn write_out(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            let written = self.file.write_all(&self.pending);
            if written.is_err() {
                // What did not reach the file is not counted.
                self.size = self.file.metadata().map_or(self.size, |m| m.len());
            }
            self.pending.clear();
            written?;
        }
        match self.sidecar.take() {
            Some(state) => write_sidecar(&self.path, &state),
            None => Ok(()),
        }
    }
}

/// `<file>.chain`.
pub fn sidecar(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.chain", path.display()))
}

fn write_sidecar(path: &Path, state: &Value) -> io::Result<()> {
    let target = sidecar(path);
    let tmp = PathBuf::from(format!("{}.tmp", target.display()));
    let mut f = OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(state.to_string().as_bytes())?;
    std::fs::rename(&tmp, &target)
}

fn rotated_event(reason: &str, prior: Value) -> Map<String, Value> {
    let mut e = Event::new(ROTATED, "-");
    e.fields.insert("reason_code".into(), reason.into());
    e.fields.insert("prior_chain_summary".into(), prior);
    match serde_json::to_value(e) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// The last non-empty line of `path` (at most its last 1 MiB is read).
fn last_line(path: &Path) -> Option<String> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let start = len.saturating_sub(1 << 20);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut tail = String::new();
    f.read_to_string(&mut tail).ok()?;
    tail.lines().rev().find(|l| !l.trim().is_empty()).map(str::to_string)
}

/// Where the chain of `path` stands, and why a new one starts (with the old one's summary).
type Recovery = (ChainState, Option<(&'static str, Value)>);

fn recover(path: &Path, key: &Key) -> Recovery {
    let side: Option<Value> =
        std::fs::read_to_string(sidecar(path)).ok().and_then(|t| serde_json::from_str(&t).ok());
    let side_seq = side.as_ref().and_then(|s| s["sequence"].as_u64());
    let side_fp = side.as_ref().and_then(|s| s["key_fingerprint"].as_str().map(str::to_string));
    let fresh = |reason: &'static str, prior: Value| (ChainState::default(), Some((reason, prior)));
    let Some(line) = last_line(path) else {
        return match side_seq {
            Some(seq) => fresh("log_truncated", json!({"last_sequence_seen_in_sidecar": seq})),
            None => fresh("initial", Value::Null),
        };
    };
    match integrity::check_line(key, &line) {
        Ok(e) if side_seq.is_some_and(|s| s > e.sequence) => fresh(
            "log_truncated",
            json!({"last_sequence_seen_in_log": e.sequence, "last_entry_hash_seen_in_log": e.entry_hash,
                   "last_sequence_seen_in_sidecar": side_seq}),
        ),
        Ok(e) => (ChainState { next: e.sequence + 1, prev_hash: e.entry_hash }, None),
        Err(why) => {
            let prior = json!({"last_line_error": why});
            if side_fp.as_deref().is_some_and(|fp| fp != key.fingerprint()) {
                fresh("key_rotated", prior)
            } else if !line.contains("\"integrity\"") {
                fresh("initial", prior)
            } else {
                fresh("post_tamper_recovery", prior)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use policies::config::IntegrityAlgorithm;

    use super::*;
    use crate::integrity::Verifier;

    fn dir(label: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("agentsh-audit-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn config(d: &Path) -> AuditConfig {
        let key = d.join("key");
        std::fs::write(&key, [b'k'; 40]).unwrap();
        AuditConfig {
            integrity: IntegrityConfig {
                enabled: true,
                algorithm: IntegrityAlgorithm::HmacSha256,
                key_file: Some(key),
                key_env: None,
            },
            max_backups: 2,
            ..AuditConfig::default()
        }
    }

    fn events(r: &Recorder, n: usize) {
        for i in 0..n {
            r.record(Event::new("net_connect", "s").field("i", i));
        }
    }

    fn lines(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p).unwrap().lines().map(str::to_string).collect()
    }

    #[test]
    fn keeps_says_exactly_whether_record_keeps_an_event() {
        let policy = |d: &str| Some(EventPolicy { decision: d.into(), rule: "r".into(), message: None });
        let mut checked = 0;
        for log_allowed in [false, true] {
            for collector in [None, Some(false), Some(true)] {
                for (kind, p) in [
                    ("db_statement", policy("allow")),
                    ("db_statement", policy("audit")),
                    ("db_statement_blocked", policy("deny")),
                    ("db_connect", None),
                    ("listener_auth_fail", None),
                ] {
                    let d = dir("keeps");
                    let cfg = AuditConfig { log_allowed, ..config(&d) };
                    let r = Recorder::open(&d, &cfg).unwrap();
                    if let Some(blocked_only) = collector {
                        r.start_collecting("cmd-1", blocked_only, 10);
                    }
                    let said = r.keeps(kind, p.as_ref(), Some("cmd-1"));
                    let mut e = Event::new(kind, "s");
                    e.command_id = Some("cmd-1".into());
                    e.policy = p.clone();
                    r.record(e);
                    r.flush();
                    let logged =
                        std::fs::read_to_string(d.join("audit.jsonl")).unwrap_or_default().contains(kind);
                    let collected = !r.finish("cmd-1").is_empty();
                    assert_eq!(
                        said,
                        logged || collected,
                        "{kind} {p:?} log_allowed={log_allowed} {collector:?}"
                    );
                    checked += usize::from(!said);
                    let _ = std::fs::remove_dir_all(&d);
                }
            }
        }
        assert!(checked >= 2, "some events are not kept");
    }

    #[test]
    fn rotation_links_files_and_keeps_max_backups() {
        let d = dir("rotate");
        let cfg = config(&d);
        let r = Recorder::open_sized(&d, &cfg, 2048).unwrap();
        events(&r, 60);
        r.flush();
        let log = d.join("audit.jsonl");
        let set = [
            PathBuf::from(format!("{}.2", log.display())),
            PathBuf::from(format!("{}.1", log.display())),
            log.clone(),
        ];
        assert!(set.iter().all(|p| p.exists()), "{set:?}");
        assert!(!PathBuf::from(format!("{}.3", log.display())).exists(), "only max_backups kept");
        let key = load_key(&cfg.integrity).unwrap();
        // The oldest kept file starts mid-chain (its predecessors were dropped), so walk from
        // `.1`, whose first line links to `.2`'s last.
        let mut v = Verifier::default();
        let mut prev_last: Option<String> = lines(&set[0]).last().cloned();
        for p in &set[1..] {
            let ls = lines(p);
            let link = serde_json::from_str::<Value>(&ls[0]).unwrap();
            let want = serde_json::from_str::<Value>(prev_last.as_deref().unwrap()).unwrap();
            assert_eq!(
                link["fields"]["prior_chain_summary"]["last_entry_hash_seen_in_log"],
                want["integrity"]["entry_hash"],
                "{} links to the file before it",
                p.display()
            );
            for (i, l) in ls.iter().enumerate() {
                v.next(&key, l, i == 0 && p != &set[1])
                    .unwrap_or_else(|e| panic!("{}:{}: {e}", p.display(), i + 1));
            }
            prev_last = ls.last().cloned();
        }
        let first = lines(&log).into_iter().next().unwrap();
        assert!(first.contains("\"reason_code\":\"rotation\""), "{first}");
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Recorders on several threads hand events to the writer; after `flush` every one of
    /// them is in the file, in one chain that verifies, and the sidecar names its last line.
    #[test]
    fn events_from_many_threads_are_all_written_in_one_chain_once_flushed() {
        let d = dir("threads");
        let cfg = config(&d);
        let r = std::sync::Arc::new(Recorder::open(&d, &cfg).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        r.record(Event::new("net_connect", "s").field("t", t).field("i", i));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        r.flush();
        let log = d.join("audit.jsonl");
        let ls = lines(&log);
        // The chain's first line says why it started.
        assert_eq!(ls.len(), 1 + 4 * 500);
        let key = load_key(&cfg.integrity).unwrap();
        let mut v = Verifier::default();
        for (i, l) in ls.iter().enumerate() {
            v.next(&key, l, false).unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
        }
        for t in 0..4 {
            let mine: Vec<u64> = ls
                .iter()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .filter(|e| e["fields"]["t"] == t)
                .map(|e| e["fields"]["i"].as_u64().unwrap())
                .collect();
            assert_eq!(mine, (0..500).collect::<Vec<_>>(), "thread {t}'s events in its order");
        }
        let state: Value = serde_json::from_str(&std::fs::read_to_string(sidecar(&log)).unwrap()).unwrap();
        assert_eq!(state["sequence"], (ls.len() - 1) as u64, "{state}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_tampered_tail_starts_a_new_chain_that_says_why() {
        let d = dir("tamper");
        let cfg = config(&d);
        events(&Recorder::open(&d, &cfg).unwrap(), 3);
        let log = d.join("audit.jsonl");
        let mut ls = lines(&log);
        let last = ls.pop().unwrap().replace("net_connect", "net_connect_blocked");
        ls.push(last);
        std::fs::write(&log, ls.join("\n") + "\n").unwrap();
        events(&Recorder::open(&d, &cfg).unwrap(), 1);
        let after = lines(&log);
        assert_eq!(after.len(), 6, "{after:#?}");
        assert!(after[4].contains("\"reason_code\":\"post_tamper_recovery\""), "{}", after[4]);
        // Reopening an intact log continues it.
        events(&Recorder::open(&d, &cfg).unwrap(), 1);
        let again = lines(&log);
        assert_eq!(again.len(), 7);
        assert!(again[6].contains("\"sequence\":2"), "{}", again[6]);
        let _ = std::fs::remove_dir_all(&d);
    }
}
