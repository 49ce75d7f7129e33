//! `rewrite_sni` byte for byte against the fixtures in `testdata/tls_rewrite/`, and as a
//! property over real rustls hellos: the output parses with the new name, keeps everything else,
//! and rewriting back restores the client's bytes.

mod support;

use netwire::tls::{MAX_RECORD_LEN, TlsError, parse_client_hello, rewrite_sni};
use netwire::{Hostname, Rewritten};
use proptest::prelude::*;
use support::hello::{
    alpn_ext, client_hello, early_data_ext, handshake, padding_ext, psk_ext, psk_modes_ext, records,
    records_with_version, rustls_hello, sni_ext, unframe, versions_ext,
};

const NEW: &str = "rewritten.test";

fn host(name: &str) -> Hostname {
    Hostname::from_wire(name.as_bytes()).expect("valid test name")
}

/// Rewrite a complete flight, checking on the way that every strict prefix needs more bytes.
fn rewrite_all_prefixes(flight: &[u8], name: &str) -> Result<Rewritten, TlsError> {
    let new = host(name);
    let whole = rewrite_sni(flight, &new);
    let end = match &whole {
        Ok(Some(rw)) => rw.consumed,
        _ => flight.len(),
    };
    for cut in 0..end {
        match rewrite_sni(&flight[..cut], &new) {
            Ok(None) => {}
            Err(e)
                if whole.as_ref().is_err_and(|w| std::mem::discriminant(w) == std::mem::discriminant(&e)) => {
            }
            other => panic!("prefix {cut}/{end} gave {other:?}"),
        }
    }
    whole.map(|rw| rw.expect("complete flight"))
}

/// The `legacy_record_version` and payload length of every record in `flight`.
fn record_headers(flight: &[u8]) -> Vec<([u8; 2], usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 5 <= flight.len() {
        let len = usize::from(u16::from_be_bytes([flight[pos + 3], flight[pos + 4]]));
        out.push(([flight[pos + 1], flight[pos + 2]], len));
        pos += 5 + len;
    }
    assert_eq!(pos, flight.len(), "flight ends inside a record");
    out
}

/// A TLS 1.0-style hello: no extensions block at all.
fn hello_without_extensions() -> Vec<u8> {
    let mut body = client_hello(&[])[4..].to_vec();
    body.truncate(body.len() - 2);
    handshake(&body)
}

/// Fixtures: `<case>.in.bin` is what the client sent; `<case>.out.bin` is exactly what goes
/// upstream (`bytes` then the input after `consumed`). `err_<case>.in.bin` must be refused.
/// The expected outputs are built from the hand-written hello builder, not from `rewrite_sni`.
/// `NETWIRE_BLESS=1` regenerates them.
#[test]
fn fixtures() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/tls_rewrite");
    if std::env::var_os("NETWIRE_BLESS").is_some() {
        bless(&dir);
    }
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("testdata/tls_rewrite") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name").to_string_lossy().into_owned();
        let Some(case) = name.strip_suffix(".in.bin") else { continue };
        let input = std::fs::read(&path).expect("read fixture");
        seen += 1;
        if case.starts_with("err_") {
            let err = rewrite_all_prefixes(&input, NEW).expect_err(case);
            assert!(matches!(err, TlsError::Unrewritable(_) | TlsError::Malformed(_)), "{case}: {err:?}");
            continue;
        }
        let expected = std::fs::read(dir.join(format!("{case}.out.bin"))).expect("out fixture");
        let rw = rewrite_all_prefixes(&input, NEW).unwrap_or_else(|e| panic!("{case}: {e}"));
        let mut upstream = rw.bytes.clone();
        upstream.extend_from_slice(&input[rw.consumed..]);
        assert!(upstream == expected, "{case}: output differs from {case}.out.bin");
        let info = parse_client_hello(&rw.bytes).expect("parses").expect("complete");
        assert_eq!(info.sni.as_ref().map(Hostname::as_str), Some(NEW), "{case}");
        assert_eq!(info.consumed, rw.bytes.len(), "{case}");
        assert_eq!(rw.stripped_psk, case.contains("psk"), "{case}");
        let first_version = [input[1], input[2]];
        for (version, len) in record_headers(&rw.bytes) {
            assert_eq!(version, first_version, "{case}");
            assert!(len <= MAX_RECORD_LEN, "{case}");
        }
    }
    assert!(seen >= 8, "only {seen} fixtures");
}

