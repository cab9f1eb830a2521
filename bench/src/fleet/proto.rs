//! The protocol state of one [`super::conn::Conn`]: encoding client frames
//! (masked) and turning received frames into deliveries, acks and handshake
//! replies, per [`System::protocol`]. Split from the socket so a frame
//! borrowed from the read buffer can be handled while this changes.

use anyhow::{Context, Result};

use super::system::{Protocol, System};
use crate::wire::{
    self, herald, nats, socketio,
    ws::{self, Frame},
};

/// The NATS subscription id of a JetStream publisher's PubAck inbox
/// (subscribers use 1).
pub const ACK_SID: &str = "2";

/// What a received frame meant.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A message for a subscription, with the send stamp if it had one.
    Delivery(Option<u64>),
    /// One publish acknowledged: the id [`Proto::feed_publish`] gave it, or
    /// `None` where the protocol's acks carry none (core NATS `PONG`s, which
    /// answer publishes in the order they were sent).
    Ack(Option<u64>),
    /// The server reported an error (for a publish: counts as its answer),
    /// with the publish's id when the error names it.
    Error(Option<u64>, String),
}

/// Handshake and control replies (not deliveries).
pub enum Reply {
    /// Herald's `subscribed`.
    HeraldSubscribed,
    /// NATS `PONG` (the handshake's and a subscribe's confirmation).
    NatsPong,
    /// Engine.IO open.
    SioOpen,
    /// Socket.IO connected.
    SioConnected,
    /// A socket.io ack (of a subscribe, during setup).
    SioAck,
    /// The server refused something.
    Failed(String),
}

/// A connection's protocol state.
pub struct Proto {
    /// The system on the other end.
    pub system: System,
    nats: nats::Parser,
    next_ack_id: u64,
    /// JetStream: the reply-subject prefix of this connection's PubAcks.
    inbox: Option<String>,
    /// Encoded client frames; `out[written..]` is not on the socket yet.
    pub out: Vec<u8>,
    /// Bytes of `out` already written.
    pub written: usize,
    /// Masking key state (any key is valid; a client must use one).
    mask: u32,
    /// With keys: the prefix of each publish's unique idempotency key
    /// (Herald) or message id (JetStream).
    keys: Option<String>,
}

impl Proto {
    /// Fresh state for a connection to `system`; `inbox` is the PubAck
    /// reply prefix for JetStream publishers.
    pub fn new(system: System, inbox: Option<String>) -> Self {
        Proto {
            system,
            nats: nats::Parser::default(),
            next_ack_id: 0,
            inbox,
            out: Vec::new(),
            written: 0,
            mask: 0x9E37_79B9,
            keys: None,
        }
    }

    /// Gives every later publish a unique key starting with `prefix`.
    pub fn set_keys(&mut self, prefix: String) {
        self.keys = Some(prefix);
    }

    /// The next publish (or socket.io request) id.
    pub fn ack_id(&mut self) -> u64 {
        self.next_ack_id += 1;
        self.next_ack_id - 1
    }

    /// Encodes one client frame into the output.
    pub fn queue(&mut self, opcode: u8, payload: &[u8]) {
        // xorshift: masks differ from frame to frame at no cost
        self.mask ^= self.mask << 13;
        self.mask ^= self.mask >> 17;
        self.mask ^= self.mask << 5;
        ws::encode(&mut self.out, opcode, payload, self.mask.to_le_bytes());
    }

