//! The admin API (README §4.9) against the specs: every documented status of
//! its routes, presence counts, the long-poll `unsubscribed` field and 410
//! `kicked`, the SSE `unsubscribed` and `kicked` events, and on the
//! WebSocket the unasked `unsubscribed` frame and close 4004.

use super::*;

const ADMIN_KEY: &str = "spec-admin-key-1";
const TOPICS: &str = "/v1/topics";

/// The four order routes: (template, path for `who`, whether it takes a body).
fn order_routes(client: &str, sub: &str) -> [(&'static str, String, bool); 4] {
    [
        (
            "/v1/clients/{client_id}/disconnect",
            format!("/v1/clients/{client}/disconnect"),
            false,
        ),
        (
            "/v1/users/{sub}/disconnect",
            format!("/v1/users/{sub}/disconnect"),
            false,
        ),
        (
            "/v1/clients/{client_id}/unsubscribe",
            format!("/v1/clients/{client}/unsubscribe"),
            true,
        ),
        (
            "/v1/users/{sub}/unsubscribe",
            format!("/v1/users/{sub}/unsubscribe"),
            true,
        ),
    ]
}

pub(super) async fn check_admin_responses(spec: &OpenApi) {
    let node = Node::start(&[
        "--jwt-secret",
        SECRET,
        "--api-key",
        API_KEY,
        "--admin-api-key",
        ADMIN_KEY,
    ]);
    let admin: &[(&str, &str)] = &[
        ("x-api-key", ADMIN_KEY),
        ("content-type", "application/json"),
    ];
    let plain: &[(&str, &str)] = &[("x-api-key", API_KEY), ("content-type", "application/json")];
    let json_only: &[(&str, &str)] = &[("content-type", "application/json")];
    let r = spec
        .call(
            &node,
            "POST",
            Some("/v1/topics/{topic}/messages"),
            "/v1/topics/spec.admin/messages",
            admin,
            Some(b"1".to_vec()),
        )
        .await;
    expect(&r, 200, None, "admin key publishes");

    // GET /v1/topics.
    let r = spec
        .call(
            &node,
            "GET",
            Some(TOPICS),
            "/v1/topics?limit=1",
            admin,
            None,
        )
        .await;
    expect(&r, 200, None, "topics");
    assert_eq!(r.body["topics"][0]["topic"], "spec.admin", "{}", r.body);
    for (headers, status, code) in [(json_only, 401, "unauthorized"), (plain, 403, "forbidden")] {
        let r = spec
            .call(&node, "GET", Some(TOPICS), TOPICS, headers, None)
            .await;
        expect(&r, status, Some(code), "topics refused");
    }
    for bad in ["/v1/topics?limit=x", "/v1/topics?colour=red"] {
        let r = spec
            .call(&node, "GET", Some(TOPICS), bad, admin, None)
            .await;
        expect(&r, 400, Some("bad_request"), bad);
    }
    let r = spec
        .call(&node, "DELETE", Some(TOPICS), TOPICS, admin, None)
        .await;
    expect(&r, 405, Some("method_not_allowed"), "DELETE /v1/topics");

    // The order routes, on nobody: 200 with 0.
    let long = "x".repeat(2000);
    let body = || Some(br#"{"topic":"spec.*"}"#.to_vec());
    for ((template, path, takes_body), (_, long_path, _)) in order_routes("nobody", "nobody")
        .into_iter()
        .zip(order_routes(&long, &long))
    {
        let what = |s: &str| format!("{template}: {s}");
        let b = if takes_body { body() } else { None };
        let r = spec
            .call(&node, "POST", Some(template), &path, admin, b.clone())
            .await;
        expect(&r, 200, None, &what("nobody"));
        assert_eq!(r.body["missing"], json!([]));
        let r = spec
            .call(&node, "POST", Some(template), &path, json_only, b.clone())
            .await;
        expect(&r, 401, Some("unauthorized"), &what("no credentials"));
        let r = spec
            .call(&node, "POST", Some(template), &path, plain, b.clone())
            .await;
        expect(&r, 403, Some("forbidden"), &what("no admin scope"));
        let r = spec
            .call(&node, "POST", Some(template), &long_path, admin, b.clone())
            .await;
        expect(&r, 400, Some("bad_request"), &what("too long"));
        let r = spec
            .call(&node, "GET", Some(template), &path, admin, None)
            .await;
        expect(&r, 405, Some("method_not_allowed"), &what("GET"));
        if takes_body {
            for (bad, code) in [
                (r#"{"pattern":"spec.*"}"#, "bad_request"),
                ("not json", "bad_request"),
                (r#"{"topic":"a..b"}"#, "invalid_topic"),
            ] {
                let r = spec
                    .call(
                        &node,
                        "POST",
                        Some(template),
                        &path,
                        admin,
                        Some(bad.as_bytes().to_vec()),
                    )
                    .await;
                expect(&r, 400, Some(code), &what(bad));
            }
            let big = format!(r#"{{"topic":"spec.*","pad":"{}"}}"#, "y".repeat(5000));
            let r = spec
                .call(
                    &node,
                    "POST",
                    Some(template),
                    &path,
                    admin,
                    Some(big.into_bytes()),
                )
                .await;
            expect(&r, 413, Some("payload_too_large"), &what("over 4 KiB"));
        }
    }

    // Presence counts.
    let r = spec
        .call(
            &node,
            "GET",
            Some(PRES),
            "/v1/topics/spec.admin/presence?count=true",
            admin,
            None,
        )
        .await;
    expect(&r, 200, None, "presence count");
    assert_eq!(r.body, json!({"topic":"spec.admin","clients":0,"users":0}));
    let r = spec
        .call(
            &node,
            "GET",
            Some(PRES),
            "/v1/topics/spec.admin/presence?count=true",
            plain,
            None,
        )
        .await;
    expect(
        &r,
        403,
        Some("forbidden"),
        "presence count without the scope",
    );

    check_long_poll(spec, &node).await;
    check_sse(spec, &node).await;
    check_websocket(&node).await;
}

fn order_path(kind: &str, client_id: &str) -> String {
    format!("/v1/clients/{client_id}/{kind}")
}

async fn order(spec: &OpenApi, node: &Node, kind: &str, client_id: &str) -> Value {
    let template = format!("/v1/clients/{{client_id}}/{kind}");
    let body = (kind == "unsubscribe").then(|| br#"{"topic":"spec.*"}"#.to_vec());
    let r = spec
        .call(
            node,
            "POST",
            Some(&template),
            &order_path(kind, client_id),
            &[
                ("x-api-key", ADMIN_KEY),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await;
    expect(&r, 200, None, &template);
    r.body
}

/// `unsubscribed` in a poll answer, then 410 once the session is disconnected.
async fn check_long_poll(spec: &OpenApi, node: &Node) {
    let poll = |query: String| async move {
        spec.call(
            node,
            "GET",
            Some(POLL),
            &format!("/v1/poll?{query}&token={ADMIN_KEY}"),
            &[],
            None,
        )
        .await
    };
    let r = poll("topic=spec.*&topic=other.*&timeout_ms=0&presence=true".into()).await;
    expect(&r, 200, None, "poll");
    let id = r.body["client_id"].as_str().unwrap().to_string();
    assert_eq!(
        order(spec, node, "unsubscribe", &id).await["unsubscribed"],
        1
    );
    let r = poll(format!(
        "topic=spec.*&topic=other.*&timeout_ms=0&client_id={id}"
    ))
    .await;
    expect(&r, 200, None, "poll after unsubscribe");
    assert_eq!(r.body["unsubscribed"], json!(["spec.*"]));
    assert_eq!(
        order(spec, node, "disconnect", &id).await["disconnected"],
        1
    );
    let r = poll(format!("topic=other.*&timeout_ms=0&client_id={id}")).await;
    expect(&r, 410, Some("kicked"), "poll of a disconnected session");
}

/// The `unsubscribed` and `kicked` events, and the end of the stream.
async fn check_sse(spec: &OpenApi, node: &Node) {
    let Ok(mut sse) = open_sse(
        spec,
        node,
        &format!("topic=spec.*&topic=other.*&token={ADMIN_KEY}"),
        None,
    )
    .await
    else {
        panic!("SSE refused");
    };
    let id = loop {
        match sse.next(TIMEOUT).await.expect("hello") {
            Block::Event { event, data } if event == "hello" => {
                break data["client_id"].as_str().unwrap().to_string()
            }
            _ => {}
        }
    };
    assert_eq!(
        order(spec, node, "unsubscribe", &id).await["unsubscribed"],
        1
    );
    assert_eq!(
        sse.events(1).await,
        [("unsubscribed".to_string(), json!({"topic":"spec.*"}))]
    );
    assert_eq!(
        order(spec, node, "disconnect", &id).await["disconnected"],
        1
    );
    let (event, data) = sse.events(1).await.remove(0);
    assert_eq!(
        (event.as_str(), &data["error"]["code"]),
        ("kicked", &json!("kicked"))
    );
    assert!(
        sse.next(TIMEOUT).await.is_none(),
        "the stream ends after kicked"
    );
}

/// The unasked `unsubscribed` frame and close 4004.
async fn check_websocket(node: &Node) {
    let asyncapi = AsyncApi::load();
    let mut ws = Ws::connect(&node.ws_url(&format!("/v1/ws?token={ADMIN_KEY}"))).await;
    ws.subscribe("spec.*").await;
    let (pong, _) = ws.request(json!({"op":"ping"}), "p").await;
    let id = pong["client_id"].as_str().unwrap().to_string();
    let answer = http()
        .post(node.url(&order_path("unsubscribe", &id)))
        .header("x-api-key", ADMIN_KEY)
        .json(&json!({"topic":"spec.*"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let frame = ws.recv().await;
    assert_eq!(frame, json!({"type":"unsubscribed","topic":"spec.*"}));
    asyncapi.check_frame(&frame);
    let answer = http()
        .post(node.url(&order_path("disconnect", &id)))
        .header("x-api-key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let code = ws.closed().await.expect("a close code");
    assert_eq!(code, 4004);
    assert!(
        asyncapi.close_codes.contains(&code),
        "4004 is not in x-close-codes"
    );
}
