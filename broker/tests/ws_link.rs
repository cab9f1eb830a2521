//! The WebSocket link against a hostile or exacting client, over raw TCP:
//! limits apply to a frame's header before anything is buffered, and the
//! close handshake ends with the server closing TCP at once.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// A client speaking RFC 6455 by hand.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// What the server sent: a frame's opcode and payload, or TCP close.
#[derive(Debug, PartialEq)]
enum Got {
    Frame(u8, Vec<u8>),
    Eof,
}

impl Raw {
    async fn connect(node: &Node, path: &str) -> Raw {
        let mut stream = TcpStream::connect(node.addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            node.addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
        };
        let head_end = loop {
            if let Some(i) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            raw.fill().await;
        };
        let head = String::from_utf8_lossy(&raw.buf[..head_end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "accept key: {head}"
        );
        raw.buf.drain(..head_end);
        raw
    }

    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await.unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// A masked client frame.
    fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [0x5a, 0xa5, 0x0f, 0xf0];
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    async fn send(&mut self, opcode: u8, fin: bool, payload: &[u8]) {
        let frame = Self::frame(opcode, fin, payload);
        self.stream.write_all(&frame).await.unwrap();
    }

    /// The next frame or EOF, within `limit`.
    async fn next(&mut self, limit: Duration) -> Option<Got> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.buf.len() >= 2 {
                let len = (self.buf[1] & 0x7f) as usize;
                let (at, len) = match len {
                    126 if self.buf.len() >= 4 => {
                        (4, u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize)
                    }
                    127 if self.buf.len() >= 10 => (
                        10,
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (2, n),
                };
                if at != usize::MAX && self.buf.len() >= at + len {
                    let opcode = self.buf[0] & 0x0f;
                    let payload = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    return Some(Got::Frame(opcode, payload));
                }
            }
            match tokio::time::timeout_at(deadline, self.fill()).await {
                Ok(0) => return Some(Got::Eof),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Skips data frames until a close frame; returns its code.
    async fn close_code(&mut self, limit: Duration) -> u16 {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(Got::Frame(8, payload)) => {
                    return u16::from_be_bytes([payload[0], payload[1]]);
                }
                Some(Got::Frame(..)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn a_huge_declared_frame_is_refused_from_its_header_and_buffers_nothing() {
    let node = Node::start(&[]);
    let client = Raw::connect(&node, "/v1/ws").await;
    let baseline = node.rss_kib();
    // A text frame declaring 2^40 bytes, then 64 MiB of its "payload".
    let mut header = vec![0x81, 0xff];
    header.extend_from_slice(&(1u64 << 40).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    let (mut reader, mut writer) = client.stream.into_split();
    let started = Instant::now();
    let streamer = tokio::spawn(async move {
        let zeros = vec![0u8; 1 << 20];
        if writer.write_all(&header).await.is_err() {
            return 0;
        }
        let mut sent = 0;
        for _ in 0..64 {
            if writer.write_all(&zeros).await.is_err() {
                break;
            }
            sent += zeros.len();
        }
        sent
    });
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    while got.len() < 4 {
        let n = tokio::time::timeout(Duration::from_secs(1), reader.read(&mut chunk))
            .await
            .expect("closed within 1 s")
            .unwrap();
        assert!(n > 0, "TCP closed without a close frame");
        got.extend_from_slice(&chunk[..n]);
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(got[0], 0x88, "a close frame: {got:?}");
    assert_eq!(u16::from_be_bytes([got[2], got[3]]), 1009);
    let sent = streamer.await.unwrap();
    let grown = node.rss_kib().saturating_sub(baseline);
    assert!(
        grown < 8 * 1024,
        "RSS grew {grown} KiB while {sent} bytes were streamed"
    );
    assert!(metric(&node, "herald_ws_oversized_messages_total").await >= 1);
}

#[tokio::test]
async fn a_fragmented_message_over_the_limit_is_closed_1009() {
    let node = Node::start(&[]);
    let mut client = Raw::connect(&node, "/v1/ws").await;
    // The limit is 4 × ⌈64 KiB / 3⌉ + 4096 = 91,480 bytes: the third piece crosses it.
    let piece = vec![b'a'; 40 * 1024];
    client.send(1, false, &piece).await;
    client.send(0, false, &piece).await;
    client.send(0, false, &piece).await;
    assert_eq!(client.close_code(Duration::from_secs(2)).await, 1009);
    assert_eq!(client.next(Duration::from_secs(1)).await, Some(Got::Eof));
    assert!(metric(&node, "herald_ws_oversized_messages_total").await >= 1);
}

#[tokio::test]
async fn framing_errors_close_with_their_codes() {
    let node = Node::start(&[]);
    // A control frame over 125 bytes: 1002.
    let mut client = Raw::connect(&node, "/v1/ws").await;
    let mut frame = Raw::frame(9, true, &[0; 126]);
    frame[1] = 0x80 | 126;
    frame.splice(2..2, [0u8, 126]);
    client.stream.write_all(&frame).await.unwrap();
    assert_eq!(client.close_code(Duration::from_secs(2)).await, 1002);
    // Invalid UTF-8 in text: 1007.
    let mut client = Raw::connect(&node, "/v1/ws").await;
    client.send(1, true, &[0xc3, 0x28]).await;
    assert_eq!(client.close_code(Duration::from_secs(2)).await, 1007);
    // An unmasked client frame: 1002.
    let mut client = Raw::connect(&node, "/v1/ws").await;
    client.stream.write_all(&[0x81, 0x01, b'x']).await.unwrap();
    assert_eq!(client.close_code(Duration::from_secs(2)).await, 1002);
}

#[tokio::test]
async fn the_server_closes_tcp_right_after_answering_a_close() {
    let node = Node::start(&[]);
    for path in ["/v1/ws", "/v1/ws"] {
        let mut client = Raw::connect(&node, path).await;
        client
            .send(1, true, br#"{"op":"subscribe","topic":"t"}"#)
            .await;
        assert!(matches!(
            client.next(Duration::from_secs(2)).await,
            Some(Got::Frame(1, _))
        ));
        let sent = Instant::now();
        client.send(8, true, b"\x03\xe8bye").await;
        assert_eq!(
            client.next(Duration::from_secs(1)).await,
            Some(Got::Frame(8, b"\x03\xe8".to_vec())),
            "the client's code is echoed"
        );
        assert_eq!(client.next(Duration::from_secs(1)).await, Some(Got::Eof));
        let took = sent.elapsed();
        assert!(took < Duration::from_millis(100), "EOF after {took:?}");
    }
}

#[tokio::test]
async fn a_draining_node_sends_1012_then_closes_tcp() {
    let mut node = Node::start(&[]);
    let mut client = Raw::connect(&node, "/v1/ws").await;
    client
        .send(1, true, br#"{"op":"subscribe","topic":"t"}"#)
        .await;
    assert!(matches!(
        client.next(Duration::from_secs(2)).await,
        Some(Got::Frame(1, _))
    ));
    signal(node.pid(), "TERM");
    assert_eq!(client.close_code(Duration::from_secs(5)).await, 1012);
    let closed = Instant::now();
    // The client never answers the close: the server does not wait for it.
    assert_eq!(client.next(Duration::from_secs(1)).await, Some(Got::Eof));
    let took = closed.elapsed();
    assert!(took < Duration::from_millis(100), "EOF {took:?} after 1012");
    assert!(node.sigterm_wait().success());
}

#[tokio::test]
async fn frames_sent_with_the_upgrade_request_are_not_lost() {
    let node = Node::start(&[]);
    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    let mut request = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        node.addr
    )
    .into_bytes();
    request.extend(Raw::frame(1, true, br#"{"op":"ping","id":"early"}"#));
    stream.write_all(&request).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&got).contains("\"early\"") {
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&got)
        );
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn refusals_before_the_upgrade_are_json_and_other_upgrades_are_served() {
    let node = Node::start(&[]);
    // A WebSocket upgrade to a route that has none: 404 in the contract's
    // shape, not a hang or an empty answer.
    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    let request = format!(
        "GET /v1/nope HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        node.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains(r#""code":"not_found""#), "{answer}");

    // An h2c upgrade request to an ordinary route gets its HTTP/1.1 answer.
    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade, HTTP2-Settings\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        node.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_token_expiry_closes_the_link_within_100_ms_of_exp() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let secret = "link-test-secret-0123456789abcdef";
    let node = Node::start(&["--jwt-secret", secret]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let exp = now.as_secs() + 2;
    let claims = serde_json::json!({"sub": "alice", "exp": exp, "subscribe": [">"]});
    let token = encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let mut client = Raw::connect(&node, &format!("/v1/ws?token={token}")).await;
    assert_eq!(client.close_code(Duration::from_secs(5)).await, 4003);
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let late = at.saturating_sub(Duration::from_secs(exp));
    assert!(
        at >= Duration::from_secs(exp) && late < Duration::from_millis(100),
        "closed {late:?} after exp (at {at:?}, exp {exp})"
    );
}

/// Publishes pipelined on one connection, without waiting for acks, are
/// sequenced in the order sent (mixed sizes, so reads split and batch
/// differently): the subscriber sees them in that order.
#[tokio::test]
async fn pipelined_publishes_keep_their_order() {
    let node = Node::start(&["--queue-bytes", "67108864"]);
    let mut sub = node.ws().await;
    sub.subscribe("order.t").await;
    let mut publisher = Raw::connect(&node, "/v1/ws").await;
    const N: u64 = 300;
    // All of them in one write: the node reads many per read.
    let mut wire = Vec::new();
    for i in 1..=N {
        let pad = "x".repeat([64, 1000, 60_000][i as usize % 3]);
        let op = serde_json::json!({"op":"publish","topic":"order.t","data":{"i":i,"p":pad}});
        wire.extend(Raw::frame(1, true, op.to_string().as_bytes()));
    }
    let writer = tokio::spawn(async move {
        publisher.stream.write_all(&wire).await.unwrap();
        publisher
    });
    let got: Vec<u64> = sub
        .messages(N as usize)
        .await
        .iter()
        .map(|m| m["data"]["i"].as_u64().unwrap())
        .collect();
    assert_eq!(got, (1..=N).collect::<Vec<_>>());
    drop(writer.await.unwrap());
}
