//! The HTTP routes with sessions and streams against `openapi.yaml`:
//! presence, 405/404 routing, long-poll, SSE, WebSocket handshakes and
//! refused origins. Called in order by `http_responses_match_openapi`.

use super::*;

/// Presence of a pattern's subscriber; returns the subscriber, whom the
/// long-poll presence check counts.
pub(crate) async fn check_presence(spec: &OpenApi, node: &Node) -> Ws {
    // Presence: who is subscribed to a pattern matching the topic.
    let r = spec.get(node, PRES, "/v1/topics/pres.room/presence").await;
    expect(&r, 200, None, "presence, nobody");
    assert_eq!(r.body, json!({"topic":"pres.room","clients":[]}));
    let mut member = node.ws().await;
    member.subscribe("pres.*").await;
    member.subscribe("pres.room").await;
    let r = spec.get(node, PRES, "/v1/topics/pres.room/presence").await;
    expect(&r, 200, None, "presence");
    let clients = r.body["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 1, "once per client: {}", r.body);
    assert_eq!(clients[0]["transport"], "ws");
    assert_eq!(clients[0]["sub"], Value::Null);
    for (path, code) in [
        ("/v1/topics/pres.*/presence", "invalid_topic"),
        ("/v1/topics/a..b/presence", "invalid_topic"),
        ("/v1/topics/pres.room/presence?foo=1", "bad_request"),
    ] {
        expect(&spec.get(node, PRES, path).await, 400, Some(code), path);
    }
    let r = spec.get(node, PRES, "/v1/topics/quiet.x/presence").await;
    expect(&r, 404, Some("not_found"), "presence off");
    member
}

/// 405 with `Allow` for the methods a path lacks; 404 off the routes.
pub(crate) async fn check_routing(spec: &OpenApi, node: &Node) {
    // Methods a routed path does not have: 405 on every one of them, with
    // the documented `Allow` header.
    for (method, path, template) in [
        ("PUT", "/v1/topics/a/messages", MSGS),
        ("POST", "/v1/topics/a/presence", PRES),
        ("PUT", "/v1/topics/a/presence", PRES),
        ("DELETE", "/v1/topics/a/messages", MSGS),
        ("OPTIONS", "/v1/topics/a/messages", MSGS),
        ("GET", BATCH, BATCH),
        ("PUT", BATCH, BATCH),
        ("POST", "/v1/ws", "/v1/ws"),
        ("POST", "/v1/sse", "/v1/sse"),
        ("POST", "/v1/poll", "/v1/poll"),
        ("OPTIONS", "/v1/poll", "/v1/poll"),
        ("POST", "/v1/echo", "/v1/echo"),
        ("POST", "/healthz", "/healthz"),
        ("DELETE", "/readyz", "/readyz"),
        ("POST", "/metrics", "/metrics"),
    ] {
        let r = spec
            .call(node, method, Some(template), path, &[], None)
            .await;
        expect(
            &r,
            405,
            Some("method_not_allowed"),
            &format!("{method} {path}"),
        );
    }
    // Paths that are not routed.
    for path in [
        "/v1/nowhere",
        "/v1/topics/a/presence/extra",
        "/v1/topics/a/messages/extra",
        "/",
    ] {
        let r = spec.call(node, "GET", None, path, &[], None).await;
        expect(&r, 404, Some("not_found"), path);
    }
}

/// Long-poll: cursors, floors, gaps, presence sessions, refusals.
pub(crate) async fn check_poll(spec: &OpenApi, node: &Node) {
    // Long-poll.
    // A concrete topic the cursor does not list resumes from the cursor's
    // floor, wherever it stands in the query (README §9.1).
    let r = spec
        .get(node, POLL, "/v1/poll?topic=late.*&timeout_ms=0")
        .await;
    let floor_only = r.body["cursor"].as_str().unwrap().to_string();
    assert!(
        !floor_only[2..].contains('~'),
        "nothing delivered, so only a floor: {floor_only}"
    );
    publish(node, "late.eu", &json!("while away")).await;
    for query in [
        "topic=late.eu",
        "topic=late.eu&topic=late.*",
        "topic=late.*&topic=late.eu",
    ] {
        let r = spec
            .get(
                node,
                POLL,
                &format!("/v1/poll?{query}&cursor={floor_only}&timeout_ms=5000"),
            )
            .await;
        expect(&r, 200, None, query);
        assert_eq!(
            r.body["messages"],
            json!([{"topic":"late.eu","seq":1,"ts":r.body["messages"][0]["ts"],"data":"while away"}]),
            "{query}: {}",
            r.body
        );
    }
    let r = spec
        .get(
            node,
            POLL,
            "/v1/poll?topic=orders.eu&topic=orders.*&timeout_ms=0",
        )
        .await;
    expect(&r, 200, None, "poll from now");
    assert_eq!(r.body["messages"], json!([]));
    let cursor = r.body["cursor"].as_str().unwrap().to_string();
    publish(node, "orders.eu", &json!("after")).await;
    let r = spec
        .get(
            node,
            POLL,
            &format!("/v1/poll?topic=orders.eu&topic=orders.*&cursor={cursor}&timeout_ms=5000"),
        )
        .await;
    expect(&r, 200, None, "poll with cursor");
    assert_eq!(r.body["messages"][0]["data"], "after", "{}", r.body);
    let r = spec
        .get(
            node,
            POLL,
            "/v1/poll?topic=gap.*&cursor=1~0~gap.h~0&timeout_ms=0",
        )
        .await;
    expect(&r, 200, None, "poll with a gap");
    assert_eq!(
        r.body["gaps"],
        json!([{"topic":"gap.h","from":1,"to":3}]),
        "{}",
        r.body
    );
    // Long-poll presence: the session id comes back on every answer; with
    // `presence=true` join/leave events come too.
    let r = spec
        .get(
            node,
            POLL,
            "/v1/poll?topic=pres.room&presence=true&timeout_ms=0",
        )
        .await;
    expect(&r, 200, None, "poll with presence");
    assert_eq!(r.body["presence"], json!([]), "{}", r.body);
    let client_id = r.body["client_id"].as_str().unwrap().to_string();
    let mut joiner = node.ws().await;
    joiner.subscribe("pres.room").await;
    let r = spec
        .get(
            node,
            POLL,
            &format!("/v1/poll?topic=pres.room&presence=1&client_id={client_id}&timeout_ms=5000"),
        )
        .await;
    expect(&r, 200, None, "poll with presence events");
    assert_eq!(r.body["client_id"], client_id.as_str());
    let events = r.body["presence"].as_array().expect("presence events");
    assert_eq!(events.len(), 1, "{}", r.body);
    assert_eq!(events[0]["type"], "join");
    assert_eq!(events[0]["topic"], "pres.room");
    assert_eq!(events[0]["client"]["transport"], "ws");
    let r = spec.get(node, PRES, "/v1/topics/pres.room/presence").await;
    let transports: Vec<&str> = r.body["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["transport"].as_str().unwrap())
        .collect();
    assert_eq!(
        transports.len(),
        3,
        "member, poll session, joiner: {}",
        r.body
    );
    assert!(transports.contains(&"poll"), "{}", r.body);
    let r = spec
        .get(
            node,
            POLL,
            "/v1/poll?topic=pres.room&client_id=unknown&timeout_ms=0",
        )
        .await;
    expect(&r, 200, None, "poll with an unknown client id");
    assert_ne!(r.body["client_id"], "unknown", "a fresh session");
    assert!(r.body.get("presence").is_none(), "{}", r.body);
    let long_id = format!("/v1/poll?topic=a&client_id={}", "x".repeat(129));
    for (path, code) in [
        ("/v1/poll?topic=a&presence=maybe", "bad_request"),
        (long_id.as_str(), "bad_request"),
        ("/v1/poll", "bad_request"),
        ("/v1/poll?topic=a&cursor=garbage", "bad_request"),
        ("/v1/poll?topic=a&timeout_ms=soon", "bad_request"),
        ("/v1/poll?topic=a&bogus=1", "bad_request"),
        ("/v1/poll?topic=a..b", "invalid_topic"),
    ] {
        expect(&spec.get(node, POLL, path).await, 400, Some(code), path);
    }
}

/// SSE: opening block, gap, messages, live message, heartbeat, presence,
/// refusals.
pub(crate) async fn check_sse(spec: &OpenApi, node: &Node) {
    // SSE: opening block, gap, messages, live message, heartbeat.
    let mut sse = open_sse(
        spec,
        node,
        "topic=gap.h&topic=live.%3E",
        Some("1~0~gap.h~0"),
    )
    .await
    .unwrap_or_else(|r| panic!("SSE refused: {}", r.body));
    let first = sse.next(TIMEOUT).await.expect("opening block");
    assert!(matches!(first, Block::Opening), "{first:?}");
    let hello = sse.events(1).await;
    assert_eq!(
        hello[0].0, "hello",
        "the hello block follows the opening one"
    );
    assert!(hello[0].1["client_id"].is_string());
    let events = sse.events(3).await;
    assert_eq!(
        events[0],
        ("gap".into(), json!({"topic":"gap.h","from":1,"to":3}))
    );
    assert_eq!(
        (events[1].1["seq"].as_u64(), events[2].1["seq"].as_u64()),
        (Some(4), Some(5))
    );
    publish(node, "live.x", &json!({"live":true})).await;
    let events = sse.events(1).await;
    assert_eq!(events[0].0, "message");
    assert_eq!(events[0].1["topic"], "live.x");
    let mut pinged = false;
    while !pinged {
        match sse.next(TIMEOUT).await.expect("heartbeat") {
            Block::Ping => pinged = true,
            other => panic!("unexpected block {other:?}"),
        }
    }
    // SSE presence: join/leave events without an id.
    let mut listener = open_sse(spec, node, "topic=pres.sse&presence=true", None)
        .await
        .unwrap_or_else(|r| panic!("SSE with presence refused: {}", r.body));
    assert!(matches!(listener.next(TIMEOUT).await, Some(Block::Opening)));
    assert_eq!(listener.events(1).await[0].0, "hello");
    let mut visitor = node.ws().await;
    visitor.subscribe("pres.sse").await;
    let events = listener.events(1).await;
    assert_eq!(events[0].0, "join", "{events:?}");
    assert_eq!(events[0].1["topic"], "pres.sse");
    drop(visitor);
    let events = listener.events(1).await;
    assert_eq!(events[0].0, "leave", "{events:?}");
    for (query, last_event_id, code) in [
        ("", None, "bad_request"),
        ("topic=a&timeout_ms=5", None, "bad_request"),
        ("topic=a&presence=maybe", None, "bad_request"),
        ("topic=a&client_id=x", None, "bad_request"),
        ("topic=a&cursor=2~1", None, "bad_request"),
        ("topic=a", Some("garbage"), "bad_request"),
        ("topic=a.%3E.b", None, "invalid_topic"),
    ] {
        match open_sse(spec, node, query, last_event_id).await {
            Ok(_) => panic!("SSE {query:?} was accepted"),
            Err(r) => expect(&r, 400, Some(code), query),
        }
    }
}

/// WebSocket handshakes, and a node that refuses other origins.
pub(crate) async fn check_handshakes_and_origins(spec: &OpenApi, node: &Node) {
    // WebSocket handshakes: 101 on an upgrade, a JSON 400 otherwise.
    for path in ["/v1/ws", "/v1/echo"] {
        let (_ws, response) = tokio_tungstenite::connect_async(node.ws_url(path))
            .await
            .expect("upgrade");
        spec.check("GET", Some(path), response.status().as_u16(), None, b"");
        let r = spec.get(node, path, path).await;
        expect(&r, 400, Some("bad_request"), path);
    }

    // Refused origins: 403 on every documented operation.
    let strict = Node::start(&["--allowed-origins", "https://app.example", "--enable-echo"]);
    for (template, method) in spec.operations() {
        let path = template.replace("{topic}", "orders.eu");
        let r = spec
            .call(
                &strict,
                &method,
                Some(&template),
                &path,
                &[("origin", "https://evil.example")],
                None,
            )
            .await;
        expect(
            &r,
            403,
            Some("forbidden"),
            &format!("{method} {path} from a refused origin"),
        );
    }
    let r = spec
        .call(
            &strict,
            "GET",
            Some("/healthz"),
            "/healthz",
            &[("origin", "https://app.example")],
            None,
        )
        .await;
    expect(&r, 200, None, "allowed origin");
}
