//! The `herald pub`, `sub` and `history` commands as subprocesses against a
//! real node: output checked exactly, on every transport.

mod common;

use std::{
    io::{BufRead, BufReader, Read},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::Duration,
};

use common::{binary, Node, TIMEOUT};
use serde_json::{json, Value};

/// Runs `herald ARGS` to completion with `--url` pointing at `node`.
fn herald(node: &Node, args: &[&str]) -> Output {
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .env("HERALD_URL", node.url(""))
        .env_remove("HERALD_TOKEN")
        .stdin(Stdio::null());
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herald");
    wait_output(child, TIMEOUT)
}

fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().expect("try_wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "herald did not exit in time; stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "herald failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8")
}

/// `herald sub` in the background: returns once it reports the
/// subscription, with its stderr drained in a thread.
struct Sub {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

impl Sub {
    fn start(node: &Node, args: &[&str]) -> Sub {
        let mut child = Command::new(binary())
            .arg("sub")
            .args(args)
            .arg("--url")
            .arg(node.url(""))
            .env_remove("HERALD_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn herald sub");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(TIMEOUT)
            .expect("herald sub reports its subscription");
        assert!(line.starts_with("subscribed to "), "{line}");
        Sub { child, stderr: rx }
    }

    /// Waits for the exit (`--count`) and returns stdout.
    fn finish(mut self) -> String {
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let status = wait_output(self.child, TIMEOUT).status;
        let rest: Vec<String> = self.stderr.try_iter().collect();
        assert!(status.success(), "herald sub failed: {status}; {rest:?}");
        out
    }
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn pub_sub_history_round_trip_on_every_transport() {
    let node = Node::start(&[]);
    for transport in ["ws", "sse", "poll"] {
        let prefix = format!("cli{transport}");
        let sub = Sub::start(
            &node,
            &[
                &format!("{prefix}.>"),
                "--json",
                "--count",
                "4",
                "--transport",
                transport,
            ],
        );
        // DATA: JSON when it parses, else a string.
        let human = stdout(&herald(
            &node,
            &["pub", &format!("{prefix}.a"), r#"{"x":[1,2]}"#],
        ));
        assert_eq!(human, format!("published {prefix}.a #1\n"));
        let acked = stdout(&herald(
            &node,
            &["pub", &format!("{prefix}.a"), "hello world", "--json"],
        ));
        assert_eq!(acked, format!("{{\"topic\":\"{prefix}.a\",\"seq\":2}}\n"));
        stdout(&herald(&node, &["pub", &format!("{prefix}.b.c"), "42"]));
        stdout(&herald(&node, &["pub", &format!("{prefix}.a"), r#""7""#]));

        let received = sub.finish();
        let lines = json_lines(&received);
        let summary: Vec<(String, u64, Value)> = lines
            .iter()
            .map(|v| {
                let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
                assert_eq!(keys, ["data", "seq", "topic", "ts"], "{v}");
                assert!(v["ts"].as_u64().unwrap() > 1_700_000_000_000);
                (
                    v["topic"].as_str().unwrap().to_string(),
                    v["seq"].as_u64().unwrap(),
                    v["data"].clone(),
                )
            })
            .collect();
        let mut a: Vec<_> = summary
            .iter()
            .filter(|m| m.0 == format!("{prefix}.a"))
            .cloned()
            .collect();
        let b: Vec<_> = summary
            .iter()
            .filter(|m| m.0 == format!("{prefix}.b.c"))
            .cloned()
            .collect();
        a.sort_by_key(|m| m.1);
        assert_eq!(
            a,
            vec![
                (format!("{prefix}.a"), 1, json!({"x": [1, 2]})),
                (format!("{prefix}.a"), 2, json!("hello world")),
                (format!("{prefix}.a"), 3, json!("7")),
            ],
            "{transport}"
        );
        assert_eq!(
            b,
            vec![(format!("{prefix}.b.c"), 1, json!(42))],
            "{transport}"
        );

        // History prints the very same lines, in seq order.
        let history = stdout(&herald(
            &node,
            &["history", &format!("{prefix}.a"), "--json"],
        ));
        let sub_a: Vec<&str> = received
            .lines()
            .filter(|l| l.contains(&format!("\"topic\":\"{prefix}.a\"")))
            .collect();
        assert_eq!(history.lines().collect::<Vec<_>>(), sub_a, "{transport}");
        assert!(received
            .lines()
            .next()
            .unwrap()
            .starts_with(&format!("{{\"topic\":\"{prefix}.")));

        // Human-readable history with --since and --limit.
        let page = stdout(&herald(
            &node,
            &[
                "history",
                &format!("{prefix}.a"),
                "--since",
                "1",
                "--limit",
                "1",
            ],
        ));
        let ts = lines
            .iter()
            .find(|v| v["topic"] == format!("{prefix}.a") && v["seq"] == 2)
            .unwrap()["ts"]
            .as_u64()
            .unwrap();
        let line = page.trim_end();
        assert!(
            line.starts_with(&format!("{prefix}.a #2 ")) && line.ends_with(" \"hello world\""),
            "{line}"
        );
        let stamp = line.split(' ').nth(2).unwrap();
        assert_eq!(stamp.len(), "2026-11-24T19:39:34.123Z".len(), "{stamp}");
        assert!(stamp.ends_with(&format!(".{:03}Z", ts % 1000)), "{stamp}");
    }
}

#[test]
fn sub_since_replays_then_exits_after_count() {
    let node = Node::start(&[]);
    for i in 1..=3 {
        stdout(&herald(&node, &["pub", "clis.t", &i.to_string()]));
    }
    for transport in ["ws", "sse", "poll"] {
        let sub = Sub::start(
            &node,
            &[
                "clis.t",
                "--since",
                "1",
                "--count",
                "2",
                "--json",
                "--transport",
                transport,
            ],
        );
        let seqs: Vec<(u64, Value)> = json_lines(&sub.finish())
            .iter()
            .map(|v| (v["seq"].as_u64().unwrap(), v["data"].clone()))
            .collect();
        assert_eq!(seqs, vec![(2, json!(2)), (3, json!(3))], "{transport}");
    }
    // On a pattern, --since N starts each matching topic after N.
    for i in 1..=3 {
        stdout(&herald(&node, &["pub", "clis.u", &(10 + i).to_string()]));
    }
    for transport in ["ws", "sse", "poll"] {
        let sub = Sub::start(
            &node,
            &[
                "clis.*",
                "--since",
                "2",
                "--count",
                "2",
                "--json",
                "--transport",
                transport,
            ],
        );
        let mut got: Vec<(String, u64)> = json_lines(&sub.finish())
            .iter()
            .map(|v| {
                (
                    v["topic"].as_str().unwrap().to_string(),
                    v["seq"].as_u64().unwrap(),
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            [("clis.t".to_string(), 3), ("clis.u".to_string(), 3)],
            "{transport}"
        );
    }
    // Human-readable sub output.
    let sub = Sub::start(&node, &["clis.t", "--since", "2", "--count", "1"]);
    let line = sub.finish();
    assert!(
        line.starts_with("clis.t #3 ") && line.ends_with(" 3\n"),
        "{line}"
    );
}

#[test]
fn presence_lists_subscribers_of_every_transport() {
    let node = Node::start(&[]);
    // One `herald sub` per transport, left running on the same topic.
    let subs: Vec<Sub> = ["ws", "sse", "poll"]
        .iter()
        .map(|t| Sub::start(&node, &["clip.t", "--transport", t]))
        .collect();
    // A long-poll client is present from its first waiting poll.
    let deadline = std::time::Instant::now() + TIMEOUT;
    let (out, clients) = loop {
        let out = stdout(&herald(&node, &["presence", "clip.t", "--json"]));
        let clients = json_lines(&out);
        if clients.len() >= 3 || std::time::Instant::now() > deadline {
            break (out, clients);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut transports: Vec<&str> = clients
        .iter()
        .map(|c| c["transport"].as_str().unwrap())
        .collect();
    transports.sort();
    assert_eq!(transports, ["poll", "sse", "ws"], "{out}");
    assert!(clients.iter().all(|c| c["client_id"].is_string()));
    // Human-readable: one tab-separated line per client.
    let out = stdout(&herald(&node, &["presence", "clip.t"]));
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.lines().all(|l| l.split('\t').count() == 4), "{out}");
    // A topic nobody is on.
    assert_eq!(stdout(&herald(&node, &["presence", "clip.none"])), "");
    for mut sub in subs {
        let _ = sub.child.kill();
        let _ = sub.child.wait();
    }
}

#[test]
fn errors_print_the_server_code_and_exit_non_zero() {
    let node = Node::start(&[]);
    let cases: [&[&str]; 5] = [
        &["pub", "bad..topic", "1"],
        &["pub", "orders.*", "1"],
        &["history", "orders.>"],
        &["sub", "a..b"],
        &["presence", "orders.>"],
    ];
    for args in cases {
        let out = herald(&node, args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with("herald: error: invalid_topic: "),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // Nothing listening: `unavailable`, quickly.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(binary())
        .args([
            "pub",
            "a.b",
            "1",
            "--url",
            &format!("http://127.0.0.1:{port}"),
        ])
        .env_remove("HERALD_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("herald: error: unavailable: "),
        "{stderr}"
    );
    // A bad flag is a usage error.
    let out = herald(&node, &["sub", "a.b", "--transport", "carrier-pigeon"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Issue 25: `herald sub` given several `--url`s of a cluster that lost its
/// NATS server waits — reporting the refusals, without failing, past its
/// connect timeout — and subscribes once a node is ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_waits_for_a_cluster_without_nats_on_several_urls() {
    let mut nats = common::NatsServer::start();
    let nodes = common::start_cluster(&nats, 2, &[]).await;
    let port = nats.port;
    nats.stop();
    for node in &nodes {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while common::http()
            .get(node.url("/readyz"))
            .send()
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(true)
        {
            assert!(tokio::time::Instant::now() < deadline, "still ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut child = Command::new(binary())
        .args(["sub", "cliwait.>", "--json", "--count", "6"])
        .args(["--url", &nodes[0].url(""), "--url", &nodes[1].url("")])
        .env_remove("HERALD_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herald sub");
    let (tx, stderr) = mpsc::channel();
    let pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Longer than the CLI's connect timeout (5 s): it keeps waiting.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(child.try_wait().unwrap().is_none(), "herald sub exited");
    let waiting: Vec<String> = stderr.try_iter().collect();
    for node in &nodes {
        assert!(
            waiting
                .iter()
                .any(|l| l.starts_with(&format!("{} cannot serve yet", node.url("")))),
            "no refusal reported for {}: {waiting:?}",
            node.url("")
        );
    }
    assert!(
        waiting.len() <= 20,
        "{} refusals in 6 s: Retry-After ignored: {waiting:?}",
        waiting.len()
    );

    let _nats = common::NatsServer::start_on(port);
    for node in &nodes {
        common::wait_ready(node, Duration::from_secs(30)).await;
    }
    let subscribed = loop {
        let line = stderr
            .recv_timeout(TIMEOUT)
            .expect("herald sub reports its subscription");
        if !line.contains("cannot serve yet") {
            break line;
        }
    };
    assert!(
        subscribed.starts_with("subscribed to cliwait.> at "),
        "{subscribed}"
    );
    for i in 1..=6u64 {
        let topic = ["cliwait.a", "cliwait.b"][(i % 2) as usize];
        let (status, ack) = common::publish(&nodes[(i % 2) as usize], topic, &json!(i)).await;
        assert_eq!(status, 200, "{ack}");
    }
    let out = wait_output(child, TIMEOUT);
    assert!(out.status.success(), "herald sub failed: {}", out.status);
    let lines = json_lines(&String::from_utf8(out.stdout).unwrap());
    let got: Vec<(String, u64, u64)> = lines
        .iter()
        .map(|m| {
            (
                m["topic"].as_str().unwrap().to_string(),
                m["seq"].as_u64().unwrap(),
                m["data"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut by_topic: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for (t, seq, _) in &got {
        by_topic.entry(t.clone()).or_default().push(*seq);
    }
    assert_eq!(
        by_topic,
        [
            ("cliwait.a".to_string(), vec![1, 2, 3]),
            ("cliwait.b".to_string(), vec![1, 2, 3])
        ]
        .into_iter()
        .collect(),
        "{got:?}"
    );
}

#[test]
fn serve_help_shows_the_defaults() {
    let out = std::process::Command::new(binary())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for default in [
        "[default: 127.0.0.1:8080]",
        "[default: ./herald-data]",
        "[default: always]",
        "[default: 65536]",
        "[default: 1048576]",
        "[default: info]",
    ] {
        assert!(help.contains(default), "no {default} in:\n{help}");
    }
}