fn bless(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let write = |case: &str, input: &[u8], output: &[u8]| {
        std::fs::write(dir.join(format!("{case}.in.bin")), input).expect("write fixture");
        if !output.is_empty() {
            std::fs::write(dir.join(format!("{case}.out.bin")), output).expect("write fixture");
        }
    };
    let new = sni_ext(NEW.as_bytes());
    let alpn = alpn_ext(&[b"h2", b"http/1.1"]);
    let one = |exts: &[(u16, Vec<u8>)]| records(&client_hello(exts), MAX_RECORD_LEN);

    let old = sni_ext(b"Original.Test");
    write(
        "with_sni",
        &one(&[old.clone(), alpn.clone(), versions_ext()]),
        &one(&[new.clone(), alpn.clone(), versions_ext()]),
    );
    // A longer old name: every length shrinks rather than grows.
    let long = sni_ext(b"a-much-longer-original-name.subdomain.example.org");
    write("shorter_name", &one(&[versions_ext(), long]), &one(&[versions_ext(), new.clone()]));
    // No server_name: one is added, first.
    write(
        "without_sni",
        &one(&[alpn.clone(), versions_ext()]),
        &one(&[new.clone(), alpn.clone(), versions_ext()]),
    );
    write(
        "no_extensions",
        &records(&hello_without_extensions(), MAX_RECORD_LEN),
        &one(std::slice::from_ref(&new)),
    );
    // Three small records in, one record out, the first record's version kept.
    let msg = client_hello(&[old.clone(), alpn.clone(), versions_ext()]);
    let expected = client_hello(&[new.clone(), alpn.clone(), versions_ext()]);
    write("multi_record", &records(&msg, msg.len() / 3 + 1), &records(&expected, MAX_RECORD_LEN));
    // A hello larger than one record (as with big post-quantum key shares), cut at 4000.
    let big = client_hello(&[old.clone(), padding_ext(20_000), versions_ext()]);
    let big_expected = client_hello(&[new.clone(), padding_ext(20_000), versions_ext()]);
    write(
        "large_multi_record",
        &records_with_version(&big, 4000, [3, 3]),
        &records_with_version(&big_expected, MAX_RECORD_LEN, [3, 3]),
    );
    // PSK: pre_shared_key goes, psk_key_exchange_modes and early_data stay; the 0-RTT record
    // after the hello passes through untouched.
    let psk = [old.clone(), versions_ext(), psk_modes_ext(), early_data_ext(), psk_ext()];
    let mut with_psk = one(&psk);
    let mut psk_expected = one(&[new.clone(), versions_ext(), psk_modes_ext(), early_data_ext()]);
    let early = [23, 3, 3, 0, 4, 0xde, 0xad, 0xbe, 0xef];
    with_psk.extend_from_slice(&early);
    psk_expected.extend_from_slice(&early);
    write("with_psk", &with_psk, &psk_expected);
    write("err_ech", &one(&[old.clone(), versions_ext(), (0xfe0d, vec![0; 8])]), &[]);
    write("err_duplicate_sni", &one(&[old.clone(), new.clone()]), &[]);
}

#[test]
fn rewriting_to_the_same_name_is_the_identity() {
    let flight = rustls_hello("same.example", &[b"h2"]);
    let rw = rewrite_sni(&flight, &host("same.example")).expect("ok").expect("complete");
    assert_eq!(rw.bytes, flight);
    assert_eq!(rw.old_sni, Some(host("same.example")));
}

