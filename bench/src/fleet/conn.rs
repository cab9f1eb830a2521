//! One WebSocket client connection to any of the systems, with the
//! system's handshake, subscribe and publish, and a receive call that turns
//! a socket read's worth of frames into deliveries and acks (answering
//! protocol pings itself). The WebSocket framing is [`crate::wire::ws`].

use std::{
    net::{IpAddr, SocketAddr},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    time::timeout,
};

pub use super::proto::Incoming;
use super::{
    proto::{Proto, Reply, ACK_SID},
    system::{Protocol, System},
};
use crate::wire::{herald, nats, socketio, ws};

/// A TCP connection to `addr`, from `source` (a loopback address other than
/// 127.0.0.1 when one source runs out of ephemeral ports), no Nagle.
pub async fn tcp(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        // lets bind(port 0) take ports still in TIME_WAIT from earlier runs
        socket.set_reuseaddr(true)?;
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("binding {ip}"))?;
    }
    let stream = socket
        .connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A handshaken WebSocket connection.
pub struct Conn {
    stream: TcpStream,
    reader: ws::Reader,
    proto: Proto,
}

/// A reply prefix unique to this process and connection, for JetStream
/// PubAcks.
fn fresh_inbox() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "_INBOX.hb{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Conn {
    /// Gives every publish on this connection a unique idempotency key
    /// (Herald) or message id (JetStream), as the official clients do.
    pub fn with_keys(mut self) -> Self {
        let prefix = fresh_inbox().replace("_INBOX.", "k");
        self.proto.set_keys(prefix);
        self
    }

    /// Connects and completes the system's handshake (NATS `CONNECT` +
    /// `PING`/`PONG`, socket.io `40`), within `limit`.
    pub async fn open(
        system: System,
        addr: SocketAddr,
        source: Option<IpAddr>,
        limit: Duration,
    ) -> Result<Self> {
        timeout(limit, Self::open_inner(system, addr, source))
            .await
            .with_context(|| format!("{} handshake timed out", system.name()))?
    }

    async fn open_inner(system: System, addr: SocketAddr, source: Option<IpAddr>) -> Result<Self> {
        let path = match system.protocol() {
            Protocol::Herald => "/v1/ws",
            Protocol::Nats => "/",
            Protocol::Socketio => socketio::PATH,
        };
        let inbox = system.jetstream_acks().then(fresh_inbox);
        let mut conn = Conn {
            stream: tcp(addr, source).await?,
            reader: ws::Reader::default(),
            proto: Proto::new(system, inbox.clone()),
        };
        conn.upgrade(&addr.to_string(), path)
            .await
            .with_context(|| format!("WebSocket handshake with ws://{addr}{path}"))?;
        match system.protocol() {
            Protocol::Herald => {}
            Protocol::Nats => {
                // JetStream: the PubAcks' inbox is subscribed before the
                // handshake's PONG, so it is in place before any publish
                let acks = inbox.map_or(String::new(), |i| format!("SUB {i}.* {ACK_SID}\r\n"));
                let ops = format!("{}{acks}{}", nats::CONNECT, nats::PING);
                conn.send(ws::OP_BINARY, ops.as_bytes()).await?;
                conn.until(|op| matches!(op, Reply::NatsPong)).await?;
            }
            Protocol::Socketio => {
                conn.until(|op| matches!(op, Reply::SioOpen)).await?;
                conn.send(ws::OP_TEXT, socketio::CONNECT.as_bytes()).await?;
                conn.until(|op| matches!(op, Reply::SioConnected)).await?;
            }
        }
        Ok(conn)
    }

    /// Sends the upgrade request and reads the response head; any bytes
    /// after it stay in the reader as frames.
    async fn upgrade(&mut self, host: &str, path: &str) -> Result<()> {
        self.stream
            .write_all(ws::handshake_request(host, path).as_bytes())
            .await?;
        loop {
            if let Some(head) =
                ws::handshake_response(self.reader.pending()).map_err(anyhow::Error::msg)?
            {
                self.reader.consume(head);
                return Ok(());
            }
            if self.stream.read_buf(self.reader.buf_for_read()).await? == 0 {
                bail!("connection closed during the upgrade");
            }
        }
    }

    /// Subscribes to `topic` and waits for the confirmation.
    pub async fn subscribe(&mut self, topic: &str) -> Result<()> {
        match self.proto.system.protocol() {
            Protocol::Herald => {
                self.send(ws::OP_TEXT, herald::subscribe(topic).as_bytes())
                    .await?;
                self.until(|op| matches!(op, Reply::HeraldSubscribed)).await
            }
            Protocol::Nats => {
                let ops = format!("{}{}", nats::sub(topic, 1), nats::PING);
                self.send(ws::OP_BINARY, ops.as_bytes()).await?;
                self.until(|op| matches!(op, Reply::NatsPong)).await
            }
            Protocol::Socketio => {
                let id = self.proto.ack_id();
                let quoted = serde_json::to_string(topic)?;
                let frame = socketio::event(Some(id), &["\"subscribe\"", &quoted]);
                self.send(ws::OP_TEXT, frame.as_bytes()).await?;
                self.until(|op| matches!(op, Reply::SioAck)).await
            }
        }
    }

    /// Queues one publish of `data` (JSON text) to `topic` without flushing;
    /// its [`Incoming::Ack`] comes from [`Self::recv`] and carries the
    /// returned id (where the protocol's acks carry ids).
    pub fn feed_publish(&mut self, topic: &str, data: &str) -> u64 {
        self.proto.feed_publish(topic, data)
    }

    /// Sends one frame now.
    async fn send(&mut self, opcode: u8, payload: &[u8]) -> Result<()> {
        self.proto.queue(opcode, payload);
        self.flush().await
    }

    /// Writes queued frames. Cancel safe: what was written stays written,
    /// the rest goes with the next flush.
    pub async fn flush(&mut self) -> Result<()> {
        while self.proto.written < self.proto.out.len() {
            let n = self
                .stream
                .write(&self.proto.out[self.proto.written..])
                .await?;
            if n == 0 {
                bail!("connection closed while writing");
            }
            self.proto.written += n;
        }
        self.proto.out.clear();
        self.proto.written = 0;
        Ok(())
    }

    /// Reads until `done` matches a handshake reply.
    async fn until(&mut self, done: impl Fn(&Reply) -> bool) -> Result<()> {
        loop {
            let mut replies = Vec::new();
            if !self.read_frames(&mut Vec::new(), &mut replies).await? {
                bail!("connection closed during the handshake");
            }
            if let Some(e) = replies.iter().find_map(|r| match r {
                Reply::Failed(e) => Some(e.clone()),
                _ => None,
            }) {
                bail!("{} refused: {e}", self.proto.system.name());
            }
            if replies.iter().any(&done) {
                return Ok(());
            }
        }
    }

    /// Reads what the socket has and appends what its frames meant to
    /// `out` (at least one frame's worth). `Ok(false)` when the connection is
    /// closed. Cancel safe: a read either happened and was parsed, or not.
    pub async fn recv(&mut self, out: &mut Vec<Incoming>) -> Result<bool> {
        self.read_frames(out, &mut Vec::new()).await
    }

    async fn read_frames(
        &mut self,
        out: &mut Vec<Incoming>,
        replies: &mut Vec<Reply>,
    ) -> Result<bool> {
        loop {
            let mut any = false;
            let mut open = true;
            while let Some(frame) = self.reader.next_frame().map_err(anyhow::Error::msg)? {
                any = true;
                if !self.proto.handle(frame, out, replies)? {
                    open = false;
                    break;
                }
            }
            // pongs the frames asked for
            self.flush().await?;
            if !open {
                return Ok(false);
            }
            if any {
                return Ok(true);
            }
            if self.stream.read_buf(self.reader.buf_for_read()).await? == 0 {
                return Ok(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::{
        load::latency::stamped_payload,
        system::{herald, nats as nats_server, ServerUnderTest},
    };

    /// Publishes `n` stamped payloads (stamps 1..=n, sizes that need each
    /// frame length form) and checks the subscriber gets each once, in
    /// order, and the publisher gets `n` acks.
    async fn round_trip(system: System, addr: SocketAddr) {
        const N: u64 = 300;
        let limit = Duration::from_secs(10);
        let mut sub = Conn::open(system, addr, None, limit).await.unwrap();
        sub.subscribe("bench.rt").await.unwrap();
        let mut publisher = Conn::open(system, addr, None, limit).await.unwrap();
        for i in 1..=N {
            let size = [64, 1000, 60_000][i as usize % 3];
            publisher.feed_publish("bench.rt", &stamped_payload(i, size));
        }
        let deadline = tokio::time::Instant::now() + limit;
        // both read at once: a subscriber left unread would be dropped as a
        // slow consumer
        let acks = async {
            let (mut acks, mut got) = (0, Vec::new());
            publisher.flush().await.unwrap();
            while acks < N {
                let r = tokio::time::timeout_at(deadline, publisher.recv(&mut got)).await;
                assert!(r.expect("acks in time").unwrap(), "publisher closed");
                acks += got
                    .drain(..)
                    .filter(|i| matches!(i, Incoming::Ack(_)))
                    .count() as u64;
            }
            acks
        };
        let stamps = async {
            let (mut stamps, mut got) = (Vec::new(), Vec::new());
            while (stamps.len() as u64) < N {
                let r = tokio::time::timeout_at(deadline, sub.recv(&mut got)).await;
                assert!(r.expect("deliveries in time").unwrap(), "subscriber closed");
                for inc in got.drain(..) {
                    match inc {
                        Incoming::Delivery(stamp) => stamps.push(stamp.expect("stamped")),
                        other => panic!("{other:?}"),
                    }
                }
            }
            stamps
        };
        let (acks, stamps) = tokio::join!(acks, stamps);
        assert_eq!(acks, N);
        assert_eq!(stamps, (1..=N).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn herald_round_trip_over_the_generators_websocket_client() {
        let bin = std::env::var_os("HERALD_BIN").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/herald"),
            PathBuf::from,
        );
        let bin = herald::locate_binary(Some(&bin)).unwrap();
        let mut server = herald::HeraldServer::start(&herald::HeraldOptions {
            binary: bin,
            durability: "relaxed".into(),
            data_root: None,
            // The client codec is under test, not slow-consumer handling:
            // the publisher sends ~6 MB in one burst, and a debug server can
            // keep the subscriber's task waiting while it parses the
            // publisher's frames, so the queue must hold the whole burst
            // (the default 1 MiB cap closed the subscriber once in CI).
            extra_args: vec!["--queue-bytes".into(), (64usize << 20).to_string()],
            nats: None,
            node_id: None,
        })
        .unwrap();
        server.wait_ready(Duration::from_secs(20)).await.unwrap();
        round_trip(System::Herald, server.addr()).await;
    }

    #[tokio::test]
    async fn nats_round_trip_over_the_generators_websocket_client() {
        let bin = nats_server::locate_binary(None).unwrap();
        let server = nats_server::NatsWsServer::start(&bin).unwrap();
        round_trip(System::Nats, server.ws_addr()).await;
    }
}
