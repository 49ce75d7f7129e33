//! The wire codec against byte fixtures (`testdata/wire/*.bin`, written from the protocol
//! documentation by a script, not by this encoder): every message decodes to the expected
//! value, re-encodes to the exact bytes, and every strict prefix asks for more bytes.

use std::borrow::Cow;

use dbproxy::wire::{
    Authentication, Backend, BackendKeyData, Bind, CancelRequest, CopyFail, Direction, ErrorFields, Execute,
    Frontend, FunctionCall, MAX_MESSAGE, MAX_STARTUP, Named, ParameterStatus, Parse, Phase, Query, Target,
    TxStatus, WireError, check, encode_statement_denied, parse_backend, parse_frontend,
};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/testdata/wire/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Decodes every frontend message in `bytes`, checking prefixes and the exact re-encoding.
fn frontend(bytes: &[u8], phase: Phase) -> Vec<Frontend<'_>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let (msg, n) = parse_frontend(rest, phase).expect("valid").expect("complete");
        for cut in 0..n {
            assert_eq!(
                check(&rest[..cut], Direction::Frontend, phase).expect("prefix is valid"),
                None,
                "prefix {cut}"
            );
        }
        let mut enc = Vec::new();
        msg.encode(&mut enc);
        assert_eq!(enc, &rest[..n], "re-encoding {msg:?}");
        out.push(msg);
        at += n;
    }
    out
}

fn backend(bytes: &[u8]) -> Vec<Backend<'_>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let (msg, n) = parse_backend(rest, Phase::Normal).expect("valid").expect("complete");
        for cut in 0..n {
            assert_eq!(check(&rest[..cut], Direction::Backend, Phase::Normal).expect("prefix"), None);
        }
        let mut enc = Vec::new();
        msg.encode(&mut enc);
        assert_eq!(enc, &rest[..n], "re-encoding {msg:?}");
        out.push(msg);
        at += n;
    }
    out
}

#[test]
fn startup_family() {
    let b = fixture("startup.bin");
    let msgs = frontend(&b, Phase::Startup);
    let Frontend::Startup(s) = &msgs[0] else { panic!("{msgs:?}") };
    assert_eq!((s.major, s.minor), (3, 0));
    assert_eq!(s.param("user"), Some("app"));
    assert_eq!(s.param("database"), Some("appdb"));
    assert_eq!(s.param("application_name"), Some("psql"));
    assert_eq!(s.param("options"), None);
    assert_eq!(frontend(&fixture("ssl_request.bin"), Phase::Startup), vec![Frontend::SslRequest]);
    assert_eq!(frontend(&fixture("gssenc_request.bin"), Phase::Startup), vec![Frontend::GssEncRequest]);
    let secret = 0xdeadbeef_u32.to_be_bytes();
    assert_eq!(
        frontend(&fixture("cancel_request.bin"), Phase::Startup),
        vec![Frontend::CancelRequest(CancelRequest { pid: 4242, secret: &secret })]
    );
}

