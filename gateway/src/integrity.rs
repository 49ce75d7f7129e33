//! Tamper evidence for the JSONL audit log (pure). Every line carries
//! `"integrity": {"format_version": 2, "sequence": N, "prev_hash": H, "entry_hash": E}` with
//! `E = hex(HMAC(key, "2|N|H|" + canonical))`, where `canonical` is the line's JSON without the
//! `integrity` key, keys sorted, compact, with `<`, `>`, `&`, U+2028 and U+2029 escaped as
//! `\u003c` … (the encoding agentsh's Go writer produces, so either side verifies the other's
//! logs). `H` is the previous line's `E` (`""` for the first). A chain starts with an
//! `integrity_chain_rotated` event at sequence 0, which also marks every restart of a chain
//! (rotation, new key, recovery after tampering) and links to the chain before it.
//!
//! Editing a line breaks its HMAC, deleting one breaks the sequence, reordering breaks both,
//! and dropping lines at the end is caught against the `<log>.chain` sidecar.

use std::fmt::Write as _;

use policies::config::IntegrityAlgorithm;
use ring::{digest, hmac};
use serde_json::{Map, Value};

/// The `format_version` written and accepted.
pub const FORMAT_VERSION: u64 = 2;
/// The event type that starts a chain.
pub const ROTATED: &str = "integrity_chain_rotated";
/// Shortest key accepted.
pub const MIN_KEY_BYTES: usize = 32;

/// An HMAC key and its public fingerprint.
pub struct Key {
    key: hmac::Key,
    fingerprint: String,
}

impl Key {
    /// A key for `algorithm` from `bytes` (surrounding whitespace ignored).
    pub fn new(algorithm: IntegrityAlgorithm, bytes: &[u8]) -> Result<Key, String> {
        let bytes = bytes.trim_ascii();
        if bytes.len() < MIN_KEY_BYTES {
            return Err(format!("the key has {} bytes; at least {MIN_KEY_BYTES} are needed", bytes.len()));
        }
        let alg = match algorithm {
            IntegrityAlgorithm::HmacSha256 => hmac::HMAC_SHA256,
            IntegrityAlgorithm::HmacSha512 => hmac::HMAC_SHA512,
        };
        let fp = hex(digest::digest(&digest::SHA256, bytes).as_ref());
        Ok(Key { key: hmac::Key::new(alg, bytes), fingerprint: format!("sha256:{}", &fp[..32]) })
    }

    /// `sha256:<first 32 hex digits of SHA-256(key)>`: names the key without revealing it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn entry_hash(&self, sequence: u64, prev_hash: &str, canonical: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(format!("{FORMAT_VERSION}|{sequence}|{prev_hash}|").as_bytes());
        ctx.update(canonical.as_bytes());
        hex(ctx.sign().as_ref())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The canonical encoding of `v` (see the module docs).
pub fn canonical(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::String(s) => write_string(s, out),
        other => out.push_str(&other.to_string()),
    }
}

fn write_string(s: &str, out: &mut String) {
    let quoted = Value::String(s.to_string()).to_string();
    for c in quoted.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
}

/// Where a chain stands: the next sequence number and the hash it links to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChainState {
    /// The sequence the next line gets.
    pub next: u64,
    /// The last line's `entry_hash` (`""` before the first).
    pub prev_hash: String,
}

/// Add the `integrity` object to `event` (a JSON object) and advance `state`; returns the line.
pub fn seal(key: &Key, state: &mut ChainState, mut event: Map<String, Value>) -> String {
    event.remove("integrity");
    let canon = canonical(&Value::Object(event.clone()));
    let hash = key.entry_hash(state.next, &state.prev_hash, &canon);
    event.insert(
        "integrity".into(),
        serde_json::json!({"format_version": FORMAT_VERSION, "sequence": state.next,
                           "prev_hash": state.prev_hash, "entry_hash": hash}),
    );
    state.next += 1;
    state.prev_hash = hash;
    Value::Object(event).to_string()
}

/// A line that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its sequence number.
    pub sequence: u64,
    /// The hash it links to.
    pub prev_hash: String,
    /// Its own hash.
    pub entry_hash: String,
    /// Its event type.
    pub kind: String,
    /// The whole event.
    pub event: Value,
}

/// Parse `line` and check its HMAC (not yet its place in the chain).
pub fn check_line(key: &Key, line: &str) -> Result<Entry, String> {
    let mut v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object_mut().ok_or("not a JSON object")?;
    let integrity = obj.remove("integrity").ok_or("no integrity field")?;
    let version = integrity["format_version"].as_u64().ok_or("integrity.format_version missing")?;
    if version != FORMAT_VERSION {
        return Err(format!("integrity.format_version {version}, expected {FORMAT_VERSION}"));
    }
    let sequence = integrity["sequence"].as_u64().ok_or("integrity.sequence missing")?;
    let prev_hash = integrity["prev_hash"].as_str().ok_or("integrity.prev_hash missing")?.to_string();
    let entry_hash = integrity["entry_hash"].as_str().ok_or("integrity.entry_hash missing")?.to_string();
    let expected = key.entry_hash(sequence, &prev_hash, &canonical(&v));
    if expected != entry_hash {
        return Err(format!(
            "entry_hash does not match the line (sequence {sequence}): the line was altered, or the key is wrong"
        ));
    }
    let kind = v["type"].as_str().unwrap_or_default().to_string();
    Ok(Entry { sequence, prev_hash, entry_hash, kind, event: v })
}

