//! Issue 6: 10,000 malformed inputs against a running node. It stays up,
//! answers each with the right error, other clients are unaffected, and its
//! memory stays bounded.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const INPUTS: usize = 10_000;

fn garbage(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let len = rng.gen_range(0..max);
    (0..len).map(|_| rng.gen()).collect()
}

/// A malformed (but valid UTF-8) op.
fn bad_op(rng: &mut StdRng) -> String {
    let ops = [
        r#"{"op":"subscribe","topic":"#.to_string(),
        r#"{"op":"publish","topic":"a","data":"#.to_string(),
        r#"{"op":"subscribe","topic":"a","since":1e400}"#.to_string(),
        r#"{"op":"subscribe","topic":"a","since":99999999999999999999999999}"#.to_string(),
        r#"{"op":"subscribe","topic":"a","cursor":"1~x~y"}"#.to_string(),
        r#"{"op":"subscribe","topic":"a","cursor":"1~0~a"}"#.to_string(),
        r#"{"op":"publish","topic":"a.*.>","data":1}"#.to_string(),
        r#"{"op":12,"id":[1,2]}"#.to_string(),
        r#"{"op":"unsubscribe","topic":""}"#.to_string(),
        format!(r#"{{"op":"subscribe","topic":"{}"}}"#, "a.".repeat(40)),
        format!(
            r#"{{"op":"publish","topic":"a","data":{}}}"#,
            "[".repeat(300)
        ),
        format!(
            r#"{{"op":"publish","topic":"{}","data":1}}"#,
            "x".repeat(300)
        ),
        "null".to_string(),
        "{}".to_string(),
        "[]".to_string(),
        "\u{feff}{}".to_string(),
    ];
    let mut op = ops[rng.gen_range(0..ops.len())].clone();
    if rng.gen_bool(0.3) {
        let cut = rng.gen_range(0..=op.len());
        while !op.is_char_boundary(cut.min(op.len())) {
            op.pop();
        }
        op.truncate(cut.min(op.len()));
    }
    op
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_malformed_inputs_change_nothing_for_others() {
    let seed: u64 = std::env::var("HERALD_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("hostile seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let node = Node::start(&[]);
    let mut good = node.ws().await;
    good.subscribe("calm.feed").await;
    let baseline = node.rss_kib();
    let client = http();
    let mut attacker = node.ws().await;
    let mut published = 0u64;
    let (mut error_frames, mut closes, mut http_errors) = (0, 0, 0);

    for i in 0..INPUTS {
        match i % 5 {
            // Text frames: malformed ops, or random bytes (invalid UTF-8 closes
            // the connection with 1007; we reconnect).
            0 | 1 => {
                let frame = if rng.gen_bool(0.5) {
                    WsMessage::Text(bad_op(&mut rng))
                } else {
                    WsMessage::Binary(garbage(&mut rng, 512))
                };
                if attacker.stream.send(frame).await.is_err() {
                    attacker = node.ws().await;
                    closes += 1;
                    continue;
                }
                match tokio::time::timeout(Duration::from_secs(5), attacker.stream.next()).await {
                    Ok(Some(Ok(WsMessage::Text(text)))) => {
                        let v: Value = serde_json::from_str(&text).expect("error frames are JSON");
                        assert_eq!(v["type"], "error", "{v}");
                        assert!(
                            matches!(
                                v["code"].as_str(),
                                Some(
                                    "bad_request"
                                        | "invalid_topic"
                                        | "unknown_op"
                                        | "payload_too_large"
                                )
                            ),
                            "{v}"
                        );
                        error_frames += 1;
                    }
                    Ok(Some(Ok(WsMessage::Close(_)))) | Ok(Some(Err(_))) | Ok(None) => {
                        attacker = node.ws().await;
                        closes += 1;
                    }
                    Ok(Some(Ok(_))) => {}
                    Err(_) => panic!("no answer to malformed frame {i} (seed {seed})"),
                }
            }
            // Raw invalid UTF-8 in a text frame, written at the socket level.
            2 => {
                let mut raw = node.ws().await;
                let bytes = garbage(&mut rng, 64);
                let mut text = vec![0xff, 0xfe];
                text.extend(bytes);
                // tungstenite refuses to build invalid text, so send it as a
                // continuation-free binary-looking frame with the text opcode.
                let frame = tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
                    text,
                    tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
                        tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
                    ),
                    true,
                );
                let _ = raw.stream.send(WsMessage::Frame(frame)).await;
                match tokio::time::timeout(Duration::from_secs(5), raw.stream.next()).await {
                    Ok(Some(Ok(WsMessage::Close(Some(f))))) => assert_eq!(u16::from(f.code), 1007),
                    other => panic!("invalid UTF-8 not closed with 1007: {other:?} (seed {seed})"),
                }
            }
            // HTTP: bad bodies, topics, cursors, queries, headers.
            _ => {
                let choice = rng.gen_range(0..8);
                // Random bytes are now and then valid JSON (a lone digit):
                // that is a fine publish.
                let mut valid_json = false;
                let res = match choice {
                    0 => {
                        let body = garbage(&mut rng, 256);
                        valid_json = serde_json::from_slice::<Value>(&body).is_ok();
                        client
                            .post(node.url("/v1/topics/a/messages"))
                            .header("content-type", "application/json")
                            .body(body)
                            .send()
                            .await
                    }
                    1 => {
                        client
                            .post(node.url("/v1/publish"))
                            .header("content-type", "application/json")
                            .body(garbage(&mut rng, 256))
                            .send()
                            .await
                    }
                    2 => {
                        client
                            .get(node.url(&format!(
                                "/v1/poll?topic=a&timeout_ms=0&cursor=1~{}",
                                rng.gen::<u32>()
                            )))
                            .send()
                            .await
                    }
                    3 => {
                        client
                            .get(node.url("/v1/poll?topic=a&timeout_ms=x"))
                            .send()
                            .await
                    }
                    4 => {
                        client
                            .get(node.url("/v1/sse?topic=a&cursor=2~0"))
                            .send()
                            .await
                    }
                    5 => {
                        client
                            .get(node.url("/v1/topics/a%00b/messages?since=-1"))
                            .send()
                            .await
                    }
                    6 => {
                        client
                            .get(node.url("/v1/sse?topic=a"))
                            .header("Last-Event-ID", "x")
                            .header("X-Huge", "h".repeat(rng.gen_range(1..64) * 1024))
                            .send()
                            .await
                    }
                    _ => {
                        client
                            .post(node.url("/v1/topics/a/messages"))
                            .header("content-type", "application/json")
                            .body(format!("{{\"x\":{}}}", "[".repeat(rng.gen_range(100..400))))
                            .send()
                            .await
                    }
                };
                let res = res.expect("the node answers");
                let status = res.status().as_u16();
                if choice == 2 {
                    // A syntactically valid cursor with a bogus floor is accepted.
                    assert!(status == 200 || status == 400, "{status}");
                } else if valid_json {
                    assert_eq!(status, 200, "valid JSON body (seed {seed})");
                } else {
                    assert!(
                        (400..500).contains(&status),
                        "choice {choice}: status {status} (seed {seed})"
                    );
                    if status != 431 {
                        let body: Value = res.json().await.unwrap_or(Value::Null);
                        assert!(body["error"]["code"].is_string(), "choice {choice}: {body}");
                    }
                    http_errors += 1;
                }
            }
        }
        if i % 500 == 0 {
            published += 1;
            let (status, _) = publish(&node, "calm.feed", &json!({"n": published})).await;
            assert_eq!(status, 200);
        }
    }
    // The well-behaved client saw every message, in order, and nothing else.
    let got = good.messages(published as usize).await;
    assert_sequence(&got, "calm.feed", 1, published);
    good.assert_silent(Duration::from_millis(200)).await;
    assert_eq!(get_json(&node, "/healthz").await.0, 200);
    let rss = node.rss_kib();
    eprintln!("{INPUTS} inputs: {error_frames} error frames, {closes} closes, {http_errors} HTTP errors; RSS {baseline} -> {rss} KiB");
    assert!(
        rss < baseline + 64 * 1024,
        "RSS grew from {baseline} to {rss} KiB"
    );
}

/// Sends raw bytes on a new connection (then, with `half_close`, shuts the
/// write side) and returns (status, headers lowercased, body) once the
/// node closes the connection.
async fn raw_exchange(node: &Node, request: &[u8], half_close: bool) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    conn.write_all(request).await.unwrap();
    if half_close {
        conn.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    tokio::time::timeout(TIMEOUT, conn.read_to_end(&mut out))
        .await
        .expect("the node closes the connection")
        .unwrap();
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&out[..split]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    (status, head, out[split + 4..].to_vec())
}

/// Issue 21 (D8): refusals answer with the contract's JSON body wherever a
/// request reaches Herald — body framing errors, bodies over the limit,
/// undecodable paths, queries and headers. The exceptions, documented in
/// protocol-spec §3, are heads that actix-http's HTTP/1 parser refuses
/// before any request exists: they get its own empty 400 or 431 and the
/// connection is closed.
#[tokio::test]
async fn parser_level_refusals_are_json_except_the_documented_ones() {
    let node = Node::start(&[]);
    let publish = "POST /v1/topics/a/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n";
    let big = "a".repeat(70_000);
    let json_cases: Vec<(&str, String, bool, u16, &str)> = vec![
        (
            "corrupt chunked encoding",
            format!("{publish}Transfer-Encoding: chunked\r\n\r\nzz\r\n1\r\n0\r\n\r\n"),
            false,
            400,
            "bad_request",
        ),
        (
            "chunked body over the limit",
            format!("{publish}Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n", big.len()),
            false,
            413,
            "payload_too_large",
        ),
        (
            "Content-Length over the limit",
            format!("{publish}Content-Length: 99999999999\r\n\r\n"),
            false,
            413,
            "payload_too_large",
        ),
        (
            "body shorter than Content-Length",
            format!("{publish}Content-Length: 10\r\n\r\n[1"),
            true,
            400,
            "bad_request",
        ),
        (
            "undecodable path",
            "GET /v1/topics/%FF%FE/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into(),
            false,
            400,
            "invalid_topic",
        ),
        (
            "undecodable query",
            "GET /v1/topics/a/messages?since=%FF HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into(),
            false,
            400,
            "bad_request",
        ),
        (
            "non-ASCII header value",
            "GET /v1/sse?topic=a HTTP/1.1\r\nHost: x\r\nLast-Event-ID: \u{fffd}\r\nConnection: close\r\n\r\n".into(),
            false,
            400,
            "bad_request",
        ),
        (
            "URI of 60 KB",
            format!("GET /v1/poll?topic={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "a".repeat(60_000)),
            false,
            400,
            "invalid_topic",
        ),
    ];
    for (label, request, half_close, status, code) in json_cases {
        let (got, head, body) = raw_exchange(&node, request.as_bytes(), half_close).await;
        assert_eq!(got, status, "{label}: {head}");
        assert!(
            head.contains("content-type: application/json"),
            "{label}: {head}"
        );
        let body: Value = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(body["error"]["code"], code, "{label}: {body}");
        assert!(body["error"]["message"].is_string(), "{label}: {body}");
    }

    let many_headers: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
    let exceptions: Vec<(&str, String, u16)> = vec![
        (
            "invalid Content-Length",
            format!("{publish}Content-Length: abc\r\n\r\n"),
            400,
        ),
        (
            "two Content-Lengths",
            format!("{publish}Content-Length: 1\r\nContent-Length: 2\r\n\r\n1"),
            400,
        ),
        (
            "Content-Length with Transfer-Encoding",
            format!("{publish}Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            400,
        ),
        (
            "Transfer-Encoding other than chunked",
            format!("{publish}Transfer-Encoding: gzip\r\n\r\n"),
            400,
        ),
        (
            "malformed header line",
            "GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n".into(),
            400,
        ),
        (
            "HTTP/1.1 without Host",
            "GET /healthz HTTP/1.1\r\n\r\n".into(),
            400,
        ),
        (
            "URI over 64 KiB",
            format!(
                "GET /v1/poll?topic={} HTTP/1.1\r\nHost: x\r\n\r\n",
                "a".repeat(70_000)
            ),
            400,
        ),
        (
            "more than 96 headers",
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n"),
            431,
        ),
    ];
    for (label, request, status) in exceptions {
        let (got, head, body) = raw_exchange(&node, request.as_bytes(), false).await;
        assert_eq!(got, status, "{label}: {head}");
        assert!(head.contains("connection: close"), "{label}: {head}");
        assert!(
            body.is_empty(),
            "{label}: the parser's own answer has no body"
        );
    }
    assert_eq!(get_json(&node, "/healthz").await.0, 200);
}
