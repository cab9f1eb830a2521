use proptest::prelude::*;

use super::*;

fn publish<'a>(topic: &'a str, payload: &'a [u8]) -> BinaryPublish<'a> {
    BinaryPublish {
        topic,
        id: None,
        idempotency_key: None,
        traceparent: None,
        payload,
    }
}

#[test]
fn publish_layout_is_as_documented() {
    let frame = BinaryPublish {
        id: Some("7"),
        idempotency_key: Some("k"),
        traceparent: None,
        ..publish("a.b", &[0x00, 0xff, 0xc3, 0x28])
    }
    .encode();
    assert_eq!(
        frame,
        [0x01, 0b011, 0, 3, b'a', b'.', b'b', 1, b'7', 1, b'k', 0x00, 0xff, 0xc3, 0x28]
    );
    let parsed = BinaryPublish::parse(&frame).unwrap();
    assert_eq!(parsed.id, Some("7"));
    assert_eq!(parsed.idempotency_key, Some("k"));
    assert_eq!(parsed.payload, [0x00, 0xff, 0xc3, 0x28]);
    // An empty payload is a payload.
    let empty = publish("t", b"").encode();
    assert_eq!(empty, [1, 0, 0, 1, b't']);
    assert_eq!(BinaryPublish::parse(&empty).unwrap().payload, b"");
}

#[test]
fn delivery_layout_is_as_documented() {
    let d = BinaryDelivery {
        topic: "a",
        seq: 0x0102,
        ts: 5,
        traceparent: Some("tp"),
        payload: &[9],
    };
    let bytes = d.encode();
    assert_eq!(
        &bytes[..],
        [2, 1, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 5, 0, 1, b'a', 2, b't', b'p', 9]
    );
    assert_eq!(d.header_len(), bytes.len() - 1);
    assert_eq!(BinaryDelivery::parse(&bytes).unwrap(), d);
}

#[test]
fn malformed_publishes_are_refused() {
    let kind = |frame: &[u8]| BinaryPublish::parse(frame).unwrap_err().kind;
    assert_eq!(kind(&[]), BinaryErrorKind::Short);
    assert_eq!(kind(&[1]), BinaryErrorKind::Short);
    assert_eq!(kind(&[1, 0, 0]), BinaryErrorKind::Short);
    assert_eq!(kind(&[2, 0, 0, 1, b'a']), BinaryErrorKind::UnknownKind(2));
    assert_eq!(kind(&[0x7f]), BinaryErrorKind::UnknownKind(0x7f));
    assert_eq!(
        kind(&[1, 0x08, 0, 1, b'a']),
        BinaryErrorKind::ReservedFlags(0x08)
    );
    assert_eq!(
        kind(&[1, 0x80, 0, 1, b'a']),
        BinaryErrorKind::ReservedFlags(0x80)
    );
    // Topic length beyond the frame.
    assert_eq!(kind(&[1, 0, 0, 9, b'a', b'b']), BinaryErrorKind::Short);
    assert_eq!(kind(&[1, 0, 0xff, 0xff]), BinaryErrorKind::Short);
    assert_eq!(kind(&[1, 0, 0, 0]), BinaryErrorKind::EmptyTopic);
    assert_eq!(
        kind(&[1, 0, 0, 2, 0xc3, 0x28]),
        BinaryErrorKind::BadUtf8("topic")
    );
    // The id flag with no id byte, or an id cut short.
    assert_eq!(kind(&[1, 1, 0, 1, b'a']), BinaryErrorKind::Short);
    assert_eq!(kind(&[1, 1, 0, 1, b'a', 3, b'x']), BinaryErrorKind::Short);
    assert_eq!(
        kind(&[1, 1, 0, 1, b'a', 1, 0xff]),
        BinaryErrorKind::BadUtf8("id")
    );
}

#[test]
fn refusals_carry_the_id_when_it_was_read() {
    // Bad UTF-8 topic, readable id.
    let e = BinaryPublish::parse(&[1, 1, 0, 1, 0xff, 2, b'i', b'd', 0xaa]).unwrap_err();
    assert_eq!(e.kind, BinaryErrorKind::BadUtf8("topic"));
    assert_eq!(e.id, Some("id"));
    // Key cut short after a readable id.
    let e = BinaryPublish::parse(&[1, 0b011, 0, 1, b'a', 1, b'9', 5, b'k']).unwrap_err();
    assert_eq!(e.kind, BinaryErrorKind::Short);
    assert_eq!(e.id, Some("9"));
    // Bad UTF-8 key.
    let e = BinaryPublish::parse(&[1, 0b011, 0, 1, b'a', 1, b'9', 1, 0xfe]).unwrap_err();
    assert_eq!(e.kind, BinaryErrorKind::BadUtf8("idempotency_key"));
    assert_eq!(e.id, Some("9"));
}

#[test]
fn malformed_deliveries_are_refused() {
    assert_eq!(BinaryDelivery::parse(&[2, 0]), Err(BinaryErrorKind::Short));
    assert_eq!(
        BinaryDelivery::parse(&[1; 30]),
        Err(BinaryErrorKind::UnknownKind(1))
    );
    let mut frame = BinaryDelivery {
        topic: "a",
        seq: 1,
        ts: 1,
        traceparent: None,
        payload: b"",
    }
    .encode()
    .to_vec();
    frame[1] = 2;
    assert_eq!(
        BinaryDelivery::parse(&frame),
        Err(BinaryErrorKind::ReservedFlags(2))
    );
}

fn short_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("[ -~]{0,255}")
}

proptest! {
    #[test]
    fn publish_round_trips(
        topic in "[a-z0-9_.-]{1,300}",
        id in short_text(),
        key in short_text(),
        tp in short_text(),
        payload in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let p = BinaryPublish {
            topic: &topic,
            id: id.as_deref(),
            idempotency_key: key.as_deref(),
            traceparent: tp.as_deref(),
            payload: &payload,
        };
        let bytes = p.encode();
        prop_assert_eq!(BinaryPublish::parse(&bytes).unwrap(), p);
    }

    #[test]
    fn delivery_round_trips(
        topic in "[a-z0-9_.-]{1,255}",
        seq in any::<u64>(),
        ts in any::<u64>(),
        tp in short_text(),
        payload in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let d = BinaryDelivery { topic: &topic, seq, ts, traceparent: tp.as_deref(), payload: &payload };
        let bytes = d.encode();
        prop_assert_eq!(bytes.len(), d.header_len() + payload.len());
        prop_assert_eq!(BinaryDelivery::parse(&bytes).unwrap(), d);
    }

    #[test]
    fn any_bytes_parse_or_refuse(frame in proptest::collection::vec(any::<u8>(), 0..64)) {
        // Never a panic; an accepted frame encodes back to itself.
        if let Ok(p) = BinaryPublish::parse(&frame) {
            prop_assert_eq!(p.encode(), frame);
        }
    }
}
