//! The randomized cluster checker: three nodes on a 3-server NATS cluster
//! with HAProxy in front (the deploy topology). Publishers with
//! idempotency keys go through random entry points, and re-send keys acked
//! long ago; subscribers on every transport (WebSocket with a pattern
//! cursor and with `since`, SSE and long-poll on a pattern and on a
//! concrete topic) reconnect all the time to random entry points — nodes
//! that are not ready included — and resume there. Meanwhile nodes are
//! killed (-9), drained (SIGTERM), paused (SIGSTOP) and restarted and NATS
//! servers are killed, sometimes two faults at once.
//!
//! At the end: no acknowledged message is lost; every subscriber got each
//! of its topics exactly as `1..=head` — no duplicate, nothing out of
//! order, nothing missing, and (default retention) no gap; every node
//! holds the same history; every idempotency key is stored once and was
//! always answered with the same seq.
//!
//! `HERALD_CHAOS_SECS` (default 45) is how long faults are injected;
//! `HERALD_CHAOS_SEED` replays a schedule (its seed is printed first).

mod chaos_support;
mod common;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

use chaos_support::{
    nemesis::{self, Cluster},
    publishers::{acked_keys, publisher, resender, Acks},
    subscribers::{subscriber, Kind, Spec},
    Front, Shared, Verdict, TOPICS,
};
use common::*;

