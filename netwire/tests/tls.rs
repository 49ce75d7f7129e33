//! `parse_client_hello` against real rustls hellos, hand-built ones, every truncation prefix,
//! every record split, and the byte fixtures in `testdata/tls/`.

mod support;

use netwire::tls::{MAX_RECORD_LEN, TlsError, parse_client_hello};
use support::hello::{
    Ext, alpn_ext, client_hello, handshake, records, rustls_hello, sni_entry, sni_ext, sni_ext_entries,
    unframe, versions_ext,
};

/// Every strict prefix must be `Ok(None)`, the whole must be `Some` consuming all of it.
fn assert_prefixes_then_complete(flight: &[u8]) -> netwire::ClientHelloInfo {
    for cut in 0..flight.len() {
        assert_eq!(parse_client_hello(&flight[..cut]), Ok(None), "prefix of {cut}/{} bytes", flight.len());
    }
    let info = parse_client_hello(flight).expect("valid").expect("complete");
    assert_eq!(info.consumed, flight.len());
    info
}

/// Every prefix is `Ok(None)` or an error of the same kind as the whole buffer's.
fn assert_prefixes_then_error(flight: &[u8]) -> TlsError {
    let err = parse_client_hello(flight).expect_err("invalid");
    for cut in 0..flight.len() {
        match parse_client_hello(&flight[..cut]) {
            Ok(None) => {}
            Err(e) => assert_eq!(std::mem::discriminant(&e), std::mem::discriminant(&err), "prefix {cut}"),
            Ok(Some(_)) => panic!("prefix {cut} parsed as complete"),
        }
    }
    err
}

