//! Issue 25: a node that cannot serve subscriptions (not connected to NATS,
//! not caught up, draining) refuses them, and the client waits and retries
//! — on another node when it has one — without an error, without asking a
//! refusing node again before its `Retry-After`, without falling back to
//! another transport, and resumes with no gap and no duplicate.
//!
//! Each refusal the protocol defines is played by a gate in front of a real
//! node; then a real 2-node cluster loses its NATS server.

mod common;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{gate::Gate, gate::Refusal, *};
use herald_client::{Client, ConnectionEvent, Start, Transport};
use serde_json::json;

/// Publishes `n` messages alternating between two topics; records the acks.
async fn publish_n(client: &Client, prefix: &str, n: usize, acks: &Acks) {
    for i in 0..n {
        let topic = format!("{prefix}.{}", ["a", "b"][i % 2]);
        let data = json!({"n": ack_count(acks)});
        let ack = client.publish(&topic, &data).await.expect("publish");
        acks.lock()
            .unwrap()
            .entry(topic)
            .or_default()
            .push((ack.seq, data));
    }
}

async fn refused_then_resumed(transports: &[Transport], refusal: Refusal, prefix: &str) {
    let node = Node::start(&[]);
    let gate = Gate::start(node.addr).await;
    let client = Client::builder()
        .urls([gate.url()])
        .transports(transports.iter().copied())
        .reconnect_delay(Duration::from_millis(20), Duration::from_millis(200))
        .poll_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let sub = client
        .subscribe(&format!("{prefix}.>"), Start::Live)
        .await
        .expect("subscribe");
    let transport = sub.connection().expect("connected").1;
    let collector = Collector::start(sub);
    let publisher = Client::builder().urls([node.url()]).build().unwrap();
    let acks: Acks = Arc::new(Mutex::new(BTreeMap::new()));
    publish_n(&publisher, prefix, 10, &acks).await;
    collector.wait_for(10, TIMEOUT).await;

    gate.refuse(refusal);
    publish_n(&publisher, prefix, 10, &acks).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let refused = gate.refused();
    // Asked again, but never before the node's Retry-After (1 s): no hot
    // loop; and on the same transport (the node is the problem, not it).
    assert!(
        (2..=5).contains(&refused.len()),
        "{} refused attempts in 3.5 s: {refused:?}",
        refused.len()
    );
    for pair in refused.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap >= Duration::from_millis(900),
            "asked again after {gap:?}: {refused:?}"
        );
    }
    let path = match transport {
        Transport::Ws => "/v1/ws",
        Transport::Sse => "/v1/sse",
        Transport::Poll => "/v1/poll",
    };
    assert!(
        refused.iter().all(|(_, p)| p.starts_with(path)),
        "fell back to another transport: {refused:?}"
    );
    // Nothing arrives from a refusing node, and the subscription did not
    // fail (the collector panics on an error).
    assert_eq!(collector.messages(), 10);

    gate.forward();
    publish_n(&publisher, prefix, 10, &acks).await;
    collector.wait_for(30, TIMEOUT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (sub, events) = collector.stop().await;
    assert_exact(&events, &acks.lock().unwrap());
    assert_eq!(sub.connection().map(|(_, t)| t), Some(transport));
}

#[tokio::test]
async fn websocket_upgrade_503_waits_for_retry_after_and_resumes() {
    refused_then_resumed(&Transport::ALL, Refusal::Http503, "un503").await;
}

#[tokio::test]
async fn websocket_subscribe_error_unavailable_waits_and_resumes() {
    refused_then_resumed(&[Transport::Ws], Refusal::WsErrorFrame, "unframe").await;
}

#[tokio::test]
async fn sse_unavailable_event_waits_and_resumes() {
    refused_then_resumed(&[Transport::Sse], Refusal::SseEvent, "unsse").await;
}