/// Tells the clients and the nemesis to stop when the test ends, also by a
/// panic, so every process is healed and dropped (killed).
struct AbortOnDrop(Arc<Shared>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort.store(true, Ordering::SeqCst);
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

fn specs() -> Vec<Spec> {
    let all = TOPICS.to_vec();
    vec![
        Spec {
            name: "ws-pattern-cursor",
            kind: Kind::WsCursor,
            topic: "z.*",
            topics: all.clone(),
        },
        Spec {
            name: "ws-topics-since",
            kind: Kind::WsSince,
            topic: "z.*",
            topics: all.clone(),
        },
        Spec {
            name: "sse-pattern",
            kind: Kind::Sse,
            topic: "z.*",
            topics: all.clone(),
        },
        Spec {
            name: "sse-topic",
            kind: Kind::Sse,
            topic: "z.a",
            topics: vec!["z.a"],
        },
        Spec {
            name: "poll-pattern",
            kind: Kind::Poll,
            topic: "z.*",
            topics: all,
        },
        Spec {
            name: "poll-topic",
            kind: Kind::Poll,
            topic: "z.b",
            topics: vec!["z.b"],
        },
    ]
}

/// Waits for `tasks` for up to `limit`, then tells them to give up;
/// returns their results and whether they had to be told.
async fn finish<T>(
    tasks: Vec<tokio::task::JoinHandle<T>>,
    limit: Duration,
    shared: &Shared,
) -> (Vec<T>, bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !tasks.iter().all(|t| t.is_finished()) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let late = !tasks.iter().all(|t| t.is_finished());
    if late {
        shared.give_up.store(true, Ordering::SeqCst);
    }
    let done = futures_util::future::join_all(tasks).await;
    (
        done.into_iter().map(|r| r.expect("client task")).collect(),
        late,
    )
}

/// Each topic's last seq once every node reports the same one twice in a
/// row, a second apart (nothing still in flight).
async fn agreed_heads(nodes: &[Node]) -> BTreeMap<String, u64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut previous = None;
    loop {
        let mut heads = BTreeMap::new();
        let mut agree = true;
        for topic in TOPICS {
            let mut lasts = Vec::new();
            for node in nodes {
                let path = format!("/v1/topics/{topic}/messages?since=0&limit=1");
                lasts.push(get_json(node, &path).await.1["last_seq"].as_u64());
            }
            agree &= lasts.iter().all(|l| l.is_some() && *l == lasts[0]);
            heads.insert(topic.to_string(), lasts[0].unwrap_or(0));
        }
        if agree && previous.as_ref() == Some(&heads) {
            return heads;
        }
        previous = agree.then_some(heads.clone());
        assert!(
            tokio::time::Instant::now() < deadline,
            "the nodes do not agree on the heads: {heads:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Where node `i`'s history of `topic` first differs from n1's.
fn divergence(
    topic: &str,
    n1: &[serde_json::Value],
    other: &[serde_json::Value],
    i: usize,
) -> String {
    let at = n1
        .iter()
        .zip(other)
        .position(|(a, b)| a != b)
        .unwrap_or(n1.len().min(other.len()));
    format!(
        "{topic}: n1 has {} messages, n{} {}; first difference at index {at}: n1 {:?}, n{} {:?}",
        n1.len(),
        i + 1,
        other.len(),
        n1.get(at).map(|m| m.to_string()),
        i + 1,
        other.get(at).map(|m| m.to_string()),
    )
}

/// Writes every node's log (all its processes) to a directory that
/// outlives the test; returns its path.
fn save_logs(seed: u64, nodes: &[Node], archive: &[Mutex<Vec<String>>]) -> String {
    let dir = std::env::temp_dir().join(format!("herald-chaos-{seed}"));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, node) in nodes.iter().enumerate() {
        let mut lines = archive[i].lock().unwrap().clone();
        lines.extend(node.log.lock().unwrap().iter().cloned());
        std::fs::write(dir.join(format!("n{}.log", i + 1)), lines.join("\n")).unwrap();
    }
    dir.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_anywhere_keep_every_promise() {
    let seed = env_u64("HERALD_CHAOS_SEED").unwrap_or_else(rand::random);
    let secs = env_u64("HERALD_CHAOS_SECS").unwrap_or(45);
    eprintln!("chaos seed {seed}, {secs} s of faults (HERALD_CHAOS_SEED={seed} to replay)");

    let nats = NatsCluster::start();
    let addrs: Vec<_> = (0..3).map(|_| stable_addr()).collect();
    let urls = nats.urls();
    let nodes: Vec<Node> = addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let name = format!("n{}", i + 1);
            Node::start_at(*addr, &["--nats", &urls, "--node-id", &name])
        })
        .collect();
    for node in &nodes {
        wait_ready(node, Duration::from_secs(30)).await;
    }
    eprintln!("nodes n1..n3 at {addrs:?}");
    let haproxy = Haproxy::start(&addrs);
    haproxy.wait_all_up(Duration::from_secs(20)).await;

    let front = Arc::new(Front {
        nodes: addrs.iter().map(|a| format!("http://{a}")).collect(),
        lb: haproxy.url(),
    });
    let shared = Arc::new(Shared::default());
    let _abort = AbortOnDrop(shared.clone());
    let acks = Arc::new(Acks::default());
    // The default retention keeps 10,000 messages per topic: publishing is
    // paced so that however long a run is, a topic gets about 9,000 at
    // most (3 publishers, 4 topics), and no retention gap is legitimate.
    let pace = Duration::from_secs_f64((secs + 60) as f64 * 3.0 / 36_000.0);
    let publishers: Vec<_> = (0..3)
        .map(|p| publisher(p, seed, pace, front.clone(), shared.clone(), acks.clone()))
        .collect();
    let resending = resender(seed, front.clone(), shared.clone(), acks.clone());
    let subscribers: Vec<_> = specs()
        .into_iter()
        .map(|spec| subscriber(spec, seed, front.clone(), shared.clone()))
        .collect();

    let cluster = Arc::new(Cluster {
        nodes: nodes.into_iter().map(Mutex::new).collect(),
        nats: Mutex::new(nats),
        archive: (0..3).map(|_| Mutex::default()).collect(),
    });
    let counts = {
        let (cluster, shared) = (cluster.clone(), shared.clone());
        let length = Duration::from_secs(secs);
        tokio::task::spawn_blocking(move || nemesis::run(&cluster, seed, length, &shared.abort))
            .await
            .expect("the nemesis")
    };
    let Ok(cluster) = Arc::try_unwrap(cluster) else {
        unreachable!("the nemesis has returned")
    };
    let nodes: Vec<Node> = cluster
        .nodes
        .into_iter()
        .map(|n| n.into_inner().unwrap())
        .collect();
    let _nats = cluster.nats;
    let archive = cluster.archive;
    for node in &nodes {
        wait_ready(node, Duration::from_secs(30)).await;
    }

    // Quiet: publishing stops; every publish started must be acked now
    // that every node is back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    shared.stop_publishing.store(true, Ordering::SeqCst);
    if finish(publishers, Duration::from_secs(20), &shared).await.1 {
        shared.problem("a publish was not acked within 20 s of the faults' end".into());
    }
    resending.await.unwrap();
    let heads = agreed_heads(&nodes).await;
    *shared.heads.lock().unwrap() = Some(heads.clone());
    let (seen, late) = finish(subscribers, Duration::from_secs(30), &shared).await;
    if late {
        shared.problem(format!(
            "subscribers did not reach the heads {heads:?} in 30 s"
        ));
    }

    // The nodes' logs.
    let acked = acked_keys(&acks, &shared);
    let (mut lost, mut twice, mut stored) = (Vec::new(), Vec::new(), 0);
    let mut diverged = Vec::new();
    for topic in TOPICS {
        let history = full_history(&nodes[0], topic).await.0;
        for (i, node) in nodes.iter().enumerate().skip(1) {
            let other = full_history(node, topic).await.0;
            if other != history {
                diverged.push(divergence(topic, &history, &other, i));
            }
        }
        let seqs: Vec<u64> = history.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        let n = heads[topic];
        if seqs != (1..=n).collect::<Vec<_>>() {
            let at = seqs.iter().zip(1..).position(|(s, i)| *s != i);
            diverged.push(format!(
                "{topic}: n1 holds {} messages, not 1..={n}; first wrong at index {at:?}",
                seqs.len()
            ));
        }
        stored += n;
        let keys: Vec<&str> = history
            .iter()
            .map(|m| m["data"]["k"].as_str().unwrap())
            .collect();
        let mut copies: HashMap<&str, Vec<String>> = HashMap::new();
        for m in &history {
            let copy = format!("#{} ts {}", m["seq"], m["ts"]);
            copies
                .entry(m["data"]["k"].as_str().unwrap())
                .or_default()
                .push(copy);
        }
        for (key, copies) in copies.into_iter().filter(|(_, c)| c.len() > 1) {
            let ack = acked.get(&(topic.to_string(), key.to_string()));
            twice.push(format!("{topic} key {key}: {copies:?}, acked as {ack:?}"));
        }
        for ((t, key), seq) in acked.iter().filter(|((t, _), _)| t == topic) {
            if keys.get(*seq as usize - 1) != Some(&key.as_str()) {
                lost.push(format!("{t}#{seq} ({key})"));
            }
        }
    }

    // What each subscriber got.
    let mut total = Verdict::default();
    let mut bad = Vec::new();
    let mut sessions = 0;
    for s in &seen {
        sessions += s.sessions;
        for topic in &s.topics {
            let events = s.events.get(topic).map(Vec::as_slice).unwrap_or_default();
            let v = Verdict::of(events, heads[topic]);
            total.duplicates += v.duplicates;
            total.backwards += v.backwards;
            total.missing += v.missing;
            total.gap_seqs += v.gap_seqs;
            if !v.clean() {
                bad.push(format!(
                    "{} on {topic}: {v:?} (head {})",
                    s.name, heads[topic]
                ));
            }
        }
    }
    let problems = shared.problems.lock().unwrap().clone();
    let failed = !(lost.is_empty()
        && twice.is_empty()
        && bad.is_empty()
        && problems.is_empty()
        && diverged.is_empty());
    let logs = failed.then(|| save_logs(seed, &nodes, &archive));
    eprintln!(
        "chaos summary: seed {seed}, {secs} s of faults: {counts}; {} acks ({} re-sent \
         keys answered with their seq), {stored} stored; lost {}, stored twice {}; \
         subscribers ({sessions} sessions): duplicates {}, out of order {}, missing {}, gap seqs {}; \
         {} refusals, {} failed connections/requests ({} of them 408s); {} problems",
        acks.list.lock().unwrap().len(),
        acks.resent.load(Ordering::Relaxed),
        lost.len(),
        twice.len(),
        total.duplicates,
        total.backwards,
        total.missing,
        total.gap_seqs,
        shared.refusals.load(Ordering::Relaxed),
        shared.failures.load(Ordering::Relaxed),
        shared.timeouts_408.load(Ordering::Relaxed),
        problems.len(),
    );
    if let Some(dir) = logs {
        eprintln!("the nodes' logs: {dir}");
    }
    assert!(diverged.is_empty(), "seed {seed}: {diverged:#?}");
    assert!(
        stored > 200,
        "seed {seed}: too little traffic to judge ({stored})"
    );
    assert!(
        lost.is_empty(),
        "seed {seed}: acknowledged messages lost: {lost:?}"
    );
    assert!(
        twice.is_empty(),
        "seed {seed}: idempotency keys stored twice: {twice:#?}"
    );
    assert!(bad.is_empty(), "seed {seed}: subscribers: {bad:#?}");
    assert!(problems.is_empty(), "seed {seed}: {problems:#?}");
    assert!(
        counts.kill9 + counts.term + counts.stop + counts.nats > 0,
        "seed {seed}: no fault injected"
    );
}
