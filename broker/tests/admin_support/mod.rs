//! Helpers shared by the admin API tests: nodes with auth on, tokens with
//! and without the `admin` scope, and admin requests.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{http, Node, Sse, Ws, TIMEOUT};

/// The HS256 secret of the test nodes.
pub const SECRET: &str = "admin-tests-secret-0123456789";
/// An API key with the admin scope (`--admin-api-key`).
pub const ADMIN_KEY: &str = "ops-key-7f3a";
/// An API key without it (`--api-key`: publish only).
pub const PLAIN_KEY: &str = "svc-key-91c2";

/// Flags turning auth on with both keys.
pub fn auth_flags() -> Vec<&'static str> {
    vec![
        "--jwt-secret",
        SECRET,
        "--admin-api-key",
        ADMIN_KEY,
        "--api-key",
        PLAIN_KEY,
    ]
}

/// A JWT for `sub` that may subscribe to and publish on everything, with
/// `scope` when given.
pub fn token(sub: &str, scope: Option<Value>) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let mut claims = json!({"sub": sub, "exp": exp, "subscribe": [">"], "publish": [">"]});
    if let Some(scope) = scope {
        claims["scope"] = scope;
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// `METHOD path` with `Authorization: Bearer credential` (none when
/// `None`) and an optional JSON body; returns (status, body).
pub async fn call(
    node: &Node,
    method: &str,
    path: &str,
    credential: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http().request(method.parse().unwrap(), node.url(path));
    if let Some(c) = credential {
        req = req.bearer_auth(c);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let text = res.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// An admin request with the admin key that must answer 200.
pub async fn admin(node: &Node, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, answer) = call(node, method, path, Some(ADMIN_KEY), body).await;
    assert_eq!(status, 200, "{method} {path}: {answer}");
    answer
}

/// Publishes `data` to `topic` with the admin key; returns the seq.
pub async fn publish_as_admin(node: &Node, topic: &str, data: Value) -> u64 {
    let answer = admin(
        node,
        "POST",
        &format!("/v1/topics/{topic}/messages"),
        Some(data),
    )
    .await;
    answer["seq"].as_u64().expect("seq")
}

/// A WebSocket with `token`, subscribed to `patterns`; returns it and its
/// client id (from `pong`).
pub async fn ws_client(node: &Node, token: Option<&str>, patterns: &[&str]) -> (Ws, String) {
    let url = match token {
        Some(t) => node.ws_url(&format!("/v1/ws?token={t}")),
        None => node.ws_url("/v1/ws"),
    };
    let mut ws = Ws::connect(&url).await;
    for p in patterns {
        ws.subscribe(p).await;
    }
    let (pong, _) = ws.request(json!({"op": "ping"}), "who").await;
    let id = pong["client_id"].as_str().expect("client_id").to_string();
    (ws, id)
}

/// An SSE stream with `token` on `topic`; returns it and its client id.
pub async fn sse_client(node: &Node, token: &str, topic: &str) -> (Sse, String) {
    let mut sse = Sse::open(node, &format!("topic={topic}&token={token}"), None).await;
    let hello = sse.read_hello().await;
    let id = hello["client_id"].as_str().expect("client_id").to_string();
    (sse, id)
}

/// The next `message` frame's topic, skipping anything else.
pub async fn next_message_topic(ws: &mut Ws, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = ws.try_recv(left).await?;
        if frame["type"] == "message" {
            return Some(frame["topic"].as_str().unwrap().to_string());
        }
    }
}

/// Polls `probe` until it returns `Some`, or panics after `TIMEOUT`.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: never happened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
