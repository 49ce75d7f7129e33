//! SSE answers scanned event by event. The answer text of every event (the string values of its
//! JSON `data`, identifiers and type tags aside) is fed to a [`StreamScanner`] as one running
//! text, so a secret split across events is found. Events are held until `holdback` more bytes
//! of scanned text follow them (text is scanned in batches of half the hold-back, as each push
//! rescans the scanner's tail), or the stream ends, then released in order: untouched ones
//! byte for byte, redacted ones re-encoded as one `data:` line. Pure: bytes in, bytes out.

use std::collections::VecDeque;

use policies::model::llm::ProviderKind;
use serde_json::Value;

use crate::{
    dlp::{Action, Engine, StreamScanner, push_key},
    events::{Direction, FindingCount, add_finding},
    providers,
    usage::Usage,
};

/// Keys whose string values are identifiers or tags, not answer text.
const NOT_TEXT: [&str; 14] = [
    "type",
    "id",
    "object",
    "model",
    "role",
    "stop_reason",
    "finish_reason",
    "finishReason",
    "system_fingerprint",
    "signature",
    "item_id",
    "call_id",
    "status",
    "modelVersion",
];

/// A text value inside a held event: where it sits in the event's JSON and in the running text.
struct Segment {
    /// JSON pointer; empty for a `data` that is not JSON.
    pointer: String,
    start: u64,
    end: u64,
}

struct Held {
    raw: Vec<u8>,
    /// Parsed `data` when it is JSON.
    json: Option<Value>,
    segments: Vec<Segment>,
    /// End of this event's text in the running text.
    text_end: u64,
}

/// A redaction to apply: running-text range and the placeholder for its start.
struct Redaction {
    start: u64,
    end: u64,
    placeholder: String,
}

/// Why the stream must stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamStop {
    /// A block-mode detector matched (its name).
    Blocked(String),
    /// An event grew past the bound without ending.
    EventTooLarge(usize),
}

/// The SSE scanner of one answer: bytes from the upstream in, bytes for the client out.
pub struct SseScanner<'e> {
    engine: &'e Engine,
    scanner: StreamScanner<'e>,
    kind: ProviderKind,
    holdback: u64,
    max_event: usize,
    /// Bytes not yet split into events.
    partial: Vec<u8>,
    held: VecDeque<Held>,
    /// Raw bytes of the held events; bounded like one event, so events without text cannot
    /// pile up behind held text.
    held_bytes: usize,
    text_len: u64,
    /// Text not yet given to the scanner: it is fed in batches of half the hold-back, since
    /// each push rescans the scanner's whole tail.
    unscanned: String,
    /// Running-text length the scanner has seen; events are released against this.
    scanned_len: u64,
    redactions: Vec<Redaction>,
    /// DLP findings so far.
    pub(crate) findings: Vec<FindingCount>,
    /// Usage merged from every event.
    pub(crate) usage: Option<Usage>,
}

impl<'e> SseScanner<'e> {
    /// A scanner for one answer of a `kind` provider: `holdback` bytes of text kept after an
    /// event before it is released, `max_event` the bound on one event and on the held events.
    pub fn new(engine: &'e Engine, kind: ProviderKind, holdback: usize, max_event: usize) -> Self {
        SseScanner {
            engine,
            scanner: StreamScanner::with_window(engine, holdback.max(2048)),
            kind,
            // The scanner reports a match once 16 bytes follow it; hold at least a little more.
            holdback: holdback.max(64) as u64,
            max_event,
            partial: Vec::new(),
            held: VecDeque::new(),
            held_bytes: 0,
            text_len: 0,
            unscanned: String::new(),
            scanned_len: 0,
            redactions: Vec::new(),
            findings: Vec::new(),
            usage: None,
        }
    }

