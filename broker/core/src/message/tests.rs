use super::*;

#[test]
fn encodings_agree() {
    let m = Message::new(
        Topic::parse("orders.eu").unwrap(),
        42,
        1764000000123,
        r#"{"a":[1,"x"]}"#,
    );
    assert_eq!(
        &m.envelope()[..],
        br#"{"topic":"orders.eu","seq":42,"ts":1764000000123,"data":{"a":[1,"x"]}}"#
    );
    let text = r#"{"type":"message","topic":"orders.eu","seq":42,"ts":1764000000123,"data":{"a":[1,"x"]}}"#;
    let wire = m.ws_wire();
    assert_eq!(
        wire[..2],
        [0x81, text.len() as u8],
        "FIN text frame, unmasked"
    );
    assert_eq!(&wire[2..], text.as_bytes());
    assert_eq!(m.data(), br#"{"a":[1,"x"]}"#);
    assert_eq!(m.traceparent(), None);
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let t = Message::traced(
        Topic::parse("a.b").unwrap(),
        1,
        2,
        r#"{"traceparent":"x"}"#,
        Some(tp),
    );
    assert_eq!(
        &t.envelope()[..],
        format!(
            r#"{{"topic":"a.b","seq":1,"ts":2,"traceparent":"{tp}","data":{{"traceparent":"x"}}}}"#
        )
        .as_bytes()
    );
    assert_eq!(t.traceparent(), Some(tp));
    assert_eq!(t.data(), br#"{"traceparent":"x"}"#);
    let plain = Message::new(Topic::parse("a.b").unwrap(), 1, 2, r#"{"traceparent":"x"}"#);
    assert_eq!(plain.traceparent(), None, "user data is not looked at");
    let v: serde_json::Value = serde_json::from_slice(m.envelope()).unwrap();
    assert_eq!(v["seq"], 42);
}

#[test]
fn binary_encodings_agree() {
    let raw: &[u8] = &[0x00, 0xff, 0xc3, 0x28, b'"'];
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let m = Message::with_payload(
        Topic::parse("a.b").unwrap(),
        3,
        4,
        &Payload::Binary(Bytes::from_static(raw)),
        Some(tp),
    );
    assert!(m.is_binary());
    assert_eq!(
        &m.envelope()[..],
        format!(r#"{{"topic":"a.b","seq":3,"ts":4,"traceparent":"{tp}","data":"AP/DKCI=","encoding":"base64"}}"#).as_bytes()
    );
    assert_eq!(m.data(), br#""AP/DKCI=""#);
    assert_eq!(m.raw_data().as_deref(), Some(raw));
    assert_eq!(m.traceparent(), Some(tp));
    let wire = m.ws_wire();
    assert_eq!(wire[0], 0x82, "FIN binary frame");
    let body = &wire[2..];
    assert_eq!(usize::from(wire[1]), body.len());
    let d = BinaryDelivery::parse(body).unwrap();
    assert_eq!(
        (d.topic, d.seq, d.ts, d.traceparent, d.payload),
        ("a.b", 3, 4, Some(tp), raw)
    );
    let text = m.ws_text_wire();
    assert_eq!(text[0], 0x81);
    assert_eq!(text[1], 126, "a 16-bit length follows");
    let v: serde_json::Value = serde_json::from_slice(&text[4..]).unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["encoding"], "base64");
    // Read back from the log: the same message.
    let back = Message::from_envelope(m.topic.clone(), 3, 4, m.envelope().clone());
    assert!(back.is_binary());
    assert_eq!(back.ws_wire(), m.ws_wire());
    assert_eq!(back.payload(), Payload::Binary(Bytes::from_static(raw)));
    // Empty and padded lengths.
    for n in 0..8 {
        let raw: Vec<u8> = (0..n).map(|i| (i * 37) as u8).collect();
        let m = Message::with_payload(
            Topic::parse("t").unwrap(),
            1,
            1,
            &Payload::Binary(raw.clone().into()),
            None,
        );
        assert_eq!(m.raw_data().unwrap(), raw);
        let d = BinaryDelivery::parse(&m.ws_wire()[2..]).unwrap();
        assert_eq!(d.payload, &raw[..]);
    }
}

#[test]
fn json_messages_are_not_binary() {
    for data in [
        r#""x\",\"encoding\":\"base64""#,
        r#"{"encoding":"base64"}"#,
        r#"["encoding","base64"]"#,
    ] {
        let m = Message::new(Topic::parse("a").unwrap(), 1, 1, data);
        assert!(!m.is_binary(), "{data}");
        assert!(m.raw_data().is_none());
        assert_eq!(m.ws_wire(), m.ws_text_wire());
        assert_eq!(m.data(), data.as_bytes());
    }
}

#[test]
fn envelopes_are_sized_exactly_for_every_kind_and_any_seq() {
    // `build` asserts (in debug builds) that it computed the envelope's
    // size exactly; these reach every part of that computation.
    let topic = Topic::parse("orders.eu-west_1").unwrap();
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    for seq in [1, 99, 100, 123_456_789, u64::MAX] {
        for traceparent in [None, Some(tp)] {
            let json = Message::traced(topic.clone(), seq, u64::MAX, "{\"a\":[1,2]}", traceparent);
            assert_eq!(json.data(), b"{\"a\":[1,2]}");
            assert_eq!(json.traceparent(), traceparent);
            for raw in [&b""[..], b"\x00", b"\x00\x01", b"\x00\x01\x02\xff"] {
                let payload = Payload::Binary(Bytes::copy_from_slice(raw));
                let binary = Message::with_payload(topic.clone(), seq, 7, &payload, traceparent);
                assert_eq!(binary.raw_data().as_deref(), Some(raw));
            }
        }
    }
}
