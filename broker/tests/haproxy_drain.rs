//! Issue 25: HAProxy with `deploy/haproxy/haproxy.cfg` in front of three
//! nodes honours the drain. A SIGTERM'd node answers `/readyz` with 503 for
//! `drain_delay` (2 s) while it keeps serving; HAProxy's checks must take it
//! out of the rotation inside that window, so no client is sent to it once
//! it closes. Clients going through HAProxy meanwhile see no error.

mod common;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn haproxy_takes_a_draining_node_out_before_it_closes() {
    let mut nodes: Vec<Node> = (0..3).map(|_| Node::start(&[])).collect();
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
    let haproxy = Haproxy::start(&addrs);
    let bind = haproxy.port;
    haproxy.wait_all_up(Duration::from_secs(20)).await;

    // Clients keep publishing through HAProxy the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let client = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            let client = http();
            while !stop.load(Ordering::SeqCst) {
                let res = client
                    .post(format!("http://127.0.0.1:{bind}/v1/topics/lb.t/messages"))
                    .json(&serde_json::json!("x"))
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    let drain = Duration::from_secs(2);
    let term = Instant::now();
    signal(nodes[0].pid(), "TERM");
    let down = loop {
        let s = haproxy.statuses().await;
        if s.iter()
            .any(|(name, status)| name == "n1" && status == "DOWN")
        {
            break term.elapsed();
        }
        assert!(
            term.elapsed() < Duration::from_secs(10),
            "n1 never marked down: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Still serving when HAProxy let go of it.
    let open = std::net::TcpStream::connect(nodes[0].addr).is_ok();
    eprintln!(
        "n1 marked down {down:?} after SIGTERM (drain_delay {drain:?}); port still open: {open}"
    );
    assert!(
        down < drain,
        "HAProxy noticed the drain after {down:?}, the 503 lasts {drain:?}"
    );
    assert!(open, "n1 had closed before HAProxy marked it down");

    let status = nodes[0].sigterm_wait();
    assert!(status.success(), "{status:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    client.await.unwrap();
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    eprintln!("through HAProxy: {ok} publishes answered 200, {failed} failed");
    assert!(ok > 100, "too little traffic: {ok}");
    assert_eq!(failed, 0, "clients saw errors while a node drained");
}
