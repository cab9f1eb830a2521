//! The systems the side-by-side scenarios drive, and the wire protocol each
//! one speaks: scenarios match on [`System::protocol`], so a second build of
//! Herald (`herald-baseline`) or JetStream (the NATS protocol with
//! JetStream publish acks) needs no code of its own on the client side.

use serde::{Deserialize, Serialize};

/// A system under test.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    /// Herald (`/v1/ws`, `/v1/sse`, `/v1/poll`).
    Herald,
    /// A previous Herald build (`--baseline-bin`), measured beside this one.
    HeraldBaseline,
    /// nats-server over its WebSocket listener (core NATS, no persistence).
    Nats,
    /// nats-server with JetStream: one file-backed stream over `bench.>`;
    /// a publish counts as acked when its JetStream PubAck arrives.
    Jetstream,
    /// The socket.io 4 broadcast server in `bench/peers/socketio`.
    Socketio,
}

/// The wire protocol a [`System`] speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Herald's JSON ops over WebSocket.
    Herald,
    /// The NATS text protocol in WebSocket binary frames.
    Nats,
    /// Engine.IO v4 / Socket.IO v5.
    Socketio,
}

impl System {
    /// Every system, in the order reports list them.
    pub const ALL: [System; 5] = [
        System::Herald,
        System::HeraldBaseline,
        System::Nats,
        System::Jetstream,
        System::Socketio,
    ];

    /// The `system` field of records.
    pub fn name(self) -> &'static str {
        match self {
            System::Herald => "herald",
            System::HeraldBaseline => "herald-baseline",
            System::Nats => "nats",
            System::Jetstream => "jetstream",
            System::Socketio => "socketio",
        }
    }

    /// What it speaks on the wire.
    pub fn protocol(self) -> Protocol {
        match self {
            System::Herald | System::HeraldBaseline => Protocol::Herald,
            System::Nats | System::Jetstream => Protocol::Nats,
            System::Socketio => Protocol::Socketio,
        }
    }

    /// Whether publishes are acknowledged by JetStream (a PubAck on a reply
    /// inbox) rather than by core NATS's `PING`/`PONG` stand-in.
    pub fn jetstream_acks(self) -> bool {
        self == System::Jetstream
    }

    /// Whether it is a Herald build (SSE, long-poll and REST are Herald's).
    pub fn is_herald(self) -> bool {
        self.protocol() == Protocol::Herald
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_protocols_and_serde_agree() {
        for s in System::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.name()));
            let back: System = serde_json::from_str(&json).unwrap();
            assert_eq!(back, s);
            let parsed = <System as clap::ValueEnum>::from_str(s.name(), false).unwrap();
            assert_eq!(parsed, s);
        }
        assert_eq!(System::HeraldBaseline.protocol(), Protocol::Herald);
        assert_eq!(System::Jetstream.protocol(), Protocol::Nats);
        assert!(System::Jetstream.jetstream_acks() && !System::Nats.jetstream_acks());
        assert!(System::HeraldBaseline.is_herald() && !System::Socketio.is_herald());
    }
}
