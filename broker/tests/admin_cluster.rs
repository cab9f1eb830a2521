//! The admin API across a 3-node cluster (real `herald` processes and a real
//! `nats-server`): every node lists the same stored topics after publishes
//! through different nodes, and disconnect and unsubscribe orders sent to
//! one node reach clients connected to another — WebSocket (close 4004,
//! unsolicited `unsubscribed`), SSE (`kicked` and `unsubscribed` events) and
//! long-poll (410 `kicked`).

mod admin_support;
mod common;

use std::time::Duration;

use admin_support::*;
use common::*;
use serde_json::{json, Value};

/// A listing without the node-local field, for comparing nodes.
fn stored(listing: &Value) -> Vec<Value> {
    listing["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .map(|t| {
            let mut t = t.clone();
            t.as_object_mut().unwrap().remove("subscribers");
            t
        })
        .collect()
}

#[tokio::test]
async fn every_node_lists_the_same_stored_topics() {
    let nats = NatsServer::start();
    let nodes = start_cluster(&nats, 3, &auth_flags()).await;
    // Every topic gets publishes through every node.
    let topics = [
        "alpha.one",
        "beta.two",
        "gamma.three",
        "alpha.four",
        "delta.x",
    ];
    for round in 0..4 {
        for (i, topic) in topics.iter().enumerate() {
            let node = &nodes[(i + round) % 3];
            publish_as_admin(
                node,
                topic,
                json!({"round": round, "pad": "y".repeat(i * 7)}),
            )
            .await;
        }
    }
    // A subscriber on one node only: `subscribers` is that node's.
    let (_ws, _) = ws_client(&nodes[1], Some(&token("s", None)), &["alpha.*"]).await;

    let listings = eventually("the three listings agree", || async {
        let mut listings = Vec::new();
        for node in &nodes {
            listings.push(admin(node, "GET", "/v1/topics", None).await);
        }
        let same = stored(&listings[0]) == stored(&listings[1])
            && stored(&listings[1]) == stored(&listings[2]);
        same.then_some(listings)
    })
    .await;
    let first = stored(&listings[0]);
    assert_eq!(first.len(), topics.len(), "{first:?}");
    for row in &first {
        assert_eq!(row["last_seq"], 4, "{row}");
        assert_eq!(row["first_seq"], 1, "{row}");
        assert_eq!(row["messages"], 4, "{row}");
        assert!(row["bytes"].as_u64().unwrap() > 4 * 40, "{row}");
    }
    let subscribers = |i: usize| listings[i]["topics"][0]["subscribers"].clone();
    assert_eq!(listings[0]["topics"][0]["topic"], "alpha.four");
    assert_eq!(
        (subscribers(0), subscribers(1), subscribers(2)),
        (json!(0), json!(1), json!(0))
    );
    // Pages agree too.
    for node in &nodes {
        let page = admin(node, "GET", "/v1/topics?limit=2&after=alpha.one", None).await;
        assert_eq!(stored(&page), first[2..4].to_vec());
        assert_eq!(page["next_after"], "delta.x");
    }
}

