//! Issue 21: damage is loud, never silent.
//!
//! Real nodes publish acknowledged messages with `--durability always` and
//! are stopped cleanly or killed -9; copies of their data dirs are then
//! damaged in 49 ways (flipped bytes at the start, middle and end of every
//! file, truncated tails, deleted files, garbled markers, records removed or
//! corrupted behind sled's back). For each copy, `herald verify` runs and a
//! node starts on it: it must either refuse with a clear message (non-zero
//! exit, no panic) or start with every acknowledged message intact, and the
//! two must agree. A node repairs a hole from its cluster peers.

mod common;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::*;
use herald::log::tamper;
use serde_json::{json, Value};

const TOPICS: [&str; 4] = ["d.t0", "d.t1", "d.t2", "d.t3"];

/// Acknowledged messages: (topic, seq) → data.
type Acked = BTreeMap<(String, u64), Value>;

/// Publishes `batches` batches of 100 messages over [`TOPICS`]; returns
/// what was acknowledged.
async fn publish_acked(base: &str, batches: u64) -> Acked {
    let client = http();
    let mut acked = Acked::new();
    for b in 0..batches {
        let items: Vec<Value> = (0..100)
            .map(|i| json!({"topic": TOPICS[i % 4], "data": {"b": b, "i": i, "pad": "p".repeat(200)}}))
            .collect();
        let res = client
            .post(format!("{base}/v1/publish"))
            .json(&items)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let acks: Vec<Value> = res.json().await.unwrap();
        for (item, ack) in items.iter().zip(acks) {
            let key = (
                ack["topic"].as_str().unwrap().to_string(),
                ack["seq"].as_u64().unwrap(),
            );
            acked.insert(key, item["data"].clone());
        }
    }
    acked
}

/// How a source node ends.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// SIGTERM.
    Clean,
    /// kill -9 right after the last ack (inside what was the 5 s checkpoint
    /// window of the previous design).
    KillNow,
    /// kill -9 six seconds after the last ack (outside it).
    KillLate,
}

/// A data dir written by a real node, and what it acknowledged.
struct Source {
    dir: PathBuf,
    acked: Acked,
}

async fn make_source(root: &Path, stop: Stop) -> Source {
    let dir = root.join(format!("{stop:?}"));
    let mut node = Node::start_in(&dir, &["--durability", "always"]);
    let acked = publish_acked(&node.url(""), 50).await;
    match stop {
        Stop::Clean => assert!(node.sigterm().success()),
        Stop::KillNow => node.kill9(),
        Stop::KillLate => {
            tokio::time::sleep(Duration::from_secs(6)).await;
            node.kill9();
        }
    }
    Source { dir, acked }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Every regular file under `dir`, relative to it.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            out.extend(
                files(&entry.path())
                    .into_iter()
                    .map(|f| Path::new(&entry.file_name()).join(f)),
            );
        } else {
            out.push(PathBuf::from(entry.file_name()));
        }
    }
    out.sort();
    out
}

/// One kind of damage applied to a copy.
struct Case {
    name: String,
    source: usize,
    damage: Box<dyn Fn(&Path)>,
}

fn case(name: impl Into<String>, source: usize, damage: impl Fn(&Path) + 'static) -> Case {
    Case {
        name: name.into(),
        source,
        damage: Box::new(damage),
    }
}

fn flip(path: &Path, at: Place) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = match at {
        Place::Start => 0,
        Place::Middle => bytes.len() / 2,
        Place::End => bytes.len() - 1,
    };
    bytes[i] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

#[derive(Clone, Copy, Debug)]
enum Place {
    Start,
    Middle,
    End,
}

fn truncate_by(path: &Path, bytes: u64) {
    let len = std::fs::metadata(path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len.saturating_sub(bytes)).unwrap();
}

/// Cuts the last `bytes` of what was written to `path` (sled preallocates,
/// so the file's length says little about where its data ends).
fn truncate_written_tail(path: &Path, bytes: u64) {
    let data = std::fs::read(path).unwrap();
    let end = data
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i as u64 + 1);
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(end.saturating_sub(bytes)).unwrap();
}

