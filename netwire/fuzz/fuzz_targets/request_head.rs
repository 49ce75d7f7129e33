//! Fuzz `parse_request_head`: no panic; every prefix is `Ok(None)` or an error of the same
//! kind as the whole; a complete head re-parses identically from exactly its own bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netwire::http::parse_request_head;

fuzz_target!(|data: &[u8]| {
    let whole = parse_request_head(data);
    let end = match &whole {
        Ok(Some(head)) => {
            assert!(head.head_len <= data.len());
            assert_eq!(parse_request_head(&data[..head.head_len]), whole);
            head.head_len
        }
        _ => data.len(),
    };
    let step = (end / 64).max(1);
    for cut in (0..end).step_by(step) {
        match (parse_request_head(&data[..cut]), &whole) {
            (Ok(None), _) => {}
            (Err(e), Err(w)) => {
                assert_eq!(std::mem::discriminant(&e), std::mem::discriminant(w), "cut {cut}")
            }
            (other, _) => panic!("prefix {cut} gave {other:?}, whole gave {whole:?}"),
        }
    }
});
