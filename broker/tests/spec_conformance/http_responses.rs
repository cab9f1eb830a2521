//! Every HTTP response matches `openapi.yaml`, and every documented status
//! (except 500/503) is provoked: the test, and the checks of the simple
//! request/response routes (health, publish, batch, history, trace
//! context). Presence, routing, long-poll, SSE and handshakes are in
//! `http_streams.rs`.

use super::*;

#[tokio::test]
async fn http_responses_match_openapi() {
    let spec = OpenApi::load();
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let node = Node::start(&["--config", &config, "--enable-echo"]);
    // In this order: each check expects the seqs the ones before it left.
    check_health(&spec, &node).await;
    check_publishes(&spec, &node).await;
    check_batches(&spec, &node).await;
    check_history(&spec, &node).await;
    check_trace_context(&spec, &node).await;
    // The member stays subscribed: the long-poll presence check counts it.
    let _member = check_presence(&spec, &node).await;
    check_routing(&spec, &node).await;
    check_poll(&spec, &node).await;
    check_sse(&spec, &node).await;
    check_handshakes_and_origins(&spec, &node).await;

    // Auth (401, 403) and limits (429, 503) on their own nodes.
    check_auth_responses(&spec).await;
    check_limit_responses(&spec).await;
    check_dashboard_responses(&spec, &node).await;
    admin::check_admin_responses(&spec).await;

    // Every documented status except those needing a failure was provoked.
    let missing: Vec<_> = spec
        .documented()
        .difference(&spec.covered.borrow())
        .filter(|(_, _, status)| !NOT_PROVOKED.contains(&status.as_str()))
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "documented but never provoked: {missing:#?}"
    );
}

/// A REST publish of `body` to `topic`, checked against the spec.
async fn publish_one(
    spec: &OpenApi,
    node: &Node,
    topic: &str,
    headers: Headers,
    body: &[u8],
) -> Reply {
    let path = format!("/v1/topics/{topic}/messages");
    spec.call(
        node,
        "POST",
        Some(MSGS),
        &path,
        headers,
        Some(body.to_vec()),
    )
    .await
}

/// Health endpoints, and every metric README §4.5 lists.
async fn check_health(spec: &OpenApi, node: &Node) {
    // Health.
    for path in ["/healthz", "/readyz", "/metrics"] {
        expect(&spec.get(node, path, path).await, 200, None, path);
    }
    // Every metric README §4.5 lists is exported.
    let metrics = spec.get(node, "/metrics", "/metrics").await.body;
    let metrics = metrics.as_str().expect("metrics text");
    let readme = std::fs::read_to_string(spec_path("README.md")).unwrap();
    let listed = readme
        .split("Metrics exported:")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .expect("README lists the metrics");
    let names: BTreeSet<&str> = listed
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|m| m.split('{').next().unwrap())
        .collect();
    assert!(names.len() > 10, "{names:?}");
    for name in names {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{', '_'])),
            "README lists {name}, /metrics does not export it"
        );
    }
}

