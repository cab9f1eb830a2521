//! Binary payloads end to end (protocol v1.1): raw bytes published over a
//! WebSocket binary frame, REST `application/octet-stream` and JSON with
//! `"encoding":"base64"` come out byte-exact on every transport — binary
//! frames on WebSocket, base64 with `"encoding":"base64"` wherever JSON is
//! used — across a restart and across a cluster. JSON messages never
//! carry `encoding`.

mod binary_support;
mod common;

use std::{collections::BTreeMap, time::Duration};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use binary_support::*;
use common::*;
use serde_json::{json, Value};

type Expected = BTreeMap<(String, u64), Vec<u8>>;

/// Reads `n` message deliveries from a default (binary frames) WebSocket
/// subscriber: every binary message must come as a binary frame.
async fn binary_deliveries(ws: &mut Ws, n: usize) -> Vec<Delivery> {
    let mut out = Vec::new();
    while out.len() < n {
        match next_frame(ws, TIMEOUT)
            .await
            .expect("delivery before timeout")
        {
            Frame::Binary(b) => out.push(parse_delivery(&b)),
            Frame::Text(v) => assert_ne!(v["type"], "message", "binary sent as text: {v}"),
        }
    }
    out
}

/// Reads `n` JSON message envelopes from a `?binary=base64` subscriber.
async fn text_deliveries(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        match next_frame(ws, TIMEOUT)
            .await
            .expect("delivery before timeout")
        {
            Frame::Binary(_) => panic!("binary frame on a ?binary=base64 connection"),
            Frame::Text(v) if v["type"] == "message" => out.push(v),
            Frame::Text(_) => {}
        }
    }
    out
}

fn check_envelopes(what: &str, got: &[Value], expected: &Expected) {
    assert_eq!(got.len(), expected.len(), "{what}: count");
    for m in got {
        let key = (
            m["topic"].as_str().unwrap().to_string(),
            m["seq"].as_u64().unwrap(),
        );
        let want = expected
            .get(&key)
            .unwrap_or_else(|| panic!("{what}: unexpected {m}"));
        assert!(m["ts"].as_u64().is_some(), "{what}: {m}");
        assert_eq!(&envelope_bytes(m), want, "{what}: {key:?}");
    }
}

async fn subscribe(ws: &mut Ws, pattern: &str) {
    ws.send(json!({"op":"subscribe","id":"s","topic":pattern}))
        .await;
    assert_eq!(reply(ws, "s").await["type"], "subscribed");
}

