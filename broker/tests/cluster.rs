//! Issue 4: three real `herald` nodes joined through a real `nats-server`.

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::*;
use serde_json::{json, Value};

const TOPICS: [&str; 4] = ["c.t0", "c.t1", "c.t2", "c.t3"];

/// Publishes `per_node` messages to every topic from every node, all nodes
/// concurrently; returns the acks per topic.
async fn publish_everywhere(nodes: &[Node], per_node: u64) -> BTreeMap<String, Vec<u64>> {
    let acks: Arc<Mutex<BTreeMap<String, Vec<u64>>>> = Default::default();
    let mut tasks = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        let url = node.url("");
        let acks = acks.clone();
        tasks.push(tokio::spawn(async move {
            let client = http();
            for i in 0..per_node {
                for topic in TOPICS {
                    let res = client
                        .post(format!("{url}/v1/topics/{topic}/messages"))
                        .json(&json!({"node": n, "i": i}))
                        .send()
                        .await
                        .unwrap();
                    let status = res.status();
                    let body: Value = res.json().await.unwrap();
                    assert_eq!(status, 200, "publish via node {n}: {body}");
                    acks.lock()
                        .unwrap()
                        .entry(topic.to_string())
                        .or_default()
                        .push(body["seq"].as_u64().unwrap());
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(acks).unwrap().into_inner().unwrap()
}

async fn histories(nodes: &[Node], topic: &str) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    for node in nodes {
        out.push(full_history(node, topic).await.0);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_subscriber_on_every_node_gets_the_same_sequence() {
    let nats = NatsServer::start();
    let nodes = start_cluster(&nats, 3, &[]).await;
    let mut subscribers = Vec::new();
    for node in &nodes {
        let mut ws = node.ws().await;
        ws.subscribe("c.>").await;
        subscribers.push(ws);
    }
    let per_node = 40;
    let acks = publish_everywhere(&nodes, per_node).await;
    let total = per_node * 3;
    for (topic, mut seqs) in acks {
        seqs.sort();
        assert_eq!(
            seqs,
            (1..=total).collect::<Vec<_>>(),
            "{topic}: acks are exactly 1..{total}"
        );
    }
    for (i, ws) in subscribers.iter_mut().enumerate() {
        let got = ws.messages(TOPICS.len() * total as usize).await;
        for topic in TOPICS {
            assert_sequence(&got, topic, 1, total);
        }
        ws.assert_silent(Duration::from_millis(300)).await;
        eprintln!("subscriber on node {i}: {} messages in order", got.len());
    }
    for topic in TOPICS {
        let h = histories(&nodes, topic).await;
        assert_eq!(h[0].len() as u64, total);
        assert!(
            h[0] == h[1] && h[1] == h[2],
            "{topic}: histories differ between nodes"
        );
    }
    // Idempotency holds across nodes: the same key through two nodes stores once.
    let send = |node: &Node| {
        http()
            .post(node.url("/v1/topics/c.idem/messages"))
            .header("Idempotency-Key", "pay-1")
            .json(&json!("once"))
            .send()
    };
    let a: Value = send(&nodes[0]).await.unwrap().json().await.unwrap();
    let b: Value = send(&nodes[2]).await.unwrap().json().await.unwrap();
    assert_eq!(a, b);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for node in &nodes {
        let (_, hist) = get_json(node, "/v1/topics/c.idem/messages").await;
        assert_eq!(hist["last_seq"], 1, "{hist}");
    }
    // Repeats racing the first publish, through every node at once (some
    // reach the owner while the first still waits for its replicas): one
    // seq, and every answer is the first publish's.
    let mut racing = Vec::new();
    for round in 0..30 {
        let url = nodes[round % 3].url("/v1/topics/c.race/messages");
        racing.push(tokio::spawn(async move {
            let res = http()
                .post(url)
                .header("Idempotency-Key", "race-1")
                .json(&json!("once"))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            res.json::<Value>().await.unwrap()
        }));
    }
    let mut answers = Vec::new();
    for r in racing {
        answers.push(r.await.unwrap());
    }
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert_eq!(answers[0]["seq"], 1, "{answers:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for node in &nodes {
        let (_, hist) = get_json(node, "/v1/topics/c.race/messages").await;
        assert_eq!(hist["last_seq"], 1, "{hist}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishes_to_other_owners_share_forwards_and_keep_their_own_answers() {
    let nats = NatsServer::start();
    // Two HTTP workers whatever the host's CPUs: a node keeps its forwards'
    // slots per worker, so the burst below outnumbers them.
    let nodes = start_cluster(&nats, 3, &["--workers", "2"]).await;
    let url = nodes[0].url("");
    // A first publish to each topic claims it, so the burst below finds
    // every owner ready and the forwards full.
    let topics: Vec<String> = (0..30).map(|i| format!("f.t{i}")).collect();
    for topic in &topics {
        let (status, _) = post_json(&url, topic, &json!("claim"), None).await;
        assert_eq!(status, 200);
    }
    let forwarded_before = metric(&nodes[0], "herald_cluster_forwarded_requests_total").await;
    let forwards_before = metric(&nodes[0], "herald_cluster_forwards_total").await;
    let mut burst = Vec::new();
    for i in 0..600 {
        // Pairs of publishes with one idempotency key to one topic, sent
        // one after the other: one seq, the same answer, also when both
        // ride in one forward (two requests the owner sequences together).
        let key = (i % 20 < 2).then(|| format!("k{}", i / 20));
        let topic = match key {
            Some(_) => topics[(i / 20) % topics.len()].clone(),
            None => topics[i % topics.len()].clone(),
        };
        let url = url.clone();
        burst.push(tokio::spawn(async move {
            let (status, body) = post_json(&url, &topic, &json!(i), key.as_deref()).await;
            assert_eq!(status, 200, "{body}");
            (topic, key, body)
        }));
    }
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut by_key: HashMap<String, Vec<Value>> = HashMap::new();
    for task in burst {
        let (topic, key, body) = task.await.unwrap();
        match key {
            Some(key) => by_key.entry(key).or_default().push(body),
            None => seqs
                .entry(topic)
                .or_default()
                .push(body["seq"].as_u64().unwrap()),
        }
    }
    for (key, answers) in &by_key {
        assert!(
            answers.iter().all(|a| a == &answers[0]),
            "{key}: {answers:?}"
        );
    }
    for body in by_key.values().map(|a| &a[0]) {
        seqs.entry(body["topic"].as_str().unwrap().to_string())
            .or_default()
            .push(body["seq"].as_u64().unwrap());
    }
    for (topic, mut got) in seqs {
        got.sort();
        let expected: Vec<u64> = (2..=got.len() as u64 + 1).collect();
        assert_eq!(got, expected, "{topic}: one seq each, no gap, no duplicate");
        // Every node holds them (a replica may still be applying the last).
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let h = histories(&nodes, &topic).await;
            if h[0].len() == expected.len() + 1 && h[0] == h[1] && h[1] == h[2] {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{topic}: histories differ: {:?}",
                h.iter().map(Vec::len).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // One request repeating a key (a batch): the repeat is answered with
    // the first item's seq, on an owner that never saw the key before.
    let topic = &topics[7];
    let batch = json!([
        {"topic": topic, "data": "a", "idempotency_key": "batch-1"},
        {"topic": topic, "data": "a", "idempotency_key": "batch-1"},
        {"topic": topic, "data": "b"}
    ]);
    let res = http()
        .post(format!("{url}/v1/publish"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let acks: Vec<Value> = res.json().await.unwrap();
    let seq = |i: usize| acks[i]["seq"].as_u64().unwrap();
    assert_eq!(seq(0), seq(1), "{acks:?}");
    assert_eq!(seq(2), seq(0) + 1, "{acks:?}");
    let forwarded =
        metric(&nodes[0], "herald_cluster_forwarded_requests_total").await - forwarded_before;
    let forwards = metric(&nodes[0], "herald_cluster_forwards_total").await - forwards_before;
    assert!(
        forwarded > 100,
        "most topics are other nodes': {forwarded} forwarded"
    );
    assert!(
        forwards < forwarded,
        "{forwarded} publish requests in {forwards} forwards: none shared one"
    );
    eprintln!("{forwarded} forwarded publish requests in {forwards} forwards");
}

/// `POST /v1/topics/{topic}/messages` on `base`, with an optional
/// idempotency key.
async fn post_json(base: &str, topic: &str, data: &Value, key: Option<&str>) -> (u16, Value) {
    let mut req = http()
        .post(format!("{base}/v1/topics/{topic}/messages"))
        .json(data);
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_resumes_on_another_node() {
    let nats = NatsServer::start();
    let nodes = start_cluster(&nats, 3, &[]).await;
    let n = 150u64;
    let url = nodes[2].url("");
    let publisher = tokio::spawn(async move {
        let client = http();
        for i in 1..=n {
            let res = client
                .post(format!("{url}/v1/topics/r.feed/messages"))
                .json(&json!(i))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    // Read up to k on node 1 over WebSocket...
    let mut ws = nodes[0].ws().await;
    ws.request(json!({"op":"subscribe","topic":"r.feed","since":0}), "s")
        .await;
    let first = ws.messages(40).await;
    let k = first.last().unwrap()["seq"].as_u64().unwrap();
    drop(ws);
    // ...resume on node 2 with since=k.
    let mut ws = nodes[1].ws().await;
    ws.request(json!({"op":"subscribe","topic":"r.feed","since":k}), "s")
        .await;
    let rest = ws.messages((n - k) as usize).await;
    let mut all = first.clone();
    all.extend(rest);
    assert_sequence(&all, "r.feed", 1, n);
    // An SSE cursor taken on node 2 resumes a pattern on node 3.
    let mut sse = Sse::open(
        &nodes[1],
        "topic=r.%3E",
        Some(&format!("1~0~r.feed~{}", n - 20)),
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..10 {
        got.push(sse.next_event(TIMEOUT).await.unwrap().1);
    }
    let cursor = sse.last_id.clone().unwrap();
    drop(sse);
    let mut sse = Sse::open(&nodes[2], "topic=r.%3E", Some(&cursor)).await;
    for _ in 0..10 {
        got.push(sse.next_event(TIMEOUT).await.unwrap().1);
    }
    assert_sequence(&got, "r.feed", n - 19, n);
    publisher.await.unwrap();
}

/// Publishes round-robin through the given nodes until stopped, retrying a
/// refused publish on the next node; records what was acknowledged.
fn resilient_publisher(
    urls: Vec<String>,
    topic: &'static str,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(HashMap<u64, u64>, u64)> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut acked: HashMap<u64, u64> = HashMap::new(); // payload id → seq
        let mut refused = 0;
        let mut id = 0u64;
        let mut turn = 0usize;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            id += 1;
            loop {
                let url = &urls[turn % urls.len()];
                turn += 1;
                let res = client
                    .post(format!("{url}/v1/topics/{topic}/messages"))
                    .header("Idempotency-Key", format!("{topic}-{id}"))
                    .json(&json!({"id": id}))
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status() == 200 => {
                        let body: Value = r.json().await.unwrap();
                        acked.insert(id, body["seq"].as_u64().unwrap());
                        break;
                    }
                    _ => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        if stop.load(std::sync::atomic::Ordering::SeqCst) {
                            break;
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (acked, refused)
    })
}

fn check_acked(topic: &str, acked: &HashMap<u64, u64>, history: &[Value]) {
    let by_seq: HashMap<u64, u64> = history
        .iter()
        .map(|m| {
            (
                m["seq"].as_u64().unwrap(),
                m["data"]["id"].as_u64().unwrap(),
            )
        })
        .collect();
    let seqs: Vec<u64> = history.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "{topic}: dense"
    );
    let lost: Vec<_> = acked
        .iter()
        .filter(|(id, seq)| by_seq.get(seq) != Some(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{topic}: {} acknowledged messages lost or changed, e.g. {:?}",
        lost.len(),
        lost.iter().take(3).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_of_a_node_under_load_loses_nothing_and_it_catches_up() {
    let nats = NatsServer::start();
    let mut nodes = start_cluster(&nats, 3, &[]).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let urls: Vec<String> = nodes.iter().map(|n| n.url("")).collect();
    let publishers: Vec<_> = TOPICS
        .iter()
        .map(|t| resilient_publisher(urls.clone(), t, stop.clone()))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Kill the node that owns most topics... any node will do: n2.
    nodes[1].kill9();
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    nodes[1].kill9_and_restart();
    let restarted = Instant::now();
    wait_ready(&nodes[1], Duration::from_secs(30)).await;
    eprintln!("restarted node ready after {:?}", restarted.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut total_acked = 0;
    for (topic, p) in TOPICS.iter().zip(publishers) {
        let (acked, refused) = p.await.unwrap();
        total_acked += acked.len();
        eprintln!("{topic}: {} acked, {refused} refused attempts", acked.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let h = histories(&nodes, topic).await;
        for (i, history) in h.iter().enumerate() {
            check_acked(topic, &acked, history);
            assert_eq!(history, &h[0], "{topic}: node {i} differs from node 0");
        }
    }
    assert!(total_acked > 200, "too little traffic: {total_acked}");
    let _ = killed_at;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_outage_refuses_fast_and_recovers() {
    let mut nats = NatsServer::start();
    let port = nats.port;
    let nodes = start_cluster(&nats, 3, &[]).await;
    let mut before = HashMap::new();
    for i in 0..30u64 {
        let (status, ack) = publish(&nodes[(i % 3) as usize], "o.x", &json!({"id": i})).await;
        assert_eq!(status, 200);
        before.insert(i, ack["seq"].as_u64().unwrap());
    }
    let mut ws = nodes[0].ws().await;
    ws.request(json!({"op":"subscribe","topic":"o.x","since":30}), "s")
        .await;

    nats.stop();
    tokio::time::sleep(Duration::from_millis(800)).await;
    for node in &nodes {
        let started = Instant::now();
        let (status, body) = publish(node, "o.x", &json!("during outage")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (503, Some("unavailable")),
            "{body}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "publish hung for {:?}",
            started.elapsed()
        );
        assert_eq!(get_json(node, "/readyz").await.0, 503);
    }

    let _nats = NatsServer::start_on(port);
    for node in &nodes {
        wait_ready(node, Duration::from_secs(30)).await;
    }
    let mut after = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 30..60u64 {
        loop {
            let (status, ack) = publish(&nodes[(i % 3) as usize], "o.x", &json!({"id": i})).await;
            if status == 200 {
                after.insert(i, ack["seq"].as_u64().unwrap());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "publishing did not recover: {ack}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // The subscriber kept its connection and receives what came after.
    let got = ws.messages(30).await;
    assert_sequence(&got, "o.x", 31, 60);
    tokio::time::sleep(Duration::from_millis(500)).await;
    before.extend(after);
    let h = histories(&nodes, "o.x").await;
    for history in &h {
        check_acked("o.x", &before, history);
        assert_eq!(history, &h[0]);
    }
}
