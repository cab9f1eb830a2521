//! The dashboard, its assets and the stats endpoints against `openapi.yaml`.

use super::*;

/// The dashboard, its assets and the stats endpoints (README §4.6), auth
/// included, against openapi.yaml.
pub(crate) async fn check_dashboard_responses(spec: &OpenApi, node: &Node) {
    const STATS: &str = "/v1/stats";
    const STREAM: &str = "/v1/stats/stream";
    for path in [
        "/dashboard",
        "/dashboard/app.js",
        "/dashboard/style.css",
        STATS,
    ] {
        expect(&spec.get(node, path, path).await, 200, None, path);
        let r = spec.call(node, "POST", Some(path), path, &[], None).await;
        expect(&r, 405, Some("method_not_allowed"), path);
    }
    let r = spec
        .call(node, "PUT", Some(STREAM), STREAM, &[], None)
        .await;
    expect(&r, 405, Some("method_not_allowed"), STREAM);
    for (template, path) in [
        (STATS, "/v1/stats?topic=a"),
        (STREAM, "/v1/stats/stream?interval_ms=1"),
        (STREAM, "/v1/stats/stream?cursor=x"),
    ] {
        expect(
            &spec.get(node, template, path).await,
            400,
            Some("bad_request"),
            path,
        );
    }

    // The stream: `retry:`, then `stats` events whose data is documented.
    let res = http_stream(node, "/v1/stats/stream?interval_ms=100").await;
    let ct = content_type(res.headers());
    let media = spec
        .media("GET", Some(STREAM), res.status().as_u16(), ct.as_deref())
        .expect("the stream documents a body");
    let schema = resolve(&spec.root, &media["x-sse-events"]["stats"]);
    let mut stream = res.bytes_stream();
    let mut text = String::new();
    while text.matches("event: stats").count() < 2 {
        let chunk = tokio::time::timeout(TIMEOUT, stream.next())
            .await
            .expect("stats before the timeout")
            .expect("stream open")
            .expect("chunk");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let mut blocks = text.split("\n\n");
    assert_eq!(blocks.next(), Some("retry: 1000"));
    for block in blocks.filter(|b| b.starts_with("event:")) {
        let data = block
            .strip_prefix("event: stats\ndata: ")
            .unwrap_or_else(|| panic!("stats block {block:?}"));
        let data: Value = serde_json::from_str(data).expect("stats data is JSON");
        assert_valid(&schema, &data, Dialect::OpenApi, "SSE stats data");
    }

    // Auth on: 401 without credentials, 403 for narrower grants, an API key
    // or a token granting `>` pass.
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_node(dir.path(), "");
    let alice = alice();
    for (template, path) in [(STATS, STATS.to_string()), (STREAM, STREAM.to_string())] {
        expect(
            &spec.get(&auth, template, &path).await,
            401,
            Some("unauthorized"),
            &path,
        );
        let path = format!("{path}?token={alice}");
        expect(
            &spec.get(&auth, template, &path).await,
            403,
            Some("forbidden"),
            &path,
        );
    }
    let r = spec
        .call(
            &auth,
            "GET",
            Some(STATS),
            STATS,
            &[("x-api-key", API_KEY)],
            None,
        )
        .await;
    expect(&r, 200, None, "stats with an API key");
    let admin = mint(now_secs() + 600, &[">"], &[]);
    let path = format!("{STATS}?token={admin}");
    expect(
        &spec.get(&auth, STATS, &path).await,
        200,
        None,
        "stats with `>`",
    );
    let path = format!("{STREAM}?token={admin}");
    let res = http_stream(&auth, &path).await;
    assert_eq!(res.status(), 200, "stream with `>`");
    expect(
        &spec.get(&auth, "/dashboard", "/dashboard").await,
        200,
        None,
        "page, auth on",
    );
}

/// Starts a GET whose body is not read to the end.
pub(crate) async fn http_stream(node: &Node, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(node.url(path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}