/// Single publishes (seqs 1–4 of `orders.eu`) and every refused one.
async fn check_publishes(spec: &OpenApi, node: &Node) {
    // Publish one.
    let r = publish_one(spec, node, "orders.eu", JSON, br#"{"n":1}"#).await;
    expect(&r, 200, None, "publish json");
    assert_eq!(r.body, json!({"topic":"orders.eu","seq":1}));
    let r = publish_one(spec, node, "orders.eu", TEXT, b"hello").await;
    expect(&r, 200, None, "publish text");
    let r = publish_one(spec, node, "orders.eu", JSON, b"null").await;
    expect(&r, 200, None, "publish null");
    for _ in 0..2 {
        let r = publish_one(spec, node, "orders.eu", JSON_ONCE, br#"{"once":true}"#).await;
        expect(&r, 200, None, "idempotent publish");
        assert_eq!(r.body["seq"], 4, "a repeat returns the first seq");
    }
    let too_big = vec![b'1'; 70 * 1024];
    let bad_publishes: [(&str, Headers, &[u8], u16, &str); 8] = [
        ("a..b", JSON, b"1", 400, "invalid_topic"),
        ("orders.*", JSON, b"1", 400, "invalid_topic"),
        ("orders.%3E", JSON, b"1", 400, "invalid_topic"),
        ("a", JSON, b"{oops", 400, "bad_request"),
        ("a", JSON, b"", 400, "bad_request"),
        ("a", TEXT, b"\xff\xfe", 400, "bad_request"),
        (
            "a",
            &[("idempotency-key", "has space")],
            b"x",
            400,
            "bad_request",
        ),
        ("a", JSON, &too_big, 413, "payload_too_large"),
    ];
    for (topic, headers, body, status, code) in bad_publishes {
        let path = format!("/v1/topics/{topic}/messages");
        let r = spec
            .call(
                node,
                "POST",
                Some(MSGS),
                &path,
                headers,
                Some(body.to_vec()),
            )
            .await;
        expect(&r, status, Some(code), &path);
    }
}

/// Batches (seqs 5–6 of `orders.eu`), a repeated batch, refused ones.
async fn check_batches(spec: &OpenApi, node: &Node) {
    // Batch publish.
    let batch = json!([
        {"topic":"orders.eu","data":{"b":1}},
        {"topic":"orders.us","data":null,"idempotency_key":"own-key"},
        {"topic":"orders.eu","data":[2],"idempotency_key":null}
    ]);
    let mut answers = Vec::new();
    for _ in 0..2 {
        let r = spec
            .call(
                node,
                "POST",
                Some(BATCH),
                BATCH,
                &[
                    ("content-type", "application/json"),
                    ("idempotency-key", "batch-1"),
                ],
                Some(batch.to_string().into_bytes()),
            )
            .await;
        expect(&r, 200, None, "batch");
        answers.push(r.body);
    }
    assert_eq!(
        answers[0],
        json!([{"topic":"orders.eu","seq":5},{"topic":"orders.us","seq":1},{"topic":"orders.eu","seq":6}])
    );
    assert_eq!(
        answers[1], answers[0],
        "a repeated batch with the same key stores nothing"
    );
    let big_item = json!([{"topic":"a","data":"x".repeat(70 * 1024)}]);
    let huge = Value::Array(
        (0..20)
            .map(|_| json!({"topic":"a","data":"x".repeat(60 * 1024)}))
            .collect(),
    );
    let bad_batches: Vec<(Value, u16, &str)> = [
        (r#"{}"#, 400, "bad_request"),
        (r#"[]"#, 400, "bad_request"),
        (r#"[{"topic":"a"}]"#, 400, "bad_request"),
        (
            r#"[{"topic":"a","data":1,"extra":true}]"#,
            400,
            "bad_request",
        ),
        (
            r#"[{"topic":"a","data":1,"idempotency_key":""}]"#,
            400,
            "bad_request",
        ),
        (
            r#"[{"topic":"a","data":1},{"topic":"b.*","data":2}]"#,
            400,
            "invalid_topic",
        ),
    ]
    .into_iter()
    .map(|(body, status, code)| (serde_json::from_str(body).unwrap(), status, code))
    .chain([
        (big_item, 413, "payload_too_large"),
        (huge, 413, "payload_too_large"),
    ])
    .collect();
    for (body, status, code) in bad_batches {
        let r = spec.post_json(node, BATCH, BATCH, &body).await;
        let shown: String = body.to_string().chars().take(80).collect();
        expect(&r, status, Some(code), &format!("batch {shown}"));
    }
}

/// History, with a gap and with history switched off.
async fn check_history(spec: &OpenApi, node: &Node) {
    // History.
    let r = spec
        .get(node, MSGS, "/v1/topics/orders.eu/messages?since=1&limit=2")
        .await;
    expect(&r, 200, None, "history");
    assert_eq!(r.body["messages"].as_array().unwrap().len(), 2);
    assert_eq!(
        (r.body["first_seq"].as_u64(), r.body["last_seq"].as_u64()),
        (Some(1), Some(6))
    );
    let r = spec
        .get(node, MSGS, "/v1/topics/never.published/messages")
        .await;
    assert_eq!(r.body, json!({"messages":[],"first_seq":1,"last_seq":0}));
    trimmed_topic(node, "gap.h").await;
    let r = spec.get(node, MSGS, "/v1/topics/gap.h/messages").await;
    assert_eq!(
        (r.body["first_seq"].as_u64(), r.body["last_seq"].as_u64()),
        (Some(4), Some(5))
    );
    for (path, code) in [
        ("/v1/topics/orders.%3E/messages", "invalid_topic"),
        ("/v1/topics/orders.*/messages", "invalid_topic"),
        ("/v1/topics/a/messages?since=x", "bad_request"),
        ("/v1/topics/a/messages?since=-1", "bad_request"),
        ("/v1/topics/a/messages?foo=1", "bad_request"),
    ] {
        expect(&spec.get(node, MSGS, path).await, 400, Some(code), path);
    }
    // History switched off for a namespace (`quiet`): 404.
    let r = spec.get(node, MSGS, "/v1/topics/quiet.x/messages").await;
    expect(&r, 404, Some("not_found"), "history off");
}

/// `traceparent` on publishes, batches and stored envelopes.
async fn check_trace_context(spec: &OpenApi, node: &Node) {
    // Trace context: a valid traceparent is carried and echoed, an invalid
    // one ignored; a batch carries it into every item.
    const TRACED: Headers = &[
        ("content-type", "application/json"),
        ("traceparent", TRACEPARENT),
    ];
    let r = publish_one(spec, node, "trace.t", TRACED, b"1").await;
    expect(&r, 200, None, "publish with traceparent");
    assert_eq!(
        r.headers.get("traceparent").and_then(|v| v.to_str().ok()),
        Some(TRACEPARENT)
    );
    let r = publish_one(
        spec,
        node,
        "trace.t",
        &[
            ("content-type", "application/json"),
            ("traceparent", "00-zz-11-01"),
        ],
        b"2",
    )
    .await;
    expect(&r, 200, None, "publish with an invalid traceparent");
    assert!(r.headers.get("traceparent").is_none(), "{:?}", r.headers);
    let r = spec
        .call(
            node,
            "POST",
            Some(BATCH),
            BATCH,
            TRACED,
            Some(br#"[{"topic":"trace.t","data":3},{"topic":"trace.u","data":4}]"#.to_vec()),
        )
        .await;
    expect(&r, 200, None, "batch with traceparent");
    assert_eq!(
        r.headers.get("traceparent").and_then(|v| v.to_str().ok()),
        Some(TRACEPARENT),
        "the batch answer echoes the carried context"
    );
    let r = spec.get(node, MSGS, "/v1/topics/trace.t/messages").await;
    let carried: Vec<&Value> = r.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["traceparent"])
        .collect();
    assert_eq!(
        carried,
        [&json!(TRACEPARENT), &Value::Null, &json!(TRACEPARENT)]
    );
    let raw = get_text(node, "/v1/topics/trace.u/messages").await;
    assert!(
        raw.contains(&format!(",\"traceparent\":\"{TRACEPARENT}\",\"data\":4}}")),
        "traceparent sits between ts and data: {raw}"
    );
}
