//! A randomized cluster checker: three nodes and a real `nats-server`;
//! publishers and resuming subscribers on random nodes; a fault schedule of
//! kill -9 / restart and a NATS outage. At the end every node's log is
//! identical, every subscriber saw exactly 1..N per topic (and a last resume
//! brings it to N with no error), and every acknowledged message is present.
//!
//! Replay a failure with `HERALD_CHAOS_SEED=<seed> cargo test --test cluster_chaos`.

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use common::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};

const TOPICS: [&str; 3] = ["z.a", "z.b", "z.c"];

/// (topic, idempotency key) → acknowledged seq.
type Acks = Arc<Mutex<HashMap<(String, String), u64>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn randomized_faults_keep_every_promise() {
    let seed: u64 = std::env::var("HERALD_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("chaos seed {seed} (HERALD_CHAOS_SEED={seed} to replay)");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut nats = NatsServer::start();
    let nats_port = nats.port;
    let mut nodes = start_cluster(&nats, 3, &[]).await;
    let urls: Arc<Mutex<Vec<String>>> =
        Arc::new(Mutex::new(nodes.iter().map(|n| n.url("")).collect()));
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Acks = Default::default();

    // Publishers: each picks a random node per publish, retries elsewhere
    // with the same idempotency key until acknowledged.
    let mut publishers = Vec::new();
    for p in 0..3u64 {
        let (urls, stop, acks) = (urls.clone(), stop.clone(), acks.clone());
        let mut prng = StdRng::seed_from_u64(seed ^ (p + 1));
        publishers.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(8))
                .build()
                .unwrap();
            let mut id = 0u64;
            while !stop.load(Ordering::SeqCst) {
                id += 1;
                let topic = TOPICS[prng.gen_range(0..TOPICS.len())];
                let key = format!("p{p}-{id}");
                for _ in 0..200 {
                    let url = {
                        let u = urls.lock().unwrap();
                        u[prng.gen_range(0..u.len())].clone()
                    };
                    let res = client
                        .post(format!("{url}/v1/topics/{topic}/messages"))
                        .header("Idempotency-Key", &key)
                        .json(&json!({"k": key}))
                        .send()
                        .await;
                    if let Ok(r) = res {
                        if r.status() == 200 {
                            let body: Value = r.json().await.unwrap();
                            acks.lock().unwrap().insert(
                                (topic.to_string(), key.clone()),
                                body["seq"].as_u64().unwrap(),
                            );
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tokio::time::sleep(Duration::from_millis(prng.gen_range(1..15))).await;
            }
        }));
    }

    // Subscribers: WebSocket on a random node, `since` their last seq per
    // topic, reconnecting to a random node every so often.
    let mut subscribers = Vec::new();
    for s in 0..3u64 {
        let (urls, stop) = (urls.clone(), stop.clone());
        let mut srng = StdRng::seed_from_u64(seed ^ (100 + s));
        subscribers.push(tokio::spawn(async move {
            let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
            let mut rounds = 0;
            while !stop.load(Ordering::SeqCst) || rounds == 0 {
                rounds += 1;
                let url = {
                    let u = urls.lock().unwrap();
                    u[srng.gen_range(0..u.len())].replace("http://", "ws://")
                };
                let Ok(Ok((mut ws, _))) = tokio::time::timeout(
                    Duration::from_secs(3),
                    tokio_tungstenite::connect_async(format!("{url}/v1/ws")),
                )
                .await
                else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                use futures_util::{SinkExt, StreamExt};
                for topic in TOPICS {
                    let since = got.get(topic).and_then(|v| v.last().copied()).unwrap_or(0);
                    let op = json!({"op":"subscribe","topic":topic,"since":since}).to_string();
                    if ws
                        .send(tokio_tungstenite::tungstenite::Message::Text(op))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                let stay = Duration::from_millis(srng.gen_range(300..2500));
                let until = tokio::time::Instant::now() + stay;
                while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(until, ws.next()).await {
                    if let tokio_tungstenite::tungstenite::Message::Text(text) = msg {
                        let v: Value = serde_json::from_str(&text).unwrap();
                        if v["type"] == "message" {
                            got.entry(v["topic"].as_str().unwrap().to_string())
                                .or_default()
                                .push(v["seq"].as_u64().unwrap());
                        }
                    }
                }
            }
            got
        }));
    }

    // The fault schedule.
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1500..3000))).await;
        if round == 1 {
            eprintln!("fault: NATS down");
            nats.stop();
            tokio::time::sleep(Duration::from_millis(rng.gen_range(1000..3000))).await;
            nats = NatsServer::start_on(nats_port);
            eprintln!("fault: NATS back");
        } else {
            let victim = rng.gen_range(0..nodes.len());
            eprintln!("fault: kill -9 node {victim}");
            nodes[victim].kill9();
            tokio::time::sleep(Duration::from_millis(rng.gen_range(3500..5000))).await;
            nodes[victim].kill9_and_restart();
            urls.lock().unwrap()[victim] = nodes[victim].url("");
            eprintln!("fault: node {victim} restarted");
        }
    }
    for node in &nodes {
        wait_ready(node, Duration::from_secs(30)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    for p in publishers {
        p.await.unwrap();
    }
    let received: Vec<_> = futures_util::future::join_all(subscribers)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let acks = acks.lock().unwrap().clone();
    eprintln!("{} publishes acknowledged", acks.len());
    assert!(
        acks.len() > 100,
        "too little traffic to judge (seed {seed})"
    );
    let mut ends: BTreeMap<&str, u64> = BTreeMap::new();
    for topic in TOPICS {
        let mut histories = Vec::new();
        for node in &nodes {
            histories.push(full_history(node, topic).await.0);
        }
        for (i, h) in histories.iter().enumerate() {
            assert!(
                h == &histories[0],
                "seed {seed}: {topic} differs between node 0 and node {i}"
            );
        }
        let history = &histories[0];
        let n = history.len() as u64;
        ends.insert(topic, n);
        let seqs: Vec<u64> = history.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=n).collect::<Vec<_>>(),
            "seed {seed}: {topic} history is not dense"
        );
        let keys: Vec<&str> = history
            .iter()
            .map(|m| m["data"]["k"].as_str().unwrap())
            .collect();
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            keys.len(),
            "seed {seed}: {topic} stored an idempotency key twice"
        );
        for ((t, key), seq) in acks.iter().filter(|((t, _), _)| t == topic) {
            let stored = history
                .get(*seq as usize - 1)
                .and_then(|m| m["data"]["k"].as_str());
            assert_eq!(
                stored,
                Some(key.as_str()),
                "seed {seed}: acked {t}#{seq} ({key}) lost or changed"
            );
        }
        for (s, got) in received.iter().enumerate() {
            let seqs = got.get(topic).cloned().unwrap_or_default();
            // Each subscriber stays connected most of the run while every
            // topic gets tens of messages: nothing at all means its
            // subscriptions failed, not that it was unlucky.
            assert!(
                !seqs.is_empty(),
                "seed {seed}: subscriber {s} got nothing on {topic} (of {n})"
            );
            let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
            assert_eq!(
                seqs, expected,
                "seed {seed}: subscriber {s} on {topic}: gap or duplicate"
            );
        }
    }

    // Last, each subscriber resumes once more, on a node of its own, from
    // halfway through what it got (so every resume replays from the log):
    // it must reach every topic's end with no gap, no duplicate and no
    // error reply.
    for (s, got) in received.iter().enumerate() {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let url = nodes[s % nodes.len()].url("").replace("http://", "ws://");
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("{url}/v1/ws"))
            .await
            .unwrap();
        let mut seen = got.clone();
        for topic in TOPICS {
            let kept = seen.get_mut(topic).unwrap();
            kept.truncate(kept.len() / 2);
            let since = kept.last().copied().unwrap_or(0);
            let op = json!({"op":"subscribe","id":topic,"topic":topic,"since":since});
            ws.send(Message::Text(op.to_string())).await.unwrap();
        }
        let behind = |seen: &BTreeMap<String, Vec<u64>>| {
            TOPICS
                .iter()
                .any(|t| seen.get(*t).map_or(0, |v| v.len() as u64) < ends[t])
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while behind(&seen) {
            let frame = tokio::time::timeout_at(deadline, ws.next()).await;
            let Ok(Some(Ok(msg))) = frame else {
                let counts: BTreeMap<_, _> = seen.iter().map(|(t, v)| (t, v.len())).collect();
                panic!("seed {seed}: subscriber {s}'s last resume stopped short: {counts:?} of {ends:?}");
            };
            if let Message::Text(text) = msg {
                let v: Value = serde_json::from_str(&text).unwrap();
                assert_ne!(
                    v["type"], "error",
                    "seed {seed}: subscriber {s}'s last resume: {v}"
                );
                if v["type"] == "message" {
                    seen.entry(v["topic"].as_str().unwrap().to_string())
                        .or_default()
                        .push(v["seq"].as_u64().unwrap());
                }
            }
        }
        for topic in TOPICS {
            assert_eq!(
                seen[topic],
                (1..=ends[topic]).collect::<Vec<_>>(),
                "seed {seed}: subscriber {s} on {topic} after its last resume"
            );
        }
    }
}
