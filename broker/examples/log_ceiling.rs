//! The storage ceiling under Herald's ingest: how many messages per second
//! one thread can append and make durable, with nothing else running.
//!
//! Two layers, each with the same access pattern as Herald's writer thread
//! (one key per message, `m` topic `\0` seq, in one tree; a batch per pass,
//! then one flush): raw sled 0.34 with Herald's configuration, and Herald's
//! own `SledLog` (checksummed records, its stats). Topics round-robin, as
//! many publishers spread over many topics make them.
//!
//! ```sh
//! cargo run --release -p herald --example log_ceiling -- [SECS] [TOPICS] [PAYLOAD] [LAYERS]
//! ```
//!
//! Prints one line per layer, durability and batch size. Run it on the
//! disk Herald uses (`TMPDIR`); nothing else should be running.

use std::time::{Duration, Instant};

use herald::{
    hub::{Message, Topic},
    log::{sled_log::SledOptions, LogEntry, MessageLog, SledLog},
};

/// A message envelope as Herald stores one (≈ what `Message::new` builds).
fn envelope(topic: &str, seq: u64, ts: u64, payload: usize) -> Vec<u8> {
    let data = "x".repeat(payload.saturating_sub(2));
    format!(r#"{{"topic":"{topic}","seq":{seq},"ts":{ts},"data":"{data}"}}"#).into_bytes()
}

/// Layers the fourth argument may list (comma-separated; default
/// `sled,herald`). Besides Herald's own layout and `SledLog` (`keyed`:
/// every message with an idempotency key, looked up first as the writer
/// does, which is what the official clients send), three
/// layouts Herald could use instead, to know their ceilings first:
/// `seq` one key per message in arrival order (sequential keys), `pass`
/// one key per batch holding all of its messages, `chunked` `pass` plus a
/// compaction every 500 ms that rewrites the batches as one value per topic
/// and removes them (what per-topic reads would need), on the same thread.
const LAYERS: [&str; 6] = ["sled", "herald", "keyed", "seq", "pass", "chunked"];

struct Run {
    layer: &'static str,
    always: bool,
    batch: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let secs: f64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(3.0);
    let topics: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let payload: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(256);
    let names: Vec<String> = (0..topics).map(|i| format!("bench.t{i}")).collect();
    println!(
        "log ceiling: {topics} topics, {payload} B payloads, {secs} s per line, one writer thread"
    );
    println!(
        "{:<10} {:<8} {:>6} {:>12} {:>14} {:>10}",
        "layer", "mode", "batch", "msg/s", "batches/s", "µs/msg"
    );
    let layers: Vec<&'static str> = match args.get(3).map(String::as_str) {
        Some(list) => LAYERS
            .iter()
            .copied()
            .filter(|l| list.split(',').any(|x| x == *l))
            .collect(),
        None => vec!["sled", "herald"],
    };
    for layer in layers {
        for always in modes() {
            for batch in batches() {
                let run = Run {
                    layer,
                    always,
                    batch,
                };
                let (messages, batches, elapsed) = measure(&run, &names, payload, secs);
                let rate = messages as f64 / elapsed.as_secs_f64();
                println!(
                    "{:<10} {:<8} {:>6} {:>12.0} {:>14.0} {:>10.2}",
                    layer,
                    if always { "always" } else { "relaxed" },
                    batch,
                    rate,
                    batches as f64 / elapsed.as_secs_f64(),
                    1e6 / rate
                );
            }
        }
    }
}

/// The batch sizes to measure (`LOG_CEILING_BATCHES=256,1024`; all by default).
fn batches() -> Vec<usize> {
    match std::env::var("LOG_CEILING_BATCHES") {
        Ok(list) => list
            .split(',')
            .map(|b| b.parse().expect("a batch size"))
            .collect(),
        Err(_) => vec![1, 16, 64, 256, 1024],
    }
}

/// Whether to measure `always`, `relaxed` or both (`LOG_CEILING_MODES=always`).
fn modes() -> Vec<bool> {
    match std::env::var("LOG_CEILING_MODES") {
        Ok(list) => list.split(',').map(|m| m == "always").collect(),
        Err(_) => vec![true, false],
    }
}

/// sled's cache (`LOG_CEILING_CACHE_MIB`; Herald's default, 8 MiB, otherwise).
fn cache_bytes() -> u64 {
    std::env::var("LOG_CEILING_CACHE_MIB").map_or(8, |m| m.parse().expect("MiB")) << 20
}

/// Raw sled with Herald's configuration, and one tree.
fn open_raw(dir: &std::path::Path) -> (sled::Db, sled::Tree) {
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(cache_bytes())
        .flush_every_ms(Some(500))
        .open()
        .expect("sled opens");
    let tree = db.open_tree("log").expect("tree");
    (db, tree)
}

