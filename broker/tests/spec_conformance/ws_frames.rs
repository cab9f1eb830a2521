//! The specs agree with themselves, and every WebSocket frame the script
//! provokes matches `asyncapi.yaml`.

use super::*;

#[test]
fn specs_are_self_consistent() {
    let openapi = OpenApi::load();
    let resolved = resolve(&openapi.root, &openapi.root);
    // Every schema compiles and its examples are valid.
    for (name, schema) in resolved["components"]["schemas"].as_object().unwrap() {
        for example in schema["examples"].as_array().into_iter().flatten() {
            assert_valid(
                schema,
                example,
                Dialect::OpenApi,
                &format!("openapi example of {name}"),
            );
        }
    }
    let asyncapi = AsyncApi::load();
    assert!(!asyncapi.examples.is_empty());
    for example in &asyncapi.examples {
        let errors = asyncapi.op_errors(example);
        assert!(errors.is_empty(), "example op {example}: {errors:?}");
    }
    let resolved = resolve(&asyncapi.root, &asyncapi.root);
    for (name, m) in resolved["components"]["messages"].as_object().unwrap() {
        for example in m["examples"].as_array().into_iter().flatten() {
            assert_valid(
                &m["payload"],
                &example["payload"],
                Dialect::AsyncApi,
                &format!("asyncapi example of {name}"),
            );
        }
    }
    // Client ops and server frames are told apart by `op` / `type`.
    assert_eq!(
        asyncapi.ops.keys().collect::<Vec<_>>(),
        ["ping", "publish", "refresh", "subscribe", "unsubscribe"]
    );
    assert_eq!(
        asyncapi.frames.keys().collect::<Vec<_>>(),
        [
            "ack",
            "error",
            "gap",
            "join",
            "leave",
            "message",
            "pong",
            "refreshed",
            "subscribed",
            "unsubscribed"
        ]
    );
}

