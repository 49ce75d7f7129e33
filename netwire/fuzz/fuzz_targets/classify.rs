//! Fuzz `classify`: no panic, and a decision on the whole input is never contradicted by a
//! prefix (each prefix is `NeedMore` or the same kind of answer).
#![no_main]

use libfuzzer_sys::fuzz_target;
use netwire::peek::{Peeked, classify};

fuzz_target!(|data: &[u8]| {
    let whole = classify(data);
    let step = (data.len() / 64).max(1);
    for cut in (0..data.len()).step_by(step) {
        let part = classify(&data[..cut]);
        if part == Peeked::NeedMore {
            continue;
        }
        assert_eq!(
            std::mem::discriminant(&part),
            std::mem::discriminant(&whole),
            "cut {cut}: {part:?} vs {whole:?}"
        );
    }
});
