//! Issue 3: subscribers on every transport disconnect mid-stream while
//! publishing continues, resume with their position, and end with exactly
//! the published sequence.

mod common;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use common::*;
use serde_json::{json, Value};

/// Publishes `n` messages to each topic, a few ms apart, in the background.
fn background_publisher(
    node: &Node,
    topics: &[&str],
    n: u64,
) -> (tokio::task::JoinHandle<()>, Arc<AtomicU64>) {
    let url = node.url("");
    let topics: Vec<String> = topics.iter().map(|s| s.to_string()).collect();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let handle = tokio::spawn(async move {
        let client = http();
        for i in 1..=n {
            for topic in &topics {
                let res = client
                    .post(format!("{url}/v1/topics/{topic}/messages"))
                    .json(&json!({"i": i}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
            }
            c.store(i, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    });
    (handle, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_resumes_with_since() {
    let node = Node::start(&[]);
    let n = 400;
    let (publisher, progress) = background_publisher(&node, &["feed.a"], n);
    let mut got: Vec<Value> = Vec::new();
    let mut last = 0u64;
    let mut reconnects = 0;
    while last < n {
        let mut ws = node.ws().await;
        let (reply, _) = ws
            .request(json!({"op":"subscribe","topic":"feed.a","since":last}), "s")
            .await;
        assert_eq!(reply["type"], "subscribed");
        // Read a random-ish number of messages, then drop the connection.
        let take = 37 + reconnects * 11;
        for _ in 0..take {
            let Some(frame) = ws.try_recv(Duration::from_secs(10)).await else {
                break;
            };
            assert_eq!(frame["type"], "message", "{frame}");
            last = frame["seq"].as_u64().unwrap();
            got.push(frame);
            if last == n {
                break;
            }
        }
        drop(ws);
        reconnects += 1;
        assert!(reconnects < 100);
    }
    publisher.await.unwrap();
    assert_eq!(progress.load(Ordering::SeqCst), n);
    assert!(reconnects >= 5, "only {reconnects} reconnects");
    assert_sequence(&got, "feed.a", 1, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resumes_with_last_event_id_including_patterns() {
    let node = Node::start(&[]);
    // feed.c only starts being published later, while the subscriber is
    // away: the cursor's floor must still cover it.
    let n = 300;
    // A stream without Last-Event-ID starts live, so it opens before the
    // first publish; the response headers come after the subscribe.
    let mut opening = Some(Sse::open(&node, "topic=feed.%3E", None).await);
    let (publisher, _) = background_publisher(&node, &["feed.a", "feed.b"], n);
    let mut got: Vec<Value> = Vec::new();
    let mut last_id: Option<String> = None;
    let late_topic_started = Arc::new(AtomicBool::new(false));
    let mut round = 0;
    let done = |got: &Vec<Value>| {
        let count = |t: &str| got.iter().filter(|m| m["topic"] == t).count() as u64;
        count("feed.a") == n && count("feed.b") == n && count("feed.c") == 50
    };
    let mut idle_rounds = 0;
    while !done(&got) {
        let mut sse = match opening.take() {
            Some(sse) => sse,
            None => Sse::open(&node, "topic=feed.%3E", last_id.as_deref()).await,
        };
        let take = 45 + round * 7;
        let before = got.len();
        for _ in 0..take {
            let Some((event, data)) = sse.next_event(Duration::from_secs(10)).await else {
                break;
            };
            assert_eq!(event, "message");
            got.push(data);
            if done(&got) {
                break;
            }
        }
        // Everything is published by then: a resume that brings nothing
        // twice running means something was lost or duplicated. Say which
        // now rather than after 200 rounds of waiting.
        idle_rounds = if got.len() == before && round > 3 {
            idle_rounds + 1
        } else {
            0
        };
        if idle_rounds >= 2 {
            for (topic, total) in [("feed.a", n), ("feed.b", n), ("feed.c", 50)] {
                assert_sequence(&got, topic, 1, total);
            }
            panic!("resumes from {last_id:?} bring nothing, yet not done");
        }
        last_id = sse.last_id.clone();
        drop(sse);
        if round == 2 && !late_topic_started.swap(true, Ordering::SeqCst) {
            // Publish a brand-new topic while nobody is connected.
            let client = http();
            for i in 1..=50 {
                client
                    .post(node.url("/v1/topics/feed.c/messages"))
                    .json(&json!({"i": i}))
                    .send()
                    .await
                    .unwrap();
            }
        }
        round += 1;
        assert!(round < 200, "no progress");
    }
    publisher.await.unwrap();
    assert!(round >= 5);
    for topic in ["feed.a", "feed.b"] {
        assert_sequence(&got, topic, 1, n);
    }
    assert_sequence(&got, "feed.c", 1, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_loop_with_lost_responses_is_exact() {
    let node = Node::start(&[]);
    let n = 300;
    // A poll without a cursor starts live: learn the opening cursor with a
    // peek before anything is published, as a client that wants
    // everything from now on does.
    let (_, opening) = get_json(&node, "/v1/poll?topic=feed.a&timeout_ms=0").await;
    let mut cursor = opening["cursor"].as_str().unwrap().to_string();
    let (publisher, _) = background_publisher(&node, &["feed.a"], n);
    let client = http();
    let mut got: Vec<Value> = Vec::new();
    let mut polls = 0;
    let mut empty_answers = 0;
    while (got.len() as u64) < n {
        let url = node.url(&format!(
            "/v1/poll?topic=feed.a&timeout_ms=2000&cursor={cursor}"
        ));
        let body: Value = client.get(url).send().await.unwrap().json().await.unwrap();
        polls += 1;
        // Every third response is "lost" (as if the connection dropped):
        // the client polls again with its previous cursor.
        if polls % 3 == 0 {
            continue;
        }
        let page = body["messages"].as_array().unwrap();
        // Once everything is published, empty answers mean something was
        // lost or duplicated: say which instead of polling on for an hour.
        empty_answers = if page.is_empty() && publisher.is_finished() {
            empty_answers + 1
        } else {
            0
        };
        if empty_answers >= 3 {
            assert_sequence(&got, "feed.a", 1, n);
            panic!("polls from {cursor:?} bring nothing, yet not done");
        }
        got.extend(page.iter().cloned());
        cursor = body["cursor"].as_str().unwrap().to_string();
        assert!(polls < 2000);
    }
    publisher.await.unwrap();
    assert_sequence(&got, "feed.a", 1, n);
    // Without a cursor a poll starts from "now" and waits.
    let started = std::time::Instant::now();
    let body: Value = client
        .get(node.url("/v1/poll?topic=feed.a&timeout_ms=300"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["messages"], json!([]));
    assert!(started.elapsed() >= Duration::from_millis(280));
}

#[tokio::test]
async fn long_poll_returns_as_soon_as_a_message_arrives() {
    let node = Node::start(&[]);
    let (_, first) = get_json(&node, "/v1/poll?topic=wait.x&timeout_ms=0").await;
    let cursor = first["cursor"].as_str().unwrap().to_string();
    let url = node.url(&format!(
        "/v1/poll?topic=wait.x&timeout_ms=20000&cursor={cursor}"
    ));
    let started = std::time::Instant::now();
    let waiter = tokio::spawn(async move {
        http()
            .get(url)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish(&node, "wait.x", &json!("now")).await;
    let body = waiter.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "poll held after a message arrived"
    );
    assert_eq!(body["messages"][0]["data"], "now");
}

#[tokio::test]
async fn resume_after_restart_on_every_transport() {
    let mut node = Node::start(&[]);
    for i in 1..=20 {
        publish(&node, "r.x", &json!(i)).await;
    }
    node.kill9_and_restart();
    for i in 21..=30 {
        publish(&node, "r.x", &json!(i)).await;
    }
    let mut ws = node.ws().await;
    ws.request(json!({"op":"subscribe","topic":"r.x","since":12}), "s")
        .await;
    assert_sequence(&ws.messages(18).await, "r.x", 13, 30);
    let mut sse = Sse::open(&node, "topic=r.x", Some("1~0~r.x~25")).await;
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(sse.next_event(TIMEOUT).await.unwrap().1);
    }
    assert_sequence(&got, "r.x", 26, 30);
    let (_, poll) = get_json(&node, "/v1/poll?topic=r.x&cursor=1~0~r.x~28").await;
    assert_sequence(poll["messages"].as_array().unwrap(), "r.x", 29, 30);
}

#[tokio::test]
async fn a_fresh_wildcard_subscribe_starts_live() {
    let node = Node::start(&[]);
    let mut ws = node.ws().await;
    publish(&node, "w.a", &json!("before")).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    ws.subscribe("w.>").await;
    publish(&node, "w.a", &json!("after")).await;
    publish(&node, "w.b", &json!("after")).await;
    let got = ws.messages(2).await;
    assert_eq!(
        (got[0]["topic"].as_str(), got[0]["seq"].as_u64()),
        (Some("w.a"), Some(2)),
        "{got:?}"
    );
    assert_eq!(
        (got[1]["topic"].as_str(), got[1]["seq"].as_u64()),
        (Some("w.b"), Some(1))
    );
    ws.assert_silent(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn resuming_twice_from_an_opening_cursor_repeats_nothing() {
    let node = Node::start(&[]);
    publish(&node, "x.a", &json!(1)).await;
    let mut sse = Sse::open(&node, "topic=x.%3E", Some("1~0")).await;
    let (_, first) = sse.next_event(TIMEOUT).await.unwrap();
    assert_eq!(first["seq"], 1);
    let after_first = sse.last_id.clone().unwrap();
    drop(sse);
    // Reconnect, take only the opening id-only block, drop again.
    let mut sse = Sse::open(&node, "topic=x.%3E", Some(&after_first)).await;
    let opening = sse.next_block(TIMEOUT).await.unwrap();
    assert!(
        opening.event.is_none() && opening.id.is_some(),
        "{opening:?}"
    );
    let cursor = opening.id.unwrap();
    drop(sse);
    let mut sse = Sse::open(&node, "topic=x.%3E", Some(&cursor)).await;
    publish(&node, "x.a", &json!(2)).await;
    let (_, next) = sse.next_event(TIMEOUT).await.unwrap();
    assert_eq!(next["seq"], 2, "seq 1 was delivered again");
}

#[tokio::test]
async fn idle_websockets_are_closed_and_sse_sends_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        "[transport]\nws_ping_interval = \"500ms\"\nws_idle_timeout = \"1500ms\"\nsse_heartbeat = \"300ms\"\n",
    )
    .unwrap();
    let node = Node::start(&["--config", config.to_str().unwrap()]);
    // A client that never reads answers no ping: closed with 4002.
    let mut ws = node.ws().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(ws.closed().await, Some(4002));
    // A client that reads (and so answers pings) stays connected.
    let mut live = node.ws().await;
    live.subscribe("hb.x").await;
    live.assert_silent(Duration::from_millis(2500)).await;
    assert_eq!(live.publish("hb.x", json!(1)).await, 1);
    // SSE: comment heartbeats that also carry the cursor.
    let mut sse = Sse::open(&node, "topic=hb.x", None).await;
    let opening = sse.next_block(TIMEOUT).await.unwrap();
    assert!(opening.id.is_some());
    let beat = sse
        .next_block(Duration::from_secs(2))
        .await
        .expect("heartbeat");
    assert!(
        beat.comment && beat.id.is_some() && beat.event.is_none(),
        "{beat:?}"
    );
}

#[tokio::test]
async fn websocket_resumes_a_wildcard_from_a_client_built_cursor() {
    let node = Node::start(&[]);
    let mut ws = node.ws().await;
    let (reply, _) = ws
        .request(json!({"op":"subscribe","topic":"cw.>"}), "s")
        .await;
    assert_eq!(reply["type"], "subscribed");
    let start = reply["cursor"]
        .as_str()
        .expect("subscribed carries a cursor")
        .to_string();
    let floor = start.split('~').nth(1).unwrap().to_string();
    for i in 1..=5 {
        publish(&node, "cw.a", &json!(i)).await;
    }
    for i in 1..=3 {
        publish(&node, "cw.b", &json!(i)).await;
    }
    let seen = ws.messages(8).await;
    let last = |t: &str| {
        seen.iter()
            .filter(|m| m["topic"] == t)
            .map(|m| m["seq"].as_u64().unwrap())
            .max()
            .unwrap()
    };
    let cursor = format!("1~{floor}~cw.a~{}~cw.b~{}", last("cw.a"), last("cw.b"));
    drop(ws);
    // While away: more on cw.a, and a brand-new topic.
    for i in 6..=8 {
        publish(&node, "cw.a", &json!(i)).await;
    }
    for i in 1..=2 {
        publish(&node, "cw.c", &json!(i)).await;
    }
    let mut ws = node.ws().await;
    let (reply, _) = ws
        .request(
            json!({"op":"subscribe","topic":"cw.>","cursor":cursor}),
            "r",
        )
        .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    let got = ws.messages(5).await;
    assert_sequence(&got, "cw.a", 6, 8);
    assert_sequence(&got, "cw.c", 1, 2);
    ws.assert_silent(Duration::from_millis(300)).await;
    let (bad, _) = ws
        .request(
            json!({"op":"subscribe","topic":"cw.x","cursor":"nope"}),
            "b",
        )
        .await;
    assert_eq!(
        (bad["type"].as_str(), bad["code"].as_str()),
        (Some("error"), Some("bad_request"))
    );
}

#[tokio::test]
async fn resume_does_not_depend_on_the_order_of_topics() {
    let node = Node::start(&[]);
    for (i, query) in ["topic=o.eu&topic=o.%2A", "topic=o.%2A&topic=o.eu"]
        .iter()
        .enumerate()
    {
        let eu = format!("o{i}");
        let query = query.replace("o.", &format!("{eu}."));
        publish(&node, &format!("{eu}.eu"), &json!(1)).await;
        let mut sse = Sse::open(&node, &query, None).await;
        let opening = sse.next_block(TIMEOUT).await.unwrap().id.unwrap();
        drop(sse);
        for n in 2..=4 {
            publish(&node, &format!("{eu}.eu"), &json!(n)).await;
        }
        for n in 1..=2 {
            publish(&node, &format!("{eu}.us"), &json!(n)).await;
        }
        let mut sse = Sse::open(&node, &query, Some(&opening)).await;
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(sse.next_event(TIMEOUT).await.unwrap().1);
        }
        assert_sequence(&got, &format!("{eu}.eu"), 2, 4);
        assert_sequence(&got, &format!("{eu}.us"), 1, 2);
        assert!(
            sse.next_event(Duration::from_millis(300)).await.is_none(),
            "{query}: extra events"
        );
    }
}