#[tokio::test]
async fn orders_reach_clients_on_other_nodes() {
    let nats = NatsServer::start();
    let nodes = start_cluster(&nats, 3, &auth_flags()).await;
    let names = json!(["n1", "n2", "n3"]);
    let alice = token("alice", None);
    let bob = token("bob", None);

    // --- unsubscribe one client's pattern, sent to n1, client on n3 ---
    let (mut ws, id) = ws_client(&nodes[2], Some(&bob), &["chat.*", "news.*"]).await;
    let answer = admin(
        &nodes[0],
        "POST",
        &format!("/v1/clients/{id}/unsubscribe"),
        Some(json!({"topic":"chat.*"})),
    )
    .await;
    assert_eq!(answer, json!({"unsubscribed":1,"nodes":names,"missing":[]}));
    let frame = ws.recv().await;
    assert_eq!(
        frame,
        json!({"type":"unsubscribed","topic":"chat.*"}),
        "no id: unsolicited"
    );
    publish_as_admin(&nodes[1], "chat.x", json!(1)).await;
    publish_as_admin(&nodes[1], "news.x", json!(2)).await;
    assert_eq!(
        next_message_topic(&mut ws, TIMEOUT).await.as_deref(),
        Some("news.x"),
        "chat.* ended, news.* kept"
    );
    ws.assert_silent(Duration::from_millis(500)).await;

    // --- the same by sub, on SSE: alice's streams on n2 and n3 ---
    let (mut sse2, _) = sse_client(&nodes[1], &alice, "room.*").await;
    let (mut sse3, _) = sse_client(&nodes[2], &alice, "room.*").await;
    let answer = admin(
        &nodes[0],
        "POST",
        "/v1/users/alice/unsubscribe",
        Some(json!({"topic":"room.*"})),
    )
    .await;
    assert_eq!(answer["unsubscribed"], 2, "{answer}");
    for sse in [&mut sse2, &mut sse3] {
        let (event, data) = sse.next_event(TIMEOUT).await.expect("unsubscribed event");
        assert_eq!(
            (event.as_str(), data),
            ("unsubscribed", json!({"topic":"room.*"}))
        );
    }

    // --- disconnect by client id: a WebSocket on n2, asked through n3 ---
    let (mut other, _) = ws_client(&nodes[1], Some(&bob), &["news.*"]).await;
    let (mut target, target_id) = ws_client(&nodes[1], Some(&bob), &["news.*"]).await;
    let answer = admin(
        &nodes[2],
        "POST",
        &format!("/v1/clients/{target_id}/disconnect"),
        None,
    )
    .await;
    assert_eq!(answer, json!({"disconnected":1,"nodes":names,"missing":[]}));
    assert_eq!(target.closed().await, Some(4004));
    publish_as_admin(&nodes[0], "news.y", json!(3)).await;
    assert_eq!(
        next_message_topic(&mut other, TIMEOUT).await.as_deref(),
        Some("news.y")
    );

    // --- disconnect by sub: alice's WebSocket on n2, SSE streams on n2 and
    // n3 (three) and long-poll session on n2, asked through n1; bob stays ---
    let (mut alice_ws, _) = ws_client(&nodes[1], Some(&alice), &["news.*"]).await;
    let (mut alice_sse, _) = sse_client(&nodes[2], &alice, "news.*").await;
    let poll_url = nodes[1].url(&format!(
        "/v1/poll?topic=inbox.*&timeout_ms=20000&presence=true&token={alice}"
    ));
    let (status, first) = {
        let res = http()
            .get(poll_url.replace("timeout_ms=20000", "timeout_ms=0"))
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 200, "{first}");
    let poll_id = first["client_id"].as_str().unwrap().to_string();
    let waiting_url = format!("{poll_url}&client_id={poll_id}");
    let waiting = tokio::spawn(async move {
        let res = http().get(waiting_url).send().await.unwrap();
        (res.status().as_u16(), res.json::<Value>().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = admin(&nodes[0], "POST", "/v1/users/alice/disconnect", None).await;
    assert_eq!(answer, json!({"disconnected":5,"nodes":names,"missing":[]}));
    assert_eq!(alice_ws.closed().await, Some(4004));
    for sse in [&mut alice_sse, &mut sse2, &mut sse3] {
        // Messages published before the order may still be ahead of it.
        let (event, data) = loop {
            let (event, data) = sse.next_event(TIMEOUT).await.expect("kicked event");
            if event != "message" {
                break (event, data);
            }
        };
        assert_eq!(event, "kicked");
        assert_eq!(data["error"]["code"], "kicked");
        assert!(
            sse.next_block(TIMEOUT).await.is_none(),
            "the stream ends after kicked"
        );
    }
    let (status, body) = waiting.await.unwrap();
    assert_eq!(
        (status, &body["error"]["code"]),
        (410, &json!("kicked")),
        "{body}"
    );
    publish_as_admin(&nodes[0], "news.z", json!(4)).await;
    assert_eq!(
        next_message_topic(&mut other, TIMEOUT).await.as_deref(),
        Some("news.z"),
        "bob is still connected"
    );
    // Nobody left to disconnect.
    let answer = admin(&nodes[1], "POST", "/v1/users/alice/disconnect", None).await;
    assert_eq!(answer["disconnected"], 0);
}

#[tokio::test]
async fn a_node_cut_off_from_nats_refuses_orders() {
    let mut nats = NatsServer::start();
    let nodes = start_cluster(&nats, 2, &auth_flags()).await;
    nats.stop();
    let (status, body) = eventually("the node notices NATS is gone", || async {
        let (status, body) = call(
            &nodes[0],
            "POST",
            "/v1/users/alice/disconnect",
            Some(ADMIN_KEY),
            None,
        )
        .await;
        (status == 503).then_some((status, body))
    })
    .await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "unavailable");
    // Listing reads only this node's log: it still answers.
    let listing = admin(&nodes[0], "GET", "/v1/topics", None).await;
    assert!(listing["topics"].is_array());
}
