use super::*;

#[test]
fn terms_order_by_counter_then_node() {
    let t = |c, n: &str| Term {
        counter: c,
        node: n.into(),
    };
    assert!(t(2, "a") > t(1, "z"));
    assert!(t(1, "b") > t(1, "a"));
    assert!(Term::default() < t(1, ""));
}

#[test]
fn admin_orders_round_trip() {
    let order = Order::Unsubscribe {
        target: Target::Sub("alice".into()),
        pattern: Pattern::parse("chat.>").unwrap(),
    };
    let text = serde_json::to_string(&AdminOrder::from_order(&order)).unwrap();
    assert_eq!(
        text,
        r#"{"kind":"unsubscribe","target":{"sub":"alice"},"pattern":"chat.>"}"#
    );
    let back: AdminOrder = serde_json::from_str(&text).unwrap();
    assert_eq!(back.into_order(), Some(order));
    let bad = r#"{"kind":"unsubscribe","target":{"client":"x"},"pattern":"a..b"}"#;
    assert_eq!(
        serde_json::from_str::<AdminOrder>(bad)
            .unwrap()
            .into_order(),
        None
    );
}

#[test]
fn entries_round_trip() {
    let m = Message::new(Topic::parse("a.b").unwrap(), 3, 99, r#"{"x":[1]}"#);
    let entry = LogEntry {
        message: m.clone(),
        idempotency: Some(("k".into(), 5)),
    };
    let wire = WireEntry::from_entry(&entry);
    let text = serde_json::to_string(&wire).unwrap();
    assert!(text.contains(r#""e":{"topic":"a.b""#), "{text}");
    let back: WireEntry = serde_json::from_str(&text).unwrap();
    let back = back.into_entry().unwrap();
    assert_eq!(back.message.envelope(), m.envelope());
    assert_eq!((back.message.seq, back.message.ts), (3, 99));
    assert_eq!(back.idempotency, Some(("k".into(), 5)));
}

#[test]
fn forwards_carry_both_payload_kinds() {
    for data in [
        Payload::Json(r#"{"x":1}"#.into()),
        Payload::Binary(vec![0, 0xff, 0xc3, 0x28].into()),
    ] {
        let item = PublishItem {
            topic: Topic::parse("a.b").unwrap(),
            data: data.clone(),
            idempotency_key: None,
            traceparent: None,
        };
        let text = serde_json::to_string(&ForwardItem::new(&item)).unwrap();
        // A node without binary support requires `data`: it refuses a
        // binary forward rather than storing base64 as a JSON string.
        assert_eq!(text.contains(r#""data":"#), !data.is_binary(), "{text}");
        let mut back: ForwardItem = serde_json::from_str(&text).unwrap();
        assert_eq!(back.payload(), Some(data));
    }
}

#[test]
fn catch_up_answers_read_from_peers_with_and_without_the_newer_fields() {
    // A node of the release before sends neither terms in heads nor
    // `removed` in fetch answers: both read as absent.
    let heads: HeadsReply = serde_json::from_str(r#"{"heads":[["a",3]],"more":false}"#).unwrap();
    assert!(heads.terms.is_empty());
    let fetch: FetchReply = serde_json::from_str(r#"{"entries":[]}"#).unwrap();
    assert!(fetch.removed.is_none());
    // And this release's answers carry them.
    let heads = HeadsReply {
        heads: vec![("a".into(), 3)],
        more: false,
        terms: vec![(
            "a".into(),
            Term {
                counter: 2,
                node: "n2".into(),
            },
        )],
    };
    let back: HeadsReply = serde_json::from_str(&serde_json::to_string(&heads).unwrap()).unwrap();
    assert_eq!(back.terms, heads.terms);
    let fetch = FetchReply {
        removed: Some(Removed { seq: 35, ts: 7 }),
        ..Default::default()
    };
    let back: FetchReply = serde_json::from_str(&serde_json::to_string(&fetch).unwrap()).unwrap();
    assert_eq!(back.removed.map(|r| (r.seq, r.ts)), Some((35, 7)));
}

#[test]
fn forwards_without_requests_are_one_request_in_both_directions() {
    // What a node that predates coalescing sends and answers.
    let old: Forward = serde_json::from_str(r#"{"items":[{"topic":"a.b","data":1}]}"#).unwrap();
    assert_eq!(old.requests, None);
    let reply: ForwardReply =
        serde_json::from_str(r#"{"ok":[{"seq":1,"ts":2,"dup":false}]}"#).unwrap();
    assert!(reply.each.is_none() && reply.ok.is_some());
    // A single request is sent as before: no `requests` on the wire.
    let single = Forward {
        items: old.items.clone(),
        requests: None,
    };
    assert_eq!(
        serde_json::to_string(&single).unwrap(),
        r#"{"items":[{"topic":"a.b","data":1}]}"#
    );
    let coalesced = Forward {
        items: vec![old.items[0].clone(), old.items[0].clone()],
        requests: Some(vec![1, 1]),
    };
    let back: Forward = serde_json::from_slice(&encode(&coalesced)).unwrap();
    assert_eq!(back.requests, Some(vec![1, 1]));
}
