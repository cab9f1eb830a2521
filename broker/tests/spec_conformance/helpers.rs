//! Small helpers the checks share: request/reply exchanges on a WebSocket,
//! the test node's config, a trimmed topic, a close code.

use super::*;

/// A valid W3C traceparent.
pub(crate) const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

pub(crate) const REPLY_TYPES: [&str; 6] = [
    "subscribed",
    "unsubscribed",
    "ack",
    "pong",
    "refreshed",
    "error",
];

/// Sends an op and returns its reply: the frame echoing its `id`, or for an
/// op without a usable `id`, the next reply frame without one.
pub(crate) async fn exchange(ws: &mut Ws, op: &Value) -> Value {
    let id = op
        .get("id")
        .filter(|v| v.is_string() || v.is_number())
        .cloned();
    ws.send(op.clone()).await;
    reply_to(ws, id.as_ref()).await
}

pub(crate) async fn reply_to(ws: &mut Ws, id: Option<&Value>) -> Value {
    loop {
        let frame = ws.recv().await;
        let is_reply = frame["type"]
            .as_str()
            .is_some_and(|t| REPLY_TYPES.contains(&t));
        if is_reply && frame.get("id") == id {
            return frame;
        }
    }
}

/// A config file: fast retention on the `gap` namespace (keeps 2 messages),
/// fast SSE heartbeats, no presence and no history API in `quiet`.
pub(crate) fn test_config(dir: &std::path::Path) -> String {
    let file = dir.join("herald.toml");
    std::fs::write(
        &file,
        "[log]\nretention_interval = \"100ms\"\n\
         [transport]\nsse_heartbeat = \"300ms\"\n\
         [namespaces.gap.retention]\nmax_messages = 2\n\
         [namespaces.quiet]\npresence = false\nhistory = false\n",
    )
    .unwrap();
    file.to_str().unwrap().to_string()
}

/// Publishes 5 messages to `topic` (namespace `gap`) and waits until
/// retention has kept only the last 2.
pub(crate) async fn trimmed_topic(node: &Node, topic: &str) {
    for i in 1..=5 {
        let (status, _) = publish(node, topic, &json!({ "i": i })).await;
        assert_eq!(status, 200);
    }
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let (_, page) = get_json(node, &format!("/v1/topics/{topic}/messages")).await;
        if page["first_seq"] == 4 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention did not trim: {page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn close_code_after(node: &Node, message: WsMessage) -> Option<u16> {
    let mut ws = node.ws().await;
    ws.stream.send(message).await.expect("send");
    ws.closed().await
}
