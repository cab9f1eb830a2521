//! Helpers for the binary-payload tests: the documented binary frames
//! written and read here independently of the broker's own code, and a
//! WebSocket reader that keeps binary frames.

#![allow(dead_code)]

use std::time::Duration;

use base64::{engine::general_purpose::STANDARD, Engine as _};
use futures_util::{SinkExt, StreamExt};
use rand::RngCore;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::common::{http, Node, Ws, TIMEOUT};

/// The default payload limit (64 KiB).
pub const LIMIT: usize = 64 * 1024;

/// Payloads every transport must carry byte-exact: NUL, 0xff, invalid
/// UTF-8, empty, every byte value, random bytes, and exactly the limit.
pub fn payloads() -> Vec<Vec<u8>> {
    let mut random = vec![0u8; 1000];
    rand::thread_rng().fill_bytes(&mut random);
    let mut at_limit = vec![0u8; LIMIT];
    rand::thread_rng().fill_bytes(&mut at_limit);
    vec![
        vec![0x00],
        vec![0xff],
        vec![0xc3, 0x28],
        vec![0xed, 0xa0, 0x80, 0xf8, 0x88, 0x80, 0x80, 0x80],
        Vec::new(),
        (0..=255).collect(),
        b"{\"looks\":\"like json\"}".to_vec(),
        random,
        at_limit,
    ]
}

/// A client's binary publish frame (kind 0x01), laid out as documented.
pub fn publish_frame(
    topic: &str,
    id: Option<&str>,
    key: Option<&str>,
    traceparent: Option<&str>,
    payload: &[u8],
) -> Vec<u8> {
    let flags = id.map_or(0, |_| 1) | key.map_or(0, |_| 2) | traceparent.map_or(0, |_| 4);
    let mut out = vec![0x01, flags];
    out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
    for field in [id, key, traceparent].into_iter().flatten() {
        out.push(field.len() as u8);
        out.extend_from_slice(field.as_bytes());
    }
    out.extend_from_slice(payload);
    out
}

/// A server's binary delivery frame (kind 0x02), read as documented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub topic: String,
    pub seq: u64,
    pub ts: u64,
    pub traceparent: Option<String>,
    pub payload: Vec<u8>,
}

pub fn parse_delivery(frame: &[u8]) -> Delivery {
    assert_eq!(frame[0], 0x02, "delivery kind");
    let flags = frame[1];
    assert_eq!(flags & !1, 0, "reserved delivery flags");
    let seq = u64::from_be_bytes(frame[2..10].try_into().unwrap());
    let ts = u64::from_be_bytes(frame[10..18].try_into().unwrap());
    let t = u16::from_be_bytes([frame[18], frame[19]]) as usize;
    let topic = String::from_utf8(frame[20..20 + t].to_vec()).expect("UTF-8 topic");
    let mut at = 20 + t;
    let traceparent = (flags & 1 != 0).then(|| {
        let p = frame[at] as usize;
        at += 1 + p;
        String::from_utf8(frame[at - p..at].to_vec()).unwrap()
    });
    Delivery {
        topic,
        seq,
        ts,
        traceparent,
        payload: frame[at..].to_vec(),
    }
}

/// One server frame: JSON text or binary.
#[derive(Debug)]
pub enum Frame {
    Text(Value),
    Binary(Vec<u8>),
}

/// Next text or binary frame within `limit` (pings skipped; a close
/// panics).
pub async fn next_frame(ws: &mut Ws, limit: Duration) -> Option<Frame> {
    if let Some(v) = ws.backlog.pop_front() {
        return Some(Frame::Text(v));
    }
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.stream.next())
            .await
            .ok()??;
        match msg.expect("websocket error") {
            WsMessage::Text(text) => {
                return Some(Frame::Text(
                    serde_json::from_str(&text).expect("text frames are JSON"),
                ))
            }
            WsMessage::Binary(data) => return Some(Frame::Binary(data)),
            WsMessage::Close(frame) => panic!("closed unexpectedly: {frame:?}"),
            _ => continue,
        }
    }
}

/// Sends a binary frame.
pub async fn send_binary(ws: &mut Ws, frame: Vec<u8>) {
    ws.stream
        .send(WsMessage::Binary(frame))
        .await
        .expect("send");
}

/// Waits for the text reply with `id` (frames before it are dropped:
/// publishers in these tests do not subscribe).
pub async fn reply(ws: &mut Ws, id: &str) -> Value {
    loop {
        match next_frame(ws, TIMEOUT).await.expect("reply before timeout") {
            Frame::Text(v) if v["id"] == id => return v,
            Frame::Text(v) => assert_ne!(v["type"], "error", "{v}"),
            Frame::Binary(_) => panic!("unexpected binary frame"),
        }
    }
}

/// Publishes raw bytes in a binary frame; returns the reply.
pub async fn ws_publish(ws: &mut Ws, topic: &str, id: &str, payload: &[u8]) -> Value {
    send_binary(ws, publish_frame(topic, Some(id), None, None, payload)).await;
    reply(ws, id).await
}

/// POSTs raw bytes as `application/octet-stream`; returns (status, body).
pub async fn rest_publish(
    node: &Node,
    topic: &str,
    payload: &[u8],
    key: Option<&str>,
) -> (u16, Value) {
    let mut req = http()
        .post(node.url(&format!("/v1/topics/{topic}/messages")))
        .header("content-type", "application/octet-stream")
        .body(payload.to_vec());
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    let res = req.send().await.expect("publish");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// A binary message's bytes from its JSON envelope (asserting the form).
pub fn envelope_bytes(m: &Value) -> Vec<u8> {
    assert_eq!(m["encoding"], "base64", "{m}");
    STANDARD
        .decode(m["data"].as_str().expect("base64 data string"))
        .expect("valid base64")
}

/// Every message of `pattern` from seq > 0 by long-poll, following the
/// cursor until `n` arrived.
pub async fn poll_all(node: &Node, pattern: &str, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut query = format!("topic={pattern}&since=0&timeout_ms=2000");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while out.len() < n {
        assert!(tokio::time::Instant::now() < deadline, "poll: {out:?}");
        let body: Value = http()
            .get(node.url(&format!("/v1/poll?{query}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        out.extend(body["messages"].as_array().expect("messages").clone());
        let cursor = body["cursor"].as_str().expect("cursor");
        query = format!("topic={pattern}&cursor={cursor}&timeout_ms=2000");
    }
    out
}
