//! Binary payloads against real nodes: random bytes (0x00, 0xff, invalid
//! UTF-8, empty, up to 60 KB) published with `publish_bytes` come back byte
//! for byte as `Event::Binary` over every transport (WebSocket: kind 0x02
//! frames; SSE and long-poll: base64 envelopes), JSON messages among them
//! stay `Event::Message`, and the same holds across a 2-node cluster.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::StreamExt;
use herald_client::{Client, Event, Payload, Start, Subscription, Transport};
use serde_json::json;

fn payloads() -> Vec<Bytes> {
    let mut out: Vec<Bytes> = [
        &b""[..],
        b"\x00",
        b"\xff",
        b"\xc3\x28",
        b"\x00\xff\x00\xfe\x80\x7f",
        br#"{"looks":"like json"}"#,
    ]
    .iter()
    .map(|b| Bytes::copy_from_slice(b))
    .collect();
    for n in [1usize, 2, 3, 17, 255, 256, 1000, 4096, 60_000] {
        out.push((0..n).map(|_| rand::random::<u8>()).collect());
    }
    out
}

fn client(url: String, transport: Transport) -> Client {
    Client::builder()
        .urls([url])
        .transports([transport])
        .poll_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

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

#[tokio::test]
async fn binary_round_trips_on_every_transport() {
    let node = Node::start(&[]);
    for transport in Transport::ALL {
        let c = client(node.url(), transport);
        let topic = format!("bin.{transport}.raw");
        let mut sub = c.subscribe(&topic, Start::Live).await.unwrap();
        let sent = payloads();
        let mut expected = Vec::new();
        for (i, p) in sent.iter().enumerate() {
            let ack = c.publish_bytes(&topic, p.clone()).await.unwrap();
            expected.push(Payload::Binary(p.clone()));
            assert_eq!(ack.seq as usize, expected.len());
            if i == 3 {
                c.publish(&topic, json!({"json": true})).await.unwrap();
                expected.push(Payload::Json(json!({"json": true})));
            }
        }
        let events = take(&mut sub, expected.len()).await;
        for (i, (event, want)) in events.iter().zip(&expected).enumerate() {
            assert_eq!(event.topic(), topic);
            assert!(
                matches!(event, Event::Binary { seq, .. } | Event::Message { seq, .. } if *seq == i as u64 + 1),
                "{transport}: {event:?}"
            );
            assert_eq!(
                event.payload().as_ref(),
                Some(want),
                "{transport}: seq {}",
                i + 1
            );
        }
        // A `&'static [u8]` is accepted too.
        c.publish_bytes(&topic, &b"\xfe"[..]).await.unwrap();
        let last = take(&mut sub, 1).await;
        assert_eq!(
            last[0].payload(),
            Some(Payload::Binary(Bytes::from_static(b"\xfe")))
        );
        // History as events: the same payloads, binary ones as bytes.
        let history = c.history_events(&topic, 0, 1000).await.unwrap();
        let got: Vec<_> = history.iter().map(Event::payload).collect();
        expected.push(Payload::Binary(Bytes::from_static(b"\xfe")));
        assert_eq!(got, expected.into_iter().map(Some).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn binary_round_trips_across_a_cluster() {
    let nats = NatsServer::start();
    let nodes = start_cluster(&nats, 2).await;
    for transport in Transport::ALL {
        let reader = client(nodes[1].url(), transport);
        let writer = client(nodes[0].url(), Transport::Ws);
        let topic = format!("binc.{transport}.x");
        let mut sub = reader
            .subscribe(&format!("binc.{transport}.*"), Start::Live)
            .await
            .unwrap();
        let sent = payloads();
        for p in &sent {
            writer.publish_bytes(&topic, p.clone()).await.unwrap();
        }
        let events = take(&mut sub, sent.len()).await;
        let got: Vec<_> = events.iter().map(Event::payload).collect();
        let want: Vec<_> = sent.into_iter().map(|b| Some(Payload::Binary(b))).collect();
        assert_eq!(got, want, "{transport}");
    }
}
