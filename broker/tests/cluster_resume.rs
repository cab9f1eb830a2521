//! Resuming on a node that is restarting: a long-poll chain that moves
//! from node to node on every poll — the restarted node included, before it
//! is ready — never sees a seq twice and never skips one.

mod common;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use common::*;
use serde_json::{json, Value};

const TOPICS: [&str; 4] = ["t.a", "t.b", "t.c", "t.d"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_poll_chain_across_a_restart_repeats_and_skips_nothing() {
    let nats = NatsServer::start();
    let mut nodes = start_cluster(&nats, 3, &[]).await;
    let addrs = Arc::new(parking_lot::RwLock::new(
        nodes.iter().map(|n| n.addr).collect::<Vec<_>>(),
    ));

    // One publisher per topic, through n1 and n2 in turn, so a topic whose
    // owner is down stalls only itself. t.b is slow: a cursor may cover it
    // through its floor only.
    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = TOPICS
        .iter()
        .map(|&topic| {
            let (stop, addrs) = (stop.clone(), addrs.clone());
            let pause = Duration::from_millis(if topic == "t.b" { 300 } else { 10 });
            tokio::spawn(async move {
                let client = http();
                let mut acked = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let addr = addrs.read()[i as usize % 2];
                    i += 1;
                    let sent = client
                        .post(format!("http://{addr}/v1/topics/{topic}/messages"))
                        .header("idempotency-key", format!("{topic}-{i}"))
                        .timeout(Duration::from_secs(3))
                        .json(&json!({ "i": i }))
                        .send()
                        .await;
                    if let Ok(r) = sent {
                        if r.status() == 200 {
                            let v: Value = r.json().await.unwrap();
                            acked.push(v["seq"].as_u64().unwrap());
                        }
                    }
                    tokio::time::sleep(pause).await;
                }
                (topic.to_string(), acked)
            })
        })
        .collect();

    // The long-poll chain: each poll goes to another node, ready or not;
    // while `stay` is set every other poll goes to the third node, as
    // clients do that reconnect to a node that just restarted.
    let stay = Arc::new(AtomicBool::new(false));
    let poller = {
        let (stop, addrs, stay) = (stop.clone(), addrs.clone(), stay.clone());
        tokio::spawn(async move {
            let client = http();
            let mut cursor: Option<String> = None;
            let mut got: Vec<(String, u64)> = Vec::new();
            let mut refusals = 0;
            let mut quiet_polls_after_stop = 0;
            let mut n = 0usize;
            loop {
                let pick = if stay.load(Ordering::SeqCst) && n.is_multiple_of(2) {
                    2
                } else {
                    n % 3
                };
                let addr = addrs.read()[pick];
                n += 1;
                let mut url = format!("http://{addr}/v1/poll?topic=t.*&timeout_ms=1000");
                if let Some(c) = &cursor {
                    url.push_str(&format!("&cursor={c}"));
                }
                let Ok(r) = client.get(&url).send().await else {
                    // That node is down: the next one (or, staying, again soon).
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                if r.status() == 503 {
                    assert!(r.headers().contains_key("retry-after"));
                    refusals += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                assert_eq!(r.status(), 200);
                let page: Value = r.json().await.unwrap();
                assert!(page.get("gaps").is_none(), "a gap: {page}");
                let messages = page["messages"].as_array().unwrap();
                for m in messages {
                    got.push((
                        m["topic"].as_str().unwrap().to_string(),
                        m["seq"].as_u64().unwrap(),
                    ));
                }
                cursor = Some(page["cursor"].as_str().unwrap().to_string());
                if stop.load(Ordering::SeqCst) {
                    quiet_polls_after_stop = if messages.is_empty() {
                        quiet_polls_after_stop + 1
                    } else {
                        0
                    };
                    if quiet_polls_after_stop >= 6 {
                        return (got, refusals);
                    }
                }
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(2)).await;
    // n3 dies; the chain goes on with n1 and n2 for two seconds, then
    // moves to n3 the moment it is back, before it has caught up with what
    // the chain already received elsewhere.
    nodes[2].kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stay.store(true, Ordering::SeqCst);
    nodes[2].kill9_and_restart();
    addrs.write()[2] = nodes[2].addr;
    wait_ready(&nodes[2], Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stay.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    let mut acked: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for p in publishers {
        let (topic, seqs) = p.await.unwrap();
        acked.insert(topic, seqs);
    }
    let (got, refusals) = tokio::time::timeout(Duration::from_secs(60), poller)
        .await
        .expect("the chain caught up")
        .unwrap();

    let mut by_topic: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (topic, seq) in got {
        by_topic.entry(topic).or_default().push(seq);
    }
    for topic in TOPICS {
        let seqs = by_topic.get(topic).cloned().unwrap_or_default();
        let sorted_unique: Vec<u64> = {
            let mut s = seqs.clone();
            s.sort_unstable();
            s.dedup();
            s
        };
        assert_eq!(seqs, sorted_unique, "{topic}: repeated or out of order");
        let want = acked.get(topic).cloned().unwrap_or_default();
        assert!(!want.is_empty(), "{topic}: nothing acked");
        let first = seqs.first().copied().unwrap_or(0);
        let expected: Vec<u64> = (first..=*want.iter().max().unwrap()).collect();
        assert_eq!(seqs, expected, "{topic}: skipped seqs");
        assert!(
            want.iter().all(|s| *s < first || seqs.contains(s)),
            "{topic}: an acked message was never delivered"
        );
    }
    eprintln!("refused while not ready: {refusals} polls");
    assert!(
        refusals > 0,
        "the restarted node answered polls before it had caught up"
    );
}

/// While a node is cut off from the cluster (its NATS server is down) it
/// refuses to start subscriptions on every transport, each with its
/// documented retry signal, and serves them again once it has caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_cluster_refuses_new_subscriptions_with_retry_signals() {
    let mut nats = NatsServer::start();
    let port = nats.port;
    let nodes = start_cluster(&nats, 2, &[]).await;
    let node = &nodes[0];
    nats.stop();
    // Until the node notices (NATS's ping interval at the latest).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while get_json(node, "/readyz").await.0 != 503 {
        assert!(tokio::time::Instant::now() < deadline, "never unready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Long-poll: 503 unavailable with Retry-After.
    let r = http()
        .get(node.url("/v1/poll?topic=a.b&timeout_ms=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");

    // WebSocket: the upgrade is refused the same way.
    match tokio_tungstenite::connect_async(node.ws_url("/v1/ws")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 503);
            assert!(res.headers().contains_key("retry-after"));
        }
        other => panic!("upgraded while cut off: {:?}", other.map(|_| ())),
    }

    // SSE: a stream of one `unavailable` event with `retry:`, then its end
    // (EventSource reconnects after `retry`; it would give up on a 503).
    let text = http()
        .get(node.url("/v1/sse?topic=a.b"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.starts_with("retry: "), "{text}");
    assert!(
        text.contains("event: unavailable\ndata: {\"error\":{\"code\":\"unavailable\""),
        "{text}"
    );

    // Back: subscriptions are served again.
    let _nats = NatsServer::start_on(port);
    wait_ready(node, Duration::from_secs(30)).await;
    let mut ws = node.ws().await;
    ws.subscribe("a.b").await;
    let (status, _) = get_json(node, "/v1/poll?topic=a.b&timeout_ms=0").await;
    assert_eq!(status, 200);
}
