//! Reconnect and resume against real `herald` processes: the node is
//! SIGKILLed mid-stream and restarted on the same port and data dir (or, in
//! a cluster, the client's node dies for good) while publishers keep going;
//! a wildcard subscription must yield exactly the published sequence on
//! every transport, including messages published while it was away (among
//! them a topic it had never seen) and messages published after it came
//! back.

mod common;

use std::{
    collections::BTreeMap,
    sync::{atomic::AtomicBool, Arc, Mutex},
    time::Duration,
};

use common::*;
use herald_client::{Client, ConnectionEvent, Start, Transport};

/// The node dies once the subscriber has this many messages.
const KILL_AT: usize = 100;
/// Publishing goes on until this many more were acked after the subscriber
/// came back.
const AFTER_RETURN: usize = 60;

/// The publisher's client: retries quickly, long enough for a restart or
/// an ownership change.
fn publisher(urls: &[String]) -> Client {
    Client::builder()
        .urls(urls)
        .reconnect_delay(Duration::from_millis(20), Duration::from_millis(500))
        .publish_timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The subscriber's client: its first reconnection waits about `delay`, so
/// messages (including a brand-new topic) are published while it is away.
fn subscriber(urls: &[String], transports: &[Transport], delay: Duration) -> Client {
    Client::builder()
        .urls(urls)
        .transports(transports.iter().copied())
        .reconnect_delay(delay, delay * 2)
        .poll_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Publishers, each on its own topics, all stopped together.
struct Publishers {
    urls: Vec<String>,
    pause: Duration,
    acks: Acks,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Publishers {
    fn start(urls: &[String], topic_sets: &[Vec<String>], pause: Duration) -> Publishers {
        let mut publishers = Publishers {
            urls: urls.to_vec(),
            pause,
            acks: Arc::new(Mutex::new(BTreeMap::new())),
            stop: Arc::new(AtomicBool::new(false)),
            tasks: Vec::new(),
        };
        for set in topic_sets {
            publishers.add(set.clone());
        }
        publishers
    }

    /// Starts one more publisher, round-robin over `topics`.
    fn add(&mut self, topics: Vec<String>) {
        self.tasks.push(tokio::spawn(publish_until(
            publisher(&self.urls),
            Arc::new(Mutex::new(topics)),
            self.pause,
            self.acks.clone(),
            self.stop.clone(),
        )));
    }

    fn acked(&self, topic: &str) -> usize {
        self.acks.lock().unwrap().get(topic).map_or(0, Vec::len)
    }

    async fn stop(self) -> BTreeMap<String, Vec<(u64, serde_json::Value)>> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("publisher");
        }
        let acks = self.acks.lock().unwrap().clone();
        acks
    }
}

/// Waits for the subscription's next `Connected` event and returns how
/// many publishes were acked then.
fn acks_at_reconnect(client: &Client, acks: Acks) -> tokio::task::JoinHandle<usize> {
    let mut events = client.connection_events();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(ConnectionEvent::Connected { .. }) => return ack_count(&acks),
                Ok(_) => {}
                Err(e) => panic!("connection events: {e}"),
            }
        }
    })
}

