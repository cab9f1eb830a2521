//! Issue 2: pattern routing, envelopes, acks and error handling over a real
//! WebSocket and REST against a real `herald` process.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn summary(messages: &[Value]) -> Vec<(String, u64, Value)> {
    messages
        .iter()
        .map(|m| {
            (
                m["topic"].as_str().unwrap().to_string(),
                m["seq"].as_u64().unwrap(),
                m["data"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn patterns_deliver_exactly_what_the_contract_says() {
    let node = Node::start(&[]);
    let mut star = node.ws().await;
    star.subscribe("orders.*").await;
    let mut rest = node.ws().await;
    rest.subscribe("orders.>").await;
    let mut eu = node.ws().await;
    eu.subscribe("orders.eu").await;
    let mut pay = node.ws().await;
    pay.subscribe("payments.eu").await;
    let mut overlap = node.ws().await;
    for p in ["orders.*", "orders.>", "orders.eu"] {
        overlap.subscribe(p).await;
    }
    let mut publisher = node.ws().await;

    let before = now_ms();
    // REST and WebSocket publishes interleaved; each acks with its seq.
    let (status, ack) = publish(&node, "orders.eu", &json!({"n": 1})).await;
    assert_eq!(
        (status, ack.clone()),
        (200, json!({"topic": "orders.eu", "seq": 1}))
    );
    assert_eq!(publisher.publish("orders.us", json!("two")).await, 1);
    assert_eq!(
        publish(&node, "orders.eu.north", &json!([3])).await.1["seq"],
        1
    );
    assert_eq!(publisher.publish("payments.eu", json!(4.5)).await, 1);
    assert_eq!(publisher.publish("orders.eu", json!({"n": 5})).await, 2);
    assert_eq!(
        publish(&node, "payments.us", &json!(null)).await.1["seq"],
        1
    );
    assert_eq!(publish(&node, "orders", &json!(true)).await.1["seq"], 1);
    let after = now_ms();

    let eu1 = ("orders.eu".to_string(), 1, json!({"n": 1}));
    let us1 = ("orders.us".to_string(), 1, json!("two"));
    let north1 = ("orders.eu.north".to_string(), 1, json!([3]));
    let pay1 = ("payments.eu".to_string(), 1, json!(4.5));
    let eu2 = ("orders.eu".to_string(), 2, json!({"n": 5}));

    let got = star.messages(3).await;
    assert_eq!(summary(&got), vec![eu1.clone(), us1.clone(), eu2.clone()]);
    let got = rest.messages(4).await;
    assert_eq!(
        summary(&got),
        vec![eu1.clone(), us1.clone(), north1.clone(), eu2.clone()]
    );
    let got = eu.messages(2).await;
    assert_eq!(summary(&got), vec![eu1.clone(), eu2.clone()]);
    let got = pay.messages(1).await;
    assert_eq!(summary(&got), vec![pay1]);
    let got = overlap.messages(4).await;
    assert_eq!(
        summary(&got),
        vec![eu1, us1, north1, eu2],
        "overlapping patterns deliver once"
    );

    // Envelope: exactly the contract's fields, broker-set ts.
    let m = &got[0];
    let mut keys: Vec<&str> = m.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, vec!["data", "seq", "topic", "ts", "type"]);
    let ts = m["ts"].as_u64().unwrap();
    assert!(
        before <= ts && ts <= after,
        "ts {ts} outside [{before}, {after}]"
    );

    for ws in [&mut star, &mut rest, &mut eu, &mut pay, &mut overlap] {
        ws.assert_silent(Duration::from_millis(300)).await;
    }

    // Unsubscribe stops delivery.
    let (reply, _) = eu
        .request(json!({"op":"unsubscribe","topic":"orders.eu"}), "u1")
        .await;
    assert_eq!(
        reply,
        json!({"type":"unsubscribed","id":"u1","topic":"orders.eu"})
    );
    publish(&node, "orders.eu", &json!(6)).await;
    assert_eq!(star.messages(1).await[0]["seq"], 3);
    eu.assert_silent(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn bad_input_gets_error_frames_and_the_connection_keeps_working() {
    let node = Node::start(&[]);
    let mut ws = node.ws().await;
    let cases = [
        (json!({"op":"subscribe","topic":"a..b"}), "invalid_topic"),
        (json!({"op":"subscribe","topic":"a.>.b"}), "invalid_topic"),
        (
            json!({"op":"subscribe","topic":"bad topic"}),
            "invalid_topic",
        ),
        (
            json!({"op":"publish","topic":"orders.*","data":1}),
            "invalid_topic",
        ),
        (
            json!({"op":"publish","topic":"orders.>","data":1}),
            "invalid_topic",
        ),
        (json!({"op":"explode","topic":"a"}), "unknown_op"),
        (json!({"op":"publish","topic":"a"}), "bad_request"),
        (json!({"op":"subscribe"}), "bad_request"),
        (
            json!({"op":"subscribe","topic":"a.*","since":3,"cursor":"1~0"}),
            "bad_request",
        ),
        (
            json!({"op":"subscribe","topic":"a","since":-3}),
            "bad_request",
        ),
        (
            json!({"op":"publish","topic":"a","data":"x".repeat(65 * 1024)}),
            "payload_too_large",
        ),
    ];
    for (i, (op, code)) in cases.iter().enumerate() {
        let (reply, _) = ws.request(op.clone(), &format!("e{i}")).await;
        assert_eq!(reply["type"], "error", "{op}: {reply}");
        assert_eq!(reply["code"], *code, "{op}: {reply}");
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    for text in ["{not json", "[1,2]", "\"just a string\"", ""] {
        ws.send_text(text).await;
        let reply = ws.recv().await;
        assert_eq!(
            (reply["type"].as_str(), reply["code"].as_str()),
            (Some("error"), Some("bad_request")),
            "{text:?}: {reply}"
        );
    }
    // Still fully usable.
    ws.subscribe("ok.topic").await;
    assert_eq!(ws.publish("ok.topic", json!("fine")).await, 1);
    assert_eq!(ws.messages(1).await[0]["data"], "fine");

    // A frame beyond the frame limit is a protocol violation: close 1009.
    let mut big = node.ws().await;
    big.send_text(&format!(
        "{{\"op\":\"publish\",\"topic\":\"a\",\"data\":\"{}\"}}",
        "x".repeat(200 * 1024)
    ))
    .await;
    assert_eq!(big.closed().await, Some(1009));
    // ...and other connections are unaffected.
    assert_eq!(ws.publish("ok.topic", json!("still fine")).await, 2);
    let metrics = get_text(&node, "/metrics").await;
    assert!(
        metrics.contains("\nherald_ws_oversized_messages_total 1\n"),
        "1009 closes are counted"
    );
}

#[tokio::test]
async fn rest_errors_use_the_contract_shape() {
    let node = Node::start(&[]);
    let client = http();
    let post = |path: &str, ct: &str, body: Vec<u8>| {
        client
            .post(node.url(path))
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "/v1/topics/a..b/messages",
            "application/json",
            b"1".to_vec(),
            400,
            "invalid_topic",
        ),
        (
            "/v1/topics/orders.*/messages",
            "application/json",
            b"1".to_vec(),
            400,
            "invalid_topic",
        ),
        (
            "/v1/topics/a/messages",
            "application/json",
            b"{oops".to_vec(),
            400,
            "bad_request",
        ),
        (
            "/v1/topics/a/messages",
            "application/json",
            vec![b'1'; 70 * 1024],
            413,
            "payload_too_large",
        ),
        (
            "/v1/topics/a/messages",
            "text/plain",
            vec![0xff, 0xfe],
            400,
            "bad_request",
        ),
        (
            "/v1/publish",
            "application/json",
            b"{}".to_vec(),
            400,
            "bad_request",
        ),
        (
            "/v1/publish",
            "application/json",
            b"[]".to_vec(),
            400,
            "bad_request",
        ),
        (
            "/v1/publish",
            "application/json",
            br#"[{"topic":"a","data":1},{"topic":"b.*","data":2}]"#.to_vec(),
            400,
            "invalid_topic",
        ),
    ];
    for (path, ct, body, status, code) in cases {
        let res = post(path, ct, body).await.unwrap();
        assert_eq!(res.status().as_u16(), status, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // The failed batch stored nothing: the next publish to `a` is seq 1.
    let (_, ack) = publish(&node, "a", &json!(1)).await;
    assert_eq!(ack["seq"], 1);
    // Text bodies become JSON strings.
    let res = post("/v1/topics/a/messages", "text/plain", b"hello".to_vec())
        .await
        .unwrap();
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"topic":"a","seq":2})
    );
    let (_, hist) = get_json(&node, "/v1/topics/a/messages?since=1").await;
    assert_eq!(hist["messages"][0]["data"], "hello");
    let (status, body) = get_json(&node, "/v1/nowhere").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}

#[tokio::test]
async fn batch_publish_is_ordered_and_idempotency_keys_dedupe() {
    let node = Node::start(&[]);
    let res = http()
        .post(node.url("/v1/publish"))
        .json(&json!([{"topic":"b.x","data":1},{"topic":"b.y","data":2},{"topic":"b.x","data":3}]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!([{"topic":"b.x","seq":1},{"topic":"b.y","seq":1},{"topic":"b.x","seq":2}])
    );
    let send = || {
        http()
            .post(node.url("/v1/topics/b.x/messages"))
            .header("Idempotency-Key", "order-77")
            .json(&json!({"once": true}))
            .send()
    };
    let first: Value = send().await.unwrap().json().await.unwrap();
    let again: Value = send().await.unwrap().json().await.unwrap();
    assert_eq!(first, json!({"topic":"b.x","seq":3}));
    assert_eq!(again, first, "a repeat returns the first result");
    let (_, hist) = get_json(&node, "/v1/topics/b.x/messages").await;
    assert_eq!(hist["last_seq"], 3, "nothing new stored: {hist}");
    assert_eq!(hist["messages"].as_array().unwrap().len(), 3);
}