/// Subscribers of `pattern`: a WebSocket taking binary frames, one taking
/// base64 text frames, and an SSE stream past its hello.
async fn subscribers(node: &Node, pattern: &str) -> (Ws, Ws, Sse) {
    let mut ws_bin = node.ws().await;
    subscribe(&mut ws_bin, pattern).await;
    let mut ws_b64 = Ws::connect(&node.ws_url("/v1/ws?binary=base64")).await;
    subscribe(&mut ws_b64, pattern).await;
    let mut sse = Sse::open(node, &format!("topic={pattern}"), None).await;
    sse.read_hello().await;
    (ws_bin, ws_b64, sse)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_payloads_round_trip_over_every_transport() {
    let node = Node::start(&[]);
    let (mut ws_bin, mut ws_b64, mut sse) = subscribers(&node, "bin.>").await;

    let mut expected = Expected::new();
    let mut publisher = node.ws().await;
    // WebSocket binary frames.
    for (i, p) in payloads().iter().enumerate() {
        let ack = ws_publish(&mut publisher, "bin.ws", &format!("w{i}"), p).await;
        assert_eq!(ack["type"], "ack", "{ack}");
        assert_eq!(ack["topic"], "bin.ws");
        expected.insert(("bin.ws".into(), ack["seq"].as_u64().unwrap()), p.clone());
    }
    // REST application/octet-stream.
    for p in payloads() {
        let (status, ack) = rest_publish(&node, "bin.rest", &p, None).await;
        assert_eq!(status, 200, "{ack}");
        expected.insert(("bin.rest".into(), ack["seq"].as_u64().unwrap()), p);
    }
    // JSON with "encoding":"base64": the WebSocket op and a batch item.
    for (i, p) in payloads().iter().enumerate() {
        let id = format!("j{i}");
        publisher
            .send(json!({"op":"publish","id":id,"topic":"bin.json","data":STANDARD.encode(p),"encoding":"base64"}))
            .await;
        let ack = reply(&mut publisher, &id).await;
        assert_eq!(ack["type"], "ack", "{ack}");
        expected.insert(("bin.json".into(), ack["seq"].as_u64().unwrap()), p.clone());
    }
    let batch: Vec<Value> = payloads()[..4]
        .iter()
        .map(|p| json!({"topic":"bin.batch","data":STANDARD.encode(p),"encoding":"base64"}))
        .collect();
    let acks: Value = http()
        .post(node.url("/v1/publish"))
        .json(&batch)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (ack, p) in acks.as_array().expect("acks").iter().zip(payloads()) {
        expected.insert(("bin.batch".into(), ack["seq"].as_u64().unwrap()), p);
    }
    let n = expected.len();

    // WebSocket, binary frames: the documented header, then the bytes.
    let got = binary_deliveries(&mut ws_bin, n).await;
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for d in &got {
        assert_eq!(
            expected[&(d.topic.clone(), d.seq)],
            d.payload,
            "{}#{}",
            d.topic,
            d.seq
        );
        assert!(d.ts > 1_700_000_000_000, "ts in ms");
        assert!(
            last.insert(d.topic.clone(), d.seq).unwrap_or(0) < d.seq,
            "seq order"
        );
    }
    // WebSocket ?binary=base64, SSE, long-poll, history: base64 envelopes.
    let got = text_deliveries(&mut ws_b64, n).await;
    assert!(
        got.iter().all(|m| m.as_object().unwrap().len() == 6),
        "{got:?}"
    );
    check_envelopes("ws base64", &got, &expected);
    let mut events = Vec::new();
    while events.len() < n {
        let (kind, data) = sse.next_event(TIMEOUT).await.expect("sse event");
        assert_eq!(kind, "message");
        events.push(data);
    }
    check_envelopes("sse", &events, &expected);
    check_envelopes("poll", &poll_all(&node, "bin.>", n).await, &expected);
    let mut history = Vec::new();
    for topic in ["bin.ws", "bin.rest", "bin.json", "bin.batch"] {
        history.extend(full_history(&node, topic).await.0);
    }
    check_envelopes("history", &history, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_counts_raw_bytes() {
    let node = Node::start(&[]);
    let mut ws = node.ws().await;
    let over = vec![0xffu8; LIMIT + 1];
    let error = ws_publish(&mut ws, "lim.a", "big", &over).await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "payload_too_large", "{error}");
    let (status, body) = rest_publish(&node, "lim.a", &over, None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (413, &json!("payload_too_large"))
    );
    // Through JSON the base64 text is a third longer; the decoded bytes count.
    let op = |data: &[u8]| json!({"op":"publish","id":"j","topic":"lim.a","data":STANDARD.encode(data),"encoding":"base64"});
    ws.send(op(&over)).await;
    assert_eq!(reply(&mut ws, "j").await["code"], "payload_too_large");
    ws.send(op(&over[1..])).await;
    assert_eq!(reply(&mut ws, "j").await["type"], "ack");
    // Nothing but the accepted one was stored; the connection is fine.
    assert_eq!(full_history(&node, "lim.a").await.0.len(), 1);
    assert_eq!(
        ws_publish(&mut ws, "lim.a", "ok", &over[1..]).await["seq"],
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_binary_frames_get_bad_request_and_the_connection_stays() {
    let node = Node::start(&[]);
    let mut ws = node.ws().await;
    let cases: Vec<(&str, Vec<u8>, Option<&str>, &str)> = vec![
        ("empty frame", vec![], None, "bad_request"),
        ("short", vec![0x01], None, "bad_request"),
        (
            "short topic length",
            vec![0x01, 0x00, 0x00],
            None,
            "bad_request",
        ),
        (
            "unknown kind",
            vec![0x07, 0, 0, 1, b'a'],
            None,
            "bad_request",
        ),
        (
            "delivery kind from a client",
            vec![0x02, 0, 0, 1, b'a'],
            None,
            "bad_request",
        ),
        (
            "reserved flags",
            vec![0x01, 0x08, 0, 1, b'a'],
            None,
            "bad_request",
        ),
        (
            "topic beyond the frame",
            vec![0x01, 0, 0, 50, b'a', b'b'],
            None,
            "bad_request",
        ),
        (
            "empty topic",
            vec![0x01, 0, 0, 0, b'x'],
            None,
            "bad_request",
        ),
        (
            "bad UTF-8 topic",
            vec![0x01, 1, 0, 2, 0xc3, 0x28, 1, b'9'],
            Some("9"),
            "bad_request",
        ),
        (
            "id beyond the frame",
            vec![0x01, 1, 0, 1, b'a', 9, b'x'],
            None,
            "bad_request",
        ),
        (
            "bad UTF-8 key",
            publish_frame_raw_key(),
            Some("k"),
            "bad_request",
        ),
        (
            "bad key",
            publish_frame("a.b", Some("s"), Some("has space"), None, b"x"),
            Some("s"),
            "bad_request",
        ),
        (
            "pattern topic",
            publish_frame("a.*", Some("p"), None, None, b"x"),
            Some("p"),
            "invalid_topic",
        ),
        (
            "bad topic",
            publish_frame("a..b", Some("q"), None, None, b"x"),
            Some("q"),
            "invalid_topic",
        ),
    ];
    for (what, frame, id, code) in cases {
        send_binary(&mut ws, frame).await;
        let Some(Frame::Text(error)) = next_frame(&mut ws, TIMEOUT).await else {
            panic!("{what}: no error frame");
        };
        assert_eq!(error["type"], "error", "{what}: {error}");
        assert_eq!(error["code"], code, "{what}: {error}");
        assert_eq!(error["id"].as_str(), id, "{what}: {error}");
    }
    // Still open and working, for text and binary.
    ws.send(json!({"op":"ping","id":"p"})).await;
    assert_eq!(reply(&mut ws, "p").await["type"], "pong");
    let ack = ws_publish(&mut ws, "a.b", "ok", &[0xc3, 0x28]).await;
    assert_eq!(
        (ack["type"].as_str(), ack["seq"].as_u64()),
        (Some("ack"), Some(1))
    );
    // JSON publishes with a bad encoding are refused too.
    for (i, op) in [
        json!({"op":"publish","topic":"a.b","data":"%%%","encoding":"base64"}),
        json!({"op":"publish","topic":"a.b","data":{"x":1},"encoding":"base64"}),
        json!({"op":"publish","topic":"a.b","data":"eA==","encoding":"hex"}),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("e{i}");
        let mut op = op;
        op["id"] = json!(id);
        ws.send(op).await;
        assert_eq!(reply(&mut ws, &id).await["code"], "bad_request");
    }
    let (status, body) = {
        let res = http()
            .post(node.url("/v1/publish"))
            .json(&json!([{"topic":"a.b","data":"%%","encoding":"base64"}]))
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json::<Value>().await.unwrap())
    };
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("bad_request"))
    );
    assert_eq!(full_history(&node, "a.b").await.0.len(), 1);
    // An unknown `binary` mode is refused before the upgrade.
    match tokio_tungstenite::connect_async(node.ws_url("/v1/ws?binary=hex")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 400),
        other => panic!("?binary=hex: {other:?}"),
    }
}

