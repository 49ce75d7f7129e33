//! Properties: no panics on any input, redaction is idempotent, the prefiltered engine agrees
//! with the naive one, clean text has no findings, JSON stays valid.

use llmproxy::dlp::{Engine, scan_json, scan_text};
use proptest::prelude::*;

/// Compiled once: building the engine per case dominates debug-mode test time.
static ENGINE: std::sync::LazyLock<Engine> = std::sync::LazyLock::new(Engine::builtin);

/// Text made of fragments that sit near the detectors' edges, so the generator hits them.
fn near_miss_text() -> impl Strategy<Value = String> {
    let frag = prop_oneof![
        Just("AKIA".to_string()),
        Just("ghp_".to_string()),
        Just("sk-".to_string()),
        Just("sk-ant-".to_string()),
        Just("@".to_string()),
        Just("://".to_string()),
        Just(":".to_string()),
        Just("eyJ".to_string()),
        Just("-----BEGIN PRIVATE KEY-----".to_string()),
        Just("4111 1111 1111 1111".to_string()),
        Just("GB82WEST12345698765432".to_string()),
        Just("+1 415 555 2671".to_string()),
        Just("123-45-6789".to_string()),
        Just("alice@example.com".to_string()),
        Just("[REDACTED:email]".to_string()),
        "[A-Za-z0-9]{1,12}",
        "[ .\\-_/+=\\n]{1,3}",
        "[0-9]{1,5}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(frag, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_string_never_panics_and_naive_agrees(s in any::<String>()) {
        let e = &*ENGINE;
        prop_assert_eq!(e.find(&s), e.find_naive(&s));
        let _ = scan_text(&s, e);
    }

    #[test]
    fn near_misses_agree_with_naive_and_redact_idempotently(s in near_miss_text()) {
        let e = &*ENGINE;
        prop_assert_eq!(e.find(&s), e.find_naive(&s));
        let once = scan_text(&s, e).body.into_owned();
        let twice = scan_text(&once, e).body.into_owned();
        prop_assert_eq!(&once, &twice);
    }

    #[test]
    fn clean_ascii_without_digits_or_at_has_no_findings(s in "[A-Za-z .,;:!?()\\-_'\"/\\n]{0,400}") {
        let e = &*ENGINE;
        prop_assert!(e.find(&s).is_empty(), "{:?}", e.find(&s));
    }

    #[test]
    fn json_strings_round_trip_and_stay_valid(parts in prop::collection::vec(near_miss_text(), 0..6), n in any::<i64>()) {
        let e = &*ENGINE;
        let value = serde_json::json!({"n": n, "messages": parts.iter().map(|p| serde_json::json!({"text": p})).collect::<Vec<_>>()});
        let body = serde_json::to_vec(&value).unwrap_or_default();
        let out = scan_json(&body, e);
        prop_assert!(out.is_ok());
        let out = out.unwrap_or_else(|err| panic!("{err}"));
        let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&out.body);
        prop_assert!(parsed.is_ok());
        if out.findings.is_empty() {
            prop_assert_eq!(&*out.body, &body[..]);
        }
        let again = scan_json(&out.body, e).unwrap_or_else(|err| panic!("{err}"));
        prop_assert_eq!(&*again.body, &*out.body);
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..256)) {
        let e = &*ENGINE;
        if let Ok(out) = scan_json(&b, e) {
            prop_assert!(serde_json::from_slice::<serde::de::IgnoredAny>(&out.body).is_ok());
        }
    }
}
