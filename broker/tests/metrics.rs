//! `/metrics` parses as Prometheus text with a real parser
//! (`prometheus-parse`) plus the format rules that parser lets slide, and
//! its counters move with traffic.

mod common;

use std::collections::HashMap;

use common::*;
use prometheus_parse::{Scrape, Value as Sample};
use serde_json::json;

/// Scrapes `/metrics`, checks the exposition rules, and returns the samples
/// by `name{label=value,...}`.
async fn scrape(node: &Node) -> HashMap<String, f64> {
    let res = http().get(node.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = res.text().await.unwrap();
    check_exposition(&text);
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses");
    let mut out = HashMap::new();
    for s in &scrape.samples {
        let mut labels: Vec<_> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let key = if labels.is_empty() {
            s.metric.clone()
        } else {
            format!("{}{{{}}}", s.metric, labels.join(","))
        };
        let value = match &s.value {
            Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v) => *v,
            Sample::Histogram(buckets) => {
                // Cumulative buckets never decrease.
                assert!(
                    buckets.windows(2).all(|w| w[0].count <= w[1].count),
                    "{}: {buckets:?}",
                    s.metric
                );
                buckets.last().map_or(0.0, |b| b.count)
            }
            Sample::Summary(_) => panic!("no summaries expected"),
        };
        out.insert(key, value);
    }
    assert!(!scrape.docs.is_empty(), "HELP lines are parsed");
    out
}

/// Rules of the text format: every family has HELP and TYPE before its
/// samples, names are valid, counters end in `_total`, no family twice.
fn check_exposition(text: &str) {
    let valid = |n: &str| {
        let mut chars = n.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helped = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(helped.insert(name.to_string()), "HELP twice for {name}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(valid(name), "bad metric name {name}");
            assert!(helped.contains(name), "TYPE before HELP for {name}");
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "{name}: {kind}"
            );
            if kind == "counter" {
                assert!(
                    name.ends_with("_total"),
                    "counter {name} must end in _total"
                );
            }
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "TYPE twice for {name}"
            );
        } else if !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
                })
                .unwrap_or(name);
            assert!(types.contains_key(family), "sample {name} has no TYPE");
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad value in {line:?}");
        }
    }
}

#[tokio::test]
async fn metrics_parse_and_move_with_traffic() {
    let node = Node::start(&[]);
    let before = scrape(&node).await;
    for family in [
        "herald_connections{transport=ws}",
        "herald_subscriptions",
        "herald_messages_published_total",
        "herald_messages_delivered_total{transport=sse}",
        "herald_slow_consumer_actions_total",
        "herald_slow_consumers_total",
        "herald_publish_ack_seconds",
        "herald_log_commit_seconds",
        "herald_log_disk_bytes",
        "herald_log_staged_bytes",
        "herald_retention_trimmed_messages_total",
        "herald_cluster_members",
        "herald_nats_connected",
        "herald_presence_clients",
        "herald_http_responses_total{class=4xx}",
        "herald_ready",
    ] {
        assert!(before.contains_key(family), "missing {family}");
    }
    assert_eq!(before["herald_cluster_members"], 1.0);
    assert_eq!(before["herald_ready"], 1.0);

    let mut ws = node.ws().await;
    ws.subscribe("m.t").await;
    for i in 0..5 {
        let (status, _) = publish(&node, "m.t", &json!(i)).await;
        assert_eq!(status, 200);
    }
    assert_eq!(ws.messages(5).await.len(), 5);
    // A 400 and a 405.
    let (status, _) = publish(&node, "m.*", &json!(1)).await;
    assert_eq!(status, 400);
    let res = http().delete(node.url("/v1/publish")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "POST");

    let after = scrape(&node).await;
    let moved = |k: &str| after[k] - before[k];
    assert_eq!(moved("herald_messages_published_total"), 5.0);
    assert_eq!(moved("herald_messages_delivered_total{transport=ws}"), 5.0);
    assert_eq!(
        moved("herald_publish_ack_seconds"),
        5.0,
        "one observation per publish"
    );
    assert!(moved("herald_log_commit_seconds") >= 1.0);
    assert_eq!(after["herald_connections{transport=ws}"], 1.0);
    assert_eq!(after["herald_subscriptions"], 1.0);
    assert_eq!(after["herald_presence_clients"], 1.0);
    assert_eq!(after["herald_topics"], 1.0);
    assert_eq!(moved("herald_bad_requests_total"), 1.0);
    assert!(moved("herald_http_responses_total{class=4xx}") >= 2.0);
    assert!(moved("herald_http_responses_total{class=2xx}") >= 5.0);
    drop(ws);
}