/// The largest write-ahead segment in data dir `dir`.
fn wal_segment(dir: &Path) -> PathBuf {
    largest_in(&dir.join("wal"))
}

/// The largest file in `dir`.
fn largest_in(dir: &Path) -> PathBuf {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (std::fs::metadata(&p).unwrap().len(), p))
        .collect();
    files.sort();
    let (len, path) = files.pop().expect("a file");
    assert!(len > 0, "{} is empty", path.display());
    path
}

/// What became of a node started on a damaged copy.
enum Started {
    /// It refused: exit status and its output (the logs are on stderr).
    Refused(Option<i32>, String),
    /// It listens at this base URL.
    Serving(String, std::process::Child),
}

fn serve(dir: &Path, extra: &[&str]) -> Started {
    let mut cmd = Command::new(binary());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(extra)
        .env("HERALD_LOG", "info");
    match herald_testkit::launch(cmd, Duration::from_secs(60)) {
        Ok(launched) => Started::Serving(launched.ready.url, launched.child),
        Err(herald_testkit::LaunchError::Exited { status, output }) => {
            Started::Refused(status.expect("exits").code(), output)
        }
        Err(e) => panic!("{}: {e}", dir.display()),
    }
}

/// Every retained message of `topic` (seq → data), and the history's gaps.
async fn history(base: &str, topic: &str) -> (BTreeMap<u64, Value>, Vec<(u64, u64)>) {
    let (mut out, mut gaps, mut since) = (BTreeMap::new(), Vec::new(), 0);
    loop {
        let url = format!("{base}/v1/topics/{topic}/messages?since={since}&limit=1000");
        let page: Value = http().get(url).send().await.unwrap().json().await.unwrap();
        // A page lists the lost ranges after `since` up to its end; the
        // next page may list the last one again.
        for g in page["gaps"].as_array().into_iter().flatten() {
            let gap = (g["from"].as_u64().unwrap(), g["to"].as_u64().unwrap());
            if !gaps.contains(&gap) {
                gaps.push(gap);
            }
        }
        let msgs = page["messages"].as_array().unwrap();
        let Some(last) = msgs.last() else {
            return (out, gaps);
        };
        since = last["seq"].as_u64().unwrap();
        for m in msgs {
            out.insert(m["seq"].as_u64().unwrap(), m["data"].clone());
        }
    }
}

/// Acknowledged messages that a node does not serve exactly.
async fn missing_acked(base: &str, acked: &Acked) -> Vec<(String, u64)> {
    let mut missing = Vec::new();
    for topic in TOPICS {
        let (have, _) = history(base, topic).await;
        for ((t, seq), data) in acked.range((topic.to_string(), 0)..=(topic.to_string(), u64::MAX))
        {
            if have.get(seq) != Some(data) {
                missing.push((t.clone(), *seq));
            }
        }
    }
    missing
}

