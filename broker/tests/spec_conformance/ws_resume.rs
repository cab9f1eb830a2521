//! Cursor resume and the `pong` floor, end to end.

use super::*;

#[tokio::test]
async fn websocket_cursor_resume_and_pong_floor() {
    let spec = AsyncApi::load();
    let node = Node::start(&[]);
    for (topic, n) in [("res.a", 3), ("res.b", 2)] {
        for i in 1..=n {
            assert_eq!(publish(&node, topic, &json!(i)).await.0, 200);
        }
    }

    // A cursor replays what it does not cover; the starting cursor lists no
    // topic that nothing was delivered from yet.
    let mut ws = node.ws().await;
    let op = json!({"op":"subscribe","id":"c","topic":"res.*","cursor":"1~0"});
    let reply = exchange(&mut ws, &op).await;
    assert_eq!(
        reply,
        json!({"type":"subscribed","id":"c","topic":"res.*","cursor":"1~0"})
    );
    let mut last: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for m in ws.messages(5).await {
        let topic = m["topic"].as_str().unwrap().to_string();
        let (seq, ts) = (m["seq"].as_u64().unwrap(), m["ts"].as_u64().unwrap());
        let before = last.insert(topic.clone(), (seq, ts)).map_or(0, |(s, _)| s);
        assert_eq!(seq, before + 1, "{topic} in seq order");
    }
    assert_eq!(last["res.a"].0, 3);
    assert_eq!(last["res.b"].0, 2);

    // The pong floor covers everything received, and never goes down.
    let mut floor = 0;
    for id in ["p1", "p2"] {
        let pong = exchange(&mut ws, &json!({"op":"ping","id":id})).await;
        let f = pong["floor"].as_u64().expect("pong has a floor");
        assert!(f >= floor, "pong floors never decrease: {f} < {floor}");
        floor = f;
    }
    let newest = last.values().map(|(_, ts)| *ts).max().unwrap();
    assert!(
        floor >= newest,
        "floor {floor} below a received ts {newest}"
    );

    // README §9.3: raise the floor to the pong's and drop the entries it covers.
    let mut cursor = format!("1~{floor}");
    for (topic, (seq, ts)) in &last {
        if *ts >= floor {
            cursor.push_str(&format!("~{topic}~{seq}"));
        }
    }
    for frame in &ws.seen {
        spec.check_frame(frame);
    }
    drop(ws);
    publish(&node, "res.a", &json!(4)).await;
    publish(&node, "res.c", &json!(1)).await;

    // Resuming with it delivers exactly what was published since.
    let mut ws = node.ws().await;
    let op = json!({"op":"subscribe","id":"r","topic":"res.*","cursor":cursor});
    assert!(spec.op_errors(&op).is_empty());
    let reply = exchange(&mut ws, &op).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    assert_eq!(reply["cursor"], cursor.as_str(), "resumed starting cursor");
    let mut got: Vec<(String, u64)> = ws
        .messages(2)
        .await
        .iter()
        .map(|m| {
            (
                m["topic"].as_str().unwrap().into(),
                m["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(got, [("res.a".to_string(), 4), ("res.c".to_string(), 1)]);
    ws.assert_silent(Duration::from_millis(300)).await;
    let pong = exchange(&mut ws, &json!({"op":"ping"})).await;
    assert!(pong["floor"].as_u64().unwrap() >= floor);
    for frame in &ws.seen {
        spec.check_frame(frame);
    }
}
