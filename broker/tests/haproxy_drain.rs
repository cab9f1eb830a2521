//! Issue 25: HAProxy with `deploy/haproxy/haproxy.cfg` in front of three
//! nodes honours the drain. A SIGTERM'd node answers `/readyz` with 503 for
//! `drain_delay` (2 s) while it keeps serving; HAProxy's checks must take it
//! out of the rotation inside that window, so no client is sent to it once
//! it closes. Clients going through HAProxy meanwhile see no error.

mod common;

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::*;

/// HAProxy in the foreground with the deploy config; killed on drop.
struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_haproxy(bind: u16, stats: u16, nodes: &[Node]) -> Haproxy {
    let bin = [
        "/usr/sbin/haproxy",
        "/usr/bin/haproxy",
        "/usr/local/sbin/haproxy",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("haproxy is required for this test: apt-get install haproxy");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/haproxy/haproxy.cfg");
    let mut cmd = Command::new(bin);
    cmd.arg("-db")
        .arg("-f")
        .arg(config)
        .env("HAPROXY_BIND", format!("127.0.0.1:{bind}"))
        .env("HAPROXY_STATS_BIND", format!("127.0.0.1:{stats}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (i, node) in nodes.iter().enumerate() {
        cmd.env(format!("HERALD_N{}", i + 1), node.addr.to_string());
    }
    Haproxy(cmd.spawn().expect("start haproxy"))
}

/// Each server's status (`UP`, `DOWN`, `UP 1/2`, …) from the stats CSV.
async fn statuses(stats: u16) -> Vec<(String, String)> {
    let Ok(res) = http()
        .get(format!("http://127.0.0.1:{stats}/;csv"))
        .send()
        .await
    else {
        return Vec::new();
    };
    let text = res.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("herald,n"))
        .map(|l| {
            let fields: Vec<&str> = l.split(',').collect();
            (fields[1].to_string(), fields[17].to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn haproxy_takes_a_draining_node_out_before_it_closes() {
    let mut nodes: Vec<Node> = (0..3).map(|_| Node::start(&[])).collect();
    let (bind, stats) = (free_port(), free_port());
    let _haproxy = start_haproxy(bind, stats, &nodes);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = statuses(stats).await;
        if s.len() == 3 && s.iter().all(|(_, status)| status == "UP") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "HAProxy never saw 3 ready nodes: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

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
        let s = statuses(stats).await;
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