#[test]
fn rustls_hello_every_prefix() {
    let flight = rustls_hello("API.Example.com", &[b"h2", b"http/1.1"]);
    let info = assert_prefixes_then_complete(&flight);
    assert_eq!(info.sni.as_ref().map(|h| h.as_str()), Some("api.example.com"));
    assert_eq!(info.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    assert_eq!(info.legacy_version, 0x0303);
    assert!(info.supported_versions.contains(&0x0304));
    assert!(!info.has_ech);
}

#[test]
fn rustls_hello_resplit_into_records() {
    let msg = unframe(&rustls_hello("split.example", &[b"h2"]));
    for size in [1, 2, 3, 4, 5, 17, 100, 255] {
        let info = assert_prefixes_then_complete(&records(&msg, size));
        assert_eq!(info.sni.expect("sni").as_str(), "split.example", "records of {size}");
    }
}

#[test]
fn rustls_hello_larger_than_one_record() {
    // Enough ALPN names to push the hello past 2^14 octets: rustls itself fragments it.
    let names: Vec<Vec<u8>> =
        (0..100).map(|i| format!("proto-{i:03}-{}", "x".repeat(180)).into_bytes()).collect();
    let refs: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
    let flight = rustls_hello("big.example", &refs);
    assert!(flight.len() > MAX_RECORD_LEN + 5, "hello of {} bytes fits one record", flight.len());
    let info = parse_client_hello(&flight).expect("valid").expect("complete");
    assert_eq!(info.consumed, flight.len());
    assert_eq!(info.alpn.len(), 100);
    assert_eq!(info.sni.expect("sni").as_str(), "big.example");
    for cut in (0..flight.len()).step_by(97) {
        assert_eq!(parse_client_hello(&flight[..cut]), Ok(None));
    }
}

#[test]
fn trailing_bytes_are_left_alone() {
    let mut flight = records(&client_hello(&[sni_ext(b"a.example")]), 40);
    let len = flight.len();
    flight.extend_from_slice(&[23, 3, 3, 0, 5, 1, 2, 3, 4, 5]); // early data record
    assert_eq!(parse_client_hello(&flight).expect("ok").expect("some").consumed, len);
}

#[test]
fn hello_without_sni_or_extensions() {
    let info = assert_prefixes_then_complete(&records(&client_hello(&[alpn_ext(&[b"h2"])]), 1000));
    assert_eq!(info.sni, None);
    // A TLS 1.0-style hello with no extensions block at all.
    let mut body = client_hello(&[])[4..].to_vec();
    body.truncate(body.len() - 2);
    let info = assert_prefixes_then_complete(&records(&handshake(&body), 1000));
    assert_eq!((info.sni, info.alpn.len()), (None, 0));
}

#[test]
fn not_tls() {
    assert_eq!(parse_client_hello(b"GET / HTTP/1.1\r\n"), Err(TlsError::NotTls));
    assert_eq!(parse_client_hello(b"\x16\x00"), Err(TlsError::NotTls));
    assert_eq!(parse_client_hello(b"\x16\x03\x09"), Err(TlsError::NotTls));
    assert_eq!(parse_client_hello(b"SSH-2.0-OpenSSH_9.6\r\n"), Err(TlsError::NotTls));
    assert_eq!(parse_client_hello(b"\x16\x03"), Ok(None));
    assert_eq!(parse_client_hello(b""), Ok(None));
}

fn malformed(flight: &[u8]) {
    let e = assert_prefixes_then_error(flight);
    assert!(matches!(e, TlsError::Malformed(_) | TlsError::Sni(_)), "{e:?}");
}

#[test]
fn rejects_framing_errors() {
    let msg = client_hello(&[sni_ext(b"x.example")]);
    // A later record of another content type.
    let mut f = records(&msg[..10], 10);
    f.extend_from_slice(&[21, 3, 3, 0, 2, 2, 40]);
    malformed(&f);
    // Empty record, oversized record.
    malformed(&[22, 3, 1, 0, 0]);
    malformed(&[22, 3, 1, 0x40, 0x01]);
    // Not a ClientHello (ServerHello type 2).
    let mut sh = msg.clone();
    sh[0] = 2;
    malformed(&records(&sh, 100));
    // Handshake length over 64 KiB.
    malformed(&[22, 3, 1, 0, 4, 1, 0x01, 0x00, 0x01]);
    // Record carries bytes past the hello.
    let mut long = msg.clone();
    long.extend_from_slice(&[20, 0, 0, 0]);
    malformed(&records(&long, 16_000));
}

#[test]
fn rejects_body_errors() {
    // Body shorter than its fields.
    malformed(&records(&handshake(&[3, 3, 0]), 100));
    // Trailing junk after the extensions block.
    let mut body = client_hello(&[sni_ext(b"x.example")])[4..].to_vec();
    body.push(0);
    malformed(&records(&handshake(&body), 100));
    // Extension whose length overruns the block.
    let mut bad = client_hello(&[(0xaaaa, vec![1, 2, 3])]);
    let n = bad.len();
    bad[n - 4] = 0x7f;
    malformed(&records(&bad, 100));
}

#[test]
fn rejects_sni_abuse() {
    let cases: Vec<Vec<Ext>> = vec![
        vec![sni_ext(b"a.example"), sni_ext(b"b.example")], // two extensions
        vec![sni_ext_entries(&[sni_entry(0, b"a.example"), sni_entry(0, b"b.example")])], // two names
        vec![sni_ext_entries(&[sni_entry(1, b"a.example")])], // not host_name
        vec![sni_ext_entries(&[])],                         // empty list
        vec![(0, vec![])],                                  // empty ext
        vec![sni_ext(b"10.1.2.3")],
        vec![sni_ext(b"evil.example\0.good.example")],
        vec![sni_ext(b"trailing.dot.")],
        vec![sni_ext(&[b'a'; 300])],
        vec![alpn_ext(&[b"h2"]), alpn_ext(&[b"http/1.1"])],
        vec![alpn_ext(&[b""])],
        vec![(43, vec![3, 3, 4, 3])],
    ];
    for exts in cases {
        malformed(&records(&client_hello(&exts), 64));
    }
}

#[test]
fn reports_ech_and_versions() {
    let info = assert_prefixes_then_complete(&records(
        &client_hello(&[sni_ext(b"public.example"), versions_ext(), (0xfe0d, vec![0; 8])]),
        300,
    ));
    assert!(info.has_ech);
    assert_eq!(info.supported_versions, vec![0x0304, 0x0303]);
}

/// Fixtures: `ok_<name>.bin` must parse completely (with `ok_<name>.sni` holding the name when
/// there is one); `err_<name>.bin` must be rejected. `NETWIRE_BLESS=1` rewrites them.
#[test]
fn fixtures() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/tls");
    if std::env::var_os("NETWIRE_BLESS").is_some() {
        bless(&dir);
    }
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("testdata/tls") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "bin") {
            continue;
        }
        let name = path.file_name().expect("name").to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).expect("read fixture");
        seen += 1;
        if name.starts_with("ok_") {
            let info = assert_prefixes_then_complete(&bytes);
            let expected = std::fs::read_to_string(path.with_extension("sni")).ok();
            assert_eq!(info.sni.map(|h| h.into_string()), expected.map(|s| s.trim().to_owned()), "{name}");
        } else {
            assert_prefixes_then_error(&bytes);
        }
    }
    assert!(seen >= 6, "only {seen} fixtures");
}

fn bless(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).expect("write fixture");
    write("ok_rustls_h2.bin", &rustls_hello("www.example.org", &[b"h2", b"http/1.1"]));
    write("ok_rustls_h2.sni", b"www.example.org\n");
    let split = client_hello(&[sni_ext(b"Split.Example.NET"), alpn_ext(&[b"h2"]), versions_ext()]);
    write("ok_split_3_records.bin", &records(&split, split.len() / 3 + 1));
    write("ok_split_3_records.sni", b"split.example.net\n");
    write("ok_no_sni.bin", &records(&client_hello(&[versions_ext()]), 512));
    write(
        "err_duplicate_sni.bin",
        &records(&client_hello(&[sni_ext(b"a.example"), sni_ext(b"b.example")]), 512),
    );
    write("err_sni_ip_literal.bin", &records(&client_hello(&[sni_ext(b"127.0.0.1")]), 512));
    let not_host = sni_ext_entries(&[sni_entry(7, b"a.example")]);
    write("err_sni_not_host_name.bin", &records(&client_hello(&[not_host]), 512));
    write("err_oversized_handshake.bin", &[22, 3, 1, 0, 4, 1, 0x01, 0x00, 0x01]);
}
