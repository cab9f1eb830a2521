//! The dashboard (`/dashboard`, its embedded assets) and the stats it feeds
//! on (`/v1/stats`, `/v1/stats/stream`), against the real binary.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

const API_KEY: &str = "dashboard-test-key";
const SECRET: &str = "dashboard-test-secret-0123456789abcdef";

async fn get(node: &Node, path: &str) -> (u16, String, reqwest::header::HeaderMap) {
    let res = http().get(node.url(path)).send().await.expect("GET");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, res.text().await.expect("body"), headers)
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

async fn stats(node: &Node) -> Value {
    let (status, body) = get_json(node, "/v1/stats").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Polls `/v1/stats` until `done` holds (or fails after [`TIMEOUT`]).
async fn eventually(node: &Node, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let s = stats(node).await;
        if done(&s) {
            return s;
        }
        assert!(tokio::time::Instant::now() < deadline, "never: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads `event: stats` blocks from `/v1/stats/stream?{query}`.
struct StatsStream {
    stream:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
    pub pings: usize,
}

impl StatsStream {
    async fn open(node: &Node, query: &str) -> StatsStream {
        let res = reqwest::Client::new()
            .get(node.url(&format!("/v1/stats/stream?{query}")))
            .send()
            .await
            .expect("stream request");
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        assert_eq!(res.headers()["cache-control"], "no-cache");
        StatsStream {
            stream: Box::pin(res.bytes_stream()),
            buf: String::new(),
            pings: 0,
        }
    }

    /// The next snapshot (skipping the opening `retry:` and pings).
    async fn next(&mut self) -> Value {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let block = block.trim_end();
                if block == ": ping" {
                    self.pings += 1;
                    continue;
                }
                if block.starts_with("retry: ") {
                    continue;
                }
                let mut lines = block.lines();
                assert_eq!(lines.next(), Some("event: stats"), "{block:?}");
                let data = lines
                    .next()
                    .and_then(|l| l.strip_prefix("data: "))
                    .unwrap_or_else(|| panic!("no data in {block:?}"));
                assert_eq!(lines.next(), None, "{block:?}");
                return serde_json::from_str(data).expect("stats data is JSON");
            }
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(Some(Ok(chunk))) => self
                    .buf
                    .push_str(std::str::from_utf8(&chunk).expect("utf-8")),
                other => panic!("stats stream ended or stalled: {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn dashboard_page_serves_its_embedded_assets() {
    let node = Node::start(&[]);
    let (status, html, headers) = get(&node, "/dashboard").await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
    let csp = header(&headers, "content-security-policy");
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains(r#"<script src="dashboard/app.js""#), "{html}");
    assert!(html.contains(r#"href="dashboard/style.css""#), "{html}");
    for id in [
        "conn-ws",
        "conn-sse",
        "conn-poll",
        "subscriptions",
        "topics",
        "published-total",
        "publish-rate",
        "delivery-rate",
        "slow-actions-total",
        "slow-actions-rate",
        "chart-publish-path",
        "chart-delivery-path",
        "nodes",
    ] {
        assert!(
            html.contains(&format!("data-testid=\"{id}\"")),
            "no {id} in the page"
        );
    }

    // The assets are served byte for byte from the binary.
    for (path, file, ct) in [
        (
            "/dashboard/app.js",
            include_str!("../src/http/dashboard/app.js"),
            "text/javascript; charset=utf-8",
        ),
        (
            "/dashboard/style.css",
            include_str!("../src/http/dashboard/style.css"),
            "text/css; charset=utf-8",
        ),
    ] {
        let (status, body, headers) = get(&node, path).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(header(&headers, "content-type"), ct, "{path}");
        assert_eq!(body, file, "{path}");
    }
    let (_, js, _) = get(&node, "/dashboard/app.js").await;
    assert!(js.contains("new EventSource(") && js.contains("v1/stats/stream"));

    // Only GET; nothing else under /dashboard.
    let res = http()
        .post(node.url("/dashboard"))
        .send()
        .await
        .expect("POST");
    assert_eq!(res.status(), 405);
    let (status, _, _) = get(&node, "/dashboard/missing.js").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn stats_snapshot_follows_traffic() {
    let node = Node::start(&[]);
    let before = stats(&node).await;
    assert_eq!(before["ready"], true);
    assert_eq!(before["cluster"], false);
    let me = before["node"].as_str().expect("node id").to_string();
    let nodes = before["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1, "{before}");
    assert_eq!(
        (
            &nodes[0]["id"],
            &nodes[0]["self"],
            &nodes[0]["live"],
            &nodes[0]["ready"]
        ),
        (&json!(me), &json!(true), &json!(true), &json!(true))
    );
    assert_eq!(nodes[0]["stats"]["age_ms"], 0, "{before}");
    assert_eq!(before["totals"]["nodes"], 1, "{before}");
    assert_eq!(before["top_topics"], json!([]), "{before}");
    assert_eq!(before["published_total"], 0);
    assert_eq!(before["topics"], 0);
    assert_eq!(before["connections"], json!({"ws":0,"sse":0,"poll":0}));

    let mut ws = node.ws().await;
    ws.subscribe("dash.*").await;
    for i in 0..3 {
        let (status, _) = publish(&node, &format!("dash.t{}", i % 2), &json!({"i": i})).await;
        assert_eq!(status, 200);
    }
    ws.messages(3).await;

    let after = stats(&node).await;
    assert_eq!(after["published_total"], 3, "{after}");
    assert_eq!(after["topics"], 2, "{after}");
    assert_eq!(after["connections"]["ws"], 1, "{after}");
    assert_eq!(after["subscriptions"], 1, "{after}");
    assert_eq!(after["delivered_total"]["ws"], 3, "{after}");
    assert!(after["ts"].as_u64() >= before["ts"].as_u64());
    assert_eq!(after["slow_consumer_actions_total"], 0);
    // On a single node the totals are this node's numbers.
    for key in [
        "published_total",
        "subscriptions",
        "connections",
        "delivered_total",
    ] {
        assert_eq!(after["totals"][key], after[key], "{key}: {after}");
    }
    // The busiest topics appear with the next one-second sample.
    let rows = eventually(&node, |s| s["top_topics"].as_array().unwrap().len() == 2).await;
    let rows = rows["top_topics"].as_array().unwrap().clone();
    let t0 = rows
        .iter()
        .find(|r| r["topic"] == "dash.t0")
        .expect("dash.t0 row");
    assert_eq!(
        (&t0["last_seq"], &t0["subscribers"]),
        (&json!(2), &json!(1)),
        "{t0}"
    );
    assert!(
        t0["rate"].as_f64().is_some() && t0["last_ts"].as_u64() > Some(0),
        "{t0}"
    );

    let (status, body) = get_json(&node, "/v1/stats?topic=a").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("bad_request"))
    );
}

#[tokio::test]
async fn stats_stream_delivers_snapshots() {
    let node = Node::start(&[]);
    let mut stream = StatsStream::open(&node, "interval_ms=200").await;
    let first = stream.next().await;
    assert_eq!(first["published_total"], 0);
    // Not a subscriber: the stats stream is not counted as an SSE connection.
    assert_eq!(first["connections"]["sse"], 0);
    let (status, _) = publish(&node, "dash.stream", &json!(1)).await;
    assert_eq!(status, 200);
    let mut last = stream.next().await;
    assert!(last["ts"].as_u64() > first["ts"].as_u64());
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while last["published_total"] != 1 {
        assert!(tokio::time::Instant::now() < deadline, "{last}");
        last = stream.next().await;
    }

    let res = http()
        .get(node.url("/v1/stats/stream?interval_ms=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn stats_stream_sends_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, "[transport]\nsse_heartbeat = \"300ms\"\n").unwrap();
    let node = Node::start(&["--config", config.to_str().unwrap()]);
    let mut stream = StatsStream::open(&node, "interval_ms=5000").await;
    stream.next().await; // the first snapshot comes at once
    let reader = async {
        while stream.pings == 0 {
            stream.next().await;
        }
    };
    // The next snapshot is 5 s away; a ping must arrive before it.
    let _ = tokio::time::timeout(Duration::from_millis(2500), reader).await;
    assert!(stream.pings > 0, "no `: ping` within 2.5 s");
}

#[tokio::test]
async fn stats_need_full_read_access_when_auth_is_on() {
    let node = Node::start(&["--api-key", API_KEY, "--jwt-secret", SECRET]);
    // The page itself holds no data.
    let (status, _, _) = get(&node, "/dashboard").await;
    assert_eq!(status, 200);
    let (status, _, _) = get(&node, "/dashboard/app.js").await;
    assert_eq!(status, 200);

    let (status, body) = get_json(&node, "/v1/stats").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("unauthorized"))
    );
    let (status, _) = get_json(&node, "/v1/stats/stream").await;
    assert_eq!(status, 401);

    let res = http()
        .get(node.url("/v1/stats"))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = |subscribe: &[&str]| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &json!({"sub": "ops", "exp": exp, "subscribe": subscribe}),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let narrow = token(&["orders.>"]);
    let (status, body) = get_json(&node, &format!("/v1/stats?token={narrow}")).await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")));
    let wide = token(&[">"]);
    let (status, _) = get_json(&node, &format!("/v1/stats?token={wide}")).await;
    assert_eq!(status, 200);
    // EventSource cannot set headers: the stream takes ?token= (JWT or API key).
    let mut stream = StatsStream::open(&node, &format!("token={API_KEY}&interval_ms=200")).await;
    stream.next().await;
    stream.next().await;
}

#[tokio::test]
async fn stats_list_the_live_cluster_members() {
    let nats = NatsServer::start();
    let mut nodes = start_cluster(&nats, 2, &[]).await;
    let s = stats(&nodes[0]).await;
    assert_eq!(s["cluster"], true);
    assert_eq!(s["node"], "n1");
    let members: Vec<Value> = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| json!({"id": n["id"], "self": n["self"], "live": n["live"], "ready": n["ready"]}))
        .collect();
    assert_eq!(
        members,
        [
            json!({"id": "n1", "self": true, "live": true, "ready": true}),
            json!({"id": "n2", "self": false, "live": true, "ready": null}),
        ]
    );
    // A publish through n2 is replicated to n1, whose topic count follows.
    let (status, _) = publish(&nodes[1], "dash.cluster", &json!(1)).await;
    assert_eq!(status, 200);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while stats(&nodes[0]).await["topics"] != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "replica never counted the topic"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A member that stops leaves the list.
    nodes[1].sigterm();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let s = stats(&nodes[0]).await;
        if s["nodes"].as_array().map(Vec::len) == Some(1) {
            assert_eq!(s["nodes"][0]["id"], "n1");
            // Its numbers leave the totals with it.
            assert_eq!(s["totals"]["nodes"], 1, "{s}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A publish through one node shows in every node's stats: totals summed
/// over the nodes (the owner counts the publish, the subscriber's node the
/// delivery), each node's own numbers, and the topic's row with the
/// cluster's subscribers.
#[tokio::test]
async fn stats_add_up_over_the_cluster() {
    let nats = NatsServer::start();
    let nodes = start_cluster(&nats, 3, &[]).await;
    // Subscribers on two nodes: 2 on n3, 1 on n2.
    const N: u64 = 12;
    let mut subs = Vec::new();
    for (i, pattern, expect) in [(2, "cstats.>", 12), (2, "cstats.a", 8), (1, "cstats.*", 12)] {
        let mut ws = nodes[i].ws().await;
        ws.subscribe(pattern).await;
        subs.push((ws, expect));
    }
    for i in 0..N {
        let topic = if i % 3 == 0 { "cstats.b" } else { "cstats.a" };
        let (status, body) = publish(&nodes[0], topic, &json!(i)).await;
        assert_eq!(status, 200, "{body}");
    }
    for (ws, expect) in &mut subs {
        ws.messages(*expect).await;
    }
    for node in &nodes {
        let s = eventually(node, |s| {
            s["totals"]["nodes"] == 3
                && s["totals"]["published_total"] == N
                && s["totals"]["delivered_total"]["ws"] == 2 * N + 8
                && s["top_topics"].as_array().unwrap().iter().any(|r| {
                    r["topic"] == "cstats.a" && r["last_seq"] == 8 && r["subscribers"] == 3
                })
        })
        .await;
        assert_eq!(s["totals"]["connections"]["ws"], 3, "{s}");
        assert_eq!(s["totals"]["subscriptions"], 3, "{s}");
        let b = s["top_topics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["topic"] == "cstats.b")
            .cloned()
            .expect("cstats.b row");
        assert_eq!(
            (&b["last_seq"], &b["subscribers"]),
            (&json!(4), &json!(2)),
            "{s}"
        );
        // Every member is listed with its own numbers; they add up.
        let listed = s["nodes"].as_array().unwrap();
        assert_eq!(listed.len(), 3, "{s}");
        let sum = |key: &str| -> u64 {
            listed
                .iter()
                .map(|n| n["stats"][key].as_u64().expect("every node has stats"))
                .sum()
        };
        assert_eq!(sum("published_total"), N, "{s}");
        assert_eq!(sum("delivered_total"), 2 * N + 8, "{s}");
        assert_eq!(sum("connections"), 3, "{s}");
    }
}
