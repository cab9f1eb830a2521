//! The admin API's signals against a real node, on every transport: a
//! disconnect (WebSocket close 4004, SSE `kicked`, long-poll 410) ends every
//! subscription with `Error::Kicked` and nothing reconnects; a server-side
//! unsubscribe ends that subscription with `Error::Unsubscribed` while the
//! others go on.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use herald_client::{Client, ConnectionEvent, Error, Event, Start, Transport};
use serde_json::{json, Value};

fn client(node: &Node, transport: Transport) -> Client {
    Client::builder()
        .urls([node.url()])
        .transports([transport])
        .reconnect_delay(Duration::from_millis(50), Duration::from_millis(300))
        .poll_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn present(node: &Node, topic: &str) -> Vec<String> {
    let url = format!("{}/v1/topics/{topic}/presence", node.url());
    let body: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    body["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_str().unwrap().to_string())
        .collect()
}

async fn one_present(node: &Node, topic: &str) -> String {
    for _ in 0..100 {
        let ids = present(node, topic).await;
        if ids.len() == 1 {
            return ids[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not exactly one client present on {topic}");
}

async fn admin(node: &Node, path: &str, body: Option<Value>) -> Value {
    let mut req = reqwest::Client::new().post(format!("{}{path}", node.url()));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

#[tokio::test]
async fn kicked_clients_stop_and_report_on_every_transport() {
    let node = Node::start(&[]);
    for transport in Transport::ALL {
        let c = client(&node, transport);
        let mut events = c.connection_events();
        let topic = format!("kick.{transport}");
        let mut sub = c.subscribe(&topic, Start::Live).await.unwrap();
        let id = one_present(&node, &topic).await;
        let answer = admin(&node, &format!("/v1/clients/{id}/disconnect"), None).await;
        assert_eq!(answer["disconnected"], 1, "{answer}");
        match tokio::time::timeout(TIMEOUT, sub.next()).await {
            Ok(Some(Err(Error::Kicked(_)))) => {}
            other => panic!("{transport}: {other:?}"),
        }
        assert!(sub.next().await.is_none());
        assert!(sub.cursor().is_some(), "the application may resume exactly");
        // Stays gone: nobody present, no new connection.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(present(&node, &topic).await.is_empty(), "{transport}");
        let mut kicked = 0;
        let mut connected = 0;
        while let Ok(e) = events.try_recv() {
            match e {
                ConnectionEvent::Kicked { transport: t, .. } => {
                    assert_eq!(t, transport);
                    kicked += 1
                }
                ConnectionEvent::Connected { .. } => connected += 1,
                _ => {}
            }
        }
        assert_eq!((kicked, connected), (1, 1), "{transport}");
    }
}

#[tokio::test]
async fn a_server_side_unsubscribe_ends_that_subscription_only() {
    let node = Node::start(&[]);
    for transport in Transport::ALL {
        let c = client(&node, transport);
        let mut events = c.connection_events();
        let (a, b) = (
            format!("unsub.{transport}.a"),
            format!("unsub.{transport}.b"),
        );
        let (sub_a, sub_b) =
            tokio::join!(c.subscribe(&a, Start::Live), c.subscribe(&b, Start::Live));
        let (mut sub_a, mut sub_b) = (sub_a.unwrap(), sub_b.unwrap());
        // The connection carrying both (an SSE stream replaced when the
        // second pattern came stays present until the node next writes to it).
        let mut id = None;
        for _ in 0..100 {
            let on_b = present(&node, &b).await;
            let both: Vec<String> = present(&node, &a)
                .await
                .into_iter()
                .filter(|i| on_b.contains(i))
                .collect();
            if both.len() == 1 {
                id = both.into_iter().next();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let id = id.expect("one connection carries both patterns");
        let answer = admin(
            &node,
            &format!("/v1/clients/{id}/unsubscribe"),
            Some(json!({"topic": a})),
        )
        .await;
        assert_eq!(answer["unsubscribed"], 1, "{answer}");
        match tokio::time::timeout(TIMEOUT, sub_a.next()).await {
            Ok(Some(Err(Error::Unsubscribed(_)))) => {}
            other => panic!("{transport}: {other:?}"),
        }
        c.publish(&a, "after").await.unwrap();
        c.publish(&b, "after").await.unwrap();
        match tokio::time::timeout(TIMEOUT, sub_b.next()).await {
            Ok(Some(Ok(Event::Message { topic, data, .. }))) => {
                assert_eq!((topic.as_str(), data), (b.as_str(), json!("after")))
            }
            other => panic!("{transport}: {other:?}"),
        }
        let mut gone = false;
        for _ in 0..40 {
            if present(&node, &a).await.is_empty() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            gone || !present(&node, &a).await.contains(&id),
            "{transport}: the ended pattern was subscribed again"
        );
        let mut unsubscribed = Vec::new();
        while let Ok(e) = events.try_recv() {
            if let ConnectionEvent::Unsubscribed { pattern, .. } = e {
                unsubscribed.push(pattern);
            }
        }
        assert_eq!(unsubscribed, vec![a.clone()], "{transport}");
    }
}
