//! Shared helpers for the DLP tests: a seeded token generator, base64url and a finder that
//! returns `(kind, matched text)` pairs.
#![allow(dead_code)]

use llmproxy::dlp::{DetectorKind, Engine};

/// Deterministic xorshift so generated tokens are stable across runs.
pub struct Gen(u64);

impl Gen {
    pub fn new(seed: u64) -> Self {
        Gen(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `n` characters from `set`, with at least one upper, lower and digit when `set` has them.
    pub fn from(&mut self, set: &[u8], n: usize) -> String {
        loop {
            let s: String = (0..n).map(|_| set[(self.next() % set.len() as u64) as usize] as char).collect();
            let has = |f: fn(&u8) -> bool| !set.iter().any(f) || s.as_bytes().iter().any(f);
            if has(u8::is_ascii_uppercase) && has(u8::is_ascii_lowercase) && has(u8::is_ascii_digit) {
                return s;
            }
        }
    }
}

pub const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
pub const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
pub const UPPER_NUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

pub fn b64url(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |a, (i, &b)| a | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(B64URL[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

pub fn jwt(header: &str, payload: &str, sig: &str) -> String {
    format!("{}.{}.{}", b64url(header.as_bytes()), b64url(payload.as_bytes()), sig)
}

/// Every confirmed match as `(kind, text)`.
pub fn found(engine: &Engine, text: &str) -> Vec<(DetectorKind, String)> {
    engine
        .find(text)
        .into_iter()
        .map(|m| (engine.detectors()[m.detector].kind, text[m.start..m.end].to_string()))
        .collect()
}
