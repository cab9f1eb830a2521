//! Presence and join/leave events on WebSocket, SSE and long-poll, on one
//! node and across three nodes (one of them killed), against real `herald`
//! processes and a real `nats-server`.

mod common;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use common::*;
use serde_json::{json, Value};

/// `(transport, node)` of every client present on `topic`, per `node`.
async fn present(node: &Node, topic: &str) -> Vec<(String, String, String)> {
    let (status, body) = get_json(node, &format!("/v1/topics/{topic}/presence")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["topic"], topic);
    let mut out: Vec<_> = body["clients"]
        .as_array()
        .expect("clients array")
        .iter()
        .map(|c| {
            (
                c["transport"].as_str().unwrap().to_string(),
                c["node"].as_str().unwrap().to_string(),
                c["client_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Polls presence until `check` holds, or panics after `limit`.
async fn wait_presence(
    node: &Node,
    topic: &str,
    limit: Duration,
    check: impl Fn(&[(String, String, String)]) -> bool,
) -> Vec<(String, String, String)> {
    let deadline = Instant::now() + limit;
    loop {
        let now = present(node, topic).await;
        if check(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "presence of {topic} on {} never got there; last: {now:?}",
            node.addr
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Next join/leave frame on a WebSocket, skipping anything else.
async fn next_presence_frame(ws: &mut Ws, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = ws.try_recv(left).await.expect("no presence event in time");
        if frame["type"] == "join" || frame["type"] == "leave" {
            return frame;
        }
    }
}

async fn subscribe_with_presence(ws: &mut Ws, topic: &str) {
    let (reply, _) = ws
        .request(
            json!({"op":"subscribe","topic":topic,"presence":true}),
            "p1",
        )
        .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
}

async fn poll(node: &Node, query: &str) -> Value {
    let (status, body) = get_json(node, &format!("/v1/poll?{query}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn presence_and_join_leave_on_every_transport() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, "[transport]\nsse_heartbeat = \"2s\"\n").unwrap();
    let node = Node::start(&["--config", config.to_str().unwrap()]);
    let topic = "room.lobby";

    let mut listener = node.ws().await;
    subscribe_with_presence(&mut listener, topic).await;

    // SSE client asking for events too.
    let mut sse = Sse::open(&node, &format!("topic={topic}&presence=true"), None).await;
    let hello = sse.read_hello().await;
    let join = next_presence_frame(&mut listener, Duration::from_secs(5)).await;
    assert_eq!(join["type"], "join");
    assert_eq!(join["topic"], topic);
    assert_eq!(join["client"]["transport"], "sse");
    let sse_id = join["client"]["client_id"].as_str().unwrap().to_string();
    assert_eq!(hello["client_id"], sse_id.as_str());
    assert_eq!(hello["node"], join["client"]["node"]);
    // A WebSocket client learns its id from `pong`.
    let (pong, _) = listener.request(json!({"op":"ping"}), "whoami").await;
    let listener_id = pong["client_id"]
        .as_str()
        .expect("pong.client_id")
        .to_string();
    assert!(present(&node, topic)
        .await
        .iter()
        .any(|c| c.2 == listener_id));

    // Long-poll client: its session id comes back with every answer.
    let first = poll(&node, &format!("topic={topic}&presence=true&timeout_ms=50")).await;
    let poll_id = first["client_id"].as_str().expect("client_id").to_string();
    assert!(first["presence"].as_array().unwrap().is_empty(), "{first}");
    let join = next_presence_frame(&mut listener, Duration::from_secs(5)).await;
    assert_eq!(
        (join["type"].as_str(), join["client"]["transport"].as_str()),
        (Some("join"), Some("poll"))
    );
    assert_eq!(join["client"]["client_id"], poll_id.as_str());
    let (event, data) = sse
        .next_event(Duration::from_secs(5))
        .await
        .expect("sse join");
    assert_eq!(event, "join");
    assert_eq!(data["client"]["transport"], "poll");

    let clients = present(&node, topic).await;
    let transports: BTreeSet<_> = clients.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(clients.len(), 3, "{clients:?}");
    assert_eq!(transports, BTreeSet::from(["poll", "sse", "ws"]));
    let ids: BTreeSet<_> = clients.iter().map(|c| c.2.clone()).collect();
    assert_eq!(ids.len(), 3, "client ids are distinct");
    assert!(ids.contains(&sse_id) && ids.contains(&poll_id));

    // A pattern subscriber is present on the topics it matches; its join
    // is on the pattern, which a listener of one concrete topic does not get.
    let mut wild = node.ws().await;
    wild.subscribe("room.*").await;
    wait_presence(&node, topic, Duration::from_secs(5), |c| c.len() == 4).await;
    assert_eq!(present(&node, "room.other").await.len(), 1);
    drop(wild);
    wait_presence(&node, topic, Duration::from_secs(5), |c| c.len() == 3).await;

    // A new WebSocket client joins: the poll session (same client_id) gets
    // the join on its next poll, the SSE stream and the listener at once.
    let mut ws2 = node.ws().await;
    ws2.subscribe(topic).await;
    let join = next_presence_frame(&mut listener, Duration::from_secs(5)).await;
    assert_eq!(join["client"]["transport"], "ws");
    let ws2_id = join["client"]["client_id"].clone();
    let (event, data) = sse.next_event(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        (event.as_str(), &data["client"]["client_id"]),
        ("join", &ws2_id)
    );
    let second = poll(
        &node,
        &format!("topic={topic}&presence=true&timeout_ms=2000&client_id={poll_id}"),
    )
    .await;
    assert_eq!(second["client_id"], poll_id.as_str(), "same session");
    let events = second["presence"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "join" && e["client"]["client_id"] == ws2_id),
        "{second}"
    );
    // Still three plus ws2: polling again did not add a client.
    assert_eq!(present(&node, topic).await.len(), 4);

    // Unsubscribe → leave.
    let (reply, _) = ws2
        .request(json!({"op":"unsubscribe","topic":topic}), "u1")
        .await;
    assert_eq!(reply["type"], "unsubscribed");
    let leave = next_presence_frame(&mut listener, Duration::from_secs(5)).await;
    assert_eq!(
        (leave["type"].as_str(), &leave["client"]["client_id"]),
        (Some("leave"), &ws2_id)
    );

    // SSE disconnect → leave (noticed at the stream's next write, a
    // heartbeat at the latest); a poll client that stops polling leaves
    // after the session grace.
    drop(sse);
    let mut left = BTreeSet::new();
    while left.len() < 2 {
        let leave = next_presence_frame(&mut listener, Duration::from_secs(10)).await;
        assert_eq!(leave["type"], "leave");
        left.insert(leave["client"]["client_id"].as_str().unwrap().to_string());
    }
    assert_eq!(left, BTreeSet::from([sse_id.clone(), poll_id.clone()]));

    let clients = present(&node, topic).await;
    assert_eq!(clients.len(), 1, "only the listener is left: {clients:?}");
    assert_eq!(clients[0].0, "ws");

    // A client is not told of its own leave: after unsubscribing, the next
    // event the listener sees is someone else's join.
    let (reply, _) = listener
        .request(json!({"op":"unsubscribe","topic":topic}), "u2")
        .await;
    assert_eq!(reply["type"], "unsubscribed");
    subscribe_with_presence(&mut listener, "room.other").await;
    let mut other = node.ws().await;
    other.subscribe("room.other").await;
    let e = next_presence_frame(&mut listener, Duration::from_secs(5)).await;
    assert_eq!(
        (e["type"].as_str(), e["topic"].as_str()),
        (Some("join"), Some("room.other")),
        "{e}"
    );
}

#[tokio::test]
async fn presence_and_history_can_be_turned_off_per_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        "[namespaces.quiet]\npresence = false\nhistory = false\n",
    )
    .unwrap();
    let node = Node::start(&["--config", config.to_str().unwrap()]);
    let mut ws = node.ws().await;
    ws.subscribe("quiet.x").await;
    ws.subscribe("loud.x").await;
    let (status, body) = get_json(&node, "/v1/topics/quiet.x/presence").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(present(&node, "loud.x").await.len(), 1);
    let (status, _) = publish(&node, "quiet.x", &json!(1)).await;
    assert_eq!(status, 200);
    let (status, body) = get_json(&node, "/v1/topics/quiet.x/messages").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    // Delivery and resume do not depend on the history API.
    let m = ws.recv().await;
    assert_eq!(
        (m["topic"].as_str(), m["seq"].as_u64()),
        (Some("quiet.x"), Some(1))
    );
    let mut late = node.ws().await;
    let (reply, replayed) = late
        .request(json!({"op":"subscribe","topic":"quiet.x","since":0}), "s")
        .await;
    assert_eq!(reply["type"], "subscribed");
    let first = if replayed.is_empty() {
        late.recv().await
    } else {
        replayed[0].clone()
    };
    assert_eq!(first["seq"], 1);
}

#[tokio::test]
async fn presence_is_cluster_wide_and_a_killed_node_leaves() {
    let nats = NatsServer::start();
    let mut nodes = start_cluster(&nats, 3, &[]).await;
    let topic = "room.c";

    let mut listener = nodes[0].ws().await;
    subscribe_with_presence(&mut listener, topic).await;
    let mut on_n2 = nodes[1].ws().await;
    on_n2.subscribe(topic).await;
    let mut sse_n3 = Sse::open(&nodes[2], &format!("topic={topic}&presence=true"), None).await;
    assert_eq!(sse_n3.read_hello().await["node"], "n3");
    let polled = poll(&nodes[2], &format!("topic={topic}&timeout_ms=50")).await;
    let poll_id = polled["client_id"].as_str().unwrap().to_string();
    // Keep polling (same session) until n3 dies.
    let poll_url = nodes[2].url(&format!(
        "/v1/poll?topic={topic}&timeout_ms=1000&client_id={poll_id}"
    ));
    let poller = tokio::spawn(async move {
        let client = http();
        while let Ok(res) = client.get(&poll_url).send().await {
            if res.bytes().await.is_err() {
                break;
            }
        }
    });

    // Every node converges on the same four clients, on their own nodes.
    let want = |c: &[(String, String, String)]| {
        let got: BTreeSet<_> = c.iter().map(|(t, n, _)| (t.as_str(), n.as_str())).collect();
        c.len() == 4
            && got == BTreeSet::from([("ws", "n1"), ("ws", "n2"), ("sse", "n3"), ("poll", "n3")])
    };
    let mut views = Vec::new();
    for node in &nodes {
        views.push(wait_presence(node, topic, Duration::from_secs(10), want).await);
    }
    assert!(views.windows(2).all(|w| w[0] == w[1]), "{views:?}");

    // The listener on n1 saw the remote joins.
    let mut joined = BTreeSet::new();
    while joined.len() < 3 {
        let e = next_presence_frame(&mut listener, Duration::from_secs(10)).await;
        assert_eq!(e["type"], "join", "{e}");
        joined.insert(
            e["client"]["node"].as_str().unwrap().to_string()
                + "/"
                + e["client"]["transport"].as_str().unwrap(),
        );
    }
    assert_eq!(
        joined,
        BTreeSet::from(["n2/ws".to_string(), "n3/sse".into(), "n3/poll".into()])
    );
    // The SSE client on n3 hears n2's client (joined before it? then not) —
    // but it does hear a join made after it connected, from another node.
    let mut late = nodes[0].ws().await;
    late.subscribe(topic).await;
    let (event, data) = loop {
        let (event, data) = sse_n3
            .next_event(Duration::from_secs(10))
            .await
            .expect("sse event");
        if data["client"]["node"] == "n1" {
            break (event, data);
        }
    };
    assert_eq!(
        (event.as_str(), data["client"]["transport"].as_str()),
        ("join", Some("ws"))
    );
    drop(late);
    wait_presence(&nodes[1], topic, Duration::from_secs(10), want).await;
    let _ = next_presence_frame(&mut listener, Duration::from_secs(5)).await; // late's join
    let _ = next_presence_frame(&mut listener, Duration::from_secs(5)).await; // late's leave

    // kill -9 n3: its SSE and poll clients vanish from presence everywhere
    // within seconds (membership timeout), with leave events.
    nodes[2].kill9();
    drop(sse_n3);
    let killed = Instant::now();
    for node in &nodes[..2] {
        wait_presence(node, topic, Duration::from_secs(15), |c| {
            c.len() == 2 && c.iter().all(|(_, n, _)| n != "n3")
        })
        .await;
    }
    assert!(killed.elapsed() < Duration::from_secs(15));
    let mut left = BTreeSet::new();
    while left.len() < 2 {
        let e = next_presence_frame(&mut listener, Duration::from_secs(15)).await;
        assert_eq!(e["type"], "leave", "{e}");
        assert_eq!(e["client"]["node"], "n3");
        left.insert(e["client"]["client_id"].as_str().unwrap().to_string());
    }
    assert!(left.contains(&poll_id));
    poller.await.unwrap();

    // A restarted n3 has no clients; the others learn that, not stale entries.
    nodes[2].kill9_and_restart();
    wait_ready(&nodes[2], Duration::from_secs(30)).await;
    for node in &nodes {
        wait_presence(node, topic, Duration::from_secs(10), |c| {
            c.len() == 2 && c.iter().all(|(_, n, _)| n != "n3")
        })
        .await;
    }
}