/// Appends batches for `secs`; returns messages, batches and time taken.
fn measure(run: &Run, names: &[String], payload: usize, secs: f64) -> (u64, u64, Duration) {
    let dir = tempfile::tempdir().expect("temp dir");
    let deadline = Duration::from_secs_f64(secs);
    let mut seqs = vec![0u64; names.len()];
    let mut next_topic = 0usize;
    let mut take = |n: usize| -> Vec<(usize, u64)> {
        (0..n)
            .map(|_| {
                let t = next_topic;
                next_topic = (next_topic + 1) % names.len();
                seqs[t] += 1;
                (t, seqs[t])
            })
            .collect()
    };
    let (mut messages, mut batches) = (0u64, 0u64);
    let started = Instant::now();
    match run.layer {
        "seq" | "pass" | "chunked" => {
            let (db, tree) = open_raw(dir.path());
            let mut counter = 0u64;
            let mut pending: Vec<Vec<(usize, u64, Vec<u8>)>> = vec![Vec::new(); names.len()];
            let mut pass_keys: Vec<Vec<u8>> = Vec::new();
            let mut compacted = Instant::now();
            while started.elapsed() < deadline {
                let mut batch = sled::Batch::default();
                let mut pass_value = Vec::new();
                for (t, seq) in take(run.batch) {
                    let value = envelope(&names[t], seq, 0, payload);
                    match run.layer {
                        "seq" => {
                            counter += 1;
                            let mut key = b"g".to_vec();
                            key.extend_from_slice(&counter.to_be_bytes());
                            batch.insert(key, value);
                        }
                        _ => {
                            pass_value.extend_from_slice(&(value.len() as u32).to_be_bytes());
                            pass_value.extend_from_slice(&value);
                            if run.layer == "chunked" {
                                pending[t].push((t, seq, value));
                            }
                        }
                    }
                }
                if run.layer != "seq" {
                    counter += 1;
                    let mut key = b"w".to_vec();
                    key.extend_from_slice(&counter.to_be_bytes());
                    pass_keys.push(key.clone());
                    batch.insert(key, pass_value);
                }
                tree.apply_batch(batch).expect("batch");
                if run.always {
                    db.flush().expect("flush");
                }
                if run.layer == "chunked" && compacted.elapsed() >= Duration::from_millis(500) {
                    let mut batch = sled::Batch::default();
                    for (t, messages) in pending.iter_mut().enumerate() {
                        let Some(first) = messages.first().map(|m| m.1) else {
                            continue;
                        };
                        let mut key = format!("c{}\0", names[t]).into_bytes();
                        key.extend_from_slice(&first.to_be_bytes());
                        let mut value = Vec::new();
                        for (_, _, m) in messages.drain(..) {
                            value.extend_from_slice(&(m.len() as u32).to_be_bytes());
                            value.extend_from_slice(&m);
                        }
                        batch.insert(key, value);
                    }
                    for key in pass_keys.drain(..) {
                        batch.remove(key);
                    }
                    tree.apply_batch(batch).expect("compaction");
                    compacted = Instant::now();
                }
                messages += run.batch as u64;
                batches += 1;
            }
        }
        "sled" => {
            let (db, tree) = open_raw(dir.path());
            while started.elapsed() < deadline {
                let mut batch = sled::Batch::default();
                for (t, seq) in take(run.batch) {
                    let mut key = Vec::with_capacity(names[t].len() + 10);
                    key.push(b'm');
                    key.extend_from_slice(names[t].as_bytes());
                    key.push(0);
                    key.extend_from_slice(&seq.to_be_bytes());
                    let mut value = 1_700_000_000_000u64.to_be_bytes().to_vec();
                    value.extend_from_slice(&envelope(&names[t], seq, 0, payload));
                    value.extend_from_slice(&[0; 4]);
                    batch.insert(key, value);
                }
                tree.apply_batch(batch).expect("batch");
                if run.always {
                    db.flush().expect("flush");
                }
                messages += run.batch as u64;
                batches += 1;
            }
        }
        _ => {
            let options = SledOptions {
                cache_bytes: cache_bytes(),
                flush_every_ms: 500,
            };
            let log = SledLog::open(dir.path(), &options).expect("log opens");
            let topics: Vec<Topic> = names.iter().map(|n| Topic::parse(n).unwrap()).collect();
            let data = format!("\"{}\"", "x".repeat(payload.saturating_sub(2)));
            while started.elapsed() < deadline {
                let keyed = run.layer == "keyed";
                let entries: Vec<LogEntry> = take(run.batch)
                    .into_iter()
                    .map(|(t, seq)| {
                        // As the writer does for a keyed publish: look the
                        // key up first, then store it with the message.
                        let idempotency = keyed.then(|| {
                            let key = format!("k{:016x}-{seq}", messages ^ (t as u64) << 20);
                            assert!(log.idempotency(&topics[t], &key).expect("lookup").is_none());
                            (key, u64::MAX)
                        });
                        LogEntry {
                            message: Message::new(topics[t].clone(), seq, 1_700_000_000_000, &data),
                            idempotency,
                        }
                    })
                    .collect();
                log.append(&entries).expect("append");
                if run.always {
                    log.sync().expect("sync");
                }
                messages += run.batch as u64;
                batches += 1;
            }
        }
    }
    (messages, batches, started.elapsed())
}
