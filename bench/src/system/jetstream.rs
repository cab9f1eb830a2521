//! nats-server with JetStream as the durable-ingest peer: the WebSocket
//! peer of [`super::nats::NatsWsServer`] plus a `jetstream {}` block (file
//! store in a fresh dir, R1), and one stream over every subject the bench
//! publishes to (`bench.>`), created through the JetStream API on the plain
//! TCP listener before any client connects.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use tempfile::TempDir;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::{timeout, Instant},
};

use super::{nats::NatsWsServer, StopOutcome};
use crate::wire::nats;

/// The stream every JetStream measurement publishes into.
pub const STREAM: &str = "BENCH";
/// The subjects it takes: everything the bench names its topics.
pub const SUBJECTS: &str = "bench.>";
/// The stream's size cap; beyond it the oldest messages go (a long run
/// must not fill the disk, and Herald's own retention trims it too).
const MAX_BYTES: u64 = 8 << 30;

/// How JetStream writes to disk, paired with Herald's `--durability`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sync {
    /// `sync_interval: always`: an fsync per write before the PubAck, as
    /// Herald's `always` acks after the fsync.
    Always,
    /// JetStream's default (flush every 2 minutes), beside Herald's
    /// `relaxed` (acked before the fsync).
    Default,
}

impl Sync {
    /// The pairing for Herald's `--durability` value.
    pub fn for_herald(durability: &str) -> Self {
        if durability == "always" {
            Sync::Always
        } else {
            Sync::Default
        }
    }

    /// What records say in `durability`.
    pub fn label(self) -> &'static str {
        match self {
            Sync::Always => "sync_interval=always",
            Sync::Default => "sync_interval=default(2m)",
        }
    }
}

/// The `jetstream {}` config block.
pub fn config_block(store_dir: &Path, sync: Sync) -> String {
    let sync = match sync {
        Sync::Always => "sync_interval: always, ",
        Sync::Default => "",
    };
    format!(
        "jetstream {{ store_dir: \"{}\", {sync}max_file_store: 64GB }}",
        store_dir.display()
    )
}

/// The `$JS.API.STREAM.CREATE` request body.
pub fn stream_config() -> String {
    serde_json::json!({
        "name": STREAM,
        "subjects": [SUBJECTS],
        "storage": "file",
        "num_replicas": 1,
        "retention": "limits",
        "discard": "old",
        "max_bytes": MAX_BYTES,
    })
    .to_string()
}

/// A running JetStream-enabled nats-server with the bench's stream.
pub struct JetStreamServer {
    /// The nats-server (WebSocket listener for clients).
    pub inner: NatsWsServer,
    _store: TempDir,
}

impl JetStreamServer {
    /// Starts it with its store in a fresh dir under `data_root` (default:
    /// the system temp dir) and creates the stream.
    pub async fn start(binary: &Path, data_root: Option<&PathBuf>, sync: Sync) -> Result<Self> {
        let store = match data_root {
            Some(root) => {
                std::fs::create_dir_all(root)
                    .with_context(|| format!("creating {}", root.display()))?;
                tempfile::Builder::new()
                    .prefix("herald-bench-js-")
                    .tempdir_in(root)
            }
            None => tempfile::Builder::new()
                .prefix("herald-bench-js-")
                .tempdir(),
        }
        .context("creating the JetStream store dir")?;
        let block = config_block(store.path(), sync);
        let bin = binary.to_path_buf();
        let inner = tokio::task::spawn_blocking(move || NatsWsServer::start_with(&bin, &block))
            .await
            .context("nats-server start task")??;
        create_stream(inner.client_addr(), Duration::from_secs(10))
            .await
            .with_context(|| {
                format!(
                    "creating the stream; nats-server said:\n{}",
                    inner.log_tail()
                )
            })?;
        Ok(JetStreamServer {
            inner,
            _store: store,
        })
    }

    /// The WebSocket listener clients use.
    pub fn ws_addr(&self) -> SocketAddr {
        self.inner.ws_addr()
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.inner.pid()
    }

    /// Graceful stop (the store dir goes with this value).
    pub fn stop(self, grace: Duration) -> StopOutcome {
        self.inner.stop(grace)
    }
}

