//! Cursor decoding never panics, and what decodes re-encodes to a cursor
//! that decodes to the same value.
#![no_main]

use herald::hub::Cursor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(cursor) = Cursor::decode(text) {
        let again = Cursor::decode(&cursor.encode()).expect("re-encoded cursor decodes");
        assert_eq!(again, cursor);
    }
});
