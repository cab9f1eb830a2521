//! An idempotency key sent again and again, concurrently, through every node
//! of a cluster — what clients retrying a slow publish do — is stored once
//! and always answered with the same seq. The owner must know the key from
//! the first copy's sequencing until that copy is in its own log, including
//! the moment between the replicas' quorum and the owner's own append.

mod common;

use std::{collections::HashMap, time::Duration};

use common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_sent_many_times_at_once_is_stored_once() {
    let nats = NatsServer::start();
    let nodes = start_cluster(&nats, 3, &[]).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url("")).collect();
    let rounds = 60;
    let client = http();
    let mut answers: HashMap<String, Vec<u64>> = HashMap::new();
    for round in 0..rounds {
        let key = format!("k{round}");
        // Copies leave every 2 ms whatever became of the earlier ones, as
        // from clients that gave up waiting and retried: some reach the
        // owner while the first copy is being appended there.
        let mut senders = Vec::new();
        for i in 0..40 {
            let (client, url, key) = (client.clone(), urls[i % 3].clone(), key.clone());
            senders.push(tokio::spawn(async move {
                // A refusal (a claim still running) is retried, as clients
                // do: one more repeat of the key.
                let mut answers = Vec::new();
                for _ in 0..50 {
                    let r = client
                        .post(format!("{url}/v1/topics/race.t/messages"))
                        .header("Idempotency-Key", &key)
                        .json(&json!({ "k": key }))
                        .send()
                        .await
                        .unwrap();
                    let status = r.status();
                    let v: Value = r.json().await.unwrap_or_default();
                    if status == 200 {
                        return v["seq"].as_u64().unwrap();
                    }
                    answers.push(format!("{status} {v}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                panic!("{key}: never acknowledged: {answers:?}");
            }));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for s in senders {
            answers
                .entry(key.clone())
                .or_default()
                .push(s.await.unwrap());
        }
    }
    let history = full_history(&nodes[0], "race.t").await.0;
    let mut stored: HashMap<String, Vec<u64>> = HashMap::new();
    for m in &history {
        stored
            .entry(m["data"]["k"].as_str().unwrap().to_string())
            .or_default()
            .push(m["seq"].as_u64().unwrap());
    }
    let twice: Vec<_> = stored.iter().filter(|(_, s)| s.len() > 1).collect();
    let mut answered: Vec<(&String, Vec<u64>)> = answers
        .iter()
        .map(|(k, seqs)| {
            let mut s = seqs.clone();
            s.sort_unstable();
            s.dedup();
            (k, s)
        })
        .filter(|(_, s)| s.len() > 1)
        .collect();
    answered.sort();
    assert!(
        twice.is_empty() && answered.is_empty(),
        "{} of {rounds} keys stored more than once: {twice:?}; answered with several seqs: {answered:?}",
        twice.len()
    );
    assert_eq!(history.len(), rounds);
}
