//! Streaming detection for answers that arrive in pieces (SSE deltas): a bounded tail window is
//! rescanned with each chunk, so a secret split across chunks is still found, once.

use super::{Action, DetectorKind, Engine};

/// Default tail kept between chunks; longer than any built-in token, PEM headers included.
pub const DEFAULT_WINDOW: usize = 2048;

/// A match ending this close to the data seen so far may still grow (`alice@example.com` then
/// `.au`, a PEM header then its body), so it is held until more arrives.
const SLACK: usize = 16;

/// A match in the stream, with offsets counted from the first byte ever pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFinding {
    /// Detector name.
    pub detector: String,
    /// Detector kind.
    pub kind: DetectorKind,
    /// The detector's action.
    pub action: Action,
    /// Absolute start offset in the stream.
    pub start: u64,
    /// Absolute end offset (exclusive).
    pub end: u64,
}

/// Scans text pushed chunk by chunk. A match near the end of the data seen so far is held until
/// more data (or [`StreamScanner::finish`]) shows where it ends, so a token cut in two is reported
/// whole and a prefix is never mistaken for it. A block longer than the slack (a PEM key) may be
/// reported with a shorter span than a one-piece scan would give; its start is exact.
#[derive(Debug)]
pub struct StreamScanner<'e> {
    engine: &'e Engine,
    buf: String,
    /// Absolute offset of `buf[0]`.
    base: u64,
    /// Matches starting before this were already reported.
    reported: u64,
    window: usize,
}

impl<'e> StreamScanner<'e> {
    /// A scanner with the default window.
    pub fn new(engine: &'e Engine) -> Self {
        Self::with_window(engine, DEFAULT_WINDOW)
    }

    /// A scanner keeping `window` bytes of tail between chunks (at least 64).
    pub fn with_window(engine: &'e Engine, window: usize) -> Self {
        StreamScanner { engine, buf: String::new(), base: 0, reported: 0, window: window.max(64) }
    }

    /// Adds a chunk; returns the matches now known to be complete.
    pub fn push(&mut self, chunk: &str) -> Vec<StreamFinding> {
        self.buf.push_str(chunk);
        let mut cut = self.buf.len().saturating_sub(self.window);
        while !self.buf.is_char_boundary(cut) {
            cut -= 1;
        }
        let out = self.scan(false, cut);
        self.buf.drain(..cut);
        self.base += cut as u64;
        out
    }

    /// Ends the stream: reports what was held back.
    pub fn finish(&mut self) -> Vec<StreamFinding> {
        let out = self.scan(true, self.buf.len());
        self.base += self.buf.len() as u64;
        self.buf.clear();
        out
    }

    /// Reports new matches; one within [`SLACK`] of the end is held unless `last`, or unless it
    /// starts before `cut` (it is about to leave the window, so report it as it stands).
    fn scan(&mut self, last: bool, cut: usize) -> Vec<StreamFinding> {
        let mut out = Vec::new();
        for m in self.engine.find(&self.buf) {
            let (start, end) = (self.base + m.start as u64, self.base + m.end as u64);
            if start < self.reported || (!last && self.buf.len() - m.end < SLACK && m.start >= cut) {
                continue;
            }
            let d = &self.engine.detectors()[m.detector];
            out.push(StreamFinding { detector: d.name.clone(), kind: d.kind, action: d.action, start, end });
            self.reported = end;
        }
        out
    }
}