    /// Takes upstream bytes; returns the bytes that may go to the client now.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<u8>, StreamStop> {
        self.partial.extend_from_slice(data);
        let mut from = 0;
        while let Some(end) = event_end(&self.partial[from..]) {
            let raw = self.partial[from..from + end].to_vec();
            from += end;
            self.event(raw)?;
        }
        self.partial.drain(..from);
        if self.partial.len() > self.max_event {
            return Err(StreamStop::EventTooLarge(self.max_event));
        }
        let out = self.release(false);
        if self.held_bytes > self.max_event {
            return Err(StreamStop::EventTooLarge(self.max_event));
        }
        Ok(out)
    }

    /// The upstream ended: a trailing event without its blank line is still delivered.
    pub fn finish(&mut self) -> Result<Vec<u8>, StreamStop> {
        if !self.partial.iter().all(u8::is_ascii_whitespace) {
            let mut raw = std::mem::take(&mut self.partial);
            raw.extend_from_slice(b"\n\n");
            self.event(raw)?;
        }
        self.scan()?;
        let found = self.scanner.finish();
        self.note(found)?;
        Ok(self.release(true))
    }

    /// DLP findings so far.
    pub fn findings(&self) -> &[FindingCount] {
        &self.findings
    }

    /// Usage merged from the events so far.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn event(&mut self, raw: Vec<u8>) -> Result<(), StreamStop> {
        let data = data_of(&raw);
        let mut segments = Vec::new();
        let mut text = String::new();
        let json = data.as_deref().and_then(|d| serde_json::from_str::<Value>(d).ok());
        match (&json, &data) {
            (Some(v), _) => {
                if let Some(u) = providers::usage(self.kind, v) {
                    self.usage.get_or_insert_with(Usage::default).merge_max(&u);
                }
                let mut leaves = Vec::new();
                strings(v, &mut String::new(), &mut leaves);
                for (pointer, s) in leaves {
                    let start = self.text_len + text.len() as u64;
                    text.push_str(s);
                    segments.push(Segment { pointer, start, end: self.text_len + text.len() as u64 });
                }
            }
            (None, Some(d)) if d.trim() != "[DONE]" => {
                text.push_str(d);
                segments.push(Segment {
                    pointer: String::new(),
                    start: self.text_len,
                    end: self.text_len + d.len() as u64,
                });
            }
            _ => {}
        }
        self.text_len += text.len() as u64;
        self.held_bytes += raw.len();
        self.held.push_back(Held { raw, json, segments, text_end: self.text_len });
        self.unscanned.push_str(&text);
        if self.unscanned.len() as u64 >= self.holdback / 2 {
            self.scan()?;
        }
        Ok(())
    }

    fn scan(&mut self) -> Result<(), StreamStop> {
        if self.unscanned.is_empty() {
            return Ok(());
        }
        let found = self.scanner.push(&self.unscanned);
        self.scanned_len += self.unscanned.len() as u64;
        self.unscanned.clear();
        self.note(found)
    }

    fn note(&mut self, found: Vec<crate::dlp::StreamFinding>) -> Result<(), StreamStop> {
        for f in found {
            let path = self.path_at(f.start);
            add_finding(&mut self.findings, &f.detector, f.action, Direction::Response, 1, &path);
            match f.action {
                Action::Block => return Err(StreamStop::Blocked(f.detector)),
                Action::Redact => {
                    let placeholder = self
                        .engine
                        .detectors()
                        .iter()
                        .find(|d| d.name == f.detector)
                        .map_or_else(|| format!("[REDACTED:{}]", f.detector), |d| d.placeholder.clone());
                    self.redactions.push(Redaction { start: f.start, end: f.end, placeholder });
                }
                Action::Audit => {}
            }
        }
        Ok(())
    }

    /// The JSON path, inside its event's `data`, of the held text value where running-text
    /// offset `at` lies (`delta.text`); `$` for a `data` that is not JSON or text already gone.
    fn path_at(&self, at: u64) -> String {
        let found = self
            .held
            .iter()
            .find_map(|h| h.segments.iter().find(|s| s.start <= at && at < s.end).map(|s| (h, s)));
        let Some((Held { json: Some(v), .. }, seg)) = found else { return "$".to_string() };
        let mut path = String::new();
        let mut cur = v;
        for token in seg.pointer.split('/').skip(1) {
            let key = token.replace("~1", "/").replace("~0", "~");
            match cur {
                Value::Array(items) => {
                    path.push('[');
                    path.push_str(&key);
                    path.push(']');
                    cur = key.parse::<usize>().ok().and_then(|i| items.get(i)).unwrap_or(&Value::Null);
                }
                Value::Object(map) => {
                    push_key(&mut path, &key);
                    cur = map.get(&key).unwrap_or(&Value::Null);
                }
                _ => break,
            }
        }
        if path.is_empty() { "$".to_string() } else { path }
    }

    fn release(&mut self, all: bool) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(h) = self.held.front() {
            if !all && h.text_end + self.holdback > self.scanned_len {
                break;
            }
            let Some(h) = self.held.pop_front() else { break };
            self.held_bytes -= h.raw.len();
            out.extend_from_slice(&self.render(h));
        }
        let released =
            self.held.front().map_or(self.text_len, |h| h.segments.first().map_or(h.text_end, |s| s.start));
        self.redactions.retain(|r| r.end > released);
        out
    }

    fn render(&self, h: Held) -> Vec<u8> {
        let touched = |s: &Segment| self.redactions.iter().any(|r| r.start < s.end && r.end > s.start);
        if !h.segments.iter().any(touched) {
            return h.raw;
        }
        let mut json = h.json;
        let mut plain = None;
        for seg in h.segments.iter().filter(|s| touched(s)) {
            let target = match &mut json {
                Some(v) => v.pointer_mut(&seg.pointer).and_then(|v| match v {
                    Value::String(s) => Some(s),
                    _ => None,
                }),
                None => plain.get_or_insert_with(|| data_of(&h.raw).unwrap_or_default()).into(),
            };
            if let Some(s) = target {
                *s = self.redact_segment(s, seg);
            }
        }
        let data = match (json, plain) {
            (Some(v), _) => v.to_string(),
            (None, Some(p)) => p,
            (None, None) => return h.raw,
        };
        rebuild(&h.raw, &data)
    }

    /// Replaces the parts of `s` covered by redactions; a redaction's placeholder goes where it
    /// starts, so a secret split across events leaves one placeholder and no fragment.
    fn redact_segment(&self, s: &str, seg: &Segment) -> String {
        let mut out = String::with_capacity(s.len());
        let mut pos = 0usize;
        for r in self.redactions.iter().filter(|r| r.start < seg.end && r.end > seg.start) {
            let a = (r.start.max(seg.start) - seg.start) as usize;
            let b = (r.end.min(seg.end) - seg.start) as usize;
            let (a, b) = (floor_char(s, a.max(pos)), floor_char(s, b.max(pos)));
            out.push_str(&s[pos..a]);
            if r.start >= seg.start {
                out.push_str(&r.placeholder);
            }
            pos = b;
        }
        out.push_str(&s[pos..]);
        out
    }
}

