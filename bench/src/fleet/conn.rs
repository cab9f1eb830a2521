//! One WebSocket client connection to any of the three systems, with the
//! system's handshake, subscribe and publish, and a receive call that turns
//! frames into deliveries and acks (answering protocol pings itself).

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::{
    net::{TcpSocket, TcpStream},
    time::timeout,
};
use tokio_tungstenite::{client_async, tungstenite::Message, WebSocketStream};

use crate::wire::{self, herald, nats, socketio};

/// The systems `compare` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// Herald (`/v1/ws`, `/v1/sse`, `/v1/poll`).
    Herald,
    /// nats-server over its WebSocket listener.
    Nats,
    /// The socket.io 4 broadcast server in `bench/peers/socketio`.
    Socketio,
}

impl System {
    /// The `system` field of records.
    pub fn name(self) -> &'static str {
        match self {
            System::Herald => "herald",
            System::Nats => "nats",
            System::Socketio => "socketio",
        }
    }
}

/// What a received frame meant.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A message for a subscription, with the send stamp if it had one.
    Delivery(Option<u64>),
    /// One publish acknowledged.
    Ack,
    /// The server reported an error (for a publish: counts as its answer).
    Error(String),
}

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
    ws: WebSocketStream<TcpStream>,
    system: System,
    nats: nats::Parser,
    next_ack_id: u64,
}

