//! The WebSocket op parser must never panic, and whatever it accepts must
//! respect the limits it promises.
#![no_main]

use herald::transport::protocol::{parse_op, ClientOp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_op(text, 1024) {
        Ok(ClientOp::Publish { data, topic, .. }) => {
            assert!(data.len() <= 1024);
            assert!(topic.as_str().len() <= 255);
            // `data` is the compacted JSON value: it must parse.
            serde_json::from_str::<serde_json::Value>(&data).expect("accepted data is JSON");
        }
        Ok(_) | Err(_) => {}
    }
});
