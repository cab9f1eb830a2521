//! A rolling restart of a 3-node cluster under publish load: each node in
//! turn drains (SIGTERM: not ready, WebSockets closed with 1012, streams
//! ended, log flushed), exits 0, restarts on the same port and data dir and
//! catches up, while publishers keep publishing through the client's
//! failover. Subscribers on WebSocket, SSE and long-poll, spread over the
//! nodes, each end with exactly the acknowledged sequence of every topic:
//! no gap, no duplicate.

mod common;

use std::{
    collections::BTreeMap,
    sync::{atomic::AtomicBool, Arc, Mutex},
    time::Duration,
};

use common::*;
use herald_client::{Client, Start, Transport};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_load_loses_nothing_for_any_subscriber() {
    let nats = NatsServer::start();
    let mut nodes = start_cluster(&nats, 3).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();

    // One subscriber per transport, each preferring a different node.
    let mut collectors = Vec::new();
    for (i, transport) in [Transport::Ws, Transport::Sse, Transport::Poll]
        .into_iter()
        .enumerate()
    {
        let mut mine = urls.clone();
        mine.rotate_left(i);
        let client = Client::builder()
            .urls(&mine)
            .transports([transport])
            .reconnect_delay(Duration::from_millis(100), Duration::from_millis(1000))
            .poll_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let sub = client
            .subscribe("roll.>", Start::Live)
            .await
            .expect("subscribe");
        collectors.push((transport, client, Collector::start(sub)));
    }

    let acks: Acks = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut publishers = Vec::new();
    for (i, topics) in [["roll.a", "roll.b"], ["roll.c", "roll.d.x"]]
        .into_iter()
        .enumerate()
    {
        let mut mine = urls.clone();
        mine.rotate_left(i + 1);
        let client = Client::builder()
            .urls(&mine)
            .reconnect_delay(Duration::from_millis(20), Duration::from_millis(500))
            .publish_timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        publishers.push(tokio::spawn(publish_until(
            client,
            Arc::new(Mutex::new(topics.iter().map(|t| t.to_string()).collect())),
            Duration::from_millis(5),
            acks.clone(),
            stop.clone(),
        )));
    }

    let mut drained = Vec::new();
    for (i, node) in nodes.iter_mut().enumerate() {
        let before = ack_count(&acks);
        let started = std::time::Instant::now();
        // The drain deadline is the node's shutdown_timeout (10 s).
        let clean = node.sigterm_and_wait(Duration::from_secs(15));
        assert!(
            clean,
            "node {i} did not drain and exit 0; log:\n{}",
            node.logs()
        );
        drained.push(started.elapsed());
        node.restart();
        wait_ready(node).await;
        // Let traffic flow through the restarted node before the next one.
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while ack_count(&acks) < before + 100 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "publishing stalled after node {i}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for p in publishers {
        p.await.expect("publisher");
    }
    let acks = acks.lock().unwrap().clone();
    let total: usize = acks.values().map(Vec::len).sum();
    for (transport, _client, collector) in collectors {
        if let Err(e) = collector
            .wait_for_acks(&acks, Duration::from_secs(30))
            .await
        {
            let logs: Vec<String> = nodes.iter().map(|n| n.logs()).collect();
            panic!(
                "{transport:?} subscriber: {e}\nnode logs:\n{}",
                logs.join("\n----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (sub, events) = collector.stop().await;
        assert_exact(&events, &acks);
        eprintln!("{transport:?}: {total} messages exact; {:?}", sub.stats());
    }
    eprintln!("drain times: {drained:?}");
}