#[test]
fn query_extended_function_copy() {
    assert_eq!(
        frontend(&fixture("query.bin"), Phase::Normal),
        vec![Frontend::Query(Query { sql: "SELECT * FROM users; DELETE FROM users" })]
    );
    let b = fixture("extended.bin");
    assert_eq!(
        frontend(&b, Phase::Normal),
        vec![
            Frontend::Parse(Parse {
                name: "s1",
                sql: "SELECT * FROM users WHERE id = $1",
                param_types: vec![23]
            }),
            Frontend::Bind(Bind {
                portal: "",
                statement: "s1",
                param_formats: vec![0],
                params: vec![Some(b"42"), None],
                result_formats: vec![1],
            }),
            Frontend::Describe(Named { target: Target::Portal, name: "" }),
            Frontend::Execute(Execute { portal: "", max_rows: 0 }),
            Frontend::Close(Named { target: Target::Statement, name: "s1" }),
            Frontend::Flush,
            Frontend::Sync,
        ]
    );
    assert_eq!(
        frontend(&fixture("function_call.bin"), Phase::Normal),
        vec![Frontend::FunctionCall(FunctionCall {
            oid: 1247,
            arg_formats: vec![1],
            args: vec![Some(&[0, 0, 0, 7])],
            result_format: 1
        })]
    );
    assert_eq!(
        frontend(&fixture("copy_in.bin"), Phase::Normal),
        vec![
            Frontend::CopyData(b"1\talice\n"),
            Frontend::CopyData(b"2\tbob\n"),
            Frontend::CopyDone,
            Frontend::CopyFail(CopyFail { message: "client gave up" }),
            Frontend::Terminate,
        ]
    );
    let p = fixture("password.bin");
    assert!(
        matches!(frontend(&p, Phase::Normal)[..], [Frontend::Password(b)] if b.starts_with(b"SCRAM-SHA-256\0"))
    );
}

#[test]
fn backend_messages() {
    let b = fixture("backend_startup.bin");
    let secret = 0x01020304_u32.to_be_bytes();
    assert_eq!(
        backend(&b),
        vec![
            Backend::Authentication(Authentication::Sasl(vec!["SCRAM-SHA-256"])),
            Backend::Authentication(Authentication::SaslContinue(b"r=abc,s=c2FsdA==,i=4096")),
            Backend::Authentication(Authentication::SaslFinal(b"v=xyz")),
            Backend::Authentication(Authentication::Ok),
            Backend::ParameterStatus(ParameterStatus { name: "server_version", value: "15.8" }),
            Backend::ParameterStatus(ParameterStatus { name: "client_encoding", value: "UTF8" }),
            Backend::BackendKeyData(BackendKeyData { pid: 777, secret: &secret }),
            Backend::ReadyForQuery(TxStatus::Idle),
        ]
    );
    let b = fixture("backend_auth_other.bin");
    assert_eq!(
        backend(&b),
        vec![
            Backend::Authentication(Authentication::Md5Password([1, 2, 3, 4])),
            Backend::Authentication(Authentication::CleartextPassword),
            Backend::Authentication(Authentication::Other { code: 7, data: b"" }),
        ]
    );
    let b = fixture("backend_query.bin");
    let msgs = backend(&b);
    assert!(matches!(msgs[0], Backend::Other { tag: b'T', .. }));
    assert!(matches!(msgs[2], Backend::Other { tag: b'C', body: b"SELECT 1\0" }));
    let Backend::ErrorResponse(e) = &msgs[4] else { panic!("{msgs:?}") };
    assert_eq!(e.code(), Some("42P01"));
    assert_eq!(e.message(), Some("relation \"nosuch\" does not exist"));
    assert_eq!(
        msgs[5..],
        [Backend::ReadyForQuery(TxStatus::InTransaction), Backend::ReadyForQuery(TxStatus::Failed)]
    );
    assert_eq!(parse_backend(b"S", Phase::Startup), Ok(Some((Backend::EncryptionAnswer(b'S'), 1))));
    assert_eq!(parse_backend(b"", Phase::Startup), Ok(None));
}

#[test]
fn policy_denial_bytes() {
    let mut out = Vec::new();
    encode_statement_denied("no-danger", Some("DROP is refused"), TxStatus::Idle, &mut out);
    assert_eq!(out, fixture("denied.bin"));
    let e = ErrorFields::policy_denied("r\0x", None, true);
    assert_eq!(e.field(b'S'), Some("FATAL"));
    assert_eq!(e.code(), Some("42501"));
    assert_eq!(e.message(), Some("denied by agentsh policy: rx"));
    assert_eq!(e.fields[0], (b'S', Cow::Borrowed("FATAL")));
}

