//! Publishers with idempotency keys through random entry points, retrying
//! a refused or failed publish elsewhere with the same key (as the clients
//! do), and a re-sender that publishes already acknowledged keys again much
//! later: each must be answered with the seq of its first ack.

use std::{
    collections::HashMap,
    sync::{atomic::Ordering, Arc, Mutex},
    time::{Duration, Instant},
};

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};

use super::{backoff, judge, Front, Shared, TOPICS};

/// One acknowledged publish.
#[derive(Debug, Clone)]
pub struct Ack {
    pub topic: String,
    pub key: String,
    pub seq: u64,
    pub at: Instant,
}

/// Every ack, in the order they came.
#[derive(Default)]
pub struct Acks {
    pub list: Mutex<Vec<Ack>>,
    /// Re-sends of acknowledged keys answered (each with the right seq, or
    /// a problem is recorded).
    pub resent: std::sync::atomic::AtomicU64,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .unwrap()
}

/// POSTs `{"k": key}` to `topic` with `key` until a 200, on a random entry
/// point each time; `None` when `give_up` says to stop trying.
async fn publish_until_acked(
    client: &reqwest::Client,
    front: &Front,
    shared: &Shared,
    rng: &mut StdRng,
    topic: &str,
    key: &str,
    give_up: impl Fn() -> bool,
) -> Option<u64> {
    loop {
        if give_up() {
            return None;
        }
        let entry = front.pick(rng);
        let url = format!("{}/v1/topics/{topic}/messages", entry.base);
        let res = client
            .post(&url)
            .header("Idempotency-Key", key)
            .json(&json!({ "k": key }))
            .send()
            .await;
        match res {
            Ok(r) if r.status() == 200 => {
                let body: Value = match r.json().await {
                    Ok(v) => v,
                    Err(_) => {
                        // The answer was cut off: unknown outcome, retried.
                        shared.failed();
                        continue;
                    }
                };
                match body["seq"].as_u64() {
                    Some(seq) if body["topic"] == topic => return Some(seq),
                    _ => shared.problem(format!("{url} ({key}): 200 with {body}")),
                }
            }
            Ok(r) => {
                let status = r.status().as_u16();
                let retry_after = r.headers().contains_key("retry-after");
                let body = r.text().await.unwrap_or_default();
                let what = format!("publish {topic} {key}");
                judge(shared, &entry, &what, status, retry_after, &body);
            }
            Err(_) => shared.failed(),
        }
        backoff(rng).await;
    }
}

/// Publishes to random topics until `stop_publishing`, each publish
/// retried until acknowledged (or `give_up`), at most one every `pace`.
pub fn publisher(
    p: u64,
    seed: u64,
    pace: Duration,
    front: Arc<Front>,
    shared: Arc<Shared>,
    acks: Arc<Acks>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut rng = StdRng::seed_from_u64(seed ^ (0x1000 + p));
        let client = client();
        let mut n = 0u64;
        while !shared.stop_publishing.load(Ordering::SeqCst) {
            n += 1;
            let started = Instant::now();
            let topic = TOPICS[rng.gen_range(0..TOPICS.len())];
            let key = format!("p{p}-{n}");
            let give_up =
                || shared.abort.load(Ordering::SeqCst) || shared.give_up.load(Ordering::SeqCst);
            let Some(seq) =
                publish_until_acked(&client, &front, &shared, &mut rng, topic, &key, give_up).await
            else {
                break;
            };
            acks.list.lock().unwrap().push(Ack {
                topic: topic.into(),
                key,
                seq,
                at: Instant::now(),
            });
            let pause = Duration::from_millis(rng.gen_range(2..20));
            tokio::time::sleep(pause.max(pace.saturating_sub(started.elapsed()))).await;
        }
    })
}

/// Until `stop_publishing`: every few hundred ms, publishes a key acked at
/// least 3 s ago again (a client retrying long after its ack was lost)
/// and checks the answer is the first ack's seq.
pub fn resender(
    seed: u64,
    front: Arc<Front>,
    shared: Arc<Shared>,
    acks: Arc<Acks>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x2000);
        let client = client();
        while !shared.stop_publishing.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(100..500))).await;
            let old = {
                let list = acks.list.lock().unwrap();
                let cutoff = Instant::now() - Duration::from_secs(3);
                let old = list.partition_point(|a| a.at < cutoff);
                (old > 0).then(|| list[rng.gen_range(0..old)].clone())
            };
            let Some(ack) = old else { continue };
            let give_up =
                || shared.abort.load(Ordering::SeqCst) || shared.give_up.load(Ordering::SeqCst);
            let seq = publish_until_acked(
                &client, &front, &shared, &mut rng, &ack.topic, &ack.key, give_up,
            )
            .await;
            match seq {
                Some(seq) if seq == ack.seq => {
                    acks.resent.fetch_add(1, Ordering::Relaxed);
                }
                Some(seq) => shared.problem(format!(
                    "{} key {} acked as #{} {:?} ago, re-sent: #{seq}",
                    ack.topic,
                    ack.key,
                    ack.seq,
                    ack.at.elapsed()
                )),
                None => break,
            }
        }
    })
}

/// (topic, key) → seq over every ack; a key acked with two different seqs
/// is a problem.
pub fn acked_keys(acks: &Acks, shared: &Shared) -> HashMap<(String, String), u64> {
    let mut out = HashMap::new();
    for a in acks.list.lock().unwrap().iter() {
        if let Some(first) = out.insert((a.topic.clone(), a.key.clone()), a.seq) {
            if first != a.seq {
                shared.problem(format!(
                    "{} key {} acked as #{first} and #{}",
                    a.topic, a.key, a.seq
                ));
            }
        }
    }
    out
}
