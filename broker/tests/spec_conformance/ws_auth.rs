//! The auth frames on the WebSocket (`unauthorized`, `forbidden`, `refresh`,
//! close 4003) match `asyncapi.yaml`.

use super::*;

#[tokio::test]
async fn websocket_auth_frames_match_asyncapi() {
    let spec = AsyncApi::load();
    let dir = tempfile::tempdir().unwrap();
    let node = auth_node(
        dir.path(),
        "[limits]\npublish_rate_per_connection = 0.001\npublish_burst = 2\n",
    );
    let now = now_secs();
    let renewed = now + 900;

    // A token holder: every refusal is an error frame, the connection stays.
    let mut ws = Ws::connect(&node.ws_url(&format!("/v1/ws?token={}", alice()))).await;
    let script = [
        (
            json!({"op":"subscribe","id":"a1","topic":"chat.*"}),
            "subscribed",
            None,
        ),
        (
            json!({"op":"subscribe","id":"a2","topic":"chat.>"}),
            "error",
            Some("forbidden"),
        ),
        (
            json!({"op":"subscribe","id":"a3","topic":">"}),
            "error",
            Some("forbidden"),
        ),
        (
            json!({"op":"subscribe","id":"a4","topic":"chat.room1","cursor":"1~0~other.x~1"}),
            "error",
            Some("forbidden"),
        ),
        (
            json!({"op":"subscribe","id":"a5","topic":"public.news","since":0}),
            "subscribed",
            None,
        ),
        (
            json!({"op":"publish","id":"a6","topic":"chat.room2","data":1}),
            "error",
            Some("forbidden"),
        ),
        (
            json!({"op":"publish","id":"a7","topic":"chat.room1","data":1}),
            "ack",
            None,
        ),
        (
            json!({"op":"publish","id":"a8","topic":"chat.room1","data":2}),
            "ack",
            None,
        ),
        (
            json!({"op":"publish","id":"a9","topic":"chat.room1","data":3}),
            "error",
            Some("rate_limited"),
        ),
        (
            json!({"op":"refresh","id":"a10","token":"garbage"}),
            "error",
            Some("unauthorized"),
        ),
        (
            // Does not cover the current subscription `chat.*`.
            json!({"op":"refresh","id":"a11","token":mint(now + 600, &["other.>"], &[])}),
            "error",
            Some("forbidden"),
        ),
        (
            json!({"op":"refresh","id":"a12","token":mint(now - 60, &[">"], &[])}),
            "error",
            Some("unauthorized"),
        ),
        (
            json!({"op":"refresh","id":"a13","token":mint(renewed, &["chat.>", "public.>"], &[">"])}),
            "refreshed",
            None,
        ),
        (
            // The refreshed grants apply at once.
            json!({"op":"subscribe","id":"a14","topic":"chat.>"}),
            "subscribed",
            None,
        ),
        (json!({"op":"ping","id":"a15"}), "pong", None),
    ];
    let replies = run_ops(&spec, &mut ws, &script).await;
    assert_eq!(replies[12]["expires_at"], renewed, "{}", replies[12]);
    // The two acked publishes reach the subscriber (`exchange` skipped them).
    let mut delivered: Vec<Value> = ws
        .seen
        .iter()
        .filter(|f| f["type"] == "message")
        .cloned()
        .collect();
    while delivered.len() < 2 {
        let frame = ws.recv().await;
        if frame["type"] == "message" {
            delivered.push(frame);
        }
    }
    assert_eq!(
        delivered.iter().map(|m| &m["data"]).collect::<Vec<_>>(),
        [&json!(1), &json!(2)]
    );

    // Without credentials: only the anonymous namespace, refusals are
    // `unauthorized`; a refresh brings credentials.
    let mut anon = node.ws().await;
    let script = [
        (
            json!({"op":"subscribe","id":"n1","topic":"public.>"}),
            "subscribed",
            None,
        ),
        (
            json!({"op":"subscribe","id":"n2","topic":"chat.*"}),
            "error",
            Some("unauthorized"),
        ),
        (
            json!({"op":"publish","id":"n3","topic":"public.news","data":1}),
            "error",
            Some("unauthorized"),
        ),
        (
            json!({"op":"refresh","id":"n4","token":alice()}),
            "refreshed",
            None,
        ),
        (
            json!({"op":"subscribe","id":"n5","topic":"chat.*"}),
            "subscribed",
            None,
        ),
    ];
    run_ops(&spec, &mut anon, &script).await;

    // An API key from --api-key publishes anywhere, subscribes nowhere; it
    // does not expire.
    let mut service = Ws::connect(&node.ws_url(&format!("/v1/ws?token={API_KEY}"))).await;
    let script = [
        (
            json!({"op":"publish","id":"k1","topic":"any.topic","data":1}),
            "ack",
            None,
        ),
        (
            json!({"op":"subscribe","id":"k2","topic":"any.topic"}),
            "error",
            Some("forbidden"),
        ),
        (
            json!({"op":"refresh","id":"k3","token":API_KEY}),
            "refreshed",
            None,
        ),
    ];
    let replies = run_ops(&spec, &mut service, &script).await;
    assert!(replies[2].get("expires_at").is_none(), "{}", replies[2]);

    // A token that runs out closes the connection with 4003, unless it was
    // refreshed in time.
    let close_codes = spec.close_codes.clone();
    let expiring = async {
        let mut ws = Ws::connect(&node.ws_url(&format!(
            "/v1/ws?token={}",
            mint(now_secs() + 1, &[">"], &[])
        )))
        .await;
        let code = ws.closed().await;
        assert_eq!(code, Some(4003), "close code at expiry");
        assert!(close_codes.contains(&4003), "4003 is not in x-close-codes");
    };
    let refreshed = async {
        // Two seconds, so the refresh is surely read before the first token
        // runs out (expiry has one-second granularity).
        let exp = now_secs() + 2;
        let mut ws =
            Ws::connect(&node.ws_url(&format!("/v1/ws?token={}", mint(exp, &[">"], &[])))).await;
        let op = json!({"op":"refresh","id":"f1","token":mint(now_secs() + 600, &[">"], &[])});
        assert_eq!(exchange(&mut ws, &op).await["type"], "refreshed");
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let past_exp = (exp * 1000 + 700).saturating_sub(now_ms);
        tokio::time::sleep(Duration::from_millis(past_exp)).await;
        assert_eq!(
            exchange(&mut ws, &json!({"op":"ping","id":"f2"})).await["type"],
            "pong",
            "a refreshed connection outlives the first token"
        );
        ws
    };
    let (_, refreshed) = tokio::join!(expiring, refreshed);

    let mut codes = BTreeSet::new();
    for frame in [&ws, &anon, &service, &refreshed]
        .iter()
        .flat_map(|ws| &ws.seen)
    {
        spec.check_frame(frame);
        if let Some(code) = frame["code"].as_str() {
            codes.insert(code);
        }
    }
    assert_eq!(
        codes,
        BTreeSet::from(["forbidden", "rate_limited", "unauthorized"])
    );
}
