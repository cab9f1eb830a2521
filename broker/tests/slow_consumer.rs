//! Issue 2: one subscriber that stops reading must not delay the others or
//! grow the node's memory.

mod common;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const MESSAGES: u64 = 20_000;
const BATCH: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_subscriber_costs_the_others_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        "[log]\ncache_bytes = 8388608\n[limits]\nqueue_bytes = 1048576\nslow_consumer = \"disconnect\"\n[transport]\nws_ping_interval = \"2s\"\nws_idle_timeout = \"6s\"\n",
    )
    .unwrap();
    let node = Node::start(&["--config", config.to_str().unwrap()]);

    // The stalled subscriber: subscribes, then never reads again.
    let mut stalled = node.ws().await;
    stalled.subscribe("feed.prices").await;

    let mut readers = Vec::new();
    let done_at: Arc<Vec<AtomicU64>> = Arc::new((0..3).map(|_| AtomicU64::new(0)).collect());
    let t0 = Instant::now();
    for i in 0..3 {
        let mut ws = node.ws().await;
        ws.subscribe("feed.prices").await;
        let done_at = done_at.clone();
        readers.push(tokio::spawn(async move {
            let mut seqs = Vec::with_capacity(MESSAGES as usize);
            while (seqs.len() as u64) < MESSAGES {
                let frame = ws
                    .try_recv(Duration::from_secs(30))
                    .await
                    .expect("fast subscriber starved");
                if frame["type"] == "message" {
                    seqs.push(frame["seq"].as_u64().unwrap());
                }
            }
            done_at[i].store(t0.elapsed().as_millis() as u64, Ordering::SeqCst);
            seqs
        }));
    }

    let baseline = node.rss_kib();
    let sampling = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampler = {
        let (sampling, peak, pid) = (sampling.clone(), peak.clone(), node.pid());
        tokio::spawn(async move {
            while sampling.load(Ordering::SeqCst) {
                if let Some(rss) = rss_of(pid) {
                    peak.fetch_max(rss, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // The stalled subscriber reads again only once the node has cut it off
    // as a slow consumer (within the idle timeout, as a live client would):
    // it gets at most what was buffered, then the close, 4001.
    let stalled_reader = {
        let url = node.url("/metrics");
        tokio::spawn(async move {
            loop {
                let text = http().get(&url).send().await.unwrap().text().await.unwrap();
                if slow_consumer_counted(&text) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let mut got = 0u64;
            let mut close = None;
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                match tokio::time::timeout(Duration::from_secs(10), stalled.stream.next()).await {
                    Ok(Some(Ok(WsMessage::Text(_)))) => got += 1,
                    Ok(Some(Ok(WsMessage::Close(frame)))) => {
                        close = frame.map(|f| u16::from(f.code));
                        break;
                    }
                    Ok(Some(Ok(_))) => {}
                    Ok(Some(Err(_))) | Ok(None) => break,
                    Err(_) => panic!("stalled subscriber was never disconnected"),
                }
            }
            (got, close)
        })
    };

    let client = http();
    for b in 0..MESSAGES / BATCH {
        publish_padded_batch(&client, &node, "feed.prices", b * BATCH, BATCH).await;
    }
    let published_at = t0.elapsed().as_millis() as u64;

    for r in readers {
        let seqs = r.await.unwrap();
        let expected: Vec<u64> = (1..=MESSAGES).collect();
        assert!(
            seqs == expected,
            "a fast subscriber missed or reordered messages"
        );
    }
    sampling.store(false, Ordering::SeqCst);
    sampler.await.unwrap();
    let lag: Vec<u64> = done_at
        .iter()
        .map(|d| d.load(Ordering::SeqCst).saturating_sub(published_at))
        .collect();
    let peak = peak.load(Ordering::SeqCst);
    eprintln!(
        "published {MESSAGES} x 1 KiB in {published_at} ms; fast subscribers done +{lag:?} ms after the last ack; RSS {baseline} KiB -> peak {peak} KiB"
    );
    // Promptly: every fast subscriber has everything within 5 s of the last ack.
    assert!(
        lag.iter().all(|l| *l < 5_000),
        "fast subscribers lagged: {lag:?} ms"
    );
    // Bounded: the stalled subscriber holds at most its 1 MiB queue (plus socket
    // buffers), far below the 20 MiB it was sent. The whole node's growth here
    // (sled's cache and write buffers, the allocator's retained pages, the fast
    // subscribers' batches as well) measured 45-54 MiB on a slow host, so the
    // bound leaves room for that and less than the 20 MiB: a node that kept
    // everything sent to the stalled subscriber would go over it.
    let growth = peak.saturating_sub(baseline);
    assert!(growth < 64 * 1024, "RSS grew by {growth} KiB");

    let (got, close) = stalled_reader.await.unwrap();
    eprintln!("stalled subscriber read {got} buffered frames, then close {close:?}");
    assert!(got < MESSAGES, "the stalled subscriber was not cut off");
    assert_eq!(close, Some(4001), "close code");
    let metrics = get_text(&node, "/metrics").await;
    assert!(slow_consumer_counted(&metrics), "slow consumer not counted");
}

/// Whether a `/metrics` text counts a slow consumer.
fn slow_consumer_counted(metrics: &str) -> bool {
    metrics
        .lines()
        .any(|l| l.starts_with("herald_slow_consumers_total ") && !l.ends_with(" 0"))
}

fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