/// The ops the WebSocket test sends: expected reply type, expected error
/// code (`-` for none), the op.
pub(crate) const SCRIPT: &str = r#"
pong          -                 {"op":"ping","id":"p1"}
pong          -                 {"op":"ping","id":7}
pong          -                 {"op":"ping"}
pong          -                 {"op":"ping","id":null}
subscribed    -                 {"op":"subscribe","id":"s1","topic":"conf.*"}
subscribed    -                 {"op":"subscribe","id":"s2","topic":"conf.>"}
subscribed    -                 {"op":"subscribe","id":"s3","topic":"conf.a","since":0}
subscribed    -                 {"op":"subscribe","id":"s4","topic":"conf.b","since":null}
subscribed    -                 {"op":"subscribe","id":"s5","topic":"conf.*"}
ack           -                 {"op":"publish","id":"w1","topic":"conf.a","data":{"n":1}}
ack           -                 {"op":"publish","id":"w2","topic":"conf.b","data":[1,"two",3.5,true]}
ack           -                 {"op":"publish","id":"w3","topic":"conf.a","data":"x","idempotency_key":"k-1"}
ack           -                 {"op":"publish","id":"w4","topic":"conf.a","data":"x","idempotency_key":"k-1"}
ack           -                 {"op":"publish","id":"w5","topic":"conf.c","data":0,"idempotency_key":null,"extra":"ignored"}
ack           -                 {"op":"publish","id":"w6","topic":"conf.c","data":"traced","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
ack           -                 {"op":"publish","id":"w7","topic":"conf.c","data":"invalid tp","traceparent":"not-a-traceparent"}
ack           -                 {"op":"publish","id":"w8","topic":"conf.c","data":"null tp","traceparent":null}
error         bad_request       {"op":"publish","id":"e14","topic":"conf.a","data":1,"traceparent":7}
subscribed    -                 {"op":"subscribe","id":"pr1","topic":"pres.ws","presence":true}
subscribed    -                 {"op":"subscribe","id":"pr2","topic":"pres.other","presence":false}
subscribed    -                 {"op":"subscribe","id":"pr3","topic":"pres.third","presence":null}
error         bad_request       {"op":"subscribe","id":"pr4","topic":"pres.x","presence":"yes"}
error         bad_request       {"op":"subscribe","id":"pr5","topic":"pres.x","presence":1}
unsubscribed  -                 {"op":"unsubscribe","id":"u1","topic":"conf.>"}
unsubscribed  -                 {"op":"unsubscribe","id":"u2","topic":"never.subscribed"}
subscribed    -                 {"op":"subscribe","id":"g1","topic":"gap.t","since":0}
error         unknown_op        {"op":"explode","id":"e1"}
error         bad_request       {"id":"e2","topic":"a"}
error         bad_request       {"op":7,"id":"e3"}
error         bad_request       {"op":"ping","id":{"x":1}}
error         invalid_topic     {"op":"subscribe","id":"e5","topic":"a..b"}
error         invalid_topic     {"op":"subscribe","id":"e6","topic":"a.>.b"}
error         invalid_topic     {"op":"unsubscribe","id":"e7","topic":"bad topic"}
error         invalid_topic     {"op":"publish","id":"e8","topic":"conf.*","data":1}
error         bad_request       {"op":"publish","id":"e9","topic":"conf.a"}
error         bad_request       {"op":"subscribe","id":"e10"}
error         bad_request       {"op":"subscribe","id":"e11","topic":"conf.*","since":3,"since_ts":1}
error         bad_request       {"op":"subscribe","id":"e12","topic":"conf.a","since":-3}
error         bad_request       {"op":"publish","id":"e13","topic":"conf.a","data":1,"idempotency_key":"has space"}
refreshed     -                 {"op":"refresh","id":"r1","token":"any-token-while-auth-is-off"}
error         bad_request       {"op":"refresh","id":"r2"}
error         bad_request       {"op":"refresh","id":"r3","token":7}
subscribed    -                 {"op":"subscribe","id":"c1","topic":"cur.*","cursor":"1~0"}
subscribed    -                 {"op":"subscribe","id":"c2","topic":"cur.x","cursor":null}
subscribed    -                 {"op":"subscribe","id":"c3","topic":"cur.>","cursor":"1~0~cur.x~0~zzz~5"}
error         bad_request       {"op":"subscribe","id":"c4","topic":"cur.*","cursor":"garbage"}
error         bad_request       {"op":"subscribe","id":"c5","topic":"cur.y","since":1,"cursor":"1~0"}
error         bad_request       {"op":"subscribe","id":"c6","topic":"cur.y","cursor":7}
"#;

#[tokio::test]
async fn websocket_frames_match_asyncapi() {
    let spec = AsyncApi::load();
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let node = Node::start(&["--config", &config]);
    trimmed_topic(&node, "gap.t").await;

    let mut ws = node.ws().await;
    let mut script: Vec<(Value, &str, Option<&str>)> = SCRIPT
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let brace = line.find('{').expect("op");
            let mut head = line[..brace].split_whitespace();
            let want = head.next().expect("reply type");
            let code = head.next().filter(|c| *c != "-");
            (
                serde_json::from_str(&line[brace..]).expect(line),
                want,
                code,
            )
        })
        .collect();
    script.push((
        json!({"op":"publish","id":14,"topic":"conf.a","data":"x".repeat(65 * 1024)}),
        "error",
        Some("payload_too_large"),
    ));
    let mut acks = BTreeMap::new();
    for (op, want, code) in &script {
        let reply = exchange(&mut ws, op).await;
        assert_eq!(reply["type"], *want, "{op} → {reply}");
        if let Some(code) = code {
            assert_eq!(reply["code"], *code, "{op} → {reply}");
        }
        match op.get("id").filter(|v| v.is_string() || v.is_number()) {
            Some(id) => assert_eq!(reply.get("id"), Some(id), "id echoed: {reply}"),
            None => assert!(reply.get("id").is_none(), "no id to echo: {reply}"),
        }
        // The op schemas accept what the server accepts and refuse what it
        // refuses for its shape (a too-large payload is not a shape error).
        let errors = spec.op_errors(op);
        if *want != "error" {
            assert!(
                errors.is_empty(),
                "accepted op {op} fails its schema: {errors:?}"
            );
        } else if *code != Some("payload_too_large") {
            assert!(!errors.is_empty(), "refused op {op} passes its schema");
        }
        if *want == "ack" {
            acks.insert(op["id"].as_str().unwrap().to_string(), reply["seq"].clone());
        }
    }
    assert_eq!(
        acks["w3"], acks["w4"],
        "idempotent repeat returns the first seq"
    );

    // Frames that are not ops at all: an error without an id.
    for text in [
        "{not json",
        "[1,2]",
        "\"just a string\"",
        "",
        "{\"op\":\"ping\",\"op\":\"ping\"}",
    ] {
        ws.send_text(text).await;
        let reply = reply_to(&mut ws, None).await;
        assert_eq!(reply["code"], "bad_request", "{text:?}: {reply}");
    }
    ws.stream
        .send(WsMessage::Binary(b"\x01\x02".to_vec()))
        .await
        .unwrap();
    let reply = reply_to(&mut ws, None).await;
    assert_eq!(reply["code"], "bad_request", "binary frame: {reply}");

    // Deliveries: conf.a 1 and 2 (once each despite three overlapping
    // subscriptions), conf.b 1, conf.c 1 to 4, then gap.t: gap 1..=3, 4, 5.
    let mut messages = Vec::new();
    let mut gaps = Vec::new();
    for frame in ws.seen.clone() {
        match frame["type"].as_str() {
            Some("message") => messages.push(frame),
            Some("gap") => gaps.push(frame),
            _ => {}
        }
    }
    while messages.len() < 9 || gaps.is_empty() {
        let frame = ws.recv().await;
        match frame["type"].as_str() {
            Some("message") => messages.push(frame),
            Some("gap") => gaps.push(frame),
            _ => {}
        }
    }
    if let Some(frame) = ws.try_recv(Duration::from_millis(300)).await {
        panic!("unexpected extra frame {frame}");
    }
    assert_eq!(
        gaps,
        vec![json!({"type":"gap","topic":"gap.t","from":1,"to":3})]
    );
    let mut got: Vec<(String, u64)> = messages
        .iter()
        .map(|m| {
            (
                m["topic"].as_str().unwrap().into(),
                m["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    let want: Vec<(String, u64)> = [
        ("conf.a", 1),
        ("conf.a", 2),
        ("conf.b", 1),
        ("conf.c", 1),
        ("conf.c", 2),
        ("conf.c", 3),
        ("conf.c", 4),
        ("gap.t", 4),
        ("gap.t", 5),
    ]
    .iter()
    .map(|(t, s)| (t.to_string(), *s))
    .collect();
    assert_eq!(got, want);
    // A valid traceparent is carried in the message (between ts and data);
    // an invalid or null one is ignored.
    let traced: Vec<(u64, Value)> = messages
        .iter()
        .filter(|m| m["topic"] == "conf.c")
        .map(|m| (m["seq"].as_u64().unwrap(), m["traceparent"].clone()))
        .collect();
    assert_eq!(
        traced,
        [
            (1, Value::Null),
            (2, json!(TRACEPARENT)),
            (3, Value::Null),
            (4, Value::Null)
        ]
    );

    // Presence: another client joins and leaves the pattern this connection
    // listens on (`presence: true`); on `pres.other` (`presence: false`)
    // nothing is heard.
    let mut other = node.ws().await;
    other.subscribe("pres.other").await;
    other.subscribe("pres.ws").await;
    let join = ws.recv().await;
    assert_eq!(join["type"], "join", "{join}");
    assert_eq!(join["topic"], "pres.ws", "{join}");
    assert_eq!(join["client"]["transport"], "ws", "{join}");
    let op = json!({"op":"unsubscribe","id":"bye","topic":"pres.ws"});
    assert_eq!(exchange(&mut other, &op).await["type"], "unsubscribed");
    let leave = ws.recv().await;
    assert_eq!(leave["type"], "leave", "{leave}");
    assert_eq!(leave["topic"], "pres.ws", "{leave}");
    assert_eq!(leave["client"], join["client"]);
    ws.assert_silent(Duration::from_millis(300)).await;

    // Every frame the server sent matches asyncapi.yaml, and every server
    // frame the spec documents was seen.
    let mut seen_types = BTreeSet::new();
    for frame in &ws.seen {
        spec.check_frame(frame);
        seen_types.insert(frame["type"].as_str().unwrap().to_string());
    }
    let documented: BTreeSet<String> = spec.frames.keys().cloned().collect();
    assert_eq!(
        seen_types, documented,
        "server frame types seen vs documented"
    );

    // Documented close codes.
    let too_big = format!(
        "{{\"op\":\"publish\",\"topic\":\"a\",\"data\":\"{}\"}}",
        "x".repeat(200 * 1024)
    );
    let cases = [
        (WsMessage::Text(too_big), 1009),
        (
            WsMessage::Frame(Frame::message(
                b"{\"op\":\"ping\",\"x\":\"\xff\xfe\"}".to_vec(),
                OpCode::Data(Data::Text),
                true,
            )),
            1007,
        ),
        (
            WsMessage::Frame(Frame::message(
                b"{}".to_vec(),
                OpCode::Data(Data::Continue),
                true,
            )),
            1002,
        ),
        (
            WsMessage::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            })),
            1000,
        ),
    ];
    for (message, want) in cases {
        let code = close_code_after(&node, message).await;
        assert_eq!(code, Some(want), "close code");
        assert!(
            spec.close_codes.contains(&want),
            "close code {want} is not in x-close-codes"
        );
    }
    // The first connection is unaffected.
    assert_eq!(
        exchange(&mut ws, &json!({"op":"ping","id":"end"})).await["type"],
        "pong"
    );
}
