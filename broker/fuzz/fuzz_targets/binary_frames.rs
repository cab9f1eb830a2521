//! The binary frame parsers (README §6.8) never panic, and whatever they
//! accept encodes back to the same bytes; any bytes published as a binary
//! message come back byte-exact from its envelope and its delivery frame.
#![no_main]

use bytes::Bytes;
use herald_core::{
    binary::{BinaryDelivery, BinaryPublish},
    Message, Payload, Topic,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(publish) = BinaryPublish::parse(data) {
        assert_eq!(publish.encode(), data);
    }
    if let Ok(delivery) = BinaryDelivery::parse(data) {
        assert_eq!(&delivery.encode()[..], data);
    }
    let message = Message::with_payload(
        Topic::parse("fuzz.t").expect("valid topic"),
        7,
        11,
        &Payload::Binary(Bytes::copy_from_slice(data)),
        None,
    );
    assert_eq!(message.raw_data().as_deref(), Some(data));
    let wire = message.ws_wire();
    let frame = BinaryDelivery {
        topic: "fuzz.t",
        seq: 7,
        ts: 11,
        traceparent: None,
        payload: data,
    }
    .encode();
    assert_eq!(
        wire.len(),
        herald_core::websocket::header_len(frame.len()) + frame.len()
    );
    assert!(wire.ends_with(&frame));
    let back = Message::from_envelope(message.topic.clone(), 7, 11, message.envelope().clone());
    assert!(back.is_binary());
    assert_eq!(back.ws_wire(), wire);
});
