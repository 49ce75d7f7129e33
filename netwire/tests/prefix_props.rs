//! Stable-toolchain stand-in for the fuzz targets: random mutations of valid hellos and heads
//! must never panic, and no prefix may disagree with the whole ("None or the same error kind").

mod support;

use netwire::peek::{Peeked, classify};
use netwire::{parse_client_hello, parse_request_head};
use proptest::prelude::*;
use support::hello::{alpn_ext, client_hello, records, sni_ext, versions_ext};

fn seed_hellos() -> Vec<Vec<u8>> {
    let msg = client_hello(&[sni_ext(b"prop.example"), alpn_ext(&[b"h2", b"http/1.1"]), versions_ext()]);
    vec![records(&msg, 16_384), records(&msg, 7), records(&msg, 1)]
}

const SEED_HEADS: &[&[u8]] = &[
    b"GET /a HTTP/1.1\r\nHost: prop.example:8080\r\nAccept: */*\r\n\r\n",
    b"GET http://prop.example/x HTTP/1.0\r\n\r\n",
    b"CONNECT prop.example:443 HTTP/1.1\r\nHost: prop.example:443\r\n\r\n",
];

/// Apply `edits` (position, byte, kind) to `seed`: overwrite, insert or delete.
fn mutate(seed: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for &(pos, byte, kind) in edits {
        if v.is_empty() {
            v.push(byte);
            continue;
        }
        let at = pos % v.len();
        match kind % 3 {
            0 => v[at] = byte,
            1 => v.insert(at, byte),
            _ => {
                v.remove(at);
            }
        }
    }
    v
}

fn same_kind<T, E>(part: &Result<Option<T>, E>, whole: &Result<Option<T>, E>) -> bool {
    match (part, whole) {
        (Ok(None), _) => true,
        (Err(p), Err(w)) => std::mem::discriminant(p) == std::mem::discriminant(w),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn client_hello_prefixes_agree(which in 0usize..3, edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..4)) {
        let data = mutate(&seed_hellos()[which], &edits);
        let whole = parse_client_hello(&data);
        let end = match &whole { Ok(Some(i)) => i.consumed, _ => data.len() };
        for cut in 0..end {
            let part = parse_client_hello(&data[..cut]);
            prop_assert!(same_kind(&part, &whole), "cut {} gave {:?}, whole {:?}", cut, part, whole);
        }
        let c = classify(&data);
        for cut in 0..end {
            let p = classify(&data[..cut]);
            prop_assert!(p == Peeked::NeedMore || std::mem::discriminant(&p) == std::mem::discriminant(&c));
        }
    }

    #[test]
    fn request_head_prefixes_agree(which in 0usize..3, edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..4)) {
        let data = mutate(SEED_HEADS[which], &edits);
        let whole = parse_request_head(&data);
        let end = match &whole { Ok(Some(h)) => h.head_len, _ => data.len() };
        for cut in 0..end {
            let part = parse_request_head(&data[..cut]);
            prop_assert!(same_kind(&part, &whole), "cut {} gave {:?}, whole {:?}", cut, part, whole);
        }
        let c = classify(&data);
        for cut in 0..end {
            let p = classify(&data[..cut]);
            prop_assert!(p == Peeked::NeedMore || std::mem::discriminant(&p) == std::mem::discriminant(&c),
                "cut {} gave {:?}, whole {:?}", cut, p, c);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_client_hello(&data);
        let _ = parse_request_head(&data);
        let _ = classify(&data);
    }
}
