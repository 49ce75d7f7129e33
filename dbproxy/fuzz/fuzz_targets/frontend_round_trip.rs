//! Fuzz the client side of the codec: no panic in either phase, and every message that
//! decodes encodes back to the exact bytes, which decode to an equal message.
#![no_main]

use dbproxy::wire::{Phase, parse_frontend};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for phase in [Phase::Startup, Phase::Normal] {
        let mut rest = data;
        while let Ok(Some((msg, n))) = parse_frontend(rest, phase) {
            let mut enc = Vec::new();
            msg.encode(&mut enc);
            assert_eq!(enc, &rest[..n], "{msg:?}");
            let (again, m) = parse_frontend(&enc, phase).expect("re-decodes").expect("complete");
            assert_eq!((again, m), (msg, n));
            rest = &rest[n..];
        }
    }
});
