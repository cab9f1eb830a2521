//! Failover timings: how long a topic takes no publish after its owner is
//! killed (-9) or paused (SIGSTOP), measured from the fault to the first
//! ack of a publish sent after it through another node. Three nodes on a
//! 3-server NATS cluster; each scenario runs three times, on a topic owned
//! by another node each time. The numbers are printed (and written down in
//! `protocol-spec/cluster.md`); the test fails when a topic stays
//! unavailable longer than a claim can take (`member_timeout` +
//! `request_timeout` + slack), or when an acknowledged publish is lost.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::*;
use serde_json::{json, Value};

/// One publish attempt of the prober.
struct Attempt {
    started: Instant,
    acked: Option<(Instant, u64)>,
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Kill,
    Pause,
}

/// A topic that `n{victim + 1}` owns while all three nodes are live.
fn topic_owned_by(victim: usize, prefix: &str) -> String {
    let members = ["n1", "n2", "n3"];
    (0..)
        .map(|i| format!("{prefix}.t{i}"))
        .find(|t| herald_core::owner::owner(members, t) == Some(members[victim]))
        .unwrap()
}

/// Starts a publish to `topic` every 50 ms, alternating over `urls`, each
/// its own message with its own idempotency key, until `stop`.
fn prober(
    urls: Vec<String>,
    topic: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (Arc<Mutex<Vec<Attempt>>>, tokio::task::JoinHandle<()>) {
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let log = attempts.clone();
    let task = tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap();
        let mut inflight = Vec::new();
        let mut i = 0usize;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let index = {
                let mut log = log.lock().unwrap();
                log.push(Attempt {
                    started: Instant::now(),
                    acked: None,
                });
                log.len() - 1
            };
            let request = client
                .post(format!(
                    "{}/v1/topics/{topic}/messages",
                    urls[i % urls.len()]
                ))
                .header("Idempotency-Key", format!("a{index}"))
                .json(&json!({ "a": index }));
            let log = log.clone();
            inflight.push(tokio::spawn(async move {
                if let Ok(r) = request.send().await {
                    if r.status() == 200 {
                        let at = Instant::now();
                        let body: Value = r.json().await.unwrap();
                        log.lock().unwrap()[index].acked =
                            Some((at, body["seq"].as_u64().unwrap()));
                    }
                }
            }));
            i += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for t in inflight {
            t.await.unwrap();
        }
    });
    (attempts, task)
}

/// Runs `fault` on the owner of a fresh topic; returns the time from the
/// fault to the first ack of a publish sent after it.
async fn measure(nodes: &mut [Node], victim: usize, fault: Fault, round: usize) -> Duration {
    let topic = topic_owned_by(victim, &format!("ft{round}"));
    let survivors: Vec<String> = (0..3)
        .filter(|i| *i != victim)
        .map(|i| nodes[i].url(""))
        .collect();
    // The owner claims the topic before the fault.
    let (status, _) = publish(&nodes[victim], &topic, &json!("warm")).await;
    assert_eq!(status, 200);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (attempts, task) = prober(survivors, topic.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let at = Instant::now();
    match fault {
        Fault::Kill => nodes[victim].kill9(),
        Fault::Pause => signal(nodes[victim].pid(), "STOP"),
    }
    let deadline = at + Duration::from_secs(30);
    let recovered = loop {
        let first = attempts
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.started > at)
            .filter_map(|a| a.acked.map(|(t, _)| t))
            .min();
        if let Some(t) = first {
            break t - at;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: no ack 30 s after {fault:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    task.await.unwrap();
    match fault {
        Fault::Kill => nodes[victim].kill9_and_restart(),
        Fault::Pause => signal(nodes[victim].pid(), "CONT"),
    }
    for node in nodes.iter() {
        wait_ready(node, Duration::from_secs(30)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Every ack is in every node's history, and the histories agree.
    let history = full_history(&nodes[0], &topic).await.0;
    for node in nodes.iter() {
        assert_eq!(full_history(node, &topic).await.0, history, "{topic}");
    }
    let acked: Vec<(u64, usize)> = attempts
        .lock()
        .unwrap()
        .iter()
        .enumerate()
        .filter_map(|(i, a)| a.acked.map(|(_, seq)| (seq, i)))
        .collect();
    for (seq, i) in &acked {
        assert_eq!(
            history[*seq as usize - 1]["data"],
            json!({ "a": i }),
            "{topic}: acked #{seq} lost"
        );
    }
    let slowest = attempts
        .lock()
        .unwrap()
        .iter()
        .filter_map(|a| a.acked.map(|(t, _)| t - a.started))
        .max()
        .unwrap_or_default();
    eprintln!(
        "{fault:?} of owner n{} ({topic}): first ack after {recovered:?}; {} acks, slowest \
         publish {slowest:?}",
        victim + 1,
        acked.len()
    );
    recovered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_topic_takes_publishes_again_soon_after_its_owner_dies_or_pauses() {
    let defaults = herald::config::Config::default().cluster;
    let (timeout, request) = (defaults.member_timeout, defaults.request_timeout);
    let nats = NatsCluster::start();
    let mut nodes = start_cluster_at(&nats.urls(), 3, &[]).await;
    let mut results = Vec::new();
    for (round, fault) in [Fault::Kill, Fault::Pause].into_iter().enumerate() {
        let mut times = Vec::new();
        for victim in 0..3 {
            times.push(measure(&mut nodes, victim, fault, round * 3 + victim).await);
        }
        results.push((fault, times));
    }
    for (fault, times) in &results {
        let ms: Vec<u128> = times.iter().map(|t| t.as_millis()).collect();
        let beyond: Vec<i128> = ms
            .iter()
            .map(|m| *m as i128 - timeout.as_millis() as i128)
            .collect();
        eprintln!(
            "{fault:?} owner: first ack after {ms:?} ms; minus member_timeout ({timeout:?}): {beyond:?} ms"
        );
        for t in times {
            assert!(
                *t < timeout + request + Duration::from_secs(3),
                "{fault:?}: {t:?} without a publish (member_timeout {timeout:?}, request_timeout {request:?})"
            );
        }
    }
}