/// Runs the scenario around `kill` (which must take the subscriber's node
/// away) and checks the exact sequence.
async fn scenario<F: FnOnce()>(
    client: &Client,
    mut publishers: Publishers,
    collector: Collector,
    prefix: &str,
    kill: F,
) -> herald_client::Stats {
    collector.wait_for(KILL_AT, TIMEOUT).await;
    let returned = acks_at_reconnect(client, publishers.acks.clone());
    kill();
    let at_kill = collector.messages();
    // A topic that first appears while the subscriber is away.
    let new_topic = format!("{prefix}.c");
    publishers.add(vec![new_topic.clone()]);
    let at_return = tokio::time::timeout(Duration::from_secs(30), returned)
        .await
        .expect("the subscriber came back")
        .unwrap();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while ack_count(&publishers.acks) < at_return + AFTER_RETURN || publishers.acked(&new_topic) < 5
    {
        assert!(tokio::time::Instant::now() < deadline, "publishing stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let acks = publishers.stop().await;
    let total = acks.values().map(Vec::len).sum();
    collector.wait_for(total, Duration::from_secs(30)).await;
    // Anything extra (a duplicate) would show up now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (sub, events) = collector.stop().await;
    assert_exact(&events, &acks);
    let stats = sub.stats();
    eprintln!(
        "{prefix}: {stats:?}; {total} messages: {at_kill} before the kill, {} while away, {} after; per topic {:?}",
        at_return - at_kill,
        total - at_return,
        per_topic(&events)
            .into_iter()
            .map(|(t, s)| (t, s.len()))
            .collect::<Vec<_>>()
    );
    assert!(at_return > at_kill, "nothing was published while away");
    assert_eq!(stats.seq_jumps, 0, "{stats:?}");
    assert_eq!(stats.connections, 2, "{stats:?}");
    stats
}

async fn kill_and_restart_mid_stream(transport: Transport, prefix: &str) {
    let mut node = Node::start(&[]);
    let urls = vec![node.url()];
    let client = subscriber(&urls, &[transport], Duration::from_millis(1500));
    let sub = client
        .subscribe(&format!("{prefix}.>"), Start::Live)
        .await
        .expect("subscribe");
    assert_eq!(sub.connection(), Some((node.url(), transport)));
    let collector = Collector::start(sub);
    let publishers = Publishers::start(
        &urls,
        &[vec![format!("{prefix}.a"), format!("{prefix}.b.x")]],
        Duration::from_millis(5),
    );
    scenario(&client, publishers, collector, prefix, || {
        node.kill9_and_restart()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_wildcard_resumes_exactly_after_kill9_and_restart() {
    kill_and_restart_mid_stream(Transport::Ws, "krws").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_sse_resumes_exactly_after_kill9_and_restart() {
    kill_and_restart_mid_stream(Transport::Sse, "krsse").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_long_poll_resumes_exactly_after_kill9_and_restart() {
    kill_and_restart_mid_stream(Transport::Poll, "krpoll").await;
}

/// 3 nodes on a real nats-server; the node the subscriber is on is
/// SIGKILLed for good; the client moves to another node and resumes.
async fn cluster_node_loss(transport: Transport, prefix: &str) {
    let nats = NatsServer::start();
    let mut nodes = start_cluster(&nats, 3).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    // Ownership of the victim's topics moves after about 3 s; the
    // subscriber comes back after about 4 s.
    let client = subscriber(&urls, &[transport], Duration::from_secs(4));
    let sub = client
        .subscribe(&format!("{prefix}.>"), Start::Live)
        .await
        .expect("subscribe");
    let (on, used) = sub.connection().expect("connected");
    assert_eq!(used, transport);
    let victim = urls.iter().position(|u| *u == on).expect("a known node");
    let collector = Collector::start(sub);
    // One publisher per topic (topics owned by surviving nodes keep flowing
    // while the victim's move), starting on another node than the
    // subscriber; publishes are forwarded to each topic's owner, which may
    // be the victim.
    let mut publish_urls = urls.clone();
    publish_urls.rotate_left(victim + 1);
    let publishers = Publishers::start(
        &publish_urls,
        &[
            vec![format!("{prefix}.a")],
            vec![format!("{prefix}.b.x")],
            vec![format!("{prefix}.d")],
        ],
        Duration::from_millis(15),
    );
    scenario(&client, publishers, collector, prefix, || {
        nodes[victim].kill9()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_websocket_client_moves_to_another_node_exactly() {
    cluster_node_loss(Transport::Ws, "clws").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_sse_client_moves_to_another_node_exactly() {
    cluster_node_loss(Transport::Sse, "clsse").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_long_poll_client_moves_to_another_node_exactly() {
    cluster_node_loss(Transport::Poll, "clpoll").await;
}
