//! 429 and 503 from a node with small `[limits]`.

use super::*;

/// 429 and 503 from small limits against openapi.yaml.
pub(crate) async fn check_limit_responses(spec: &OpenApi) {
    let streams = [
        ("/v1/ws", "/v1/ws", UPGRADE),
        ("/v1/sse", "/v1/sse?topic=a", &[] as Headers),
        ("/v1/poll", "/v1/poll?topic=a&timeout_ms=0", &[]),
    ];

    // One connection per client address, one publish per ~17 minutes.
    let dir = tempfile::tempdir().unwrap();
    let node = node_with_config(
        dir.path(),
        "[limits]\nmax_connections_per_ip = 1\npublish_rate_per_client = 0.001\npublish_burst = 1\n",
    );
    let held = open_sse(spec, &node, "topic=held", None)
        .await
        .unwrap_or_else(|r| panic!("first connection refused: {}", r.body));
    for (template, path, headers) in streams {
        let r = spec
            .call(&node, "GET", Some(template), path, headers, None)
            .await;
        expect(
            &r,
            429,
            Some("rate_limited"),
            &format!("{path}, second connection"),
        );
    }
    drop(held);
    const MSGS: &str = "/v1/topics/{topic}/messages";
    let path = "/v1/topics/rated/messages";
    let r = spec
        .call(&node, "POST", Some(MSGS), path, JSON, Some(b"1".to_vec()))
        .await;
    expect(&r, 200, None, "first publish");
    let r = spec
        .call(&node, "POST", Some(MSGS), path, JSON, Some(b"2".to_vec()))
        .await;
    expect(&r, 429, Some("rate_limited"), "second publish");
    let r = spec
        .call(
            &node,
            "POST",
            Some("/v1/publish"),
            "/v1/publish",
            JSON,
            Some(br#"[{"topic":"rated","data":3}]"#.to_vec()),
        )
        .await;
    expect(&r, 429, Some("rate_limited"), "batch");
    assert_eq!(metric(&node, "herald_connections_refused_total").await, 3);
    assert_eq!(metric(&node, "herald_rate_limited_total").await, 2);
    let (_, history) = get_json(&node, "/v1/topics/rated/messages").await;
    assert_eq!(history["last_seq"], 1, "refused publishes store nothing");

    // One connection per node.
    let dir = tempfile::tempdir().unwrap();
    let node = node_with_config(dir.path(), "[limits]\nmax_connections = 1\n");
    let _held = open_sse(spec, &node, "topic=held", None)
        .await
        .unwrap_or_else(|r| panic!("first connection refused: {}", r.body));
    for (template, path, headers) in streams {
        let r = spec
            .call(&node, "GET", Some(template), path, headers, None)
            .await;
        expect(&r, 503, Some("unavailable"), &format!("{path}, node full"));
    }
}