impl Conn {
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
        let path = match system {
            System::Herald => "/v1/ws",
            System::Nats => "/",
            System::Socketio => socketio::PATH,
        };
        let stream = tcp(addr, source).await?;
        let (ws, _) = client_async(format!("ws://{addr}{path}"), stream)
            .await
            .with_context(|| format!("WebSocket handshake with ws://{addr}{path}"))?;
        let mut conn = Conn {
            ws,
            system,
            nats: nats::Parser::default(),
            next_ack_id: 0,
        };
        match system {
            System::Herald => {}
            System::Nats => {
                conn.send_binary(format!("{}{}", nats::CONNECT, nats::PING).into_bytes())
                    .await?;
                conn.until(|op| matches!(op, Reply::NatsPong)).await?;
            }
            System::Socketio => {
                conn.until(|op| matches!(op, Reply::SioOpen)).await?;
                conn.ws.send(Message::text(socketio::CONNECT)).await?;
                conn.until(|op| matches!(op, Reply::SioConnected)).await?;
            }
        }
        Ok(conn)
    }

    /// Subscribes to `topic` and waits for the confirmation.
    pub async fn subscribe(&mut self, topic: &str) -> Result<()> {
        match self.system {
            System::Herald => {
                self.ws
                    .send(Message::text(herald::subscribe(topic)))
                    .await?;
                self.until(|op| matches!(op, Reply::HeraldSubscribed)).await
            }
            System::Nats => {
                let ops = format!("{}{}", nats::sub(topic, 1), nats::PING);
                self.send_binary(ops.into_bytes()).await?;
                self.until(|op| matches!(op, Reply::NatsPong)).await
            }
            System::Socketio => {
                let id = self.next_ack_id;
                self.next_ack_id += 1;
                let quoted = serde_json::to_string(topic)?;
                let frame = socketio::event(Some(id), &["\"subscribe\"", &quoted]);
                self.ws.send(Message::text(frame)).await?;
                self.until(|op| matches!(op, Reply::SioAck)).await
            }
        }
    }

    /// Queues one publish of `data` (JSON text) to `topic` without flushing;
    /// its [`Incoming::Ack`] comes from [`Self::recv`].
    pub async fn feed_publish(&mut self, topic: &str, data: &str) -> Result<()> {
        let id = self.next_ack_id;
        self.next_ack_id += 1;
        let msg = match self.system {
            System::Herald => Message::text(herald::publish(topic, id, data)),
            System::Nats => Message::binary(nats::publish(topic, data.as_bytes(), true)),
            System::Socketio => {
                let body = format!(r#"{{"topic":"{topic}","data":{data}}}"#);
                Message::text(socketio::event(Some(id), &["\"publish\"", &body]))
            }
        };
        self.ws.feed(msg).await?;
        Ok(())
    }

    /// Flushes queued frames.
    pub async fn flush(&mut self) -> Result<()> {
        self.ws.flush().await?;
        Ok(())
    }

    async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.ws.send(Message::binary(bytes)).await?;
        Ok(())
    }

    /// Reads until `done` matches a handshake reply.
    async fn until(&mut self, done: impl Fn(&Reply) -> bool) -> Result<()> {
        loop {
            let mut replies = Vec::new();
            if !self.read_frame(&mut Vec::new(), &mut replies).await? {
                bail!("connection closed during the handshake");
            }
            if let Some(e) = replies.iter().find_map(|r| match r {
                Reply::Failed(e) => Some(e.clone()),
                _ => None,
            }) {
                bail!("{} refused: {e}", self.system.name());
            }
            if replies.iter().any(&done) {
                return Ok(());
            }
        }
    }

    /// Reads one frame and appends what it meant to `out`. `Ok(false)` when
    /// the connection is closed.
    pub async fn recv(&mut self, out: &mut Vec<Incoming>) -> Result<bool> {
        self.read_frame(out, &mut Vec::new()).await
    }

    async fn read_frame(
        &mut self,
        out: &mut Vec<Incoming>,
        replies: &mut Vec<Reply>,
    ) -> Result<bool> {
        let Some(msg) = self.ws.next().await else {
            return Ok(false);
        };
        // Text frames were checked as UTF-8 by tungstenite: kept as `String`,
        // not checked again (the generator's cost per delivery matters).
        let (text, bytes) = match msg? {
            Message::Text(t) => (Some(t), None),
            Message::Binary(b) => (None, Some(b)),
            Message::Close(_) => return Ok(false),
            _ => return Ok(true),
        };
        let bytes: &[u8] = match (&text, &bytes) {
            (Some(t), _) => t.as_bytes(),
            (_, Some(b)) => b,
            _ => &[],
        };
        let text = || -> std::borrow::Cow<'_, str> {
            match &text {
                Some(t) => t.as_str().into(),
                None => String::from_utf8_lossy(bytes),
            }
        };
        match self.system {
            System::Herald => match herald::classify(bytes) {
                herald::Frame::Message => out.push(Incoming::Delivery(wire::find_stamp(bytes))),
                herald::Frame::Ack => out.push(Incoming::Ack),
                herald::Frame::Subscribed => replies.push(Reply::HeraldSubscribed),
                herald::Frame::Other => {
                    let e = text().chars().take(200).collect::<String>();
                    replies.push(Reply::Failed(e.clone()));
                    out.push(Incoming::Error(e));
                }
            },
            System::Nats => {
                self.nats.feed(bytes);
                let mut pong = false;
                while let Some(op) = self.nats.next_op().map_err(anyhow::Error::msg)? {
                    match op {
                        nats::Op::Msg { payload, .. } => {
                            out.push(Incoming::Delivery(wire::find_stamp(&payload)))
                        }
                        nats::Op::Pong => {
                            out.push(Incoming::Ack);
                            replies.push(Reply::NatsPong);
                        }
                        nats::Op::Ping => pong = true,
                        nats::Op::Err(e) => {
                            replies.push(Reply::Failed(e.clone()));
                            out.push(Incoming::Error(e));
                        }
                        nats::Op::Info | nats::Op::Ok => {}
                    }
                }
                if pong {
                    self.send_binary(nats::PONG.as_bytes().to_vec()).await?;
                }
            }
            System::Socketio => {
                let text = text();
                match socketio::parse(&text) {
                    socketio::Packet::Event { json, .. } => {
                        out.push(Incoming::Delivery(wire::find_stamp(json.as_bytes())))
                    }
                    socketio::Packet::Ack { .. } => {
                        out.push(Incoming::Ack);
                        replies.push(Reply::SioAck);
                    }
                    socketio::Packet::Ping => self.ws.send(Message::text(socketio::PONG)).await?,
                    socketio::Packet::Open => replies.push(Reply::SioOpen),
                    socketio::Packet::Connected => replies.push(Reply::SioConnected),
                    socketio::Packet::ConnectError(e) => replies.push(Reply::Failed(e.to_string())),
                    socketio::Packet::Close => return Ok(false),
                    socketio::Packet::Other => {}
                }
            }
        }
        Ok(true)
    }
}

/// Handshake and control replies (not deliveries).
enum Reply {
    HeraldSubscribed,
    NatsPong,
    SioOpen,
    SioConnected,
    SioAck,
    Failed(String),
}
