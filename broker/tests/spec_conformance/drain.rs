//! A drained node (SIGTERM) closes WebSockets with 1012 and answers a
//! waiting long-poll at once.

use super::*;

/// SIGTERM drains: WebSockets close with 1012, a waiting long-poll answers
/// at once, the node exits 0.
#[tokio::test]
async fn drain_closes_websockets_with_1012() {
    let asyncapi = AsyncApi::load();
    let openapi = OpenApi::load();
    let mut node = Node::start(&[]);
    let mut ws = node.ws().await;
    ws.subscribe("drain.t").await;
    let poll = tokio::spawn(
        http()
            .get(node.url("/v1/poll?topic=drain.t&timeout_ms=30000"))
            .send(),
    );
    // Signal only once the poll is held by the node (counted while it waits).
    let waiting = std::time::Instant::now();
    loop {
        let (_, stats) = get_json(&node, "/v1/stats").await;
        if stats["connections"]["poll"] == 1 {
            break;
        }
        assert!(
            waiting.elapsed() < TIMEOUT,
            "the long-poll never arrived: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = std::time::Instant::now();
    signal(node.pid(), "TERM");
    assert_eq!(ws.closed().await, Some(1012), "close code on drain");
    assert!(
        asyncapi.close_codes.contains(&1012),
        "1012 is not in x-close-codes"
    );
    let res = poll.await.unwrap().expect("long-poll answered");
    let status = res.status().as_u16();
    let ct = content_type(res.headers());
    let body = res.bytes().await.unwrap();
    let body = openapi.check("GET", Some("/v1/poll"), status, ct.as_deref(), &body);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messages"], json!([]));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the long-poll answered at once"
    );
    let exit = node.sigterm_wait();
    assert!(exit.success(), "exit status after a drain: {exit:?}");
}
