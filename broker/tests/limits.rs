//! Issue 6 (limits): connection caps and publish rate limits, each with the
//! contract's error code and a metric.

mod common;

use common::*;
use serde_json::{json, Value};

fn config(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.toml");
    std::fs::write(&path, text).unwrap();
    let p = path.to_str().unwrap().to_string();
    (dir, p)
}

#[tokio::test]
async fn connection_caps_refuse_with_503_and_429() {
    let (_d, file) = config("[limits]\nmax_connections = 3\n");
    let node = Node::start(&["--config", &file]);
    let a = node.ws().await;
    let _b = node.ws().await;
    let _c = node.ws().await;
    match tokio_tungstenite::connect_async(node.ws_url("/v1/ws")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 503);
            let body: Value =
                serde_json::from_slice(res.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"]["code"], "unavailable");
        }
        other => panic!("fourth connection admitted: {:?}", other.map(|_| ())),
    }
    let (status, body) = get_json(&node, "/v1/poll?topic=x&timeout_ms=0").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("unavailable"))
    );
    // Plain REST calls are not connections in this sense.
    assert_eq!(publish(&node, "x", &json!(1)).await.0, 200);
    drop(a);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let _d2 = node.ws().await;
    assert!(metric(&node, "herald_connections_refused_total").await >= 2);

    let (_d3, file) = config("[limits]\nmax_connections_per_ip = 2\n");
    let node = Node::start(&["--config", &file]);
    let _x = node.ws().await;
    let _y = node.ws().await;
    let (status, body) = get_json(&node, "/v1/poll?topic=x&timeout_ms=0").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
}

#[tokio::test]
async fn publish_rates_are_enforced_per_connection_and_per_client() {
    let (_d, file) = config("[limits]\npublish_rate_per_connection = 5.0\npublish_rate_per_client = 5.0\npublish_burst = 5.0\n");
    let node = Node::start(&["--config", &file]);
    let mut ws = node.ws().await;
    let (mut acks, mut limited) = (0, 0);
    for i in 0..20 {
        let (reply, _) = ws
            .request(
                json!({"op":"publish","topic":"r.x","data":i}),
                &format!("p{i}"),
            )
            .await;
        match reply["type"].as_str() {
            Some("ack") => acks += 1,
            Some("error") if reply["code"] == "rate_limited" => limited += 1,
            _ => panic!("{reply}"),
        }
    }
    assert!((5..=7).contains(&acks), "{acks} acks");
    assert_eq!(acks + limited, 20);
    // The connection stays usable.
    ws.subscribe("r.y").await;

    let client = http();
    let mut statuses = Vec::new();
    for i in 0..20 {
        let res = client
            .post(node.url("/v1/topics/r.z/messages"))
            .json(&json!(i))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        if status == 429 {
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"]["code"], "rate_limited");
        }
        statuses.push(status);
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!((5..=7).contains(&ok), "{statuses:?}");
    assert!(metric(&node, "herald_rate_limited_total").await >= 20);
}

#[tokio::test]
async fn namespaces_can_lower_the_payload_limit() {
    let (_d, file) = config("[namespaces.tiny]\nmax_payload_bytes = 16\n");
    let node = Node::start(&["--config", &file]);
    let (status, body) =
        publish(&node, "tiny.x", &json!("this is longer than sixteen bytes")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    assert_eq!(publish(&node, "tiny.x", &json!("short")).await.0, 200);
    assert_eq!(
        publish(
            &node,
            "other.x",
            &json!("this is longer than sixteen bytes")
        )
        .await
        .0,
        200
    );
    let mut ws = node.ws().await;
    let (r, _) = ws
        .request(
            json!({"op":"publish","topic":"tiny.y","data":"x".repeat(40)}),
            "p",
        )
        .await;
    assert_eq!(r["code"], "payload_too_large");
    assert_eq!(metric(&node, "herald_payload_too_large_total").await, 2);
}
