//! sled 0.34 under the log's access pattern: one writer appending batches
//! (node splits) while readers page through committed ranges, forward for
//! replay and backward for `first_seq_since_ts`. Replay trusts that a
//! committed range reads back whole; a skipped key would reach clients as a
//! false retention gap. `HERALD_LOG_STRESS_SECS` runs it longer.

use std::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering},
    Arc,
};

use herald::{
    hub::{Message, Topic},
    log::{sled_log::SledOptions, LogEntry, MessageLog, SledLog},
};

/// Readers of committed ranges must see every key while the writer
/// keeps appending (sled splits nodes under them).
#[test]
fn reads_during_appends_see_every_committed_message() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        SledLog::open(
            dir.path(),
            &SledOptions {
                cache_bytes: 8 << 20,
                flush_every_ms: 50,
            },
        )
        .unwrap(),
    );
    let topics: Vec<Topic> = ["feed.a", "feed.b", "feed.c"]
        .iter()
        .map(|t| Topic::parse(t).unwrap())
        .collect();
    let heads: Arc<Vec<AtomicU64>> = Arc::new((0..3).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let secs: u64 = std::env::var("HERALD_LOG_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let writer = {
        let (log, heads, stop, topics) = (log.clone(), heads.clone(), stop.clone(), topics.clone());
        std::thread::spawn(move || {
            let mut next = [1u64; 3];
            let mut round = 0u64;
            let payload = format!("\"{}\"", "x".repeat(120));
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let mut entries = Vec::new();
                for _ in 0..(1 + round % 16) {
                    let i = (round as usize + entries.len()) % 3;
                    entries.push(LogEntry {
                        message: Message::new(topics[i].clone(), next[i], round, &payload),
                        idempotency: None,
                    });
                    next[i] += 1;
                }
                log.append(&entries).unwrap();
                if round.is_multiple_of(8) {
                    log.sync().unwrap();
                }
                for i in 0..3 {
                    heads[i].store(next[i] - 1, Ordering::Release);
                }
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (log, heads, stop, topics) =
                (log.clone(), heads.clone(), stop.clone(), topics.clone());
            std::thread::spawn(move || {
                let mut checks = 0u64;
                let mut x = 12345u64 + r;
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let i = (x % 3) as usize;
                    let head = heads[i].load(Ordering::Acquire);
                    if head == 0 {
                        continue;
                    }
                    let from = 1 + (x >> 8) % head;
                    let max = 1 + ((x >> 32) % 256) as usize;
                    let page = log.read(&topics[i], from, max).unwrap();
                    let want = max.min((head - from + 1) as usize);
                    assert!(page.len() >= want, "short page: {} of {want}", page.len());
                    for (k, m) in page.iter().take(want).enumerate() {
                        assert_eq!(m.seq, from + k as u64, "skipped a key");
                    }
                    let first = log.first_seq_since_ts(&topics[i], 0, head).unwrap();
                    assert_eq!(first, Some(1), "reverse scan of {head}");
                    checks += 1;
                }
                checks
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    for r in readers {
        assert!(r.join().unwrap() > 10);
    }
}
