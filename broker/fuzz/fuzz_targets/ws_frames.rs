//! The WebSocket decoder never panics, never buffers past the limit, and
//! reads the same items whatever the read boundaries: the input is split
//! at an arbitrary point and decoded in two reads.
#![no_main]

use bytes::BytesMut;
use herald::transport::ws::codec::Decoder;
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 4096;

fn decode(chunks: &[&[u8]]) -> (Vec<String>, Option<u16>) {
    let mut decoder = Decoder::new(LIMIT);
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(item)) => items.push(format!("{item:?}")),
                Ok(None) => break,
                Err(violation) => return (items, Some(violation.close_code())),
            }
        }
        // Fragments never add up to more than one message's worth.
        assert!(decoder.buffered() <= LIMIT);
    }
    (items, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let cut = (cut as usize * rest.len()) / 256;
    let whole = decode(&[rest]);
    let split = decode(&[&rest[..cut], &rest[cut..]]);
    assert_eq!(whole, split);
});
