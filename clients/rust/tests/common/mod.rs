//! Test harness: real `herald` processes (restartable on the same port and
//! data dir), a real `nats-server`, a proxy that blocks transports, and a
//! collector that checks exact sequences.
//!
//! The binary is `$HERALD_BIN`, else the workspace's `target/debug/herald`
//! (`cargo build -p herald`). A missing binary or `nats-server` fails the
//! test loudly.

#![allow(dead_code)]

pub mod gate;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt;
use herald_client::{Client, Event, Subscription};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The `herald` binary under test.
pub fn binary() -> PathBuf {
    if let Ok(bin) = std::env::var("HERALD_BIN") {
        let path = PathBuf::from(bin);
        assert!(
            path.exists(),
            "HERALD_BIN={} does not exist",
            path.display()
        );
        return path;
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let path = target.join("debug/herald");
    assert!(
        path.exists(),
        "the herald binary is required: set HERALD_BIN or run `cargo build -p herald` first \
         (looked for {})",
        path.display()
    );
    path
}

/// A `herald serve` process.
pub struct Node {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub log: Arc<Mutex<Vec<String>>>,
    args: Vec<String>,
}

impl Node {
    /// Starts a node on a free port with a fresh data dir.
    pub fn start(args: &[&str]) -> Node {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (child, addr, log) = spawn(&dir, "127.0.0.1:0", &args)
            .unwrap_or_else(|e| panic!("herald did not start: {e}"));
        Node {
            child: Some(child),
            addr,
            data_dir: dir,
            _tmp: Some(tmp),
            log,
            args,
        }
    }

    /// `http://host:port`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (a drain), then waits up to `limit` for the exit; returns
    /// whether it exited with status 0 in time.
    pub fn sigterm_and_wait(&mut self, limit: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        herald_testkit::signal(child.id(), "TERM");
        herald_testkit::wait_timeout(&mut child, limit).is_some_and(|status| status.success())
    }

    /// SIGKILL, then start again on the same port, data dir and flags.
    pub fn kill9_and_restart(&mut self) {
        self.kill9();
        self.restart();
    }

    /// Starts a killed node again on the same port and data dir.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "still running");
        let listen = self.addr.to_string();
        let mut last = String::new();
        for _ in 0..50 {
            match spawn(&self.data_dir, &listen, &self.args) {
                Ok((child, addr, log)) => {
                    assert_eq!(addr, self.addr, "restarted on another address");
                    self.child = Some(child);
                    self.log = log;
                    return;
                }
                Err(e) => {
                    last = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        panic!("restart on {listen} failed: {last}");
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

type Spawned = (Child, SocketAddr, Arc<Mutex<Vec<String>>>);

/// Starts `herald serve` and reads the bound address from its ready line.
fn spawn(dir: &Path, listen: &str, args: &[String]) -> Result<Spawned, String> {
    let mut cmd = Command::new(binary());
    cmd.arg("serve")
        .arg("--listen")
        .arg(listen)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env(
            "HERALD_LOG",
            std::env::var("HERALD_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .env_remove("RUST_LOG");
    let launched = herald_testkit::launch(cmd, TIMEOUT).map_err(|e| e.to_string())?;
    Ok((launched.child, launched.ready.addr, launched.log))
}

/// A real `nats-server` on a loopback port of its own (the kernel picks it;
/// the server's ports file says which, so two tests never share one).
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let started = start_nats(dir.path(), "-1").unwrap_or_else(|e| panic!("{e}"));
        NatsServer {
            child: Some(started.child),
            port: started.port,
            dir,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL): the nodes lose the cluster.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on its port. Another test may hold the port for a
    /// moment (it was free while stopped): retried for [`TIMEOUT`].
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "nats-server still running");
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            match start_nats(self.dir.path(), &self.port.to_string()) {
                Ok(started) => {
                    self.child = Some(started.child);
                    return;
                }
                Err(e) if e.port_taken() && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("nats-server on {}: {e}", self.port),
            }
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `nats-server` on loopback port `port` (`-1`: one the kernel
/// picks), its log and ports file in `dir`.
fn start_nats(
    dir: &Path,
    port: &str,
) -> Result<herald_testkit::StartedNats, herald_testkit::NatsStartError> {
    let bin = herald_testkit::nats_server_bin().expect(
        "nats-server is required for the cluster test (apt-get install nats-server; \
         scripts/test-all.sh installs it)",
    );
    let mut cmd = Command::new(bin);
    cmd.args(["-a", "127.0.0.1", "-p", port]);
    herald_testkit::start_nats(cmd, &dir.join("nats.log"), TIMEOUT)
}

/// Starts `n` nodes joined through `nats` (n1..nN) and waits until each is
/// ready and sees the others.
pub async fn start_cluster(nats: &NatsServer, n: usize) -> Vec<Node> {
    let nodes: Vec<Node> = (1..=n)
        .map(|i| {
            let name = format!("n{i}");
            Node::start(&["--nats", &nats.url(), "--node-id", &name])
        })
        .collect();
    for node in &nodes {
        wait_ready(node).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nodes
}

/// Polls `/readyz` until 200.
pub async fn wait_ready(node: &Node) {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ok = http
            .get(format!("{}/readyz", node.url()))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false);
        if ok {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} not ready; log:\n{}",
            node.addr,
            node.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of one sample of the node's `/metrics`, e.g.
/// `herald_connections{transport="ws"}`.
pub async fn metric(node: &Node, sample: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", node.url()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in /metrics:\n{text}"))
}

/// Reads a subscription in the background and records every event.
pub struct Collector {
    pub events: Arc<Mutex<Vec<Event>>>,
    stats: Arc<Mutex<herald_client::Stats>>,
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<Subscription>,
}

impl Collector {
    pub fn start(mut sub: Subscription) -> Collector {
        let events = Arc::new(Mutex::new(Vec::new()));
        let stats = Arc::new(Mutex::new(sub.stats()));
        let stop = Arc::new(tokio::sync::Notify::new());
        let (sink, stopped, counters) = (events.clone(), stop.clone(), stats.clone());
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    item = sub.next() => match item {
                        Some(Ok(event)) => {
                            sink.lock().unwrap().push(event);
                            *counters.lock().unwrap() = sub.stats();
                        }
                        Some(Err(e)) => panic!("subscription failed: {e}"),
                        None => panic!("subscription ended"),
                    },
                    _ = stopped.notified() => return sub,
                }
            }
        });
        Collector {
            events,
            stats,
            stop,
            task,
        }
    }

    /// The subscription's counters (while it is being read).
    pub fn stats(&self) -> herald_client::Stats {
        *self.stats.lock().unwrap()
    }

    pub fn messages(&self) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, Event::Message { .. }))
            .count()
    }

    /// Waits until `n` messages arrived (panics with what is there after
    /// `limit`).
    pub async fn wait_for(&self, n: usize, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.messages() < n {
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "only {} of {n} messages after {limit:?}: {}",
                    self.messages(),
                    summary(&self.events.lock().unwrap())
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits up to `limit` until every message in `acks` arrived; `Err`
    /// names the (topic, seq)s still missing.
    pub async fn wait_for_acks(
        &self,
        acks: &BTreeMap<String, Vec<(u64, serde_json::Value)>>,
        limit: Duration,
    ) -> Result<(), String> {
        let total: usize = acks.values().map(Vec::len).sum();
        let deadline = tokio::time::Instant::now() + limit;
        while self.messages() < total {
            if tokio::time::Instant::now() > deadline {
                let got = per_topic(&self.events.lock().unwrap());
                let missing: Vec<(&str, u64)> = acks
                    .iter()
                    .flat_map(|(topic, seqs)| {
                        let got = got.get(topic);
                        seqs.iter()
                            .filter(move |(seq, _)| !got.is_some_and(|g| g.contains(seq)))
                            .map(move |(seq, _)| (topic.as_str(), *seq))
                    })
                    .collect();
                return Err(format!(
                    "{} of {total} messages after {limit:?}; missing {missing:?}; {}",
                    self.messages(),
                    summary(&self.events.lock().unwrap())
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Stops reading and hands the subscription back with every event.
    pub async fn stop(self) -> (Subscription, Vec<Event>) {
        self.stop.notify_one();
        let sub = match self.task.await {
            Ok(sub) => sub,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        let events = std::mem::take(&mut *self.events.lock().unwrap());
        (sub, events)
    }
}

/// Per-topic seqs of the messages in `events`.
pub fn per_topic(events: &[Event]) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in events {
        if let Event::Message { topic, seq, .. } = e {
            out.entry(topic.clone()).or_default().push(*seq);
        }
    }
    out
}

fn summary(events: &[Event]) -> String {
    per_topic(events)
        .into_iter()
        .map(|(t, seqs)| {
            format!(
                "{t}: {} msgs, first {:?}, last {:?}",
                seqs.len(),
                seqs.first(),
                seqs.last()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Asserts `events` are exactly the published messages: per topic every
/// seq `1..=n` once, in order, each with the data published under it, and
/// no gap event.
pub fn assert_exact(events: &[Event], published: &BTreeMap<String, Vec<(u64, serde_json::Value)>>) {
    for e in events {
        if let Event::Gap { .. } = e {
            panic!("unexpected gap event {e:?}");
        }
    }
    let got = per_topic(events);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        published.keys().collect::<Vec<_>>(),
        "topics received"
    );
    for (topic, acks) in published {
        let mut expected: Vec<u64> = acks.iter().map(|(s, _)| *s).collect();
        expected.sort_unstable();
        let n = expected.len() as u64;
        assert_eq!(
            expected,
            (1..=n).collect::<Vec<_>>(),
            "{topic}: acked seqs are not 1..={n}"
        );
        let seqs = &got[topic];
        if seqs != &expected {
            let first_bad = seqs.iter().zip(&expected).position(|(a, b)| a != b);
            panic!(
                "{topic}: received {} messages, expected {n}; first mismatch at index {first_bad:?}; got {:?}",
                seqs.len(),
                seqs
            );
        }
    }
    for e in events {
        if let Event::Message {
            topic, seq, data, ..
        } = e
        {
            let want = published[topic]
                .iter()
                .find(|(s, _)| s == seq)
                .map(|(_, d)| d)
                .unwrap();
            assert_eq!(data, want, "{topic} #{seq}: data");
        }
    }
}

/// Acks per topic: (seq, data published).
pub type Acks = Arc<Mutex<BTreeMap<String, Vec<(u64, serde_json::Value)>>>>;

/// Publishes round-robin to the current `topics` (the test may add topics
/// while it runs) until `stop` is set, one client call each (the client
/// retries across failures), and records the acks.
pub async fn publish_until(
    client: Client,
    topics: Arc<Mutex<Vec<String>>>,
    pause: Duration,
    acks: Acks,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut i = 0usize;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let topic = {
            let topics = topics.lock().unwrap();
            topics[i % topics.len()].clone()
        };
        let data = serde_json::json!({"i": i, "topic": topic});
        let ack = client
            .publish(&topic, &data)
            .await
            .unwrap_or_else(|e| panic!("publish {i} to {topic} failed: {e}"));
        assert_eq!(ack.topic, topic);
        acks.lock()
            .unwrap()
            .entry(topic.clone())
            .or_default()
            .push((ack.seq, data));
        i += 1;
        tokio::time::sleep(pause).await;
    }
}

/// Total acks recorded.
pub fn ack_count(acks: &Acks) -> usize {
    acks.lock().unwrap().values().map(Vec::len).sum()
}

/// Which requests a [`BlockingProxy`] refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// WebSocket upgrades (as a proxy that does not speak WebSocket).
    WebSocket,
    /// WebSocket upgrades and `/v1/sse` (as a proxy that buffers streams).
    WebSocketAndSse,
}

/// A loopback HTTP/1.1 proxy in front of a node that answers 502 to the
/// requests it blocks and forwards the rest byte for byte. It inspects every
/// request on a connection (clients reuse connections for later requests).
pub struct BlockingProxy {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl BlockingProxy {
    pub async fn start(upstream: SocketAddr, block: Block) -> BlockingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(proxy_connection(client, upstream, block));
            }
        });
        BlockingProxy { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for BlockingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy_connection(client: TcpStream, upstream: SocketAddr, block: Block) {
    let (mut client_rd, mut client_wr) = client.into_split();
    let mut buf: Vec<u8> = Vec::new();
    let Some(head) = read_head(&mut client_rd, &mut buf).await else {
        return;
    };
    if blocked(&head, block) {
        let _ = refuse(&mut client_wr).await;
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return; // the node is down: the client sees a reset, like a dead node
    };
    let (mut server_rd, mut server_wr) = server.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_rd, &mut client_wr).await;
        let _ = client_wr.shutdown().await;
        client_wr
    });
    let mut head = head;
    loop {
        if server_wr.write_all(&head).await.is_err() {
            break;
        }
        let websocket = head_text(&head)
            .to_ascii_lowercase()
            .contains("upgrade: websocket");
        // Body: Content-Length bytes (GETs have none).
        let mut body = content_length(&head);
        while body > 0 {
            if buf.is_empty() {
                let mut chunk = vec![0u8; 16 * 1024];
                match client_rd.read(&mut chunk).await {
                    Ok(0) | Err(_) => {
                        body = 0;
                        continue;
                    }
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let take = body.min(buf.len());
            if server_wr.write_all(&buf[..take]).await.is_err() {
                return;
            }
            buf.drain(..take);
            body -= take;
        }
        if websocket {
            // Not blocked: from here on, raw frames.
            let _ = server_wr.write_all(&buf).await;
            let _ = tokio::io::copy(&mut client_rd, &mut server_wr).await;
            break;
        }
        match read_head(&mut client_rd, &mut buf).await {
            None => break,
            Some(next) if blocked(&next, block) => {
                // Requests are not pipelined: the previous answer is
                // complete once the next request comes. Let the node close
                // its side, then answer instead of it and close.
                drop(server_wr);
                if let Ok(Ok(mut client_wr)) =
                    tokio::time::timeout(Duration::from_secs(2), down).await
                {
                    let _ = refuse(&mut client_wr).await;
                }
                return;
            }
            Some(next) => head = next,
        }
    }
    let _ = server_wr.shutdown().await;
    let _ = down.await;
}

async fn refuse(w: &mut tokio::net::tcp::OwnedWriteHalf) -> std::io::Result<()> {
    w.write_all(
        b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 7\r\nConnection: close\r\n\r\nblocked",
    )
    .await?;
    w.shutdown().await
}

/// Reads one request head (through the blank line) out of `buf` + the
/// socket; leaves any bytes after it in `buf`.
async fn read_head(rd: &mut tokio::net::tcp::OwnedReadHalf, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(buf.drain(..end + 4).collect());
        }
        let mut chunk = vec![0u8; 16 * 1024];
        match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn head_text(head: &[u8]) -> String {
    String::from_utf8_lossy(head).into_owned()
}

fn content_length(head: &[u8]) -> usize {
    head_text(head)
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0)
}

fn blocked(head: &[u8], block: Block) -> bool {
    let text = head_text(head).to_ascii_lowercase();
    let path = text.split_whitespace().nth(1).unwrap_or("");
    let websocket = text.contains("upgrade: websocket");
    match block {
        Block::WebSocket => websocket,
        Block::WebSocketAndSse => websocket || path.starts_with("/v1/sse"),
    }
}
