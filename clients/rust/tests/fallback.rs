//! Transport fallback: behind a proxy that blocks WebSocket upgrades the
//! client falls back to SSE, and with SSE blocked too to long-poll, and
//! still gets the exact sequence across a kill -9 and restart of the node.

mod common;

use std::{
    collections::BTreeMap,
    sync::{atomic::AtomicBool, Arc, Mutex},
    time::Duration,
};

use common::*;
use herald_client::{Client, ConnectionEvent, Start, Transport};

async fn behind_proxy(block: Block, expected: Transport, prefix: &str) {
    let mut node = Node::start(&[]);
    let proxy = BlockingProxy::start(node.addr, block).await;
    let client = Client::builder()
        .urls([proxy.url()])
        .reconnect_delay(Duration::from_millis(300), Duration::from_secs(1))
        .poll_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut events = client.connection_events();
    let sub = client
        .subscribe(&format!("{prefix}.*"), Start::Live)
        .await
        .expect("subscribe");
    assert_eq!(sub.connection(), Some((proxy.url(), expected)));
    // What happened first: each blocked transport failed, then the
    // expected one connected.
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        match event {
            ConnectionEvent::ConnectFailed { transport, .. } => {
                seen.push(format!("failed {transport}"))
            }
            ConnectionEvent::Connected { transport, .. } => {
                seen.push(format!("connected {transport}"))
            }
            _ => {}
        }
    }
    let want: Vec<String> = Transport::ALL
        .iter()
        .take_while(|t| **t != expected)
        .map(|t| format!("failed {t}"))
        .chain([format!("connected {expected}")])
        .collect();
    assert_eq!(seen, want);

    let collector = Collector::start(sub);
    let acks: Acks = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    // Publishing goes through the proxy too (plain REST).
    let publisher = Client::builder()
        .urls([proxy.url()])
        .reconnect_delay(Duration::from_millis(20), Duration::from_millis(300))
        .build()
        .unwrap();
    let task = tokio::spawn(publish_until(
        publisher,
        Arc::new(Mutex::new(vec![
            format!("{prefix}.a"),
            format!("{prefix}.b"),
        ])),
        Duration::from_millis(5),
        acks.clone(),
        stop.clone(),
    ));
    collector.wait_for(50, TIMEOUT).await;
    node.kill9_and_restart();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while sub_reconnected(&collector, &acks).await.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no messages after the restart"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    task.await.unwrap();
    let acks = acks.lock().unwrap().clone();
    let total: usize = acks.values().map(Vec::len).sum();
    collector.wait_for(total, TIMEOUT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (sub, events) = collector.stop().await;
    assert_exact(&events, &acks);
    assert_eq!(sub.stats().connections, 2, "{:?}", sub.stats());
    assert_eq!(sub.connection().map(|(_, t)| t), Some(expected));
}

/// Some when the subscriber has caught up with 100 more messages than it
/// had at the kill (so it is back and live).
async fn sub_reconnected(collector: &Collector, acks: &Acks) -> Option<()> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    (collector.messages() >= 150 && ack_count(acks) >= 150).then_some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_blocked_falls_back_to_sse() {
    behind_proxy(Block::WebSocket, Transport::Sse, "fbsse").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_sse_blocked_fall_back_to_long_poll() {
    behind_proxy(Block::WebSocketAndSse, Transport::Poll, "fbpoll").await;
}
