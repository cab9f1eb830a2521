//! Test harness: starts the real `herald` binary on an ephemeral port and
//! talks to it with real clients (tokio-tungstenite, reqwest).

#![allow(dead_code)]

mod haproxy;
mod nats;

// Only the tests behind a load balancer use it.
#[allow(unused_imports)]
pub use self::haproxy::*;
pub use self::nats::*;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::{tungstenite::Message as WsMessage, MaybeTlsStream, WebSocketStream};

pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A running `herald serve` process.
pub struct Node {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub log: Arc<Mutex<Vec<String>>>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// `--listen`: port 0 (a new port on every start) unless started with
    /// [`Node::start_at`].
    listen: String,
}

/// The `herald` under test: this build's, or `HERALD_TEST_BIN` (to run a
/// test against another build, e.g. to check that it fails on the build
/// before a fix).
pub fn binary() -> String {
    std::env::var("HERALD_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_herald").to_string())
}

impl Node {
    /// Starts a node with a fresh data dir and extra flags.
    pub fn start(args: &[&str]) -> Node {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let mut node = Self::start_in(&dir, args);
        node._tmp = Some(tmp);
        node
    }

    /// Starts a node with a fresh data dir, extra flags and environment.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Node {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, addr, log) = spawn(&dir, ANY_PORT, &args, &env)
            .unwrap_or_else(|e| panic!("herald did not start: {e}"));
        Node {
            child: Some(child),
            addr,
            data_dir: dir,
            _tmp: Some(tmp),
            log,
            args,
            env,
            listen: ANY_PORT.into(),
        }
    }

    /// Starts a node with a fresh data dir on a fixed address, which every
    /// restart keeps (for a load balancer configured with it).
    pub fn start_at(listen: SocketAddr, args: &[&str]) -> Node {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let listen = listen.to_string();
        let (child, addr, log) = spawn(&dir, &listen, &args, &[])
            .unwrap_or_else(|e| panic!("herald did not start on {listen}: {e}"));
        Node {
            child: Some(child),
            addr,
            data_dir: dir,
            _tmp: Some(tmp),
            log,
            args,
            env: Vec::new(),
            listen,
        }
    }

    /// Starts a node on an existing data dir (restarts).
    pub fn start_in(dir: &Path, args: &[&str]) -> Node {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (child, addr, log) = spawn(dir, ANY_PORT, &args, &[])
            .unwrap_or_else(|e| panic!("herald did not start: {e}"));
        Node {
            child: Some(child),
            addr,
            data_dir: dir.to_path_buf(),
            _tmp: None,
            log,
            args,
            env: Vec::new(),
            listen: ANY_PORT.into(),
        }
    }

    /// Kills with SIGKILL and starts again on the same data dir and flags
    /// (new port, or the same fixed one of [`Node::start_at`]).
    pub fn kill9_and_restart(&mut self) {
        self.kill9();
        let (child, addr, log) = spawn(&self.data_dir, &self.listen, &self.args, &self.env)
            .unwrap_or_else(|e| panic!("restart failed: {e}"));
        self.child = Some(child);
        self.addr = addr;
        self.log = log;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Resident set size of the server process, KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn sigterm(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(child.id(), "TERM");
        wait_timeout(&mut child, Duration::from_secs(30)).expect("exited after SIGTERM")
    }

    /// Waits for a process already signalled to exit.
    pub fn sigterm_wait(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        wait_timeout(&mut child, Duration::from_secs(30)).expect("exited")
    }

    pub async fn ws(&self) -> Ws {
        Ws::connect(&self.ws_url("/v1/ws")).await
    }

    pub fn logs(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub use herald_testkit::{signal, wait_timeout};

type Spawned = (Child, SocketAddr, Arc<Mutex<Vec<String>>>);

/// `--listen` for a node on a new free port.
const ANY_PORT: &str = "127.0.0.1:0";

/// Spawns `herald serve`. A fixed port the previous process of the same
/// node has just released may still be held for a moment: retried.
fn spawn(
    dir: &Path,
    listen: &str,
    args: &[String],
    env: &[(String, String)],
) -> Result<Spawned, String> {
    let mut tries = if listen == ANY_PORT { 1 } else { 10 };
    loop {
        tries -= 1;
        match spawn_once(dir, listen, args, env) {
            Err(_) if tries > 0 => std::thread::sleep(Duration::from_millis(200)),
            other => return other,
        }
    }
}

/// Starts `herald serve` and reads the bound address from its ready line;
/// the log holds stdout and stderr in the order written.
fn spawn_once(
    dir: &Path,
    listen: &str,
    args: &[String],
    env: &[(String, String)],
) -> Result<Spawned, String> {
    let mut cmd = Command::new(binary());
    cmd.arg("serve")
        .arg("--listen")
        .arg(listen)
        .arg("--data-dir")
        .arg(dir);
    cmd.args(args);
    cmd.env(
        "HERALD_LOG",
        std::env::var("HERALD_TEST_LOG").unwrap_or_else(|_| "info".into()),
    );
    cmd.env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let launched = herald_testkit::launch(cmd, TIMEOUT).map_err(|e| e.to_string())?;
    Ok((launched.child, launched.ready.addr, launched.log))
}

/// A WebSocket client speaking the Herald protocol.
pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Every server frame seen, for schema checks.
    pub seen: Vec<Value>,
    /// Frames read while waiting for a reply, handed out by `recv` first.
    pub backlog: std::collections::VecDeque<Value>,
}

impl Ws {
    pub async fn connect(url: &str) -> Ws {
        let (stream, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect timed out")
            .expect("websocket connect");
        Ws {
            stream,
            seen: Vec::new(),
            backlog: Default::default(),
        }
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(WsMessage::Text(text.into()))
            .await
            .expect("send");
    }

    /// Next JSON frame (skipping pings), or panics after `TIMEOUT`.
    pub async fn recv(&mut self) -> Value {
        self.try_recv(TIMEOUT)
            .await
            .expect("no frame before timeout")
    }

    /// Next JSON frame within `limit`, or `None`.
    pub async fn try_recv(&mut self, limit: Duration) -> Option<Value> {
        if let Some(v) = self.backlog.pop_front() {
            return Some(v);
        }
        self.read_frame(limit).await
    }

    async fn read_frame(&mut self, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()??;
            match msg.expect("websocket error") {
                WsMessage::Text(text) => {
                    let v: Value = serde_json::from_str(&text).expect("server frame is JSON");
                    self.seen.push(v.clone());
                    return Some(v);
                }
                WsMessage::Close(frame) => panic!("closed unexpectedly: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// Sends an op and returns the reply with the same id. Other frames
    /// that arrive first stay queued for `recv` and are also returned.
    pub async fn request(&mut self, mut op: Value, id: &str) -> (Value, Vec<Value>) {
        op["id"] = Value::String(id.into());
        self.send(op).await;
        let mut other = Vec::new();
        loop {
            let frame = self
                .read_frame(TIMEOUT)
                .await
                .expect("no reply before timeout");
            if frame["id"] == id {
                return (frame, other);
            }
            self.backlog.push_back(frame.clone());
            other.push(frame);
        }
    }

    pub async fn subscribe(&mut self, topic: &str) {
        let (reply, _) = self
            .request(
                serde_json::json!({"op":"subscribe","topic":topic}),
                &format!("sub-{topic}"),
            )
            .await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
    }

    pub async fn publish(&mut self, topic: &str, data: Value) -> u64 {
        let (reply, _) = self
            .request(
                serde_json::json!({"op":"publish","topic":topic,"data":data}),
                "pub",
            )
            .await;
        assert_eq!(reply["type"], "ack", "{reply}");
        reply["seq"].as_u64().expect("seq")
    }

    /// Collects `n` message deliveries.
    pub async fn messages(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let frame = self.recv().await;
            if frame["type"] == "message" {
                out.push(frame);
            }
        }
        out
    }

    /// Asserts nothing arrives for `quiet`.
    pub async fn assert_silent(&mut self, quiet: Duration) {
        if let Some(frame) = self.try_recv(quiet).await {
            panic!("unexpected frame {frame}");
        }
    }

    /// Waits for a close frame and returns its code.
    pub async fn closed(&mut self) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("no close before timeout")
            {
                Some(Ok(WsMessage::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .expect("client")
}

/// POSTs JSON `data` to a topic; returns (status, body).
pub async fn publish(node: &Node, topic: &str, data: &Value) -> (u16, Value) {
    let res = http()
        .post(node.url(&format!("/v1/topics/{topic}/messages")))
        .json(data)
        .send()
        .await
        .expect("publish request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Publishes messages `first..first + n` of `topic` in one batch (`POST
/// /v1/publish`), each `{"i": i, "pad": <1000 bytes>}`; asserts the 200.
pub async fn publish_padded_batch(
    client: &reqwest::Client,
    node: &Node,
    topic: &str,
    first: u64,
    n: u64,
) {
    let pad = "p".repeat(1000);
    let batch: Vec<Value> = (first..first + n)
        .map(|i| serde_json::json!({"topic": topic, "data": {"i": i, "pad": pad}}))
        .collect();
    publish_batch(client, node, &batch).await;
}

/// Publishes `batch` (`[{"topic", "data"}, ..]`) in one `POST /v1/publish`;
/// asserts the 200.
pub async fn publish_batch(client: &reqwest::Client, node: &Node, batch: &[Value]) {
    let res = client
        .post(node.url("/v1/publish"))
        .json(batch)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

pub async fn get_json(node: &Node, path: &str) -> (u16, Value) {
    let res = http().get(node.url(path)).send().await.expect("GET");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Asserts `messages` are exactly seqs `from..=to` of `topic` in order.
pub fn assert_sequence(messages: &[Value], topic: &str, from: u64, to: u64) {
    let seqs: Vec<u64> = messages
        .iter()
        .filter(|m| m["topic"] == topic)
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    let expected: Vec<u64> = (from..=to).collect();
    if seqs != expected {
        let first_bad = seqs.iter().zip(&expected).position(|(a, b)| a != b);
        let missing: Vec<u64> = expected
            .iter()
            .filter(|s| !seqs.contains(s))
            .take(10)
            .copied()
            .collect();
        let mut seen = std::collections::HashSet::new();
        let repeated: Vec<u64> = seqs
            .iter()
            .filter(|s| !seen.insert(**s))
            .take(10)
            .copied()
            .collect();
        panic!(
            "{topic}: got {} messages, expected {} ({from}..={to}); first mismatch at \
             {first_bad:?}; missing (first 10) {missing:?}; repeated (first 10) {repeated:?}",
            seqs.len(),
            expected.len()
        );
    }
}

/// One parsed SSE block.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
    pub comment: bool,
}

/// A minimal streaming SSE client over reqwest.
pub struct Sse {
    stream:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
    /// The last `id:` seen, as EventSource keeps it.
    pub last_id: Option<String>,
    /// The stream's `hello` event (presence id and node), once read.
    pub hello: Option<Value>,
}

impl Sse {
    /// Opens `/v1/sse?{query}` with an optional `Last-Event-ID`.
    pub async fn open(node: &Node, query: &str, last_event_id: Option<&str>) -> Sse {
        let mut req = http_streaming().get(node.url(&format!("/v1/sse?{query}")));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let res = req.send().await.expect("sse request");
        assert_eq!(res.status(), 200, "sse status");
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        Sse {
            stream: Box::pin(res.bytes_stream()),
            buf: String::new(),
            last_id: last_event_id.map(str::to_string),
            hello: None,
        }
    }

    /// Next block (events, id-only blocks and comments) other than the
    /// `hello` event (kept in `self.hello`), or `None` at end of stream or
    /// after `limit`.
    pub async fn next_block(&mut self, limit: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let block = self.raw_block(left).await?;
            if block.event.as_deref() == Some("hello") {
                let data = block.data.as_deref().expect("hello has data");
                self.hello = Some(serde_json::from_str(data).expect("hello is JSON"));
                continue;
            }
            return Some(block);
        }
    }

    async fn raw_block(&mut self, limit: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = SseEvent {
                    id: None,
                    event: None,
                    data: None,
                    comment: false,
                };
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        ev.id = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        ev.event = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        ev.data = Some(v.to_string());
                    } else if line.starts_with(':') {
                        ev.comment = true;
                    }
                }
                if let Some(id) = &ev.id {
                    self.last_id = Some(id.clone());
                }
                return Some(ev);
            }
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(Some(Ok(chunk))) => self
                    .buf
                    .push_str(std::str::from_utf8(&chunk).expect("utf-8")),
                Ok(Some(Err(_))) | Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Reads up to the `hello` event (the second block) and returns it.
    /// Reads up to the `hello` event (the opening id-only block comes
    /// first), leaving every block after it unread.
    pub async fn read_hello(&mut self) -> Value {
        while self.hello.is_none() {
            let block = self.raw_block(TIMEOUT).await.expect("hello before end");
            match block.event.as_deref() {
                Some("hello") => {
                    let data = block.data.as_deref().expect("hello has data");
                    self.hello = Some(serde_json::from_str(data).expect("hello is JSON"));
                }
                None => {}
                Some(other) => panic!("{other} before hello"),
            }
        }
        self.hello.clone().unwrap()
    }

    /// Next event other than `hello` (message, gap, join, leave) as
    /// (event name, data JSON).
    pub async fn next_event(&mut self, limit: Duration) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let block = self.next_block(left).await?;
            if let (Some(event), Some(data)) = (block.event, block.data) {
                return Some((
                    event,
                    serde_json::from_str(&data).expect("event data is JSON"),
                ));
            }
        }
    }
}

fn http_streaming() -> reqwest::Client {
    reqwest::Client::builder().build().expect("client")
}

/// GETs `path` and returns the body as text.
pub async fn get_text(node: &Node, path: &str) -> String {
    http()
        .get(node.url(path))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body")
}

/// The value of an unlabelled metric from `/metrics`.
pub async fn metric(node: &Node, name: &str) -> u64 {
    get_text(node, "/metrics")
        .await
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing"))
}

/// A labelled series of `/metrics`, e.g. `("herald_connections", "transport=\"ws\"")`.
pub async fn metric_labeled(node: &Node, name: &str, labels: &str) -> u64 {
    get_text(node, "/metrics")
        .await
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}{{{labels}}} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name}{{{labels}}} missing"))
}

/// Reads a topic's whole history, paging with `since`.
pub async fn full_history(node: &Node, topic: &str) -> (Vec<Value>, u64, u64) {
    let mut all = Vec::new();
    let mut since = 0;
    loop {
        let (status, page) = get_json(
            node,
            &format!("/v1/topics/{topic}/messages?since={since}&limit=1000"),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        let msgs = page["messages"].as_array().unwrap().clone();
        let (first, last) = (
            page["first_seq"].as_u64().unwrap(),
            page["last_seq"].as_u64().unwrap(),
        );
        if msgs.is_empty() {
            return (all, first, last);
        }
        since = msgs.last().unwrap()["seq"].as_u64().unwrap();
        all.extend(msgs);
    }
}

/// Starts `n` nodes joined through `nats`, named n1..nN, and waits until
/// every one reports ready.
pub async fn start_cluster(nats: &NatsServer, n: usize, extra: &[&str]) -> Vec<Node> {
    start_cluster_at(&nats.url(), n, extra).await
}

/// [`start_cluster`] through `urls` (e.g. [`NatsCluster::urls`]).
pub async fn start_cluster_at(urls: &str, n: usize, extra: &[&str]) -> Vec<Node> {
    let mut nodes = Vec::new();
    for i in 1..=n {
        let name = format!("n{i}");
        let mut args = vec!["--nats", urls, "--node-id", name.as_str()];
        args.extend_from_slice(extra);
        nodes.push(Node::start(&args));
    }
    for node in &nodes {
        wait_ready(node, Duration::from_secs(30)).await;
    }
    // Every node must see every other before tests rely on ownership.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nodes
}

/// Polls `/readyz` until 200.
pub async fn wait_ready(node: &Node, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let ok = http()
            .get(node.url("/readyz"))
            .send()
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false);
        if ok {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} not ready in time; log:\n{}",
            node.addr,
            node.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Changes the log tree of a stopped node's data dir through sled itself:
/// damage sled cannot see. The log is opened once first, so that what the
/// write-ahead file held (a kill -9 leaves appends there) is in runs.
pub fn with_log_tree(dir: &Path, change: impl FnOnce(&sled::Tree)) {
    let options = herald::log::sled_log::SledOptions {
        cache_bytes: 8 << 20,
        flush_every_ms: 500,
    };
    drop(herald::log::SledLog::open(dir, &options).unwrap());
    let db = sled::Config::new().path(dir.join("log")).open().unwrap();
    change(&db.open_tree(herald::log::format::TREE).unwrap());
    db.flush().unwrap();
}
