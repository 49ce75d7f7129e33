//! Streaming: a secret split at every position across two (and three) chunks is found once.

mod common;

use common::{ALNUM, Gen};
use llmproxy::dlp::{DetectorKind as K, Engine, StreamScanner};

fn secrets() -> Vec<(K, String)> {
    let mut g = Gen::new(5);
    vec![
        (K::AwsAccessKey, "AKIAIOSFODNN7EXAMPLE".to_string()),
        (K::GithubToken, format!("ghp_{}", g.from(ALNUM, 36))),
        (K::AnthropicKey, format!("sk-ant-api03-{}AA", g.from(ALNUM, 93))),
        (K::Email, "alice@example.com".to_string()),
        (K::CreditCard, "4111 1111 1111 1111".to_string()),
        (
            K::PrivateKey,
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
                .to_string(),
        ),
    ]
}

#[test]
fn split_at_every_position_is_found_once() {
    let e = Engine::builtin();
    for (kind, secret) in secrets() {
        let text = format!("data: the value is {secret} and more text after it.\n\n");
        let at = text.find(&secret).unwrap_or(0);
        for cut in 1..text.len() {
            let mut s = StreamScanner::new(&e);
            let mut got = s.push(&text[..cut]);
            got.extend(s.push(&text[cut..]));
            got.extend(s.finish());
            assert_eq!(got.len(), 1, "{kind:?} cut at {cut}: {got:?}");
            assert_eq!((got[0].kind, got[0].start), (kind, at as u64), "cut at {cut}");
            // A PEM block may be reported while its body is still streaming.
            if kind != K::PrivateKey {
                assert_eq!(got[0].end, (at + secret.len()) as u64, "cut at {cut}");
            }
        }
    }
}

#[test]
fn byte_by_byte_and_three_way_splits() {
    let e = Engine::builtin();
    for (kind, secret) in secrets() {
        let mut s = StreamScanner::with_window(&e, 256);
        let mut got = Vec::new();
        for c in format!("x {secret} y").chars() {
            got.extend(s.push(&c.to_string()));
        }
        got.extend(s.finish());
        assert_eq!(got.iter().map(|f| f.kind).collect::<Vec<_>>(), [kind], "{secret}");
        for a in 1..secret.len() {
            let b = (a + secret.len()) / 2;
            let mut s = StreamScanner::new(&e);
            let mut got = s.push(&format!("> {}", &secret[..a]));
            got.extend(s.push(&secret[a..b]));
            got.extend(s.push(&format!("{} <", &secret[b..])));
            got.extend(s.finish());
            assert_eq!(got.len(), 1, "{secret} at {a}/{b}");
        }
    }
}

#[test]
fn prefix_of_a_longer_token_is_not_reported_early() {
    let e = Engine::builtin();
    let mut s = StreamScanner::new(&e);
    // 20 chars: a complete AKIA id so far, but the stream goes on and it is not one.
    assert!(s.push("id AKIAIOSFODNN7EXAMPLE").is_empty());
    assert!(s.push("XYZ and more").is_empty());
    assert!(s.finish().is_empty());
}

#[test]
fn window_bounds_memory_and_many_findings_are_distinct() {
    let e = Engine::builtin();
    let mut s = StreamScanner::with_window(&e, 128);
    let mut got = Vec::new();
    for i in 0..200 {
        got.extend(s.push(&format!("user{i}@example.com, filler text {} ", "z".repeat(i % 50))));
    }
    got.extend(s.finish());
    assert_eq!(got.len(), 200);
    assert!(got.windows(2).all(|w| w[0].end <= w[1].start));
}
