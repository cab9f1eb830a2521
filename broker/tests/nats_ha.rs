//! Issue 25, the HA bus: three Herald nodes, each given every server of a
//! real 3-server NATS cluster, lose the NATS server one of them is connected
//! to while publishes flow. That node fails over to another server; no
//! acknowledged publish is lost, WebSocket subscribers on every node see
//! every topic without a gap, and the longest publish stall is measured.

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use common::*;
use serde_json::{json, Value};

const TOPICS: [&str; 4] = ["ha.t0", "ha.t1", "ha.t2", "ha.t3"];

/// What one publisher saw.
struct Published {
    /// Payload id → acknowledged seq.
    acked: HashMap<u64, u64>,
    /// Attempts refused or failed (each retried on the next node).
    refused: u64,
    /// The longest time one publish took to be acknowledged, retries
    /// included, and what each of its attempts got.
    longest: Duration,
    slowest: Vec<String>,
    /// When each ack arrived.
    ack_times: Vec<Instant>,
}

/// Publishes to `topic` round-robin over `urls` until `stop`; a refused or
/// failed attempt is retried on the next node with the same idempotency
/// key, as the clients do.
fn publisher(
    urls: Vec<String>,
    topic: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Published> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut out = Published {
            acked: HashMap::new(),
            refused: 0,
            longest: Duration::ZERO,
            slowest: Vec::new(),
            ack_times: Vec::new(),
        };
        let (mut id, mut turn) = (0u64, 0usize);
        while !stop.load(Ordering::SeqCst) {
            id += 1;
            let started = Instant::now();
            let mut attempts = Vec::new();
            loop {
                let url = &urls[turn % urls.len()];
                turn += 1;
                let res = client
                    .post(format!("{url}/v1/topics/{topic}/messages"))
                    .header("Idempotency-Key", format!("{topic}-{id}"))
                    .json(&json!({"id": id}))
                    .send()
                    .await;
                let at = started.elapsed();
                match res {
                    Ok(r) if r.status() == 200 => {
                        let body: Value = r.json().await.unwrap();
                        out.acked.insert(id, body["seq"].as_u64().unwrap());
                        out.ack_times.push(Instant::now());
                        if at > out.longest {
                            attempts.push(format!("{url}: 200 after {at:?}"));
                            (out.longest, out.slowest) = (at, attempts);
                        }
                        break;
                    }
                    Ok(r) => {
                        let status = r.status();
                        let body = r.text().await.unwrap_or_default();
                        attempts.push(format!("{url}: {status} {body} after {at:?}"));
                    }
                    Err(e) => attempts.push(format!("{url}: {e} after {at:?}")),
                }
                out.refused += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        out
    })
}

/// Reads a WebSocket subscription to `ha.>` until `target` (set once the
/// publishers stop) is reached on every topic; returns every message.
fn subscriber(
    mut ws: Ws,
    target: Arc<Mutex<Option<BTreeMap<String, u64>>>>,
) -> tokio::task::JoinHandle<Vec<Value>> {
    tokio::spawn(async move {
        let mut got = Vec::new();
        let mut highest: BTreeMap<String, u64> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(target) = target.lock().unwrap().as_ref() {
                if target.iter().all(|(t, s)| highest.get(t) >= Some(s)) {
                    return got;
                }
            }
            assert!(Instant::now() < deadline, "subscriber stuck at {highest:?}");
            let Some(frame) = ws.try_recv(Duration::from_millis(200)).await else {
                continue;
            };
            assert_ne!(frame["type"], "gap", "a subscriber saw a gap: {frame}");
            if frame["type"] == "message" {
                let topic = frame["topic"].as_str().unwrap().to_string();
                let seq = frame["seq"].as_u64().unwrap();
                highest.insert(topic, seq);
                got.push(frame);
            }
        }
    })
}

/// Every acked (id, seq) is in `history`, which is dense from 1.
fn check_acked(topic: &str, acked: &HashMap<u64, u64>, history: &[Value]) {
    let seqs: Vec<u64> = history.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "{topic}: dense"
    );
    let by_seq: HashMap<u64, u64> = history
        .iter()
        .map(|m| {
            (
                m["seq"].as_u64().unwrap(),
                m["data"]["id"].as_u64().unwrap(),
            )
        })
        .collect();
    let lost: Vec<_> = acked
        .iter()
        .filter(|(id, seq)| by_seq.get(seq) != Some(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{topic}: {} acknowledged publishes lost or changed, e.g. {:?}",
        lost.len(),
        lost.iter().take(3).collect::<Vec<_>>()
    );
}

