//! A new owner's claim copies what a replica holds beyond its own log: a
//! message the old owner sequenced and replicated but dropped unconfirmed
//! when the topic moved. Every other node must then reach that head too,
//! without waiting for the topic's next publish (there may be none): a
//! subscriber on the old owner would otherwise never get the message, and
//! the nodes' histories would differ.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// A topic that `n4` owns when it is a member and `n1` owns without it.
fn topic_moving_from_n1_to_n4() -> String {
    use herald_core::owner::owner;
    (0..)
        .map(|i| format!("claim.t{i}"))
        .find(|t| {
            owner(["n1", "n2", "n3", "n4"], t) == Some("n4")
                && owner(["n1", "n2", "n3"], t) == Some("n1")
        })
        .expect("some topic")
}

async fn post(node: &Node, topic: &str, data: Value, key: &str) -> (u16, Value) {
    let res = http()
        .post(node.url(&format!("/v1/topics/{topic}/messages")))
        .header("Idempotency-Key", key)
        .json(&data)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

async fn seqs(node: &Node, topic: &str) -> Vec<u64> {
    full_history(node, topic)
        .await
        .0
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

/// Waits until `node` holds exactly `want` of `topic`.
async fn wait_seqs(node: &Node, topic: &str, want: &[u64], limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    loop {
        let got = seqs(node, topic).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {} holds {got:?} of {topic}, expected {want:?}; log:\n{}",
            node.addr,
            node.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_brings_every_node_to_the_head_it_copied() {
    let dir = tempfile::tempdir().unwrap();
    // Two replica acks: with n3 paused, a message n2 stores stays
    // unconfirmed at its owner.
    let config = dir.path().join("acks.toml");
    std::fs::write(&config, "[cluster]\nmin_replica_acks = 2\n").unwrap();
    let config = config.to_str().unwrap().to_string();
    let nats = NatsServer::start();
    let url = nats.url();
    let start = |id: &str| Node::start(&["--nats", &url, "--node-id", id, "--config", &config]);
    let nodes: Vec<Node> = ["n1", "n2", "n3"].into_iter().map(start).collect();
    for node in &nodes {
        wait_ready(node, TIMEOUT).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let topic = topic_moving_from_n1_to_n4();

    let (status, body) = post(&nodes[0], &topic, json!("first"), "k1").await;
    assert_eq!((status, body["seq"].as_u64()), (200, Some(1)), "{body}");
    for node in &nodes {
        wait_seqs(node, &topic, &[1], TIMEOUT, "seq 1 replicated").await;
    }

    signal(nodes[2].pid(), "STOP");
    // Seq 2: n2 stores it, paused n3 cannot confirm it, so n1 waits.
    let pending = {
        let url = nodes[0].url(&format!("/v1/topics/{topic}/messages"));
        tokio::spawn(async move {
            http()
                .post(url)
                .header("Idempotency-Key", "k2")
                .json(&json!("second"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    wait_seqs(&nodes[1], &topic, &[1, 2], TIMEOUT, "n2 stores seq 2").await;
    assert_eq!(
        seqs(&nodes[0], &topic).await,
        [1],
        "n1 appends only confirmed"
    );

    // n4 joins: the topic moves to it, and n1 drops seq 2 unconfirmed.
    let n4 = start("n4");
    assert_eq!(pending.await.unwrap(), 503, "seq 2 was never confirmed");
    wait_ready(&n4, Duration::from_secs(30)).await;

    // The publisher retries with its key: n4 claims the topic, copies seq 2
    // from n2 and answers with it. Nothing is published after it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, body) = post(&nodes[0], &topic, json!("second"), "k2").await;
        if status == 200 {
            break body;
        }
        assert!(Instant::now() < deadline, "retry refused: {status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(body["seq"].as_u64(), Some(2), "{body}");
    wait_seqs(&n4, &topic, &[1, 2], TIMEOUT, "the new owner holds seq 2").await;

    // n1 dropped seq 2 and hears of it from nobody but the new owner.
    wait_seqs(
        &nodes[0],
        &topic,
        &[1, 2],
        Duration::from_secs(10),
        "the old owner reaches the claimed head",
    )
    .await;
    signal(nodes[2].pid(), "CONT");
}
