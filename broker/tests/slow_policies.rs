//! Issue 6: every slow-consumer policy against a client that stops reading:
//! the promised behaviour holds and the node's memory stays bounded.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const N: u64 = 15_000;

/// A node whose namespace `ns` uses the slow-consumer policy named `ns`,
/// with a 64 KiB queue, and a client subscribed to `ns.>`.
async fn node_with_policy(
    ns: &str,
    idle_timeout: &str,
    ping_interval: &str,
) -> (tempfile::TempDir, Node, Ws) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    std::fs::write(
        &file,
        format!(
            "[log]\ncache_bytes = 8388608\n[limits]\nqueue_bytes = 65536\n[transport]\nws_idle_timeout = \"{idle_timeout}\"\nws_ping_interval = \"{ping_interval}\"\n[namespaces.{ns}]\nslow_consumer = \"{ns}\"\n"
        ),
    )
    .unwrap();
    let node = Node::start(&["--config", file.to_str().unwrap()]);
    let mut ws = node.ws().await;
    ws.subscribe(&format!("{ns}.>")).await;
    (dir, node, ws)
}

async fn run_policy(ns: &str) -> (Vec<Value>, Option<u16>, u64) {
    let (_dir, node, mut ws) = node_with_policy(ns, "60s", "20s").await;
    let baseline = node.rss_kib();
    let mut peak = baseline;
    let client = http();
    for b in 0..N / 500 {
        publish_padded_batch(&client, &node, &format!("{ns}.t"), b * 500, 500).await;
        peak = peak.max(node.rss_kib());
    }
    // Now read again until quiet.
    let mut frames = Vec::new();
    let mut close = None;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(3), ws.stream.next()).await {
        match msg {
            Ok(WsMessage::Text(t)) => frames.push(serde_json::from_str::<Value>(&t).unwrap()),
            Ok(WsMessage::Close(f)) => {
                close = f.map(|f| u16::from(f.code));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "{ns}: {} frames after the stall, close {close:?}, RSS +{growth} KiB",
        frames.len()
    );
    // The queue is capped at 64 KiB; what grows is the log (15 MiB written)
    // and allocator slack, not the stalled subscriber (without a cap it
    // would hold all 15 MiB on top).
    assert!(growth < 64 * 1024, "{ns}: RSS grew by {growth} KiB");
    (frames, close, growth)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_delivers_everything_without_disconnecting() {
    let (frames, close, _) = run_policy("catch_up").await;
    assert_eq!(close, None);
    let other: Vec<&Value> = frames.iter().filter(|f| f["type"] != "message").collect();
    assert!(other.is_empty(), "no gap under catch_up: {other:?}");
    assert_sequence(&frames, "catch_up.t", 1, N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_reports_exactly_what_it_dropped() {
    let (frames, close, _) = run_policy("drop_oldest").await;
    assert_eq!(close, None);
    let mut next = 1;
    let mut gaps = 0;
    for f in &frames {
        match f["type"].as_str() {
            Some("message") => {
                assert_eq!(f["seq"].as_u64(), Some(next), "{f}");
                next += 1;
            }
            Some("gap") => {
                assert_eq!(f["from"].as_u64(), Some(next), "{f}");
                next = f["to"].as_u64().unwrap() + 1;
                gaps += 1;
            }
            _ => panic!("{f}"),
        }
    }
    assert_eq!(next, N + 1, "messages and gaps account for every seq");
    assert!(gaps > 0, "the stalled client must have lost something");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflate_keeps_the_latest() {
    let (frames, close, _) = run_policy("conflate").await;
    assert_eq!(close, None);
    let seqs: Vec<u64> = frames
        .iter()
        .map(|f| {
            assert_eq!(f["type"], "message", "{f}");
            f["seq"].as_u64().unwrap()
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "increasing");
    assert_eq!(seqs.last(), Some(&N), "the latest value arrives");
    assert!((seqs.len() as u64) < N, "older values were conflated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_closes_with_4001() {
    let (frames, close, _) = run_policy("disconnect").await;
    assert!((frames.len() as u64) < N);
    assert!(matches!(close, Some(4001) | None), "{close:?}");
}

/// A client that stops reading but keeps sending frames (so it never looks
/// idle) is still closed once its socket has taken nothing for the idle
/// timeout: under `drop_oldest` its queue never overflows, so nothing else
/// would end it. The close frame waits behind what the client never read,
/// so the client sees 4002 only if it reads again in time; either way the
/// node lets the connection go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_but_keeps_talking_is_closed_4002() {
    let (_dir, node, mut ws) = node_with_policy("drop_oldest", "2s", "1s").await;
    let client = http();
    // 20 MB, enough to fill both ends' socket buffers so that the node
    // cannot write; in batches under the 64 KiB queue, so that what the
    // socket still takes is not dropped first. Talking all along.
    let started = tokio::time::Instant::now();
    for b in 0..400 {
        publish_padded_batch(&client, &node, "drop_oldest.t", b * 50, 50).await;
        if !talk(&mut ws).await {
            break; // already closed
        }
    }
    // The node gives up within the idle timeout of its last progress.
    let deadline = started + Duration::from_secs(30);
    while metric_labeled(&node, "herald_connections", "transport=\"ws\"").await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a client that takes nothing was never closed"
        );
        talk(&mut ws).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // What was buffered, then the close (4002) or the end of the socket.
    let mut close = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, ws.stream.next()).await {
        if let WsMessage::Close(f) = msg {
            close = f.map(|f| u16::from(f.code));
            break;
        }
    }
    assert!(matches!(close, Some(4002) | None), "closed with {close:?}");
}

/// A client that stops reading for a while and reads again before the idle
/// timeout is closed with 4002 only after it: here it gets the close frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_that_reads_again_sees_4002() {
    let (_dir, node, mut ws) = node_with_policy("drop_oldest", "2s", "1s").await;
    let client = http();
    for b in 0..400 {
        publish_padded_batch(&client, &node, "drop_oldest.t", b * 50, 50).await;
        if metric_labeled(&node, "herald_connections", "transport=\"ws\"").await == 0 {
            break;
        }
    }
    let mut close = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, ws.stream.next()).await {
        if let WsMessage::Close(f) = msg {
            close = f.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(close, Some(4002));
}

/// Sends the node a ping without reading anything; false once it is closed.
async fn talk(ws: &mut Ws) -> bool {
    use futures_util::SinkExt;
    let ping = WsMessage::Ping(b"still here".to_vec());
    ws.stream.send(ping).await.is_ok()
}
