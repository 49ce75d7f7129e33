//! Fuzzes `parse_sockaddr` with arbitrary tracee bytes: it must never panic, every IP result must
//! round-trip through `encode_sockaddr`, and canonicalising must be idempotent.

#![no_main]

use libfuzzer_sys::fuzz_target;
use redirect::sockaddr::{ParsedAddr, canonical, encode_sockaddr, parse_sockaddr};

fuzz_target!(|data: &[u8]| {
    if let Ok(ParsedAddr::Inet(addr)) = parse_sockaddr(data) {
        let again = parse_sockaddr(&encode_sockaddr(addr));
        assert_eq!(again, Ok(ParsedAddr::Inet(addr)));
        assert_eq!(canonical(canonical(addr)), canonical(addr));
    }
});
