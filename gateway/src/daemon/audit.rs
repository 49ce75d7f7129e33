//! The audit recorder: every event goes to the JSONL audit file under the state dir, to the
//! configured sinks, and to the collector of the command that caused it (for `exec --events`).

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::Mutex,
};

use policies::config::{AuditConfig, SinkType};

use crate::events::Event;

/// Most events kept per running command; later ones still reach the audit file.
const MAX_COLLECTED: usize = 10_000;

/// Fans events out to files, stderr and per-command collectors.
pub struct Recorder {
    files: Vec<Mutex<File>>,
    stderr: bool,
    log_allowed: bool,
    collectors: Mutex<HashMap<String, Collector>>,
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

impl Recorder {
    /// Open `<state_dir>/audit.jsonl` and the sinks of `config`.
    pub fn open(state_dir: &Path, config: &AuditConfig) -> io::Result<Recorder> {
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
        let files = paths.iter().map(|p| open_append(p).map(Mutex::new)).collect::<io::Result<_>>()?;
        Ok(Recorder { files, stderr, log_allowed: config.log_allowed, collectors: Mutex::default() })
    }

    /// Record one event.
    pub fn record(&self, event: Event) {
        if !self.log_allowed && !event.is_blocked() && event.policy.is_some() {
            self.collect(event);
            return;
        }
        match serde_json::to_string(&event) {
            Ok(mut line) => {
                line.push('\n');
                for f in &self.files {
                    let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
                    if let Err(e) = f.write_all(line.as_bytes()) {
                        eprintln!("agentsh: audit write failed: {e}");
                    }
                }
                if self.stderr {
                    eprint!("{line}");
                }
            }
            Err(e) => eprintln!("agentsh: audit encode failed: {e}"),
        }
        self.collect(event);
    }

    fn collect(&self, event: Event) {
        let Some(cmd) = event.command_id.clone() else { return };
        let mut collectors = self.collectors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = collectors.get_mut(&cmd)
            && c.events.len() < c.limit
            && (!c.blocked_only || event.is_blocked())
        {
            c.events.push(event);
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