fn floor_char(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Length of the first complete event in `buf` (through its blank line), if any. Lines end in
/// `\n`, `\r\n` or `\r`; a `\r` at the very end may still be followed by `\n`, so it waits.
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    let mut line_start = true;
    while i < buf.len() {
        let eol = match buf[i] {
            b'\n' => 1,
            b'\r' if i + 1 < buf.len() => 1 + usize::from(buf[i + 1] == b'\n'),
            b'\r' => return None,
            _ => {
                line_start = false;
                i += 1;
                continue;
            }
        };
        i += eol;
        if line_start {
            return Some(i);
        }
        line_start = true;
    }
    None
}

fn lines(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    raw.split(|&b| b == b'\n' || b == b'\r').filter(|l| !l.is_empty())
}

/// The event's `data` field: its `data:` lines joined with `\n` (one leading space dropped).
fn data_of(raw: &[u8]) -> Option<String> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for line in lines(raw) {
        if line == b"data" {
            parts.push(b"");
        } else if let Some(v) = line.strip_prefix(b"data:") {
            parts.push(v.strip_prefix(b" ").unwrap_or(v));
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(String::from_utf8_lossy(&parts.join(&b'\n')).into_owned())
}

/// The event with its `data:` lines replaced by one line carrying `data` (which holds no
/// newline: JSON from `to_string` escapes them, plain text is split across lines again).
fn rebuild(raw: &[u8], data: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + 32);
    let mut wrote = false;
    for line in lines(raw) {
        if line == b"data" || line.starts_with(b"data:") {
            if !wrote {
                for d in data.split('\n') {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(d.as_bytes());
                    out.push(b'\n');
                }
                wrote = true;
            }
        } else {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
    }
    out.push(b'\n');
    out
}

/// String leaves of `v` that carry answer text, in document order, with JSON pointers.
fn strings<'v>(v: &'v Value, path: &mut String, out: &mut Vec<(String, &'v str)>) {
    match v {
        Value::String(s) if !s.is_empty() => out.push((path.clone(), s)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                strings(item, path, out);
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                if item.is_string() && NOT_TEXT.contains(&k.as_str()) {
                    continue;
                }
                let len = path.len();
                path.push('/');
                if k.contains(['~', '/']) {
                    path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                } else {
                    path.push_str(k);
                }
                strings(item, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_boundaries() {
        assert_eq!(event_end(b"data: a\n\nrest"), Some(9));
        assert_eq!(event_end(b"data: a\r\n\r\nrest"), Some(11));
        assert_eq!(event_end(b"data: a\r\r"), None);
        assert_eq!(event_end(b"data: a\r\rx"), Some(9));
        assert_eq!(event_end(b"data: a\n"), None);
        assert_eq!(event_end(b"\n"), Some(1));
        assert_eq!(data_of(b"event: x\ndata: {\"a\":\ndata: 1}\n\n").as_deref(), Some("{\"a\":\n1}"));
        assert_eq!(data_of(b": comment\n\n"), None);
    }

    fn run(events: &[&str], holdback: usize) -> (String, Vec<FindingCount>) {
        let engine = Engine::builtin();
        let mut s = SseScanner::new(&engine, ProviderKind::Anthropic, holdback, 1 << 20);
        let mut out = Vec::new();
        for e in events {
            out.extend(s.push(e.as_bytes()).unwrap());
        }
        out.extend(s.finish().unwrap());
        (String::from_utf8(out).unwrap(), s.findings)
    }

    fn delta(text: &str) -> String {
        let v = serde_json::json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": text}});
        format!("event: content_block_delta\ndata: {v}\n\n")
    }

    #[test]
    fn split_secret_is_redacted_once() {
        let key = "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-AbCdEfGhIjKlAA";
        let (a, b) = key.split_at(30);
        let evs = [delta("here: "), delta(a), delta(b), delta(" done")];
        let refs: Vec<&str> = evs.iter().map(String::as_str).collect();
        let (out, findings) = run(&refs, 256);
        assert!(!out.contains(&key[..20]) && !out.contains(&key[40..]), "{out}");
        assert_eq!(out.matches("[REDACTED:").count(), 1, "{out}");
        assert_eq!(findings.iter().map(|f| f.count).sum::<usize>(), 1);
        for block in out.split("\n\n").filter(|b| !b.is_empty()) {
            let data = block.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            serde_json::from_str::<Value>(data).unwrap();
        }
    }

    #[test]
    fn clean_stream_is_byte_identical_and_released_early() {
        let engine = Engine::builtin();
        let mut s = SseScanner::new(&engine, ProviderKind::Anthropic, 64, 1 << 20);
        let first = delta("hello");
        assert!(s.push(first.as_bytes()).unwrap().is_empty());
        let long = delta(&"lorem ipsum ".repeat(10));
        let out = s.push(long.as_bytes()).unwrap();
        assert_eq!(out, first.as_bytes());
        let mut rest = s.finish().unwrap();
        rest.extend_from_slice(b"");
        assert_eq!(rest, long.as_bytes());
    }

    static ENGINE: std::sync::LazyLock<Engine> = std::sync::LazyLock::new(Engine::builtin);

    fn feed(chunks: &[&[u8]], holdback: usize) -> Result<Vec<u8>, StreamStop> {
        let mut s = SseScanner::new(&ENGINE, ProviderKind::Openai, holdback, 1 << 16);
        let mut out = Vec::new();
        for c in chunks {
            out.extend(s.push(c)?);
        }
        out.extend(s.finish()?);
        Ok(out)
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..2048), cut in 0usize..2048) {
            let cut = cut.min(data.len());
            let _ = feed(&[&data[..cut], &data[cut..]], 64);
        }

        #[test]
        fn chunking_does_not_change_the_output(
            texts in proptest::collection::vec("[a-z @.:/0-9\\-]{0,40}", 1..30),
            cuts in proptest::collection::vec(0usize..4096, 0..8),
        ) {
            let whole: String = texts
                .iter()
                .map(|t| format!("data: {}\r\n\r\n", serde_json::json!({"choices": [{"delta": {"content": t}}]})))
                .collect();
            let bytes = whole.as_bytes();
            let one = feed(&[bytes], 64).unwrap();
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for p in points {
                pieces.push(&bytes[last..p]);
                last = p;
            }
            pieces.push(&bytes[last..]);
            let many = feed(&pieces, 64).unwrap();
            proptest::prop_assert_eq!(&one, &many);
            // Every event still carries valid JSON.
            let text = String::from_utf8(one).unwrap();
            for ev in text.split("\n\n").flat_map(|e| e.split("\r\n\r\n")).filter(|e| !e.trim().is_empty()) {
                let data = ev.trim().strip_prefix("data: ").unwrap();
                proptest::prop_assert!(serde_json::from_str::<Value>(data).is_ok(), "{}", data);
            }
        }
    }
}