#[test]
fn lengths_are_bounded() {
    let mut big = vec![b'Q'];
    big.extend_from_slice(&((MAX_MESSAGE as u32) + 1).to_be_bytes());
    assert_eq!(
        check(&big, Direction::Frontend, Phase::Normal),
        Err(WireError::TooLarge { len: MAX_MESSAGE + 1, max: MAX_MESSAGE })
    );
    let startup = ((MAX_STARTUP as u32) + 1).to_be_bytes();
    assert!(matches!(check(&startup, Direction::Frontend, Phase::Startup), Err(WireError::TooLarge { .. })));
    assert_eq!(check(b"Q\0\0\0\x03", Direction::Frontend, Phase::Normal), Err(WireError::BadLength(3)));
    assert_eq!(check(&7u32.to_be_bytes(), Direction::Frontend, Phase::Startup), Err(WireError::BadLength(7)));
    // A declared length at the limit is fine, and waits for the bytes.
    let mut ok = vec![b'd'];
    ok.extend_from_slice(&(MAX_MESSAGE as u32).to_be_bytes());
    assert_eq!(check(&ok, Direction::Frontend, Phase::Normal), Ok(None));
}

#[test]
fn malformed_bodies_are_refused() {
    let cases: &[(&[u8], Phase)] = &[
        (b"Q\0\0\0\x07abc", Phase::Normal),                            // no NUL
        (b"Q\0\0\0\x08ab\0c", Phase::Normal),                          // trailing bytes
        (b"Q\0\0\0\x07\xff\xfe\0", Phase::Normal),                     // not UTF-8
        (b"S\0\0\0\x05x", Phase::Normal),                              // Sync with a body
        (b"D\0\0\0\x06X\0", Phase::Normal),                            // Describe target
        (b"P\0\0\0\x0aa\0b\0\xff\xff", Phase::Normal),                 // negative count
        (b"B\0\0\0\x0e\0\0\0\0\0\x01\xff\xff\xff\xfe", Phase::Normal), // negative length
        (b"Z\0\0\0\x04", Phase::Normal),                               // unknown tag on the client side
        (b"\0\0\0\x08\0\x02\0\0", Phase::Startup),                     // protocol 2
        (b"\0\0\0\x0c\x04\xd2\x16\x2e\0\0\0\x01", Phase::Startup),     // cancel with a short key
    ];
    for (bytes, phase) in cases {
        assert!(parse_frontend(bytes, *phase).is_err(), "{bytes:?} should be refused");
    }
    let dup = b"\0\0\0\x17\0\x03\0\0user\0a\0user\0b\0\0";
    assert_eq!(
        parse_frontend(dup, Phase::Startup),
        Err(WireError::Malformed { message: "StartupMessage", why: "duplicate parameter" })
    );
}

mod round_trip {
    use dbproxy::wire::{Phase, parse_backend, parse_frontend};
    use proptest::prelude::*;

    /// A typed message with a random tag from `tags` and a random body.
    fn typed(tags: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
        (proptest::sample::select(tags), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(
            |(t, body)| {
                let mut m = vec![t];
                m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
                m.extend_from_slice(&body);
                m
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4_000))]

        #[test]
        fn frontend_decodes_re_encode_exactly(m in typed(b"QPBDECSHFdcfXp")) {
            if let Ok(Some((msg, n))) = parse_frontend(&m, Phase::Normal) {
                let mut enc = Vec::new();
                msg.encode(&mut enc);
                prop_assert_eq!(&enc[..], &m[..n]);
            }
        }

        #[test]
        fn backend_decodes_re_encode_exactly(m in typed(b"RSKZENTDC")) {
            if let Ok(Some((msg, n))) = parse_backend(&m, Phase::Normal) {
                let mut enc = Vec::new();
                msg.encode(&mut enc);
                prop_assert_eq!(&enc[..], &m[..n]);
            }
        }

        #[test]
        fn startup_never_panics(b in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse_frontend(&b, Phase::Startup);
        }
    }
}
