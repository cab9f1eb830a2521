//! The README's "Thirty seconds with Herald" examples, run as written
//! against a fresh node: every `curl` line through `sh`, every `websocat`
//! session over a real WebSocket. A `# → …` or `# ← …` line is the output
//! the README promises; `…` stands for anything (a timestamp, a cursor).

mod common;

use std::{process::Command, time::Duration};

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// One runnable example: shell commands with their promised output, or a
/// WebSocket session.
#[derive(Debug)]
enum Example {
    Shell(Vec<(String, Vec<String>)>),
    WebSocket(Vec<Step>),
}

#[derive(Debug)]
enum Step {
    Send(String),
    Expect(String),
}

/// The fenced `sh` blocks of the README section, in order.
fn examples() -> Vec<Example> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let section = readme
        .split("## Thirty seconds with Herald")
        .nth(1)
        .expect("the README has its quick start")
        .split("\n## ")
        .next()
        .unwrap();
    let mut out = Vec::new();
    let mut blocks = section.split("```sh\n").skip(1);
    for block in blocks.by_ref() {
        let body = block.split("```").next().unwrap();
        let lines: Vec<&str> = body.lines().collect();
        if lines.first().is_some_and(|l| l.starts_with("websocat ")) {
            let steps = lines[1..]
                .iter()
                .filter_map(|l| match l.strip_prefix("# ← ") {
                    // Prose after two spaces is commentary.
                    Some(e) => Some(Step::Expect(e.split("  ").next().unwrap().to_string())),
                    None if l.starts_with('#') || l.trim().is_empty() => None,
                    None => Some(Step::Send(l.to_string())),
                })
                .collect();
            out.push(Example::WebSocket(steps));
            continue;
        }
        let mut commands: Vec<(String, Vec<String>)> = Vec::new();
        let mut pending = String::new();
        for line in lines {
            if let Some(expected) = line.strip_prefix("# → ") {
                commands
                    .last_mut()
                    .expect("output after a command")
                    .1
                    .push(expected.to_string());
            } else if line.starts_with('#') || line.trim().is_empty() {
                continue;
            } else if let Some(head) = line.strip_suffix('\\') {
                pending.push_str(head);
            } else {
                pending.push_str(line);
                commands.push((std::mem::take(&mut pending), Vec::new()));
            }
        }
        out.push(Example::Shell(commands));
    }
    out
}

/// Whether `text` is what `pattern` promises (`…` matches anything).
fn matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('…').collect();
    let Some(rest) = text.strip_prefix(parts[0]) else {
        return false;
    };
    let mut rest = rest;
    for (i, part) in parts.iter().enumerate().skip(1) {
        if i == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

#[test]
fn the_matcher_means_what_the_readme_means() {
    assert!(matches(
        r#"{"a":1,"ts":…,"b":2}"#,
        r#"{"a":1,"ts":17,"b":2}"#
    ));
    assert!(matches(r#"{"c":"1~…~x~0"}"#, r#"{"c":"1~99~x~0"}"#));
    assert!(!matches(r#"{"a":1}"#, r#"{"a":2}"#));
    assert!(!matches(r#"{"seq":1,…}"#, r#"{"seq":2,"x":1}"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_works_as_written() {
    let node = Node::start(&[]);
    let host = node.url("").trim_start_matches("http://").to_string();
    let examples = examples();
    assert!(examples.len() >= 3, "{examples:?}");
    let (mut commands, mut sessions) = (0, 0);
    for example in examples {
        match example {
            Example::Shell(list) => {
                for (command, expected) in list {
                    let command = command
                        .replace("localhost:8080", &host)
                        .replace("127.0.0.1:8080", &host);
                    // Streams and polls run for a moment; their output is
                    // not promised, only that they answer.
                    let command = if expected.is_empty() {
                        command
                            .replacen("curl ", "curl --max-time 2 ", 1)
                            .replace("timeout_ms=25000", "timeout_ms=300")
                    } else {
                        command.replacen("curl ", "curl --max-time 10 ", 1)
                    };
                    let out = Command::new("sh").arg("-c").arg(&command).output();
                    let out = out.expect("sh and curl are installed");
                    let text = String::from_utf8_lossy(&out.stdout).to_string();
                    if expected.is_empty() {
                        // curl exits 28 when --max-time ends a stream.
                        assert!(
                            matches!(out.status.code(), Some(0 | 28)) && !text.is_empty(),
                            "{command}: {out:?}"
                        );
                        commands += 1;
                        continue;
                    }
                    let lines: Vec<&str> = text.lines().collect();
                    assert_eq!(lines.len(), expected.len(), "{command}: {text}");
                    for (line, pattern) in lines.iter().zip(&expected) {
                        assert!(
                            matches(pattern, line),
                            "{command}\n  README: {pattern}\n  got:    {line}"
                        );
                    }
                    commands += 1;
                }
            }
            Example::WebSocket(steps) => {
                let (mut ws, _) = tokio_tungstenite::connect_async(node.ws_url("/v1/ws"))
                    .await
                    .expect("connect");
                // Consecutive promised frames may arrive in any order
                // (protocol-spec §6.5: a publisher's own message and its
                // ack); each must match one of them.
                let mut waiting: Vec<String> = Vec::new();
                for step in steps.into_iter().chain([Step::Send(String::new())]) {
                    match step {
                        Step::Expect(pattern) => waiting.push(pattern),
                        Step::Send(text) => {
                            let mut frames = Vec::new();
                            while frames.len() < waiting.len() {
                                let frame =
                                    tokio::time::timeout(Duration::from_secs(10), ws.next())
                                        .await
                                        .unwrap_or_else(|_| panic!("no frame for {waiting:?}"))
                                        .expect("open")
                                        .expect("frame");
                                if let WsMessage::Text(text) = frame {
                                    frames.push(text);
                                }
                            }
                            for pattern in waiting.drain(..) {
                                let at = frames.iter().position(|f| matches(&pattern, f));
                                let at = at.unwrap_or_else(|| {
                                    panic!("README: {pattern}\n  got: {frames:?}")
                                });
                                frames.remove(at);
                            }
                            if !text.is_empty() {
                                ws.send(WsMessage::Text(text)).await.unwrap();
                            }
                        }
                    }
                }
                sessions += 1;
            }
        }
    }
    assert!(
        commands >= 4 && sessions >= 2,
        "{commands} commands, {sessions} sessions"
    );
}
