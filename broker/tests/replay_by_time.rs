//! Replay by seq on patterns (`since`) and by time (`since_ts`) on every
//! transport, over topics whose oldest messages retention has removed: what
//! retention removed is a `gap`, then the retained messages in seq order,
//! then live ones — no duplicate, nothing skipped silently.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const TOPICS: [&str; 2] = ["r.a", "r.b"];

/// A node keeping 5 messages per topic of namespace `r`, with 10 published
/// to each of `r.a` and `r.b` (and trimmed to 6..=10). Returns the node and
/// the `ts` of each seq (the same seqs were published close together on
/// both topics, so seq `s` of each has a ts within a few ms).
async fn trimmed_node() -> (Node, tempfile::TempDir, Vec<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    std::fs::write(
        &file,
        "[log]\nretention_interval = \"100ms\"\n[namespaces.r.retention]\nmax_messages = 5\n",
    )
    .unwrap();
    let node = Node::start(&["--config", file.to_str().unwrap()]);
    for i in 1..=10 {
        for topic in TOPICS {
            assert_eq!(publish(&node, topic, &json!({ "i": i })).await.0, 200);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Retention runs every 100 ms: wait until both topics start at 6.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut done = true;
        for topic in TOPICS {
            let (_, page) = get_json(&node, &format!("/v1/topics/{topic}/messages?since=5")).await;
            done &= page["first_seq"] == 6;
        }
        if done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention never trimmed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, page) = get_json(&node, "/v1/topics/r.a/messages?since=5").await;
    let mut ts = vec![0; 11];
    for m in page["messages"].as_array().unwrap() {
        ts[m["seq"].as_u64().unwrap() as usize] = m["ts"].as_u64().unwrap();
    }
    (node, dir, ts)
}

/// Per topic: the seqs received and the gaps (from, to), in order.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    seqs: Vec<u64>,
    gaps: Vec<(u64, u64)>,
}

fn record(seen: &mut std::collections::BTreeMap<String, Seen>, kind: &str, v: &Value) {
    let topic = v["topic"].as_str().unwrap().to_string();
    let entry = seen.entry(topic).or_default();
    match kind {
        "message" => entry.seqs.push(v["seq"].as_u64().unwrap()),
        "gap" => entry
            .gaps
            .push((v["from"].as_u64().unwrap(), v["to"].as_u64().unwrap())),
        other => panic!("unexpected {other}: {v}"),
    }
}

/// Reads WebSocket frames until every topic has reached seq `last`.
async fn ws_until(ws: &mut Ws, last: u64) -> std::collections::BTreeMap<String, Seen> {
    let mut seen = std::collections::BTreeMap::new();
    while !TOPICS.iter().all(|t| {
        seen.get(*t)
            .is_some_and(|s: &Seen| s.seqs.last().is_some_and(|l| *l >= last))
    }) {
        let v = ws.recv().await;
        let kind = v["type"].as_str().unwrap().to_string();
        record(&mut seen, &kind, &v);
    }
    seen
}

fn expect(seqs: std::ops::RangeInclusive<u64>, gaps: &[(u64, u64)]) -> Seen {
    Seen {
        seqs: seqs.collect(),
        gaps: gaps.to_vec(),
    }
}

#[tokio::test]
async fn a_pattern_with_since_replays_each_topic_then_goes_live() {
    let (node, _dir, _) = trimmed_node().await;
    // since 0: what retention removed is a gap, then 6..=10, then live.
    let mut ws = node.ws().await;
    let (r, _) = ws
        .request(json!({"op":"subscribe","topic":"r.*","since":0}), "s")
        .await;
    assert_eq!(r["type"], "subscribed", "{r}");
    let seen = ws_until(&mut ws, 10).await;
    for topic in TOPICS {
        assert_eq!(seen[topic], expect(6..=10, &[(1, 5)]), "{topic}");
    }
    publish(&node, "r.a", &json!("live")).await;
    let live = ws.recv().await;
    assert_eq!(
        (live["topic"].as_str(), live["seq"].as_u64()),
        (Some("r.a"), Some(11))
    );
    ws.assert_silent(Duration::from_millis(300)).await;

    // since 7: each topic after 7.
    let mut ws = node.ws().await;
    ws.request(json!({"op":"subscribe","topic":"r.*","since":7}), "s")
        .await;
    let seen = ws_until(&mut ws, 10).await;
    assert_eq!(seen["r.b"], expect(8..=10, &[]));
    assert_eq!(seen["r.a"].seqs[..3], [8, 9, 10]);
    if seen["r.a"].seqs.len() < 4 {
        assert_eq!(ws.recv().await["seq"], 11, "then the live one");
    }
}

