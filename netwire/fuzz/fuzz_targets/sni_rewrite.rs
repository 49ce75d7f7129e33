//! Fuzz `rewrite_sni`: no panic; it needs more bytes exactly when `parse_client_hello` does;
//! a rewrite re-parses with the new name and everything else unchanged, consumes what the
//! parser consumes, and rewriting back and forth is stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netwire::tls::{TlsError, parse_client_hello, rewrite_sni};
use netwire::Hostname;

const NAMES: [&str; 4] = ["a.b", "rewritten.test", "x.example", "a-much-longer-name.for.the.rewritten.hello.test"];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, hello)) = data.split_first() else { return };
    let name = Hostname::from_wire(NAMES[usize::from(pick) % NAMES.len()].as_bytes()).expect("valid");
    let parsed = parse_client_hello(hello);
    let rw = match (rewrite_sni(hello, &name), &parsed) {
        (Ok(None), Ok(None)) => return,
        (Err(TlsError::Unrewritable(_)), Ok(Some(_))) => return,
        (Err(e), Err(p)) => {
            assert_eq!(&e, p);
            return;
        }
        (Ok(Some(rw)), Ok(Some(_))) => rw,
        (other, _) => panic!("rewrite gave {other:?}, parse gave {parsed:?}"),
    };
    let before = parsed.expect("checked").expect("checked");
    assert_eq!(rw.consumed, before.consumed);
    assert_eq!(rw.old_sni, before.sni);
    let after = parse_client_hello(&rw.bytes).expect("output parses").expect("output complete");
    assert_eq!(after.consumed, rw.bytes.len());
    assert_eq!(after.sni.as_ref(), Some(&name));
    assert_eq!((&after.alpn, &after.supported_versions), (&before.alpn, &before.supported_versions));
    assert_eq!(after.legacy_version, before.legacy_version);
    // A second rewrite of the output to the same name changes nothing.
    let again = rewrite_sni(&rw.bytes, &name).expect("ok").expect("complete");
    assert_eq!(again.bytes, rw.bytes);
});