fn verify(dir: &Path) -> (Option<i32>, String) {
    let out = Command::new(binary())
        .args(["verify", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn cases() -> Vec<Case> {
    use Place::*;
    let mut cases = Vec::new();
    // Bytes flipped at the start, middle and end of every file a node left
    // after a clean stop, and of the files a kill -9 leaves mid-stream.
    for (source, names) in [
        (
            0,
            vec![
                "log/db",
                "log/conf",
                "acked-heads.0",
                "acked-heads.1",
                "herald-log.format",
                "node-id",
            ],
        ),
        (1, vec!["log/db", "acked-heads.0"]),
    ] {
        for name in names {
            for place in [Start, Middle, End] {
                cases.push(case(
                    format!("{name} flipped at the {place:?} ({source})"),
                    source,
                    move |d| flip(&d.join(name), place),
                ));
            }
        }
    }
    // The report that started this: one byte flipped in the middle of what
    // sled wrote, after a clean stop.
    cases.push(case(
        "log/db flipped in the middle of its data (0)",
        0,
        |d| {
            let db = d.join("log/db");
            let mut data = std::fs::read(&db).unwrap();
            let end = data.iter().rposition(|&b| b != 0).unwrap_or(0);
            data[end / 2] ^= 0xff;
            std::fs::write(&db, data).unwrap();
        },
    ));
    // The same damage aimed where it must hurt: every copy sled stores of
    // one acknowledged message's bytes (the write-ahead file's copy is
    // left: it does not stand in for a damaged run). Where the middle flip
    // above lands in a page sled no longer reads, the node may start
    // intact; this one it must refuse.
    cases.push(case(
        "log/db: one message's stored bytes flipped (0)",
        0,
        |d| {
            // Run bodies are in runs/; sled keeps a page too large for its
            // log in a file of its own under log/blobs.
            let mut stored = vec![d.join("log/db")];
            for dir in ["log/blobs", "runs"] {
                if let Ok(files) = std::fs::read_dir(d.join(dir)) {
                    stored.extend(files.map(|e| e.unwrap().path()));
                }
            }
            let needle = br#"{"b":25,"i":37,"pad""#;
            let mut found = 0;
            for path in stored {
                let mut data = std::fs::read(&path).unwrap();
                let hits: Vec<usize> = data
                    .windows(needle.len())
                    .enumerate()
                    .filter(|(_, w)| *w == needle)
                    .map(|(i, _)| i)
                    .collect();
                found += hits.len();
                for at in hits {
                    data[at + 6] ^= 0x01;
                }
                std::fs::write(&path, data).unwrap();
            }
            assert!(found > 0, "the message's bytes are not in log/");
        },
    ));
    // Tails cut after kill -9, inside and outside the old checkpoint window,
    // and after a clean stop.
    for (source, cut) in [(1, 65536), (1, 4096), (2, 65536), (2, 1 << 20), (0, 65536)] {
        cases.push(case(
            format!("log/db cut by {cut} ({source})"),
            source,
            move |d| truncate_by(&d.join("log/db"), cut),
        ));
        cases.push(case(
            format!("log/db's written tail cut by {cut} ({source})"),
            source,
            move |d| truncate_written_tail(&d.join("log/db"), cut),
        ));
    }
    for (name, cut) in [
        (
            "log/db cut by 65536 and the wal deleted (1)",
            truncate_by as fn(&Path, u64),
        ),
        (
            "log/db's written tail cut by 65536 and the wal deleted (1)",
            truncate_written_tail,
        ),
    ] {
        cases.push(case(name, 1, move |d| {
            cut(&d.join("log/db"), 65536);
            std::fs::remove_dir_all(d.join("wal")).unwrap();
        }));
    }
    cases.push(case("log/db cut to 30% (1)", 1, |d| {
        let db = d.join("log/db");
        let len = std::fs::metadata(&db).unwrap().len();
        truncate_by(&db, len - len * 3 / 10);
    }));
    for name in [
        "log/db",
        "log/conf",
        "acked-heads.0",
        "acked-heads.1",
        "herald-log.format",
        "node-id",
    ] {
        cases.push(case(format!("{name} deleted"), 0, move |d| {
            std::fs::remove_file(d.join(name)).unwrap()
        }));
    }
    // The write-ahead file: a kill -9 leaves appends there that no
    // compaction wrote to sled yet.
    for source in [0, 1, 2] {
        cases.push(case(
            format!("wal flipped in the middle ({source})"),
            source,
            |d| flip(&wal_segment(d), Place::Middle),
        ));
        cases.push(case(format!("wal cut by 4096 ({source})"), source, |d| {
            truncate_by(&wal_segment(d), 4096)
        }));
        cases.push(case(format!("wal deleted ({source})"), source, |d| {
            std::fs::remove_dir_all(d.join("wal")).unwrap()
        }));
    }
    // The run files: where compaction wrote the messages' bytes (a clean
    // stop compacts everything; a late kill -9 most of it).
    for (source, places) in [(0, vec![Start, Middle, End]), (2, vec![Middle])] {
        for place in places {
            cases.push(case(
                format!("the largest run file flipped at the {place:?} ({source})"),
                source,
                move |d| flip(&largest_in(&d.join("runs")), place),
            ));
        }
        cases.push(case(
            format!("the largest run file cut by 4096 ({source})"),
            source,
            |d| truncate_by(&largest_in(&d.join("runs")), 4096),
        ));
        cases.push(case(format!("runs deleted ({source})"), source, |d| {
            std::fs::remove_dir_all(d.join("runs")).unwrap()
        }));
    }
    cases.push(case("log dir deleted", 0, |d| {
        std::fs::remove_dir_all(d.join("log")).unwrap()
    }));
    cases.push(case("format marker garbled", 0, |d| {
        std::fs::write(d.join("herald-log.format"), "herald-log-9 or so").unwrap()
    }));
    cases.push(case("node-id garbled", 0, |d| {
        std::fs::write(d.join("node-id"), "node id?\n").unwrap()
    }));
    cases.push(case("acked-heads.0 overwritten", 1, |d| {
        let mut bytes = std::fs::read(d.join("acked-heads.0")).unwrap();
        for (i, b) in bytes.iter_mut().take(4096).enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        std::fs::write(d.join("acked-heads.0"), bytes).unwrap();
    }));
    // Damage sled itself cannot see: records gone or altered between writes.
    cases.push(case("a hole of 5 messages", 0, |d| {
        with_log_tree(d, |t| {
            assert_eq!(tamper::remove_messages(d, t, "d.t1", 200..=204).unwrap(), 5);
        })
    }));
    cases.push(case("a record altered", 1, |d| {
        with_log_tree(d, |t| {
            assert!(tamper::alter_message(d, t, "d.t2", 321).unwrap());
        })
    }));
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_kind_of_damage_is_refused_or_harmless_never_silent() {
    let started_at = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let (clean, now, late) = tokio::join!(
        make_source(root.path(), Stop::Clean),
        make_source(root.path(), Stop::KillNow),
        make_source(root.path(), Stop::KillLate),
    );
    let sources = [clean, now, late];
    for s in &sources {
        assert_eq!(s.acked.len(), 5000);
    }
    eprintln!("files in a data dir: {:?}", files(&sources[0].dir));
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut outcomes = BTreeMap::new();
    for (i, case) in cases.iter().enumerate() {
        let source = &sources[case.source];
        let dir = root.path().join(format!("case-{i}"));
        copy_dir(&source.dir, &dir);
        (case.damage)(&dir);
        let (verify_code, report) = verify(&dir);
        assert!(
            !report.contains("panicked at"),
            "{}: verify panicked: {report}",
            case.name
        );
        let outcome = match serve(&dir, &[]) {
            Started::Refused(code, stderr) => {
                assert_ne!(code, Some(0), "{}: refused with exit 0", case.name);
                assert!(!stderr.contains("panicked at"), "{}: {stderr}", case.name);
                let last = stderr
                    .lines()
                    .filter(|l| l.contains("error"))
                    .collect::<Vec<_>>()
                    .join("\n");
                assert!(
                    stderr.contains(dir.to_str().unwrap()) && !last.is_empty(),
                    "{}: the refusal does not name the data dir: {stderr}",
                    case.name
                );
                assert_eq!(
                    verify_code,
                    Some(1),
                    "{}: refused, but verify says {report}",
                    case.name
                );
                "refused"
            }
            Started::Serving(base, mut child) => {
                let missing = missing_acked(&base, &source.acked).await;
                let _ = child.kill();
                let _ = child.wait();
                assert!(
                    missing.is_empty(),
                    "{}: started without {} acknowledged messages, e.g. {:?}",
                    case.name,
                    missing.len(),
                    &missing[..missing.len().min(5)]
                );
                assert_eq!(
                    verify_code,
                    Some(0),
                    "{}: started intact, but verify says {report}",
                    case.name
                );
                "started intact"
            }
        };
        eprintln!("{:<40} {outcome}", case.name);
        outcomes.insert(case.name.clone(), outcome);
        let _ = std::fs::remove_dir_all(&dir);
    }
    // The damage the outside test found must be refused, not absorbed.
    // (A cut of sled's last writes alone is recovered whole from the
    // write-ahead file, which holds every append since its last segment
    // began: "harmless" above checks that every acknowledged message is
    // served and that verify agrees. Without that copy it must be refused.)
    for name in [
        "log/db: one message's stored bytes flipped (0)",
        "log/db cut by 65536 and the wal deleted (1)",
        "log/db's written tail cut by 65536 and the wal deleted (1)",
        "a hole of 5 messages",
        "a record altered",
    ] {
        assert_eq!(outcomes[name], "refused", "{name}");
    }
    eprintln!("{} cases in {:?}", cases.len(), started_at.elapsed());
}

/// Follows `topic` over WebSocket from the start up to seq `to`; returns the
/// seqs delivered as messages (with data) and the ranges reported as gaps.
async fn replay_ws(base: &str, topic: &str, to: u64) -> (BTreeMap<u64, Value>, Vec<(u64, u64)>) {
    let mut ws = Ws::connect(&format!("{}/v1/ws", base.replacen("http", "ws", 1))).await;
    let (reply, _) = ws
        .request(json!({"op": "subscribe", "topic": topic, "since": 0}), "s")
        .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    let (mut messages, mut gaps, mut next) = (BTreeMap::new(), Vec::new(), 1);
    while next <= to {
        let frame = ws.recv().await;
        match frame["type"].as_str() {
            Some("message") => {
                let seq = frame["seq"].as_u64().unwrap();
                assert_eq!(seq, next, "{topic}: silent skip before seq {seq}");
                messages.insert(seq, frame["data"].clone());
                next = seq + 1;
            }
            Some("gap") => {
                let (from, upto) = (
                    frame["from"].as_u64().unwrap(),
                    frame["to"].as_u64().unwrap(),
                );
                assert_eq!(
                    from, next,
                    "{topic}: gap {frame} does not start where delivery stopped"
                );
                gaps.push((from, upto));
                next = upto + 1;
            }
            _ => {}
        }
    }
    (messages, gaps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accepted_damage_is_an_explicit_gap_and_no_seq_is_reused() {
    let root = tempfile::tempdir().unwrap();
    let source = make_source(root.path(), Stop::KillNow).await;
    // The appends no compaction wrote to sled yet are lost with the
    // write-ahead file.
    std::fs::remove_dir_all(source.dir.join("wal")).unwrap();
    let Started::Refused(_, stderr) = serve(&source.dir, &[]) else {
        panic!("a truncated log must not start without --accept-damage");
    };
    assert!(stderr.contains("--accept-damage"), "{stderr}");
    let Started::Serving(base, mut child) = serve(&source.dir, &["--accept-damage"]) else {
        panic!("--accept-damage must start");
    };
    let mut lost = 0;
    for topic in TOPICS {
        let acked: BTreeMap<u64, &Value> = source
            .acked
            .range((topic.to_string(), 0)..=(topic.to_string(), u64::MAX))
            .map(|((_, seq), data)| (*seq, data))
            .collect();
        let last = *acked.keys().last().unwrap();
        let (history, history_gaps) = history(&base, topic).await;
        let (delivered, ws_gaps) = replay_ws(&base, topic, last).await;
        assert_eq!(
            history_gaps, ws_gaps,
            "{topic}: history and WebSocket agree on the gaps"
        );
        for (seq, data) in &acked {
            let in_gap = ws_gaps.iter().any(|(a, b)| (a..=b).contains(&seq));
            match (delivered.get(seq), in_gap) {
                (Some(got), false) => assert_eq!(got, *data, "{topic}#{seq}"),
                (None, true) => lost += 1,
                other => panic!("{topic}#{seq}: neither delivered nor reported lost: {other:?}"),
            }
            assert_eq!(history.get(seq), delivered.get(seq), "{topic}#{seq}");
        }
        // The next publish continues after every acknowledged seq.
        let res = http()
            .post(format!("{base}/v1/topics/{topic}/messages"))
            .json(&json!("after"))
            .send()
            .await
            .unwrap();
        let ack: Value = res.json().await.unwrap();
        assert_eq!(
            ack["seq"].as_u64(),
            Some(last + 1),
            "{topic}: a lost seq was reused"
        );
    }
    assert!(
        lost > 0,
        "the cut lost nothing, so this test proves nothing"
    );
    signal(child.id(), "TERM");
    assert!(wait_timeout(&mut child, Duration::from_secs(30))
        .unwrap()
        .success());
    // Accepted once, recorded: the next start needs no flag.
    let (code, report) = verify(&source.dir);
    assert_eq!(code, Some(0), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clustered_node_repairs_a_hole_from_a_peer_before_it_is_ready() {
    let nats = NatsServer::start();
    let mut nodes = start_cluster(&nats, 3, &[]).await;
    let acked = publish_acked(&nodes[0].url(""), 10).await;
    // Every node holds every acknowledged message before n2 stops.
    for node in &nodes {
        let deadline = Instant::now() + TIMEOUT;
        while !missing_acked(&node.url(""), &acked).await.is_empty() {
            assert!(Instant::now() < deadline, "{} did not catch up", node.addr);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let dir = nodes[1].data_dir.clone();
    assert!(nodes[1].sigterm().success());
    with_log_tree(&dir, |t| {
        assert_eq!(
            tamper::remove_messages(&dir, t, "d.t1", 100..=149).unwrap(),
            50
        );
    });
    let (code, report) = verify(&dir);
    assert_eq!(code, Some(1));
    assert!(
        report.contains("seqs 100..=149 (50 messages) missing: a hole"),
        "{report}"
    );
    let url = nats.url();
    let node = Node::start_in(&dir, &["--nats", &url, "--node-id", "n2"]);
    wait_ready(&node, Duration::from_secs(60)).await;
    let logs = node.logs();
    let repaired = logs.lines().position(|l| {
        l.contains("repaired the damaged log from a peer")
            && l.contains("range=d.t1 seqs 100..=149")
            && l.contains("messages=50")
    });
    let ready = logs
        .lines()
        .position(|l| l.contains("caught up with the cluster"));
    assert!(
        matches!((repaired, ready), (Some(r), Some(c)) if r < c),
        "the repair is logged before the node reports ready: {logs}"
    );
    assert_eq!(
        missing_acked(&node.url(""), &acked).await,
        Vec::<(String, u64)>::new()
    );
    let (history, gaps) = history(&node.url(""), "d.t1").await;
    assert!(gaps.is_empty());
    assert_eq!(
        history.keys().copied().collect::<Vec<_>>(),
        (1..=250).collect::<Vec<_>>()
    );
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_repair_cannot_finish_still_notices_nats_going_away() {
    let mut nats = NatsServer::start();
    let url = nats.url();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut node = Node::start_in(&dir, &["--nats", &url, "--node-id", "n1"]);
    wait_ready(&node, TIMEOUT).await;
    publish_acked(&node.url(""), 3).await;
    assert!(node.sigterm().success());
    // A hole no peer can fill: the node retries its repair and stays unready.
    with_log_tree(&dir, |t| {
        assert_eq!(
            tamper::remove_messages(&dir, t, "d.t1", 10..=19).unwrap(),
            10
        );
    });
    let node = Node::start_in(&dir, &["--nats", &url, "--node-id", "n1"]);
    // Past the few heartbeats a catch-up first waits: it is retrying now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, _) = get_json(&node, "/readyz").await;
    assert_eq!(status, 503, "a hole is pending");
    nats.stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.logs().contains("lost NATS") {
        assert!(
            Instant::now() < deadline,
            "the lost connection went unnoticed while the repair retried: {}",
            node.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Back: it retries the repair again, still unready, still serving.
    let nats = NatsServer::start_on(nats.port);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !node.logs().contains("(re)established") {
        assert!(
            Instant::now() < deadline,
            "no reconnection: {}",
            node.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = get_json(&node, "/readyz").await;
    assert_eq!(status, 503, "the hole is still pending");
    drop(nats);
}