/// The longest interval in which no publisher got an ack, from the first
/// ack to the last.
fn longest_silence(mut times: Vec<Instant>) -> Duration {
    times.sort();
    times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_nats_server_under_load_loses_nothing() {
    let mut nats = NatsCluster::start();
    let nodes = start_cluster_at(&nats.urls(), 3, &[]).await;
    let victim = nats
        .server_of("herald-n1")
        .expect("n1 is connected to one of the NATS servers");
    let placement: Vec<_> = (1..=3)
        .map(|i| nats.server_of(&format!("herald-n{i}")))
        .collect();
    eprintln!("nodes n1..n3 on NATS servers {placement:?}; killing server {victim}");

    let target = Arc::new(Mutex::new(None));
    let mut subscribers = Vec::new();
    for node in &nodes {
        let mut ws = node.ws().await;
        ws.subscribe("ha.>").await;
        subscribers.push(subscriber(ws, target.clone()));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let urls: Vec<String> = nodes.iter().map(|n| n.url("")).collect();
    let publishers: Vec<_> = TOPICS
        .iter()
        .map(|t| publisher(urls.clone(), t, stop.clone()))
        .collect();

    tokio::time::sleep(Duration::from_secs(3)).await;
    nats.kill(victim);
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    // n1 moved to a surviving server (not waiting for this one to return).
    let moved = nats.server_of("herald-n1");
    assert!(
        moved.is_some() && moved != Some(victim),
        "n1 is on {moved:?} after server {victim} died"
    );
    stop.store(true, Ordering::SeqCst);

    let mut acked = BTreeMap::new();
    let (mut longest, mut slowest) = (Duration::ZERO, Vec::new());
    let (mut ack_times, mut total) = (Vec::new(), 0);
    for (topic, p) in TOPICS.iter().zip(publishers) {
        let out = p.await.unwrap();
        eprintln!(
            "{topic}: {} acked, {} refused attempts, longest publish {:?}",
            out.acked.len(),
            out.refused,
            out.longest
        );
        total += out.acked.len();
        if out.longest > longest {
            (longest, slowest) = (out.longest, out.slowest);
        }
        ack_times.extend(out.ack_times);
        acked.insert(*topic, out.acked);
    }
    let span = match (ack_times.iter().min(), ack_times.iter().max()) {
        (Some(first), Some(last)) => *last - *first,
        _ => Duration::ZERO,
    };
    eprintln!(
        "{total} publishes acked in {span:?} ({:.0}/s)",
        total as f64 / span.as_secs_f64().max(0.001)
    );
    let silence = longest_silence(ack_times);
    eprintln!(
        "NATS server killed {:?} before the publishers stopped; longest publish stall \
         (one publish, retries included) {longest:?}; longest time without any ack {silence:?}",
        killed.elapsed()
    );
    // A forwarded publish (or its answer) lost with the dead server waits
    // out the forward timeout before the client retries elsewhere.
    eprintln!("the slowest publish's attempts: {slowest:#?}");
    assert!(total > 200, "too little traffic: {total}");
    if longest >= Duration::from_secs(10) {
        for (i, node) in nodes.iter().enumerate() {
            eprintln!("--- n{} log:\n{}", i + 1, node.logs());
        }
        panic!("a publish stalled for {longest:?}");
    }

    // Every node holds the same history, with every acked publish in it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut heads = BTreeMap::new();
    for (topic, acked) in &acked {
        let first = full_history(&nodes[0], topic).await.0;
        for node in &nodes {
            let history = full_history(node, topic).await.0;
            check_acked(topic, acked, &history);
            assert_eq!(history, first, "{topic}: node {} differs", node.addr);
        }
        heads.insert(topic.to_string(), first.len() as u64);
    }

    // Every subscriber, whichever NATS server its node used, saw 1..=head
    // of every topic in order.
    *target.lock().unwrap() = Some(heads.clone());
    for (i, sub) in subscribers.into_iter().enumerate() {
        let got = sub.await.unwrap();
        for (topic, head) in &heads {
            assert_sequence(&got, topic, 1, *head);
        }
        eprintln!("subscriber on n{}: {} messages, no gap", i + 1, got.len());
    }

    // The killed server rejoins the NATS cluster; the nodes stay ready.
    nats.restart(victim);
    for node in &nodes {
        wait_ready(node, Duration::from_secs(10)).await;
    }
}