#[test]
fn large_rustls_hello_spanning_records() {
    let names: Vec<Vec<u8>> =
        (0..100).map(|i| format!("proto-{i:03}-{}", "x".repeat(180)).into_bytes()).collect();
    let refs: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
    let flight = rustls_hello("big.example", &refs);
    assert!(record_headers(&flight).len() > 1, "rustls kept the hello in one record");
    let rw = rewrite_sni(&flight, &host(NEW)).expect("ok").expect("complete");
    assert_eq!(rw.consumed, flight.len());
    let info = parse_client_hello(&rw.bytes).expect("parses").expect("complete");
    assert_eq!(info.sni.expect("sni").as_str(), NEW);
    assert_eq!(info.alpn, names);
    assert!(record_headers(&rw.bytes).iter().all(|&(_, len)| len <= MAX_RECORD_LEN));
    let back = rewrite_sni(&rw.bytes, &host("big.example")).expect("ok").expect("complete");
    assert_eq!(back.bytes, records_with_version(&unframe(&flight), MAX_RECORD_LEN, [flight[1], flight[2]]));
    for cut in (0..flight.len()).step_by(101) {
        assert_eq!(rewrite_sni(&flight[..cut], &host(NEW)), Ok(None));
    }
}

#[test]
fn refuses_what_parse_refuses_and_grows_no_further_than_64k() {
    assert_eq!(rewrite_sni(b"GET / HTTP/1.1\r\n", &host(NEW)), Err(TlsError::NotTls));
    assert_eq!(rewrite_sni(b"", &host(NEW)), Ok(None));
    // A hello just under the 64 KiB limit that a longer name would push over it.
    let pad = netwire::tls::MAX_HANDSHAKE_LEN - client_hello(&[sni_ext(b"a.b"), padding_ext(0)]).len() + 4;
    let flight = records(&client_hello(&[sni_ext(b"a.b"), padding_ext(pad)]), MAX_RECORD_LEN);
    assert!(parse_client_hello(&flight).expect("at the limit").is_some());
    assert!(matches!(rewrite_sni(&flight, &host(NEW)), Err(TlsError::Unrewritable(_))));
    assert!(rewrite_sni(&flight, &host("c.d")).expect("same length").is_some());
}

/// A lower-case host name of one to four labels under `.test`.
fn name_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", 1..4)
        .prop_map(|labels| format!("{}.test", labels.join(".")))
}

const ALPNS: &[&[u8]] = &[b"h2", b"http/1.1", b"acme-tls/1", b"h3"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn rustls_hellos_rewrite_and_round_trip(
        old in name_strategy(),
        new in name_strategy(),
        alpn_mask in 0usize..16,
        split in prop::sample::select(vec![1usize, 7, 64, 200, MAX_RECORD_LEN]),
    ) {
        let alpn: Vec<&[u8]> = ALPNS.iter().enumerate().filter(|(i, _)| alpn_mask & (1 << i) != 0).map(|(_, p)| *p).collect();
        let original = rustls_hello(&old, &alpn);
        let flight = records(&unframe(&original), split);
        let before = parse_client_hello(&flight).expect("parses").expect("complete");
        let rw = rewrite_all_prefixes(&flight, &new).expect("rewrites");
        prop_assert_eq!(rw.consumed, flight.len());
        prop_assert_eq!(rw.old_sni.as_ref().map(Hostname::as_str), Some(old.as_str()));
        prop_assert!(!rw.stripped_psk);
        let after = parse_client_hello(&rw.bytes).expect("output parses").expect("complete");
        prop_assert_eq!(after.sni.as_ref().map(Hostname::as_str), Some(new.as_str()));
        prop_assert_eq!(&after.alpn, &before.alpn);
        prop_assert_eq!(&after.supported_versions, &before.supported_versions);
        prop_assert_eq!(after.legacy_version, before.legacy_version);
        prop_assert_eq!(after.consumed, rw.bytes.len());
        // Everything but the name is byte-identical: rewriting back restores rustls's bytes.
        let back = rewrite_sni(&rw.bytes, &host(&old)).expect("ok").expect("complete");
        prop_assert!(back.bytes == original, "round trip differs");
    }
}
