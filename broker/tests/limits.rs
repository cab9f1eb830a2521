//! Issue 6 (limits): connection caps and publish rate limits, each with the
//! contract's error code and a metric.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn config(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.toml");
    std::fs::write(&path, text).unwrap();
    let p = path.to_str().unwrap().to_string();
    (dir, p)
}

#[tokio::test]
async fn connection_caps_refuse_with_503_and_429() {
    let (_d, file) = config("[limits]\nmax_connections = 3\n");
    let node = Node::start(&["--config", &file]);
    let a = node.ws().await;
    let _b = node.ws().await;
    let _c = node.ws().await;
    match tokio_tungstenite::connect_async(node.ws_url("/v1/ws")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 503);
            let body: Value =
                serde_json::from_slice(res.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"]["code"], "unavailable");
        }
        other => panic!("fourth connection admitted: {:?}", other.map(|_| ())),
    }
    let (status, body) = get_json(&node, "/v1/poll?topic=x&timeout_ms=0").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("unavailable"))
    );
    // Plain REST calls are not connections in this sense.
    assert_eq!(publish(&node, "x", &json!(1)).await.0, 200);
    drop(a);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let _d2 = node.ws().await;
    assert!(metric(&node, "herald_connections_refused_total").await >= 2);

    let (_d3, file) = config("[limits]\nmax_connections_per_ip = 2\n");
    let node = Node::start(&["--config", &file]);
    let _x = node.ws().await;
    let _y = node.ws().await;
    let (status, body) = get_json(&node, "/v1/poll?topic=x&timeout_ms=0").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
    // The stats stream (the dashboard's) holds a slot like any stream.
    for path in ["/v1/stats/stream", "/v1/sse?topic=x"] {
        let (status, body) = get_json(&node, path).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (429, Some("rate_limited")),
            "{path}"
        );
    }
}

