//! The client API against a real node: publish, history, errors, starting
//! positions and cursors on every transport.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use herald_client::{Client, Error, Event, Start, Subscription, Transport};
use serde_json::{json, Value};

fn client(node: &Node, transports: &[Transport]) -> Client {
    Client::builder()
        .urls([node.url()])
        .transports(transports.iter().copied())
        .poll_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

/// The next `n` events, failing after `TIMEOUT`.
async fn take(sub: &mut Subscription, n: usize) -> Vec<Event> {
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(TIMEOUT, sub.next()).await {
            Ok(Some(Ok(e))) => out.push(e),
            other => panic!("after {} events: {other:?}", out.len()),
        }
    }
    out
}

async fn assert_quiet(sub: &mut Subscription) {
    if let Ok(e) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
        panic!("unexpected {e:?}");
    }
}

fn seqs(events: &[Event]) -> Vec<(String, u64)> {
    events
        .iter()
        .map(|e| match e {
            Event::Message { topic, seq, .. } => (topic.clone(), *seq),
            other => panic!("not a message: {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn publish_and_history() {
    let node = Node::start(&[]);
    let c = client(&node, &Transport::ALL);
    let values = [
        json!({"b": 1, "a": [true, null]}),
        json!("text"),
        json!(42),
        Value::Null,
    ];
    for (i, v) in values.iter().enumerate() {
        let ack = c.publish("api.h", v).await.unwrap();
        assert_eq!((ack.topic.as_str(), ack.seq), ("api.h", i as u64 + 1));
    }
    let page = c.history("api.h", 0, 100).await.unwrap();
    assert_eq!((page.first_seq, page.last_seq), (1, 4));
    let data: Vec<Value> = page.messages.iter().map(|m| m.data.clone()).collect();
    assert_eq!(data, values);
    assert!(page.messages.iter().all(|m| m.topic == "api.h" && m.ts > 0));
    let page = c.history("api.h", 1, 2).await.unwrap();
    assert_eq!(
        page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![2, 3]
    );
    let empty = c.history("api.never", 0, 10).await.unwrap();
    assert_eq!(
        (empty.messages.len(), empty.first_seq, empty.last_seq),
        (0, 1, 0)
    );
}

#[tokio::test]
async fn an_explicit_idempotency_key_publishes_once() {
    let node = Node::start(&[]);
    let c = client(&node, &Transport::ALL);
    let first = c
        .publish_with_key("api.k", json!(1), "key-1")
        .await
        .unwrap();
    let again = c
        .publish_with_key("api.k", json!(2), "key-1")
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(c.history("api.k", 0, 10).await.unwrap().last_seq, 1);
}

#[tokio::test]
async fn server_errors_carry_code_and_status() {
    let node = Node::start(&[]);
    let c = client(&node, &Transport::ALL);
    for topic in ["a..b", "orders.*", "bad topic"] {
        let e = c.publish(topic, json!(1)).await.unwrap_err();
        assert_eq!(
            (e.code(), e.status()),
            (Some("invalid_topic"), Some(400)),
            "{topic}: {e}"
        );
    }
    let e = c.history("a.>", 0, 1).await.unwrap_err();
    assert_eq!(e.code(), Some("invalid_topic"), "{e}");
    for t in Transport::ALL {
        let e = client(&node, &[t])
            .subscribe("a..b", Start::Live)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("invalid_topic"), "{t}: {e}");
    }
    let e = c
        .subscribe("a.*", Start::Cursor("garbage".into()))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
}

#[tokio::test]
async fn unreachable_nodes_fail_after_the_timeouts() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = Client::builder()
        .urls([format!("http://127.0.0.1:{port}")])
        .connect_timeout(Duration::from_millis(500))
        .publish_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let e = c.subscribe("a.b", Start::Live).await.unwrap_err();
    assert_eq!(e.code(), Some("unavailable"), "{e}");
    let e = c.publish("a.b", json!(1)).await.unwrap_err();
    assert_eq!(e.code(), Some("unavailable"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(Client::builder().build().is_err());
    assert!(Client::builder().urls(["ftp://x"]).build().is_err());
}

#[tokio::test]
async fn since_replays_then_goes_live_on_every_transport() {
    let node = Node::start(&[]);
    let publisher = client(&node, &Transport::ALL);
    for i in 1..=5 {
        publisher.publish("api.since", json!(i)).await.unwrap();
    }
    for (last, t) in (5u64..).zip(Transport::ALL) {
        let c = client(&node, &[t]);
        let mut sub = c.subscribe("api.since", Start::Since(2)).await.unwrap();
        let got = take(&mut sub, last as usize - 2).await;
        assert_eq!(
            seqs(&got),
            (3..=last)
                .map(|s| ("api.since".to_string(), s))
                .collect::<Vec<_>>(),
            "{t}"
        );
        let ack = publisher.publish("api.since", json!("live")).await.unwrap();
        let live = take(&mut sub, 1).await;
        assert_eq!(seqs(&live), vec![("api.since".to_string(), ack.seq)], "{t}");
        assert_quiet(&mut sub).await;
    }
    // Since(0) on a pattern: everything retained, then live.
    for t in Transport::ALL {
        let mut sub = client(&node, &[t])
            .subscribe("api.*", Start::Since(0))
            .await
            .unwrap();
        let got = take(&mut sub, 8).await;
        assert_eq!(
            seqs(&got),
            (1..=8)
                .map(|s| ("api.since".to_string(), s))
                .collect::<Vec<_>>(),
            "{t}"
        );
        assert_quiet(&mut sub).await;
    }
    // Since(N) on a pattern: each matching topic after N.
    for t in Transport::ALL {
        let mut sub = client(&node, &[t])
            .subscribe("api.*", Start::Since(6))
            .await
            .unwrap();
        let got = take(&mut sub, 2).await;
        assert_eq!(
            seqs(&got),
            vec![("api.since".to_string(), 7), ("api.since".to_string(), 8)],
            "{t}"
        );
        assert_quiet(&mut sub).await;
    }
}

#[tokio::test]
async fn live_starts_after_the_subscribe_returns() {
    let node = Node::start(&[]);
    let publisher = client(&node, &Transport::ALL);
    publisher.publish("api.live.x", json!("old")).await.unwrap();
    for t in Transport::ALL {
        for pattern in ["api.live.x", "api.live.*"] {
            let mut sub = client(&node, &[t])
                .subscribe(pattern, Start::Live)
                .await
                .unwrap();
            let ack = publisher
                .publish("api.live.x", json!(t.as_str()))
                .await
                .unwrap();
            let got = take(&mut sub, 1).await;
            assert_eq!(
                got,
                vec![Event::Message {
                    topic: "api.live.x".into(),
                    seq: ack.seq,
                    ts: match &got[0] {
                        Event::Message { ts, .. } => *ts,
                        _ => 0,
                    },
                    data: json!(t.as_str()),
                }],
                "{t} {pattern}"
            );
            assert_quiet(&mut sub).await;
        }
    }
}

/// A subscription's cursor resumes it on another transport, after exactly
/// what was consumed (even with more events already buffered).
#[tokio::test]
async fn cursor_hands_a_subscription_over_between_transports() {
    let node = Node::start(&[]);
    let publisher = client(&node, &Transport::ALL);
    let mut sub = client(&node, &[Transport::Ws])
        .subscribe("api.cur.>", Start::Live)
        .await
        .unwrap();
    let mut expected = Vec::new();
    let mut published = 0;
    let mut publish = |n: usize| {
        let publisher = publisher.clone();
        let start = published;
        published += n;
        async move {
            let mut acks = Vec::new();
            for i in start..start + n {
                let topic = ["api.cur.a", "api.cur.b.c", "api.cur.d"][i % 3];
                let ack = publisher.publish(topic, json!(i)).await.unwrap();
                acks.push((ack.topic, ack.seq));
            }
            acks
        }
    };
    expected.extend(publish(9).await);
    let mut got = seqs(&take(&mut sub, 4).await);
    for next in [
        Transport::Sse,
        Transport::Poll,
        Transport::Ws,
        Transport::Sse,
    ] {
        let cursor = sub.cursor().expect("a cursor");
        drop(sub);
        expected.extend(publish(6).await);
        sub = client(&node, &[next])
            .subscribe("api.cur.>", Start::Cursor(cursor))
            .await
            .unwrap();
        got.extend(seqs(&take(&mut sub, 5).await));
    }
    let rest = expected.len() - got.len();
    got.extend(seqs(&take(&mut sub, rest).await));
    // Order between topics is not specified: compare per topic.
    let by_topic = |list: &[(String, u64)]| {
        let mut map = std::collections::BTreeMap::<String, Vec<u64>>::new();
        for (t, s) in list {
            map.entry(t.clone()).or_default().push(*s);
        }
        map
    };
    assert_eq!(by_topic(&got), by_topic(&expected));
    assert_quiet(&mut sub).await;
    assert_eq!(sub.stats().seq_jumps, 0);
}

#[tokio::test]
async fn tokens_are_sent_and_auth_errors_are_final() {
    let secret = "0123456789abcdef0123456789abcdef";
    let node = Node::start(&["--jwt-secret", secret]);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "tester", "exp": exp, "subscribe": ["auth.>"], "publish": ["auth.>"]}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let with_token = |t: Transport| {
        Client::builder()
            .urls([node.url()])
            .token(&token)
            .transports([t])
            .poll_timeout(Duration::from_secs(2))
            .build()
            .unwrap()
    };
    let anonymous = client(&node, &Transport::ALL);
    let started = std::time::Instant::now();
    let e = anonymous.publish("auth.x", json!(1)).await.unwrap_err();
    assert_eq!(
        (e.code(), e.status()),
        (Some("unauthorized"), Some(401)),
        "{e}"
    );
    let e = with_token(Transport::Ws)
        .publish("other.x", json!(1))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.status()),
        (Some("forbidden"), Some(403)),
        "{e}"
    );
    for t in Transport::ALL {
        let e = client(&node, &[t])
            .subscribe("auth.>", Start::Live)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("unauthorized"), "{t}: {e}");
        let e = with_token(t)
            .subscribe("other.>", Start::Live)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("forbidden"), "{t}: {e}");
        let c = with_token(t);
        let mut sub = c.subscribe("auth.>", Start::Live).await.unwrap();
        let ack = c.publish("auth.x", json!(t.as_str())).await.unwrap();
        let got = take(&mut sub, 1).await;
        assert_eq!(seqs(&got), vec![("auth.x".to_string(), ack.seq)], "{t}");
    }
    // Refusals are not retried.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// Issue 21 (D2): the deepest payload the node accepts (`max_json_depth`