    /// Queues one publish of `data` (JSON text) to `topic`; returns the id
    /// its [`Incoming::Ack`] will carry.
    pub fn feed_publish(&mut self, topic: &str, data: &str) -> u64 {
        let id = self.ack_id();
        let key = self.keys.as_ref().map(|prefix| format!("{prefix}-{id}"));
        match (self.system.protocol(), &self.inbox) {
            (Protocol::Herald, _) => {
                let frame = match &key {
                    Some(key) => herald::publish_keyed(topic, id, data, key),
                    None => herald::publish(topic, id, data),
                };
                self.queue(ws::OP_TEXT, frame.as_bytes())
            }
            (Protocol::Nats, Some(inbox)) => {
                let reply = format!("{inbox}.{id}");
                let frame = match &key {
                    Some(key) => nats::publish_with_msg_id(topic, &reply, key, data.as_bytes()),
                    None => nats::publish_with_reply(topic, &reply, data.as_bytes()),
                };
                self.queue(ws::OP_BINARY, &frame)
            }
            (Protocol::Nats, None) => {
                self.queue(ws::OP_BINARY, &nats::publish(topic, data.as_bytes(), true))
            }
            (Protocol::Socketio, _) => {
                let body = format!(r#"{{"topic":"{topic}","data":{data}}}"#);
                let frame = socketio::event(Some(id), &["\"publish\"", &body]);
                self.queue(ws::OP_TEXT, frame.as_bytes());
            }
        }
        id
    }

    /// Handles one frame; `Ok(false)` when it closed the connection.
    pub fn handle(
        &mut self,
        frame: Frame<'_>,
        out: &mut Vec<Incoming>,
        replies: &mut Vec<Reply>,
    ) -> Result<bool> {
        let bytes = frame.payload;
        match frame.opcode {
            ws::OP_TEXT | ws::OP_BINARY => {}
            ws::OP_PING => {
                self.queue(ws::OP_PONG, bytes);
                return Ok(true);
            }
            ws::OP_CLOSE => return Ok(false),
            _ => return Ok(true),
        }
        match self.system.protocol() {
            Protocol::Herald => match herald::classify(bytes) {
                herald::Frame::Message => out.push(Incoming::Delivery(wire::find_stamp(bytes))),
                herald::Frame::Ack => out.push(Incoming::Ack(herald::frame_id(bytes))),
                herald::Frame::Subscribed => replies.push(Reply::HeraldSubscribed),
                herald::Frame::Other => {
                    let e = String::from_utf8_lossy(bytes)
                        .chars()
                        .take(200)
                        .collect::<String>();
                    replies.push(Reply::Failed(e.clone()));
                    out.push(Incoming::Error(herald::frame_id(bytes), e));
                }
            },
            Protocol::Nats => self.handle_nats(bytes, out, replies)?,
            Protocol::Socketio => {
                let text = std::str::from_utf8(bytes).context("socket.io frame not UTF-8")?;
                match socketio::parse(text) {
                    socketio::Packet::Event { json, .. } => {
                        out.push(Incoming::Delivery(wire::find_stamp(json.as_bytes())))
                    }
                    socketio::Packet::Ack { id, .. } => {
                        out.push(Incoming::Ack(Some(id)));
                        replies.push(Reply::SioAck);
                    }
                    socketio::Packet::Ping => self.queue(ws::OP_TEXT, socketio::PONG.as_bytes()),
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

    fn handle_nats(
        &mut self,
        bytes: &[u8],
        out: &mut Vec<Incoming>,
        replies: &mut Vec<Reply>,
    ) -> Result<()> {
        let jetstream = self.inbox.is_some();
        self.nats.feed(bytes);
        let mut pong = false;
        while let Some(op) = self.nats.next_op().map_err(anyhow::Error::msg)? {
            match op {
                nats::Op::Msg {
                    subject,
                    sid,
                    payload,
                } if sid == ACK_SID => {
                    let id = subject.rsplit('.').next().and_then(|t| t.parse().ok());
                    out.push(match nats::js_answer(payload) {
                        Ok(_) => Incoming::Ack(id),
                        Err(e) => Incoming::Error(id, e),
                    });
                }
                nats::Op::Msg { payload, .. } => {
                    out.push(Incoming::Delivery(wire::find_stamp(payload)))
                }
                nats::Op::Pong => {
                    // with JetStream the PubAck is the ack; PONGs only
                    // answer the handshake's and subscribes' PINGs
                    if !jetstream {
                        out.push(Incoming::Ack(None));
                    }
                    replies.push(Reply::NatsPong);
                }
                nats::Op::Ping => pong = true,
                nats::Op::Err(e) => {
                    replies.push(Reply::Failed(e.to_string()));
                    out.push(Incoming::Error(None, e.to_string()));
                }
                nats::Op::Info | nats::Op::Ok => {}
            }
        }
        if pong {
            self.queue(ws::OP_BINARY, nats::PONG.as_bytes());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, payload: &[u8]) -> Frame<'_> {
        Frame { opcode, payload }
    }

    #[test]
    fn jetstream_pubacks_are_acks_with_their_ids_and_pongs_are_not() {
        let mut p = Proto::new(System::Jetstream, Some("_INBOX.hb1".into()));
        assert_eq!(p.feed_publish("bench.t", "1"), 0);
        assert_eq!(p.feed_publish("bench.t", "1"), 1);
        let (mut out, mut replies) = (Vec::new(), Vec::new());
        let ops = b"PONG\r\nMSG _INBOX.hb1.1 2 26\r\n{\"stream\":\"BENCH\",\"seq\":9}\r\n\
                    MSG _INBOX.hb1.0 2 28\r\n{\"error\":{\"code\":503,\"x\":1}}\r\n\
                    MSG bench.t 1 7\r\n{\"t\":5}\r\n";
        assert!(p
            .handle(frame(ws::OP_BINARY, ops), &mut out, &mut replies)
            .unwrap());
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(out[0], Incoming::Ack(Some(1)));
        assert!(matches!(&out[1], Incoming::Error(Some(0), e) if e.contains("503")));
        assert_eq!(out[2], Incoming::Delivery(Some(5)));
        assert!(matches!(replies[0], Reply::NatsPong));
    }

    #[test]
    fn core_nats_pongs_are_acks_and_herald_acks_carry_ids() {
        let mut p = Proto::new(System::Nats, None);
        let (mut out, mut replies) = (Vec::new(), Vec::new());
        p.handle(frame(ws::OP_BINARY, b"PONG\r\n"), &mut out, &mut replies)
            .unwrap();
        assert_eq!(out, [Incoming::Ack(None)]);
        let mut h = Proto::new(System::HeraldBaseline, None);
        out.clear();
        let ack = br#"{"type":"ack","id":"12","topic":"t","seq":3}"#;
        h.handle(frame(ws::OP_TEXT, ack), &mut out, &mut replies)
            .unwrap();
        assert_eq!(out, [Incoming::Ack(Some(12))]);
    }
}