#[tokio::test]
async fn since_ts_starts_each_topic_at_that_time_on_every_transport() {
    let (node, _dir, ts) = trimmed_node().await;
    let at = ts[8];

    // WebSocket, a pattern and a concrete topic.
    let mut ws = node.ws().await;
    ws.request(json!({"op":"subscribe","topic":"r.*","since_ts":at}), "s")
        .await;
    let seen = ws_until(&mut ws, 10).await;
    assert_eq!(seen["r.a"], expect(8..=10, &[]));
    let mut ws = node.ws().await;
    ws.request(json!({"op":"subscribe","topic":"r.a","since_ts":at}), "s")
        .await;
    let got: Vec<u64> = ws
        .messages(3)
        .await
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(got, [8, 9, 10]);

    // SSE.
    let mut sse = Sse::open(&node, &format!("topic=r.*&since_ts={at}"), None).await;
    sse.read_hello().await;
    let mut seen = std::collections::BTreeMap::new();
    while seen.values().map(|s: &Seen| s.seqs.len()).sum::<usize>() < 6 {
        let Some((kind, v)) = sse.next_event(Duration::from_secs(5)).await else {
            panic!("no event after {seen:?}");
        };
        record(&mut seen, &kind, &v);
    }
    assert_eq!(seen["r.a"], expect(8..=10, &[]));
    assert_eq!(seen["r.b"], expect(8..=10, &[]));

    // Long-poll.
    let (status, page) = get_json(
        &node,
        &format!("/v1/poll?topic=r.b&since_ts={at}&timeout_ms=0"),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let seqs: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [8, 9, 10]);

    // History.
    let (_, page) = get_json(&node, &format!("/v1/topics/r.a/messages?since_ts={at}")).await;
    let seqs: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [8, 9, 10]);
    assert!(page.get("gaps").is_none(), "{page}");
}

#[tokio::test]
async fn a_time_before_the_retained_data_reports_what_retention_removed() {
    let (node, _dir, ts) = trimmed_node().await;
    let before = ts[6] - 1;

    let mut ws = node.ws().await;
    ws.request(
        json!({"op":"subscribe","topic":"r.*","since_ts":before}),
        "s",
    )
    .await;
    let seen = ws_until(&mut ws, 10).await;
    for topic in TOPICS {
        assert_eq!(seen[topic], expect(6..=10, &[(1, 5)]), "{topic}");
    }

    let (_, page) = get_json(
        &node,
        &format!("/v1/poll?topic=r.a&since_ts={before}&timeout_ms=0"),
    )
    .await;
    assert_eq!(
        page["gaps"],
        json!([{"topic":"r.a","from":1,"to":5}]),
        "{page}"
    );
    assert_eq!(page["messages"].as_array().unwrap().len(), 5);

    for query in [format!("since_ts={before}"), "since=0".to_string()] {
        let (_, page) = get_json(&node, &format!("/v1/topics/r.a/messages?{query}")).await;
        assert_eq!(
            page["gaps"],
            json!([{"topic":"r.a","from":1,"to":5}]),
            "{query}: {page}"
        );
        assert_eq!(page["messages"][0]["seq"], 6, "{query}");
    }
    let (status, _) = get_json(&node, "/v1/topics/r.a/messages?since=1&since_ts=1").await;
    assert_eq!(status, 400);
}