/// Creates the bench's stream over a plain NATS connection to `client`,
/// retrying until JetStream answers (it may still be starting) or `limit`.
pub async fn create_stream(client: SocketAddr, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let answer = timeout(Duration::from_secs(3), request_once(client)).await;
        let err = match answer {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => anyhow::anyhow!("no answer from $JS.API within 3 s"),
        };
        if Instant::now() >= deadline {
            return Err(err);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn request_once(client: SocketAddr) -> Result<()> {
    let mut stream = TcpStream::connect(client).await?;
    let body = stream_config();
    let mut ops = format!("{}SUB _INBOX.create 1\r\n", nats::CONNECT).into_bytes();
    ops.extend(nats::publish_with_reply(
        &format!("$JS.API.STREAM.CREATE.{STREAM}"),
        "_INBOX.create",
        body.as_bytes(),
    ));
    stream.write_all(&ops).await?;
    let mut parser = nats::Parser::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("nats-server closed the connection");
        }
        parser.feed(&buf[..n]);
        while let Some(op) = parser.next_op().map_err(anyhow::Error::msg)? {
            match op {
                nats::Op::Msg { payload, .. } => {
                    nats::js_answer(payload).map_err(anyhow::Error::msg)?;
                    return Ok(());
                }
                nats::Op::Err(e) => bail!("nats-server: {e}"),
                nats::Op::Ping => stream.write_all(nats::PONG.as_bytes()).await?,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        fleet::{conn::Conn, conn::Incoming, System},
        system::nats::locate_peer_binary,
    };

    #[test]
    fn config_pairs_with_herald_durability() {
        let dir = Path::new("/data/js");
        assert!(config_block(dir, Sync::for_herald("always")).contains("sync_interval: always"));
        let relaxed = config_block(dir, Sync::for_herald("relaxed"));
        assert!(!relaxed.contains("sync_interval") && relaxed.contains("store_dir: \"/data/js\""));
        let v: serde_json::Value = serde_json::from_str(&stream_config()).unwrap();
        assert_eq!(v["subjects"][0], "bench.>");
        assert_eq!(v["num_replicas"], 1);
    }

    /// Against the real nats-server 2.15 of `bench/.venv` (skipped, with a
    /// message, when `bench/peers/setup.sh` has not been run).
    #[tokio::test]
    async fn pubacks_count_as_acks_and_core_subscribers_get_the_messages() {
        let Ok(bin) = locate_peer_binary(None) else {
            eprintln!("skipped: bench/.venv/bin/nats-server missing (bench/peers/setup.sh)");
            return;
        };
        let server = JetStreamServer::start(&bin, None, Sync::Always)
            .await
            .unwrap();
        let limit = Duration::from_secs(10);
        let mut sub = Conn::open(System::Jetstream, server.ws_addr(), None, limit)
            .await
            .unwrap();
        sub.subscribe("bench.js.t").await.unwrap();
        let mut publisher = Conn::open(System::Jetstream, server.ws_addr(), None, limit)
            .await
            .unwrap();
        let ids: Vec<u64> = (0..20)
            .map(|i| publisher.feed_publish("bench.js.t", &format!("{{\"t\":{}}}", i + 1)))
            .collect();
        publisher.flush().await.unwrap();
        let (mut acked, mut got) = (Vec::new(), Vec::new());
        while acked.len() < ids.len() {
            assert!(timeout(limit, publisher.recv(&mut got))
                .await
                .unwrap()
                .unwrap());
            for inc in got.drain(..) {
                match inc {
                    Incoming::Ack(Some(id)) => acked.push(id),
                    other => panic!("{other:?}"),
                }
            }
        }
        acked.sort_unstable();
        assert_eq!(acked, ids);
        let mut stamps = Vec::new();
        while stamps.len() < ids.len() {
            assert!(timeout(limit, sub.recv(&mut got)).await.unwrap().unwrap());
            for inc in got.drain(..) {
                if let Incoming::Delivery(Some(t)) = inc {
                    stamps.push(t);
                }
            }
        }
        assert_eq!(stamps, (1..=20).collect::<Vec<_>>());
        server.stop(Duration::from_secs(5));
    }
}