/// Key flag set, key bytes not UTF-8 (after a readable id "k").
fn publish_frame_raw_key() -> Vec<u8> {
    vec![0x01, 0b011, 0, 1, b'a', 1, b'k', 2, 0xff, 0xfe, b'x']
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_messages_never_carry_encoding() {
    let node = Node::start(&[]);
    let (mut ws_bin, mut ws_b64, mut sse) = subscribers(&node, "js.>").await;
    let data = [
        json!({"encoding":"base64"}),
        json!("AAEC"),
        json!(null),
        json!([1]),
    ];
    for d in &data {
        assert_eq!(publish(&node, "js.a", d).await.0, 200);
    }
    // A non-JSON text body is still a JSON string, and not UTF-8 still 400.
    let res = http()
        .post(node.url("/v1/topics/js.a/messages"))
        .header("content-type", "text/plain")
        .body(vec![0xc3, 0x28])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let no_encoding = |what: &str, m: &Value, i: usize| {
        assert!(m.get("encoding").is_none(), "{what}: {m}");
        assert_eq!(m["data"], data[i], "{what}");
    };
    for (i, f) in text_deliveries(&mut ws_bin, 4).await.iter().enumerate() {
        no_encoding("ws", f, i);
    }
    for (i, f) in text_deliveries(&mut ws_b64, 4).await.iter().enumerate() {
        no_encoding("ws base64", f, i);
    }
    for i in 0..4 {
        no_encoding("sse", &sse.next_event(TIMEOUT).await.unwrap().1, i);
    }
    for (i, m) in poll_all(&node, "js.a", 4).await.iter().enumerate() {
        no_encoding("poll", m, i);
    }
    for (i, m) in full_history(&node, "js.a").await.0.iter().enumerate() {
        no_encoding("history", m, i);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_survives_restart_and_idempotent_repeats_keep_their_seq() {
    let mut node = Node::start(&["--durability", "always"]);
    let payloads = payloads();
    let mut expected = Expected::new();
    for p in &payloads {
        let (status, ack) = rest_publish(&node, "dur.a", p, None).await;
        assert_eq!(status, 200);
        expected.insert(("dur.a".into(), ack["seq"].as_u64().unwrap()), p.clone());
    }
    // Same key, same seq, nothing new stored — REST and binary frames.
    let (_, first) = rest_publish(&node, "dur.a", &[0xff, 0], Some("k1")).await;
    let (_, again) = rest_publish(&node, "dur.a", &[0xff, 0], Some("k1")).await;
    assert_eq!(first["seq"], again["seq"]);
    expected.insert(
        ("dur.a".into(), first["seq"].as_u64().unwrap()),
        vec![0xff, 0],
    );
    let mut ws = node.ws().await;
    let frame = publish_frame("dur.a", Some("1"), Some("k2"), None, &[0, 0xc3, 0x28]);
    send_binary(&mut ws, frame.clone()).await;
    let a = reply(&mut ws, "1").await;
    send_binary(&mut ws, frame).await;
    let b = reply(&mut ws, "1").await;
    assert_eq!((a["type"].as_str(), &a["seq"]), (Some("ack"), &b["seq"]));
    expected.insert(
        ("dur.a".into(), a["seq"].as_u64().unwrap()),
        vec![0, 0xc3, 0x28],
    );
    drop(ws);

    node.kill9_and_restart();
    wait_ready(&node, TIMEOUT).await;
    let (history, first_seq, last_seq) = full_history(&node, "dur.a").await;
    assert_eq!((first_seq, last_seq), (1, expected.len() as u64));
    check_envelopes("history after restart", &history, &expected);
    // Replay with `since` on a WebSocket: binary frames, same bytes.
    let mut ws = node.ws().await;
    ws.send(json!({"op":"subscribe","id":"s","topic":"dur.a","since":0}))
        .await;
    let got = binary_deliveries(&mut ws, expected.len()).await;
    for d in &got {
        assert_eq!(expected[&(d.topic.clone(), d.seq)], d.payload);
    }
    // The key is remembered across the restart.
    let (_, after) = rest_publish(&node, "dur.a", &[0xff, 0], Some("k1")).await;
    assert_eq!(after["seq"], first["seq"]);
    drop(ws);
    assert!(node.sigterm().success());
    // The sealed records of binary messages pass `herald verify`.
    let out = std::process::Command::new(binary())
        .args(["verify", "--data-dir"])
        .arg(&node.data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn binary_crosses_a_cluster_byte_exact() {
    let nats = NatsServer::start();
    let nodes = start_cluster(&nats, 2, &[]).await;
    let (publisher_node, subscriber_node) = (&nodes[0], &nodes[1]);
    let mut sub = subscriber_node.ws().await;
    subscribe(&mut sub, "cl.>").await;
    let mut publisher = publisher_node.ws().await;
    let mut expected = Expected::new();
    // Several topics, so both nodes own some: local and forwarded publishes.
    let topics: Vec<String> = (0..6).map(|i| format!("cl.t{i}")).collect();
    let owners: Vec<&str> = topics
        .iter()
        .map(|t| herald_core::owner::owner(["n1", "n2"], t).unwrap())
        .collect();
    assert!(
        owners.contains(&"n1") && owners.contains(&"n2"),
        "{owners:?}"
    );
    for (t, topic) in topics.iter().enumerate() {
        for (i, p) in payloads().iter().enumerate() {
            let ack = match i % 3 {
                0 => ws_publish(&mut publisher, topic, &format!("{t}-{i}"), p).await,
                1 => rest_publish(publisher_node, topic, p, None).await.1,
                _ => {
                    let id = format!("{t}-{i}");
                    publisher
                        .send(json!({"op":"publish","id":id,"topic":topic,"data":STANDARD.encode(p),"encoding":"base64"}))
                        .await;
                    reply(&mut publisher, &id).await
                }
            };
            let seq = ack["seq"].as_u64().unwrap_or_else(|| panic!("{ack}"));
            expected.insert((topic.clone(), seq), p.clone());
        }
    }
    let got = binary_deliveries(&mut sub, expected.len()).await;
    for d in &got {
        assert_eq!(
            expected[&(d.topic.clone(), d.seq)],
            d.payload,
            "{}#{}",
            d.topic,
            d.seq
        );
    }
    for node in &nodes {
        let mut history = Vec::new();
        for topic in &topics {
            history.extend(full_history(node, topic).await.0);
        }
        check_envelopes("cluster history", &history, &expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_publishes_obey_grants() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    const SECRET: &str = "binary-secret-0123456789abcdef";
    let node = Node::start(&["--jwt-secret", SECRET]);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = json!({"sub":"bob","exp":exp,"subscribe":["files.*"],"publish":["files.a"]});
    let token = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let mut ws = Ws::connect(&node.ws_url(&format!("/v1/ws?token={token}"))).await;
    subscribe(&mut ws, "files.*").await;
    let refused = ws_publish(&mut ws, "files.b", "no", &[0xff]).await;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("forbidden"))
    );
    // The delivery and the ack may come in either order.
    send_binary(
        &mut ws,
        publish_frame("files.a", Some("yes"), None, None, &[0xc3, 0x28]),
    )
    .await;
    let (mut ack, mut delivery) = (None, None);
    while ack.is_none() || delivery.is_none() {
        match next_frame(&mut ws, TIMEOUT)
            .await
            .expect("ack and delivery")
        {
            Frame::Text(v) => ack = Some(v),
            Frame::Binary(b) => delivery = Some(parse_delivery(&b)),
        }
    }
    assert_eq!(ack.unwrap()["type"], "ack");
    let d = delivery.unwrap();
    assert_eq!(
        (d.topic.as_str(), &d.payload[..]),
        ("files.a", &[0xc3, 0x28][..])
    );
    // REST without credentials: 401, nothing stored.
    let (status, _) = rest_publish(&node, "files.a", &[1], None).await;
    assert_eq!(status, 401);
    assert!(next_frame(&mut ws, Duration::from_millis(300))
        .await
        .is_none());
}
