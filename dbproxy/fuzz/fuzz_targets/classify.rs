//! Fuzz the statement classifier: no panic, no stack overflow, and an unknown effect always
//! says why.
#![no_main]

use dbproxy::classify::OperationGroup;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sql = String::from_utf8_lossy(data);
    for e in dbproxy::classify(&sql) {
        assert!(e.group != OperationGroup::Unknown || e.subtype.is_some(), "{e:?}");
    }
});