/// at its hard maximum, 100) arrives intact on every transport and in
/// history; one level more is refused with `bad_request`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deepest_accepted_payload_arrives_on_every_transport() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, "[limits]\nmax_json_depth = 100\n").unwrap();
    let node = Node::start(&["--config", config.to_str().unwrap()]);
    let nested = |depth: usize| {
        let mut v = json!("core");
        for _ in 0..depth {
            v = json!([v]);
        }
        v
    };
    let deepest = nested(100);
    for transport in Transport::ALL {
        let c = client(&node, &[transport]);
        let topic = format!("deep.{transport}");
        c.publish(&topic, &deepest).await.unwrap();
        let refused = c.publish(&topic, nested(101)).await.unwrap_err();
        assert_eq!(refused.code(), Some("bad_request"), "{refused}");
        let mut sub = c.subscribe(&topic, Start::Since(0)).await.unwrap();
        assert_eq!(sub.connection().map(|(_, t)| t), Some(transport));
        match take(&mut sub, 1).await.remove(0) {
            Event::Message { seq, data, .. } => {
                assert_eq!(seq, 1);
                assert_eq!(data, deepest, "{transport}");
            }
            other => panic!("{other:?}"),
        }
        let page = c.history(&topic, 0, 10).await.unwrap();
        assert_eq!(page.messages.len(), 1);
        assert_eq!(page.messages[0].data, deepest);
    }
}