/// Verifies lines in order, across files.
#[derive(Debug, Default)]
pub struct Verifier {
    last: Option<Entry>,
    /// Lines verified so far.
    pub entries: u64,
}

impl Verifier {
    /// Check the next non-empty line. `new_file` marks the first line of a rotated-to file.
    pub fn next(&mut self, key: &Key, line: &str, new_file: bool) -> Result<(), String> {
        let e = check_line(key, line)?;
        let starts_chain = e.kind == ROTATED && e.sequence == 0 && e.prev_hash.is_empty();
        match &self.last {
            None if !starts_chain && e.sequence != 0 => {
                return Err(format!("the log starts at sequence {}: earlier lines are missing", e.sequence));
            }
            Some(prev) if new_file => {
                let linked = e.event["fields"]["prior_chain_summary"]["last_entry_hash_seen_in_log"].as_str();
                if !starts_chain || linked != Some(prev.entry_hash.as_str()) {
                    return Err("this file does not continue the previous one (rotation link broken)".into());
                }
            }
            Some(_) if starts_chain => {}
            Some(prev) => {
                if e.sequence != prev.sequence + 1 {
                    return Err(format!(
                        "sequence {} follows {}: {}",
                        e.sequence,
                        prev.sequence,
                        if e.sequence > prev.sequence + 1 {
                            "lines are missing"
                        } else {
                            "lines were reordered or repeated"
                        }
                    ));
                }
                if e.prev_hash != prev.entry_hash {
                    return Err(format!(
                        "prev_hash does not match the previous line (sequence {})",
                        e.sequence
                    ));
                }
            }
            None => {}
        }
        self.entries += 1;
        self.last = Some(e);
        Ok(())
    }

    /// The last line verified.
    pub fn last(&self) -> Option<&Entry> {
        self.last.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::new(IntegrityAlgorithm::HmacSha256, &[7u8; 32]).unwrap()
    }

    fn event(kind: &str, n: u64) -> Map<String, Value> {
        let v = serde_json::json!({"type": kind, "n": n, "note": "a<b & c>d", "fields": {"z": 1, "a": [true, null]}});
        v.as_object().unwrap().clone()
    }

    fn chain(n: u64) -> Vec<String> {
        let k = key();
        let mut st = ChainState::default();
        let mut lines = vec![seal(&k, &mut st, event(ROTATED, 0))];
        lines.extend((1..n).map(|i| seal(&k, &mut st, event("net_connect", i))));
        lines
    }

    fn verify(lines: &[String]) -> Result<u64, (usize, String)> {
        let k = key();
        let mut v = Verifier::default();
        for (i, l) in lines.iter().enumerate() {
            v.next(&k, l, false).map_err(|e| (i + 1, e))?;
        }
        Ok(v.entries)
    }

    #[test]
    fn canonical_sorts_keys_and_escapes_like_go() {
        let v = serde_json::json!({"b": "<&>\u{2028}", "a": {"y": 1, "x": [2.5, "é"]}});
        assert_eq!(canonical(&v), r#"{"a":{"x":[2.5,"é"],"y":1},"b":"\u003c\u0026\u003e\u2028"}"#);
    }

    #[test]
    fn an_intact_chain_verifies_and_every_tamper_is_found_at_its_line() {
        let lines = chain(6);
        assert_eq!(verify(&lines), Ok(6));
        let mut edited = lines.clone();
        edited[3] = edited[3].replace("net_connect", "net_connect_blocked");
        assert_eq!(verify(&edited).unwrap_err().0, 4);
        let mut deleted = lines.clone();
        deleted.remove(2);
        let (line, why) = verify(&deleted).unwrap_err();
        assert_eq!(line, 3);
        assert!(why.contains("missing"), "{why}");
        let mut swapped = lines.clone();
        swapped.swap(2, 3);
        assert_eq!(verify(&swapped).unwrap_err().0, 3);
        let other = Key::new(IntegrityAlgorithm::HmacSha256, &[8u8; 32]).unwrap();
        assert!(Verifier::default().next(&other, &lines[0], false).is_err(), "another key fails");
    }

    #[test]
    fn sha512_and_short_keys() {
        assert!(Key::new(IntegrityAlgorithm::HmacSha512, &[1u8; 31]).is_err());
        let k = Key::new(IntegrityAlgorithm::HmacSha512, &[1u8; 64]).unwrap();
        let line = seal(&k, &mut ChainState::default(), event(ROTATED, 0));
        let e = check_line(&k, &line).unwrap();
        assert_eq!(e.entry_hash.len(), 128);
        assert!(k.fingerprint().starts_with("sha256:") && k.fingerprint().len() == 39);
    }
}
