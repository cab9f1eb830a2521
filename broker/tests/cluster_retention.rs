//! A node that was down while its peers' retention removed messages it never
//! got (and whose own copy of some of them was damaged meanwhile): it must
//! still catch up and report ready, account for the removed seqs as its own
//! retention would (a gap for a resuming client, never a reused seq), and
//! continue the topics with the cluster.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Publishes through `node` until one attempt is acknowledged (the topic's
/// owner may be the node that is down, until another claims it); returns
/// the seq.
async fn publish_acked(node: &Node, topic: &str, data: Value) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = publish(node, topic, &data).await;
        if status == 200 {
            return body["seq"].as_u64().expect("seq");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{topic}: publish refused for 30 s: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `(first_seq, last_seq, seqs)` of a topic's history on `node`.
async fn retained(node: &Node, topic: &str) -> (u64, u64, Vec<u64>) {
    let (messages, first, last) = full_history(node, topic).await;
    let seqs = messages
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    (first, last, seqs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_behind_what_its_peers_retention_removed_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        r#"
[log]
retention_interval = "200ms"
[retention]
max_messages = 10
[namespaces.aged.retention]
max_age = "1s"
max_messages = 0
"#,
    )
    .unwrap();
    // n3 keeps more history than its peers (default retention): what they
    // removed is gone from the cluster all the same.
    let loose = dir.path().join("loose.toml");
    std::fs::write(&loose, "[log]\nretention_interval = \"200ms\"\n").unwrap();
    let nats = NatsServer::start();
    let url = nats.url();
    let mut nodes: Vec<Node> = [("n1", &config), ("n2", &config), ("n3", &loose)]
        .iter()
        .map(|(id, config)| {
            Node::start(&[
                "--nats",
                &url,
                "--node-id",
                id,
                "--config",
                config.to_str().unwrap(),
            ])
        })
        .collect();
    for node in &nodes {
        wait_ready(node, TIMEOUT).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    for i in 1..=5 {
        assert_eq!(publish_acked(&nodes[0], "kept.a", json!(i)).await, i);
    }
    // kept.b runs to 45 while n3 is up: n3 keeps all of it.
    for i in 1..=45 {
        assert_eq!(publish_acked(&nodes[1], "kept.b", json!(i)).await, i);
    }
    for i in 1..=3 {
        assert_eq!(publish_acked(&nodes[0], "aged.a", json!(i)).await, i);
    }
    // n3 holds them before it goes down.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while retained(&nodes[2], "kept.a").await.1 < 5
        || retained(&nodes[2], "aged.a").await.1 < 3
        || retained(&nodes[2], "kept.b").await.1 < 45
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "n3 never got the first messages"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nodes[2].kill9();

    // While n3 is down: kept.a runs to 45 (its peers keep 36..=45) and
    // every message of aged.a ages out on its peers.
    for i in 6..=45 {
        assert_eq!(publish_acked(&nodes[0], "kept.a", json!(i)).await, i);
    }
    for i in 4..=6 {
        assert_eq!(publish_acked(&nodes[1], "aged.a", json!(i)).await, i);
    }
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    for node in &nodes[..2] {
        loop {
            let kept = retained(node, "kept.a").await;
            let aged = retained(node, "aged.a").await;
            let kept_b = retained(node, "kept.b").await.0;
            if kept.0 == 36 && aged.2.is_empty() && kept_b == 36 {
                assert_eq!((kept.1, aged.1), (45, 6));
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "retention did not trim on {}: {kept:?} {aged:?}",
                node.addr
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // And n3's own copies of kept.a and kept.b 2..=3 are damaged while it
    // is down: holes its peers cannot fill any more (their retention
    // removed those seqs). kept.a's is passed over by the catch-up; kept.b
    // is not behind, so its hole is the repair's to settle.
    with_log_tree(&nodes[2].data_dir, |tree| {
        for topic in ["kept.a", "kept.b"] {
            let removed =
                herald::log::tamper::remove_messages(&nodes[2].data_dir, tree, topic, 2..=3)
                    .unwrap();
            assert_eq!(removed, 2, "n3 held {topic} 2..=3");
        }
    });

    nodes[2].kill9_and_restart();
    wait_ready(&nodes[2], Duration::from_secs(30)).await;
    let n3 = &nodes[2];
    assert!(
        n3.logs()
            .lines()
            .any(|l| l.contains("range=kept.b seqs 2..=3")
                && l.contains("the peer's retention removed these seqs; removed here too")),
        "kept.b's damaged range was settled by the peers' retention: {}",
        n3.logs()
    );
    assert_eq!(
        retained(n3, "kept.b").await,
        (4, 45, (4..=45).collect()),
        "n3 keeps what it holds above the removed range"
    );
    assert_eq!(
        retained(n3, "kept.a").await,
        (36, 45, (36..=45).collect()),
        "n3 keeps what its peers kept; log:\n{}",
        n3.logs()
    );
    let (_, aged_last, aged_seqs) = retained(n3, "aged.a").await;
    assert_eq!(
        (aged_last, aged_seqs),
        (6, vec![]),
        "aged.a ran to 6 and aged out"
    );

    // A client resuming on n3 from before the removed range is told.
    let mut ws = n3.ws().await;
    let (reply, _) = ws
        .request(json!({"op":"subscribe","topic":"kept.a","since":3}), "s")
        .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    assert_eq!(
        ws.recv().await,
        json!({"type":"gap","topic":"kept.a","from":4,"to":35})
    );
    assert_sequence(&ws.messages(10).await, "kept.a", 36, 45);

    // The topics continue: no seq is given out twice, and every node
    // stores the same messages.
    assert_eq!(publish_acked(n3, "kept.a", json!(46)).await, 46);
    assert_eq!(publish_acked(n3, "aged.a", json!(7)).await, 7);
    let live = ws.messages(1).await;
    assert_eq!(live[0]["seq"], 46);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let mut views = Vec::new();
        for node in &nodes {
            views.push(retained(node, "kept.a").await);
        }
        if views.iter().all(|v| v.1 == 46) {
            let payloads: Vec<Vec<Value>> = {
                let mut all = Vec::new();
                for node in &nodes {
                    let (messages, _, _) = full_history(node, "kept.a").await;
                    all.push(
                        messages
                            .into_iter()
                            .filter(|m| m["seq"].as_u64() >= Some(40))
                            .collect(),
                    );
                }
                all
            };
            assert!(
                payloads.iter().all(|p| p == &payloads[0]),
                "nodes differ: {payloads:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every node reached 46: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
