//! `herald pub --file / --stdin` publish raw bytes, and `herald sub --raw`
//! writes them back byte for byte (`--json`: the base64 envelope), on every
//! transport, against a real node.

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use common::{binary, full_history, Node, TIMEOUT};
use serde_json::{json, Value};

/// NUL, 0xff, invalid UTF-8, newlines and every byte value.
fn payload() -> Vec<u8> {
    let mut bytes = vec![0x00, 0xff, 0xc3, 0x28, b'\n', b'\r', 0x80];
    bytes.extend(0..=255u8);
    bytes
}

fn herald(node: &Node, args: &[&str]) -> Command {
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .env("HERALD_URL", node.url(""))
        .env_remove("HERALD_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits for `child` to exit (killing it after `TIMEOUT`); returns stdout,
/// asserting success.
fn finish(mut child: Child) -> Vec<u8> {
    let deadline = Instant::now() + TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("herald did not exit in time");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "herald failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn ack_seq(stdout: &[u8]) -> u64 {
    let ack: Value = serde_json::from_slice(stdout).expect("ack JSON");
    ack["seq"].as_u64().expect("seq")
}

/// `herald sub ARGS` in the background, once it reports its subscription.
fn subscribe(node: &Node, args: &[&str]) -> Child {
    let mut child = herald(node, &["sub"])
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn herald sub");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(TIMEOUT)
        .expect("sub reports its subscription");
    assert!(line.starts_with("subscribed to "), "{line}");
    child
}

#[test]
fn pub_file_and_stdin_then_sub_raw_byte_exact_on_every_transport() {
    let node = Node::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload.bin");
    let bytes = payload();
    std::fs::write(&file, &bytes).unwrap();
    let empty = dir.path().join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    for transport in ["ws", "sse", "poll"] {
        let topic = format!("raw.{transport}");
        // --file, then --stdin: two messages, the concatenation on stdout.
        let sub = subscribe(
            &node,
            &[&topic, "--raw", "--count", "3", "--transport", transport],
        );
        let file_arg = file.to_str().unwrap();
        let out = herald(&node, &["pub", &topic, "--file", file_arg, "--json"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        assert_eq!(ack_seq(&finish(out)), 1);
        let mut publisher = herald(&node, &["pub", &topic, "--stdin", "--json"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let reversed: Vec<u8> = bytes.iter().rev().copied().collect();
        publisher
            .stdin
            .take()
            .unwrap()
            .write_all(&reversed)
            .unwrap();
        assert_eq!(ack_seq(&finish(publisher)), 2);
        let out = herald(&node, &["pub", &topic, "--file", empty.to_str().unwrap()])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        assert_eq!(finish(out), format!("published {topic} #3\n").as_bytes());
        let received = finish(sub);
        assert_eq!(
            received,
            [bytes.clone(), reversed.clone()].concat(),
            "{transport}"
        );

        // Stored raw: history has the base64 envelopes.
        let (history, _, _) = tokio_history(&node, &topic);
        let stored: Vec<Vec<u8>> = history
            .iter()
            .map(|m| {
                assert_eq!(m["encoding"], "base64", "{m}");
                STANDARD.decode(m["data"].as_str().unwrap()).unwrap()
            })
            .collect();
        assert_eq!(stored, [bytes.clone(), reversed, Vec::new()]);
    }
}

#[test]
fn sub_json_prints_base64_envelopes_and_raw_prints_json_text() {
    let node = Node::start(&[]);
    let sub_json = subscribe(&node, &["mix.a", "--json", "--count", "2"]);
    let sub_raw = subscribe(&node, &["mix.a", "--raw", "--count", "2"]);
    let mut publisher = herald(&node, &["pub", "mix.a", "--stdin", "--key", "k1"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    publisher
        .stdin
        .take()
        .unwrap()
        .write_all(&[0, 0xff, 0xc3, 0x28])
        .unwrap();
    finish(publisher);
    let json_pub = herald(&node, &["pub", "mix.a", r#"{"k":[1,"x"]}"#])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    finish(json_pub);

    let lines: Vec<Value> = String::from_utf8(finish(sub_json))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["data"], "AP/DKA==");
    assert_eq!(lines[0]["encoding"], "base64");
    assert_eq!(lines[0]["seq"], 1);
    assert_eq!(lines[1]["data"], json!({"k":[1,"x"]}));
    assert!(lines[1].get("encoding").is_none());
    let mut raw = Vec::new();
    raw.extend_from_slice(&[0, 0xff, 0xc3, 0x28]);
    raw.extend_from_slice(br#"{"k":[1,"x"]}"#);
    assert_eq!(finish(sub_raw), raw);

    // History: the envelopes as the node sends them, or human lines.
    let history = herald(&node, &["history", "mix.a", "--json"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let history = String::from_utf8(finish(history)).unwrap();
    let lines: Vec<&str> = history.lines().collect();
    assert!(
        lines[0].starts_with(r#"{"topic":"mix.a","seq":1,"ts":"#)
            && lines[0].ends_with(r#","data":"AP/DKA==","encoding":"base64"}"#),
        "{history}"
    );
    assert!(lines[1].ends_with(r#","data":{"k":[1,"x"]}}"#), "{history}");
    let human = herald(&node, &["history", "mix.a"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let human = String::from_utf8(finish(human)).unwrap();
    let lines: Vec<&str> = human.lines().collect();
    assert!(
        lines[0].starts_with("mix.a #1 ") && lines[0].ends_with(" base64:AP/DKA== (4 bytes)"),
        "{human}"
    );
    assert!(lines[1].ends_with(r#" {"k":[1,"x"]}"#), "{human}");

    // The same key publishes nothing new.
    let mut again = herald(&node, &["pub", "mix.a", "--stdin", "--key", "k1", "--json"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    again.stdin.take().unwrap().write_all(b"other").unwrap();
    assert_eq!(ack_seq(&finish(again)), 1);
    // DATA and --file/--stdin exclude each other (usage error, status 2).
    let out = herald(&node, &["pub", "mix.a", "x", "--stdin"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let mut stderr = String::new();
    out.stderr.as_slice().read_to_string(&mut stderr).unwrap();
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}

/// The whole history of `topic`, from a blocking test.
fn tokio_history(node: &Node, topic: &str) -> (Vec<Value>, u64, u64) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(full_history(node, topic))
}