#[tokio::test]
async fn publish_rates_are_enforced_per_connection_and_per_client() {
    let (_d, file) = config("[limits]\npublish_rate_per_connection = 5.0\npublish_rate_per_client = 5.0\npublish_burst = 5.0\n");
    let node = Node::start(&["--config", &file]);
    let mut ws = node.ws().await;
    let (mut acks, mut limited) = (0, 0);
    for i in 0..20 {
        let (reply, _) = ws
            .request(
                json!({"op":"publish","topic":"r.x","data":i}),
                &format!("p{i}"),
            )
            .await;
        match reply["type"].as_str() {
            Some("ack") => acks += 1,
            Some("error") if reply["code"] == "rate_limited" => limited += 1,
            _ => panic!("{reply}"),
        }
    }
    assert!((5..=7).contains(&acks), "{acks} acks");
    assert_eq!(acks + limited, 20);
    // The connection stays usable.
    ws.subscribe("r.y").await;

    let client = http();
    let mut statuses = Vec::new();
    for i in 0..20 {
        let res = client
            .post(node.url("/v1/topics/r.z/messages"))
            .json(&json!(i))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        if status == 429 {
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"]["code"], "rate_limited");
        }
        statuses.push(status);
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!((5..=7).contains(&ok), "{statuses:?}");
    assert!(metric(&node, "herald_rate_limited_total").await >= 20);
}

#[tokio::test]
async fn namespaces_can_lower_the_payload_limit() {
    let (_d, file) = config("[namespaces.tiny]\nmax_payload_bytes = 16\n");
    let node = Node::start(&["--config", &file]);
    let (status, body) =
        publish(&node, "tiny.x", &json!("this is longer than sixteen bytes")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    assert_eq!(publish(&node, "tiny.x", &json!("short")).await.0, 200);
    assert_eq!(
        publish(
            &node,
            "other.x",
            &json!("this is longer than sixteen bytes")
        )
        .await
        .0,
        200
    );
    let mut ws = node.ws().await;
    let (r, _) = ws
        .request(
            json!({"op":"publish","topic":"tiny.y","data":"x".repeat(40)}),
            "p",
        )
        .await;
    assert_eq!(r["code"], "payload_too_large");
    assert_eq!(metric(&node, "herald_payload_too_large_total").await, 2);
}

/// A `herald serve` started through `prlimit --nofile=N:N`, on `dir`.
struct Limited {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Limited {
    fn start(dir: &std::path::Path, nofile: u32) -> Limited {
        let mut cmd = std::process::Command::new("prlimit");
        cmd.arg(format!("--nofile={nofile}:{nofile}"))
            .arg(binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .env("HERALD_LOG", "info")
            .env_remove("RUST_LOG");
        let launched = herald_testkit::launch(cmd, TIMEOUT)
            .unwrap_or_else(|e| panic!("herald under prlimit (util-linux): {e}"));
        Limited {
            child: launched.child,
            addr: launched.ready.addr,
            log: launched.log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn logs(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `GET path` on a new connection and reads the status line and
/// headers; returns the status and the connection.
async fn open_stream(addr: std::net::SocketAddr, path: &str) -> (u16, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(TIMEOUT, conn.read(&mut byte))
            .await
            .expect("an answer in time")
            .unwrap();
        assert_eq!(
            n,
            1,
            "closed before the head: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let status = text[9..12].parse().expect("status");
    (status, conn)
}

/// Issue 21 (D4): streams count against the connection cap, which keeps
/// descriptors in reserve below the open-file limit. Past it, streams get
/// 503 with the JSON body and the connection is closed, while `/healthz`
/// answers and a publish is acknowledged and durable. An accept loop that
/// does hit EMFILE backs off instead of spinning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_cannot_take_the_last_descriptors() {
    use tokio::io::AsyncReadExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let node = Limited::start(&dir, 256);
    // 256 open files less a reserve of 64.
    assert!(
        node.logs().contains("connection cap 192"),
        "{}",
        node.logs()
    );
    let (mut open, mut refused) = (Vec::new(), 0);
    for i in 0..300 {
        let path = if i % 2 == 0 {
            "/v1/stats/stream"
        } else {
            "/v1/sse?topic=fd.x"
        };
        let (status, mut conn) = open_stream(node.addr, path).await;
        match status {
            200 => open.push(conn),
            503 => {
                let mut body = Vec::new();
                // Connection: close — the body ends with the connection.
                tokio::time::timeout(TIMEOUT, conn.read_to_end(&mut body))
                    .await
                    .expect("refused connections are closed")
                    .unwrap();
                let body: Value = serde_json::from_slice(&body).expect("JSON error body");
                assert_eq!(body["error"]["code"], "unavailable", "{body}");
                refused += 1;
            }
            other => panic!("stream {i}: status {other}"),
        }
    }
    assert_eq!((open.len(), refused), (192, 108));
    let client = http();
    let health = client.get(node.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let res = client
        .post(node.url("/v1/topics/fd.x/messages"))
        .json(&json!({"kept": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "publish at the cap");

    // Idle sockets past the limit do exhaust descriptors: the accept loop
    // then pauses (actix-server backs off 500 ms per EMFILE) rather than
    // spinning on the listener.
    let mut idle = Vec::new();
    for _ in 0..120 {
        idle.push(tokio::net::TcpStream::connect(node.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu = |pid: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    // prlimit execs herald: same pid.
    let before = cpu(node.child.id());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ticks = cpu(node.child.id()) - before;
    assert!(
        ticks < 30,
        "{ticks} CPU ticks in 1 s at EMFILE: the accept loop spins"
    );
    assert!(
        node.logs().contains("Too many open files"),
        "EMFILE was reached"
    );
    drop(idle);
    drop(open);
    // Descriptors back: the node answers again and has kept the message.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let ok = client
            .get(node.url("/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ok {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node did not recover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(node);
    let again = Node::start_in(&dir, &[]);
    let (status, page) = get_json(&again, "/v1/topics/fd.x/messages").await;
    assert_eq!(status, 200);
    assert_eq!(page["messages"][0]["data"], json!({"kept": true}), "{page}");
}
