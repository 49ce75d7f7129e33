//! Fuzz the server side of the codec: no panic, exact re-encoding, equal re-decoding.
#![no_main]

use dbproxy::wire::{Phase, parse_backend};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((msg, n))) = parse_backend(rest, Phase::Normal) {
        let mut enc = Vec::new();
        msg.encode(&mut enc);
        assert_eq!(enc, &rest[..n], "{msg:?}");
        let (again, m) = parse_backend(&enc, Phase::Normal).expect("re-decodes").expect("complete");
        assert_eq!((again, m), (msg, n));
        rest = &rest[n..];
    }
});
