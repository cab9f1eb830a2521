//! Issue 23: all subscriptions of a client share one connection, each keeps
//! its own position, and a node restart (kill -9, same port and data dir)
//! resumes every one of them with no gap and no duplicate — on every
//! transport, with overlapping patterns and different starts.

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::*;
use herald_client::{Client, Event, Start, Transport};
use serde_json::{json, Value};

/// The five subscriptions: pattern and start. They overlap on purpose.
fn subscriptions(p: &str) -> Vec<(String, Start)> {
    vec![
        (format!("{p}.>"), Start::Live),
        (format!("{p}.a.*"), Start::Live),
        (format!("{p}.a.x"), Start::Since(0)),
        (format!("{p}.b.x"), Start::Live),
        (format!("{p}.*.y"), Start::Live),
    ]
}

fn topics(p: &str) -> Vec<String> {
    ["a.x", "a.y", "b.x", "b.y", "c.y"]
        .iter()
        .map(|t| format!("{p}.{t}"))
        .collect()
}

fn matches(pattern: &str, topic: &str) -> bool {
    let (mut p, mut t) = (pattern.split('.'), topic.split('.'));
    loop {
        match (p.next(), t.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

type Published = Vec<(String, u64, Value)>;

/// One publish to every topic, `rounds` times.
async fn publish_rounds(client: &Client, topics: &[String], rounds: usize, out: &mut Published) {
    for r in 0..rounds {
        for t in topics {
            let data = json!({"r": r, "n": out.len()});
            let ack = client.publish(t, &data).await.expect("publish");
            out.push((t.clone(), ack.seq, data));
        }
    }
}

/// Every event is exactly what was published to the matching topics, in
/// seq order per topic, once.
fn assert_received(pattern: &str, events: &[Event], expected: &Published) {
    let mut want: BTreeMap<&str, Vec<(u64, &Value)>> = BTreeMap::new();
    for (t, seq, data) in expected {
        want.entry(t).or_default().push((*seq, data));
    }
    let mut got: BTreeMap<&str, Vec<(u64, &Value)>> = BTreeMap::new();
    for e in events {
        match e {
            Event::Message {
                topic, seq, data, ..
            } => got.entry(topic).or_default().push((*seq, data)),
            other => panic!("{pattern}: unexpected {other:?}"),
        }
    }
    for seqs in want.values_mut() {
        seqs.sort_by_key(|(s, _)| *s);
        let first = seqs[0].0;
        let dense: Vec<u64> = (first..first + seqs.len() as u64).collect();
        assert_eq!(
            seqs.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            dense,
            "{pattern}: published seqs are not dense"
        );
    }
    assert_eq!(got, want, "{pattern}: received != published");
}

/// What a subscription is to receive: the concrete `Since(0)` one also
/// gets the history published before the subscriptions.
fn expected_for<'a>(pattern: &str, history: &'a Published, live: &'a Published) -> Published {
    let all = if pattern.ends_with(".a.x") {
        [history.clone(), live.clone()].concat()
    } else {
        live.clone()
    };
    all.into_iter()
        .filter(|(t, _, _)| matches(pattern, t))
        .collect()
}

async fn collect_all(collectors: &[(String, Collector)], history: &Published, live: &Published) {
    for (pattern, c) in collectors {
        c.wait_for(expected_for(pattern, history, live).len(), TIMEOUT)
            .await;
    }
}

/// Waits until the node counts `value` for `sample`. Streams a client
/// replaced are counted until the node writes to them (protocol-spec
/// §16.1), so this waits for the messages published meanwhile.
async fn wait_metric(node: &Node, sample: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let now = metric(node, sample).await;
        if now == value {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sample} is {now}, expected {value}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn one_connection_resumes_every_subscription(transport: Transport, p: &str) {
    let mut node = Node::start(&[]);
    let publisher = Client::builder()
        .urls([node.url()])
        .reconnect_delay(Duration::from_millis(50), Duration::from_millis(300))
        .publish_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let topics = topics(p);
    // Before any subscription: only the `Since(0)` one replays these.
    let mut history = Published::new();
    publish_rounds(&publisher, &topics[..1], 3, &mut history).await;

    let client = Client::builder()
        .urls([node.url()])
        .transports([transport])
        // The client stays away a moment, so that messages pile up.
        .reconnect_delay(Duration::from_millis(400), Duration::from_millis(800))
        .poll_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut collectors = Vec::new();
    for (pattern, start) in subscriptions(p) {
        let sub = client.subscribe(&pattern, start).await.expect("subscribe");
        collectors.push((pattern, Collector::start(sub)));
    }
    let (sample, expected_open) = match transport {
        Transport::Ws => ("herald_connections{transport=\"ws\"}", 1.0),
        Transport::Sse => ("herald_connections{transport=\"sse\"}", 1.0),
        // One presence session for the client's loop (zero-timeout probes
        // open none).
        Transport::Poll => ("herald_poll_sessions", 1.0),
    };
    let mut live = Published::new();
    publish_rounds(&publisher, &topics, 4, &mut live).await;
    collect_all(&collectors[..], &history, &live).await;
    wait_metric(&node, sample, expected_open).await;

    let before: Vec<u64> = collectors
        .iter()
        .map(|(_, c)| c.stats().connections)
        .collect();
    node.kill9();
    // Published while the node is down: the publisher retries until it is
    // back (same idempotency key), so these land during the restart.
    let during = {
        let (publisher, topics) = (publisher.clone(), topics.clone());
        tokio::spawn(async move {
            let mut out = Published::new();
            publish_rounds(&publisher, &topics, 2, &mut out).await;
            out
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    node.restart();
    live.extend(during.await.expect("publishes during the restart"));
    publish_rounds(&publisher, &topics, 4, &mut live).await;

    collect_all(&collectors[..], &history, &live).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_metric(&node, sample, expected_open).await;
    // Stopped first, all kept: dropping one changes the SSE and long-poll
    // patterns, which reconnects the others.
    let mut stopped = Vec::new();
    for (pattern, c) in collectors {
        stopped.push((pattern, c.stop().await));
    }
    for ((pattern, (sub, events)), before) in stopped.iter().zip(before) {
        assert_received(pattern, events, &expected_for(pattern, &history, &live));
        // One reconnection for all of them.
        assert_eq!(sub.stats().connections, before + 1, "{pattern}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_carries_five_subscriptions_on_one_connection() {
    one_connection_resumes_every_subscription(Transport::Ws, "mxws").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_carries_five_subscriptions_on_one_stream() {
    one_connection_resumes_every_subscription(Transport::Sse, "mxsse").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_carries_five_subscriptions_in_one_loop() {
    one_connection_resumes_every_subscription(Transport::Poll, "mxpoll").await;
}

/// Dropping subscriptions unsubscribes them; the connection stays for the
/// others and closes with the last one.
#[tokio::test]
async fn dropping_subscriptions_keeps_the_connection_for_the_others() {
    let node = Node::start(&[]);
    let client = Client::builder().urls([node.url()]).build().unwrap();
    let publisher = Client::builder().urls([node.url()]).build().unwrap();
    let a = client.subscribe("drop.a", Start::Live).await.unwrap();
    let b = client.subscribe("drop.b", Start::Live).await.unwrap();
    let ws = "herald_connections{transport=\"ws\"}";
    assert_eq!(metric(&node, ws).await, 1.0);
    assert_eq!(metric(&node, "herald_subscriptions").await, 2.0);
    drop(a);
    let b = Collector::start(b);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while metric(&node, "herald_subscriptions").await != 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "not unsubscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publisher.publish("drop.b", json!(1)).await.unwrap();
    b.wait_for(1, TIMEOUT).await;
    let (b, _) = b.stop().await;
    drop(b);
    while metric(&node, ws).await != 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connection not closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
