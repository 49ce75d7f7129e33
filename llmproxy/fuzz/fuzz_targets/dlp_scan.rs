//! Arbitrary bytes through the DLP engine: `scan_json` and `scan_text` never panic, a valid JSON
//! input comes out as valid JSON, an unredacted one byte-identical, and redacting twice changes
//! nothing more; a split of the text through `StreamScanner` never panics either.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use llmproxy::dlp::{Engine, StreamScanner, scan_json, scan_text};

static ENGINE: LazyLock<Engine> = LazyLock::new(Engine::builtin);

fuzz_target!(|data: &[u8]| {
    let e = &*ENGINE;
    let valid = serde_json::from_slice::<serde_json::Value>(data).is_ok();
    match scan_json(data, e) {
        Ok(out) => {
            assert!(serde_json::from_slice::<serde::de::IgnoredAny>(&out.body).is_ok(), "output is not JSON");
            if out.redactions() == 0 {
                assert_eq!(&*out.body, data);
            }
            let again = scan_json(&out.body, e).expect("redacted output rescans");
            assert_eq!(&*again.body, &*out.body, "redaction is not idempotent");
        }
        // The walker caps nesting at 256; serde_json at 128, so deep valid input can only fail
        // the other way round.
        Err(err) => assert!(!valid, "valid JSON refused: {err}"),
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let once = scan_text(text, e).body.into_owned();
        assert_eq!(scan_text(&once, e).body, once);
        let cut = text.len() / 2;
        let cut = (0..=cut).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        let mut s = StreamScanner::with_window(e, 128);
        s.push(&text[..cut]);
        s.push(&text[cut..]);
        s.finish();
    }
});