#[tokio::test]
async fn long_poll_503_waits_and_resumes() {
    refused_then_resumed(&[Transport::Poll], Refusal::Http503, "unpoll").await;
}

/// With several nodes, a refusing one sends the client to the next at
/// once.
#[tokio::test]
async fn a_refusing_node_sends_the_client_to_the_next() {
    let node = Node::start(&[]);
    let gate = Gate::start(node.addr).await;
    gate.refuse(Refusal::Http503);
    let client = Client::builder()
        .urls([gate.url(), node.url()])
        .reconnect_delay(Duration::from_millis(20), Duration::from_millis(200))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let sub = client
        .subscribe("next.>", Start::Live)
        .await
        .expect("subscribe");
    assert!(started.elapsed() < Duration::from_millis(900));
    assert_eq!(sub.connection(), Some((node.url(), Transport::Ws)));
    assert_eq!(gate.refused().len(), 1);
}

/// A real cluster losing its NATS server: its nodes refuse new
/// subscriptions until NATS is back; a subscriber whose node restarts
/// meanwhile waits without an error and then resumes exactly, including
/// what was published before, during and after the outage.
async fn cluster_without_nats(transport: Transport, prefix: &str) {
    let mut nats = NatsServer::start();
    let mut nodes = start_cluster(&nats, 2).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let client = Client::builder()
        .urls(&urls)
        .transports([transport])
        .reconnect_delay(Duration::from_millis(50), Duration::from_millis(500))
        .poll_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let mut events = client.connection_events();
    let sub = client
        .subscribe(&format!("{prefix}.>"), Start::Live)
        .await
        .expect("subscribe");
    let (on, _) = sub.connection().expect("connected");
    let collector = Collector::start(sub);
    let publisher = Client::builder()
        .urls(&urls)
        .reconnect_delay(Duration::from_millis(50), Duration::from_millis(500))
        .publish_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let acks: Acks = Arc::new(Mutex::new(BTreeMap::new()));
    publish_n(&publisher, prefix, 20, &acks).await;
    collector.wait_for(20, TIMEOUT).await;

    while events.try_recv().is_ok() {}
    nats.stop();
    // Publishes wait (503) until NATS is back: "during" the outage.
    let during = {
        let (publisher, acks, prefix) = (publisher.clone(), acks.clone(), prefix.to_string());
        tokio::spawn(async move { publish_n(&publisher, &prefix, 6, &acks).await })
    };
    let node = nodes.iter_mut().find(|n| n.url() == on).expect("its node");
    node.kill9_and_restart();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Both nodes refuse: the client waits, reconnecting, without failing.
    let mut connected_meanwhile = false;
    let mut reconnecting = 0;
    while let Ok(e) = events.try_recv() {
        match e {
            ConnectionEvent::Connected { .. } => connected_meanwhile = true,
            ConnectionEvent::Reconnecting { .. } => reconnecting += 1,
            _ => {}
        }
    }
    assert!(
        !connected_meanwhile,
        "a node without NATS served the subscription"
    );
    assert!(reconnecting >= 2, "{reconnecting} reconnection rounds");
    assert!(
        reconnecting <= 12,
        "{reconnecting} reconnection rounds in 3 s: Retry-After ignored"
    );
    assert_eq!(collector.messages(), 20);

    nats.restart();
    for node in &nodes {
        wait_ready(node).await;
    }
    during.await.expect("publishes during the outage");
    publish_n(&publisher, prefix, 20, &acks).await;
    collector.wait_for(46, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_sub, got) = collector.stop().await;
    assert_exact(&got, &acks.lock().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_subscriber_waits_out_a_nats_outage() {
    cluster_without_nats(Transport::Ws, "natsws").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_subscriber_waits_out_a_nats_outage() {
    cluster_without_nats(Transport::Sse, "natssse").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_subscriber_waits_out_a_nats_outage() {
    cluster_without_nats(Transport::Poll, "natspoll").await;
}
