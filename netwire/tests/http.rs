//! `parse_request_head`: hosts and ports, every prefix, and the request-smuggling rejections;
//! plus the fixtures in `testdata/http/`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netwire::http::{Host, HttpError, HttpVersion, MAX_HEAD_LEN, parse_request_head};

fn complete(raw: &[u8]) -> netwire::HttpHead {
    for cut in 0..raw.len() {
        assert_eq!(parse_request_head(&raw[..cut]), Ok(None), "prefix {cut}");
    }
    parse_request_head(raw).expect("valid").expect("complete")
}

fn rejected(raw: &[u8]) -> HttpError {
    let err = parse_request_head(raw).expect_err("invalid");
    for cut in 0..raw.len() {
        match parse_request_head(&raw[..cut]) {
            Ok(None) => {}
            Err(e) => assert_eq!(std::mem::discriminant(&e), std::mem::discriminant(&err), "prefix {cut}"),
            Ok(Some(_)) => panic!("prefix {cut} complete"),
        }
    }
    err
}

fn name(s: &str) -> Option<Host> {
    Some(Host::Name(netwire::Hostname::from_wire(s.as_bytes()).expect("name")))
}

#[test]
fn origin_form_with_host() {
    let raw = b"GET /index.html?q=1 HTTP/1.1\r\nHost: WWW.Example.com:8080\r\nAccept: */*\r\n\r\nBODY";
    let head = complete(&raw[..raw.len() - 4]);
    assert_eq!(head.method, "GET");
    assert_eq!(head.target, "/index.html?q=1");
    assert_eq!(head.version, HttpVersion::Http11);
    assert_eq!(head.host, name("www.example.com"));
    assert_eq!(head.port, Some(8080));
    assert_eq!(parse_request_head(raw).expect("ok").expect("some").head_len, raw.len() - 4);
}

#[test]
fn ip_hosts() {
    let h = complete(b"GET / HTTP/1.1\r\nHost: [::1]:3000\r\n\r\n");
    assert_eq!((h.host, h.port), (Some(Host::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST))), Some(3000)));
    let h = complete(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert_eq!((h.host, h.port), (Some(Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST))), None));
}

#[test]
fn absolute_and_authority_form() {
    let h = complete(b"GET http://api.example.com:81/v1 HTTP/1.1\r\nHost: api.example.com:81\r\n\r\n");
    assert_eq!((h.host, h.port), (name("api.example.com"), Some(81)));
    let h = complete(b"GET http://api.example.com/v1 HTTP/1.0\r\n\r\n");
    assert_eq!((h.host, h.port, h.version), (name("api.example.com"), None, HttpVersion::Http10));
    let h = complete(b"CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\n");
    assert_eq!((h.host, h.port), (name("db.example"), Some(5432)));
    assert_eq!(
        rejected(b"GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n"),
        HttpError::HostMismatch
    );
    assert!(matches!(rejected(b"GET ftp://a.example/ HTTP/1.1\r\n\r\n"), HttpError::BadAuthority { .. }));
    assert!(matches!(rejected(b"CONNECT db.example HTTP/1.1\r\n\r\n"), HttpError::BadAuthority { .. }));
}

#[test]
fn http10_without_host() {
    let h = complete(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!((h.host, h.port), (None, None));
    assert_eq!(rejected(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"), HttpError::MissingHost);
}

#[test]
fn smuggling_shapes_are_rejected() {
    assert_eq!(
        rejected(b"GET / HTTP/1.1\r\nHost: a.example\r\nhost: b.example\r\n\r\n"),
        HttpError::MultipleHost
    );
    assert_eq!(
        rejected(b"GET / HTTP/1.1\r\nHost: a.example\r\nHOST: a.example\r\n\r\n"),
        HttpError::MultipleHost
    );
    // obs-fold continuation line.
    assert!(matches!(
        rejected(b"GET / HTTP/1.1\r\nHost: a.example\r\nX-A: 1\r\n  folded\r\n\r\n"),
        HttpError::Syntax(_)
    ));
    assert!(matches!(rejected(b"GET / HTTP/1.1\r\nHost : a.example\r\n\r\n"), HttpError::Syntax(_)));
    for bad in [&b"a.example:"[..], b"user@a.example", b"a.example:99999", b"a..example", b"[::1", b"a b"] {
        let mut raw = b"GET / HTTP/1.1\r\nHost: ".to_vec();
        raw.extend_from_slice(bad);
        raw.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(rejected(&raw), HttpError::BadAuthority { .. }), "{}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn bounds() {
    let mut big = b"GET / HTTP/1.1\r\nHost: a.example\r\nX-Pad: ".to_vec();
    big.resize(MAX_HEAD_LEN + 10, b'p');
    assert_eq!(parse_request_head(&big), Err(HttpError::HeadTooLarge));
    assert_eq!(parse_request_head(&big[..MAX_HEAD_LEN - 1]), Ok(None));
    let mut many = b"GET / HTTP/1.1\r\nHost: a.example\r\n".to_vec();
    for i in 0..120 {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(parse_request_head(&many), Err(HttpError::TooManyHeaders));
    assert!(matches!(parse_request_head(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Err(HttpError::Syntax(_))));
}

/// `ok_*.http` parse completely (host in `ok_*.host`), `err_*.http` are rejected.
#[test]
fn fixtures() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/http");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("testdata/http") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "http") {
            continue;
        }
        seen += 1;
        let file = path.file_name().expect("name").to_string_lossy().into_owned();
        let raw = std::fs::read(&path).expect("read");
        if file.starts_with("ok_") {
            let head = complete(&raw);
            let want = std::fs::read_to_string(path.with_extension("host")).expect("host file");
            let got = match (head.host, head.port) {
                (Some(Host::Name(n)), Some(p)) => format!("{n}:{p}"),
                (Some(Host::Name(n)), None) => n.into_string(),
                (Some(Host::Ip(ip)), p) => format!("{ip}{}", p.map(|p| format!(":{p}")).unwrap_or_default()),
                (None, _) => String::new(),
            };
            assert_eq!(got, want.trim(), "{file}");
        } else {
            rejected(&raw);
        }
    }
    assert!(seen >= 4, "only {seen} fixtures");
}
