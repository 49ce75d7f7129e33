//! Fuzz `parse_client_hello`: no panic; every prefix of the input is `Ok(None)` or an error of
//! the same kind as the whole; a complete hello re-parses identically from its own bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netwire::tls::parse_client_hello;

fuzz_target!(|data: &[u8]| {
    let whole = parse_client_hello(data);
    let end = match &whole {
        Ok(Some(info)) => {
            assert!(info.consumed <= data.len());
            assert_eq!(parse_client_hello(&data[..info.consumed]), whole);
            info.consumed
        }
        _ => data.len(),
    };
    // All prefixes of short inputs; about 64 evenly spread cuts of long ones.
    let step = (end / 64).max(1);
    for cut in (0..end).step_by(step) {
        match (parse_client_hello(&data[..cut]), &whole) {
            (Ok(None), _) => {}
            (Err(e), Err(w)) => {
                assert_eq!(std::mem::discriminant(&e), std::mem::discriminant(w), "cut {cut}")
            }
            (other, _) => panic!("prefix {cut} gave {other:?}, whole gave {whole:?}"),
        }
    }
});
