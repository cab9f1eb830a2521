//! Issue 21 (D2): poison messages. JSON nested past the node's limit is
//! refused on every publish path (REST, batch, WebSocket) with 400
//! `bad_request`, and whatever the node accepts — nesting up to the hard
//! maximum — Herald's own CLI reads back over every transport and history.

mod common;

use std::process::{Command, Stdio};

use common::*;
use serde_json::{json, Value};

/// `data` nested `depth` arrays deep around a string.
fn nested(depth: usize) -> Value {
    let text = format!("{}\"core\"{}", "[".repeat(depth), "]".repeat(depth));
    serde_json::from_str(&text).expect("test payloads stay under serde_json's budget")
}

/// The same, as raw text (for depths no recursive parser should build).
fn nested_text(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

async fn post_raw(node: &Node, path: &str, body: String) -> (u16, Value) {
    let res = http()
        .post(node.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn assert_refused(what: &str, (status, body): (u16, Value)) {
    assert_eq!(status, 400, "{what}: {body}");
    assert_eq!(body["error"]["code"], "bad_request", "{what}: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("nests deeper"), "{what}: {body}");
}

async fn last_seq(node: &Node, topic: &str) -> u64 {
    let (status, page) = get_json(node, &format!("/v1/topics/{topic}/messages?limit=1")).await;
    assert_eq!(status, 200, "{page}");
    page["last_seq"].as_u64().expect("last_seq")
}

/// Publishes depth `depth` over REST, batch and WebSocket, expecting each
/// to be refused; returns nothing stored.
async fn refused_everywhere(node: &Node, ws: &mut Ws, depth: usize) {
    let text = nested_text(depth);
    assert_refused(
        "REST",
        post_raw(node, "/v1/topics/poison.rest/messages", text.clone()).await,
    );
    let batch = format!(
        r#"[{{"topic":"poison.batch","data":1}},{{"topic":"poison.batch","data":{text}}}]"#
    );
    let (status, body) = post_raw(node, "/v1/publish", batch).await;
    assert_refused("batch", (status, body.clone()));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("item 1:"),
        "{body}"
    );
    let op = format!(r#"{{"op":"publish","id":"deep","topic":"poison.ws","data":{text}}}"#);
    ws.send_text(&op).await;
    let reply = ws.recv().await;
    assert_eq!(
        (
            reply["type"].as_str(),
            reply["id"].as_str(),
            reply["code"].as_str()
        ),
        (Some("error"), Some("deep"), Some("bad_request")),
        "{reply}"
    );
    for topic in ["poison.rest", "poison.batch", "poison.ws"] {
        assert_eq!(
            last_seq(node, topic).await,
            0,
            "{topic} stored a refused message"
        );
    }
}

#[tokio::test]
async fn nesting_past_the_limit_is_refused_on_every_publish_path() {
    let node = Node::start(&[]);
    let mut ws = node.ws().await;
    // The tester's payload: 200 nested arrays, 401 bytes.
    let tester = format!("{}{}", "[".repeat(200), "]".repeat(200));
    assert_eq!(tester.len(), 400);
    assert_refused(
        "REST, 200 levels",
        post_raw(&node, "/v1/topics/poison.rest/messages", tester).await,
    );
    // One past the default limit (64), and far past any parser's stack
    // (60 KB of brackets, under the 64 KiB payload limit).
    refused_everywhere(&node, &mut ws, 65).await;
    refused_everywhere(&node, &mut ws, 30_000).await;
    // The connection survives its refusals; the limit itself is accepted.
    let seq = ws.publish("poison.ws", nested(64)).await;
    assert_eq!(seq, 1);
    let (status, _) = publish(&node, "poison.rest", &nested(64)).await;
    assert_eq!(status, 200);
    assert_eq!(get_json(&node, "/healthz").await.0, 200);
}

/// Runs `herald ARGS` against `node` and returns stdout; fails on a
/// non-zero exit or after `TIMEOUT`.
fn cli(node: &Node, args: &[&str]) -> String {
    let out = run_cli(node, args);
    assert!(
        out.status.success(),
        "herald {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Runs `herald ARGS` against `node`; fails after `TIMEOUT`.
fn run_cli(node: &Node, args: &[&str]) -> std::process::Output {
    let child = Command::new(binary())
        .args(args)
        .arg("--url")
        .arg(node.url(""))
        .env_remove("HERALD_URL")
        .env_remove("HERALD_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herald");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(TIMEOUT) {
        Ok(out) => out.expect("output"),
        Err(_) => {
            signal(pid, "KILL");
            panic!("herald {args:?} did not finish (a client looping on a message?)");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reads_the_deepest_accepted_message_on_every_transport() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, "[limits]\nmax_json_depth = 100\n").unwrap();
    let node = Node::start(&["--config", config.to_str().unwrap()]);
    let deepest = nested(100);
    // The hard maximum is accepted on every path, one more is not.
    assert_eq!(publish(&node, "deep.x", &deepest).await.0, 200);
    publish_batch(
        &http(),
        &node,
        &[json!({"topic": "deep.x", "data": deepest})],
    )
    .await;
    let mut ws = node.ws().await;
    assert_eq!(ws.publish("deep.x", deepest.clone()).await, 3);
    refused_everywhere(&node, &mut ws, 101).await;

    let expect = |lines: &str, what: &str| {
        let got: Vec<Value> = lines
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{what}: {e}: {l}")))
            .collect();
        assert_eq!(got.len(), 3, "{what}: {lines}");
        for (i, m) in got.iter().enumerate() {
            assert_eq!(m["seq"], i as u64 + 1, "{what}");
            assert_eq!(m["data"], deepest, "{what}: data changed");
        }
    };
    // The CLI runs to completion while this test's runtime keeps a worker.
    expect(&cli(&node, &["history", "deep.x", "--json"]), "history");
    for transport in ["ws", "sse", "poll"] {
        let out = cli(
            &node,
            &[
                "sub",
                "deep.x",
                "--since",
                "0",
                "--count",
                "3",
                "--json",
                "--transport",
                transport,
            ],
        );
        expect(&out, transport);
    }
}

/// A log written before the limit existed may hold deeper messages. The
/// CLI reads them (its client decodes up to 512 levels); one deeper still
/// ends `sub` and `history` with an error, on every transport, instead of
/// skipping it or reconnecting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_messages_past_the_limit_are_read_or_refused_loudly() {
    use herald::{
        hub::{Message, Topic},
        log::{sled_log::SledOptions, LogEntry, MessageLog, SledLog},
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // A data dir a real node made (format marker, acknowledged-heads
    // journal), then messages written past the limits behind its back.
    assert!(Node::start_in(&dir, &[]).sigterm().success());
    {
        let log = SledLog::open(
            &dir,
            &SledOptions {
                cache_bytes: 8 << 20,
                flush_every_ms: 50,
            },
        )
        .unwrap();
        // Recent, so that retention keeps them.
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let entries: Vec<LogEntry> = [("legacy.deep", 300), ("legacy.deeper", 600)]
            .into_iter()
            .map(|(topic, depth)| LogEntry {
                message: Message::new(Topic::parse(topic).unwrap(), 1, ts, &nested_text(depth)),
                idempotency: None,
            })
            .collect();
        log.append(&entries).unwrap();
        log.sync().unwrap();
    }
    let node = Node::start_in(&dir, &[]);
    let depth_of = |line: &str| {
        let mut de = serde_json::Deserializer::from_str(line);
        de.disable_recursion_limit();
        let v: Value = serde::Deserialize::deserialize(&mut de).expect("JSON line");
        let mut data = &v["data"];
        let mut depth = 0;
        while let Some(inner) = data.as_array().and_then(|a| a.first()) {
            data = inner;
            depth += 1;
        }
        (v["seq"].as_u64(), depth, data.as_u64())
    };
    let sub = |topic: &str, transport: &str| {
        run_cli(
            &node,
            &[
                "sub",
                topic,
                "--since",
                "0",
                "--count",
                "1",
                "--json",
                "--transport",
                transport,
            ],
        )
    };
    let out = cli(&node, &["history", "legacy.deep", "--json"]);
    assert_eq!(depth_of(out.trim()), (Some(1), 300, Some(1)), "history");
    let out = run_cli(&node, &["history", "legacy.deeper", "--json"]);
    assert!(!out.status.success(), "history printed {:?}", out.stdout);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("undecodable"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for transport in ["ws", "sse", "poll"] {
        let out = sub("legacy.deep", transport);
        assert!(
            out.status.success(),
            "{transport}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            depth_of(line.trim()),
            (Some(1), 300, Some(1)),
            "{transport}"
        );
        let out = sub("legacy.deeper", transport);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && out.stdout.is_empty(),
            "{transport}: {stderr}"
        );
        assert!(stderr.contains("undecodable"), "{transport}: {stderr}");
    }
}
