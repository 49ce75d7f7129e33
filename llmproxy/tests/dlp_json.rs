//! JSON scanning: byte-exact pass-through, valid output after redaction, paths, skipped opaque
//! fields, modes and policy switches.

mod common;

use std::borrow::Cow;

use llmproxy::dlp::{Action, DetectorKind as K, Engine, JsonError, scan_json};
use policies::model::llm::Dlp;

fn engine(yaml: &str) -> Engine {
    let dlp: Dlp = serde_norway::from_str(yaml).unwrap_or_else(|e| panic!("{e}"));
    Engine::new(&dlp).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn clean_body_is_borrowed_and_identical() {
    let e = Engine::builtin();
    let bodies: [&[u8]; 5] = [
        br#"{"model":"claude-x","max_tokens":1024,"messages":[{"role":"user","content":"Hello"}]}"#,
        b" { \"z\" : 1.0e+10 , \"a\" : [ 12345678901234567890123 , -0.000 , true , null ] } ",
        br#"{"b":"\u00e9\ud83d\ude00 \n\t\"q\" \/","a":{"dup":1,"dup":2}}"#,
        br#"[1,2,3,"4111111111111112"]"#,
        br#""just a string""#,
    ];
    for body in bodies {
        let out = scan_json(body, &e).unwrap_or_else(|err| panic!("{err}"));
        assert!(matches!(out.body, Cow::Borrowed(_)));
        assert_eq!(&*out.body, body);
        assert!(out.findings.is_empty());
    }
}

#[test]
fn redaction_keeps_json_valid_and_everything_else_exact() {
    let e = Engine::builtin();
    let body = br#"{"z":1.50,"messages":[{"role":"user","content":[{"type":"text","text":"mail alice@example.com, card 4111 1111 1111 1111"},{"type":"text","text":"key AKIAIOSFODNN7EXAMPLE"}]}],"big":12345678901234567890123}"#;
    let out = scan_json(body, &e).unwrap_or_else(|err| panic!("{err}"));
    let text = std::str::from_utf8(&out.body).unwrap_or_default();
    assert_eq!(
        text,
        r#"{"z":1.50,"messages":[{"role":"user","content":[{"type":"text","text":"mail [REDACTED:email], card [REDACTED:credit_card]"},{"type":"text","text":"key [REDACTED:aws_access_key]"}]}],"big":12345678901234567890123}"#
    );
    assert!(serde_json::from_slice::<serde_json::Value>(&out.body).is_ok());
    let paths: Vec<(&str, &str, usize)> =
        out.findings.iter().map(|f| (f.path.as_str(), f.detector.as_str(), f.count)).collect();
    assert_eq!(
        paths,
        [
            ("messages[0].content[0].text", "email", 1),
            ("messages[0].content[0].text", "credit_card", 1),
            ("messages[0].content[1].text", "aws_access_key", 1)
        ]
    );
    assert_eq!(out.redactions(), 3);
}

#[test]
fn escaped_strings_map_back_to_raw_offsets() {
    let e = Engine::builtin();
    let body = br#"{"t":"caf\u00e9 \"bob@example.com\"\n\ud83d\ude00 x"}"#;
    let out = scan_json(body, &e).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(&*out.body, &br#"{"t":"caf\u00e9 \"[REDACTED:email]\"\n\ud83d\ude00 x"}"#[..]);
    // A secret spelled with escapes is still found and the whole escaped span replaced.
    let body = br#"{"t":"AKIA\u0049OSFODNN7EXAMPLE!"}"#;
    let out = scan_json(body, &e).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(&*out.body, &br#"{"t":"[REDACTED:aws_access_key]!"}"#[..]);
}

#[test]
fn keys_are_not_scanned_and_paths_quote_odd_keys() {
    let e = Engine::builtin();
    let out = scan_json(br#"{"alice@example.com":"x","a b":{"k":["bob@example.com"]}}"#, &e)
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(out.findings.len(), 1);
    assert_eq!(out.findings[0].path, r#"["a b"].k[0]"#);
    assert!(std::str::from_utf8(&out.body).unwrap_or_default().starts_with(r#"{"alice@example.com":"x""#));
}

#[test]
fn opaque_fields_are_skipped() {
    let e = Engine::builtin();
    // A base64 payload that happens to contain token-shaped runs.
    let blob = format!("{}AKIAIOSFODNN7EXAMPLE{}", "iVBORw0KGgo".repeat(10), "A".repeat(40));
    let sig = format!("EqQBCkYIARgCIkA{}sk-{}", "x".repeat(20), "Ab1".repeat(16));
    let body = format!(
        r#"{{"messages":[{{"role":"user","content":[
            {{"type":"image","source":{{"type":"base64","media_type":"image/png","data":"{blob}"}}}},
            {{"type":"image_url","image_url":{{"url":"data:image/png;base64,{blob}"}}}},
            {{"inline_data":{{"mime_type":"image/png","data":"{blob}"}}}},
            {{"type":"thinking","thinking":"hmm","signature":"{sig}"}},
            {{"type":"redacted_thinking","data":"{blob}"}},
            {{"type":"text","text":"and AKIAIOSFODNN7EXAMPLE here"}}]}}]}}"#
    );
    let out = scan_json(body.as_bytes(), &e).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(out.findings.len(), 1, "{:?}", out.findings);
    assert_eq!(out.findings[0].path, "messages[0].content[5].text");
    // A short or spaced `data` value is text and is scanned.
    let out =
        scan_json(br#"{"source":{"data":"mail bob@example.com"}}"#, &e).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(out.findings.len(), 1);
}

#[test]
fn modes_block_audit_and_custom_override() {
    let e = engine(
        "mode: block\ncustom_patterns: [{name: ticket, regex: 'TCK-[0-9]{6}', mode: redact, display: ticket_id}]",
    );
    let out =
        scan_json(br#"{"a":"TCK-123456","b":"bob@example.com"}"#, &e).unwrap_or_else(|err| panic!("{err}"));
    let block = out.block.clone().unwrap_or_else(|| panic!("no block"));
    assert_eq!((block.detector.as_str(), block.kind, block.path.as_str()), ("email", K::Email, "b"));
    assert_eq!(&*out.body, &br#"{"a":"[REDACTED:ticket_id]","b":"bob@example.com"}"#[..]);

    let e = engine("mode: audit");
    let body = br#"{"a":"bob@example.com and carol@example.com"}"#;
    let out = scan_json(body, &e).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(&*out.body, &body[..]);
    assert_eq!((out.findings[0].action, out.findings[0].count), (Action::Audit, 2));
    assert!(!out.is_blocked());
}

#[test]
fn switches_turn_groups_off() {
    let e = engine("patterns: {email: false, api_keys: false}");
    let body = br#"{"a":"bob@example.com AKIAIOSFODNN7EXAMPLE 4111111111111111"}"#;
    let out = scan_json(body, &e).unwrap_or_else(|err| panic!("{err}"));
    let dets: Vec<&str> = out.findings.iter().map(|f| f.detector.as_str()).collect();
    assert_eq!(dets, ["credit_card"]);
    let e = engine("mode: disabled");
    assert!(e.detectors().is_empty());
    assert!(scan_json(body, &e).unwrap_or_else(|err| panic!("{err}")).findings.is_empty());
}

#[test]
fn malformed_json_is_an_error() {
    let e = Engine::builtin();
    for bad in
        [&b""[..], b"{", b"{\"a\":}", b"[1,]", b"\"\x01\"", b"01", b"1.", b"{\"a\":1}x", b"\"\\x\"", b"\xff"]
    {
        assert!(scan_json(bad, &e).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
    let deep = "[".repeat(10_000);
    assert_eq!(scan_json(deep.as_bytes(), &e).err(), Some(JsonError::TooDeep));
}
