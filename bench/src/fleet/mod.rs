//! The subscriber fleet: thousands of subscriber connections spread over
//! worker subprocesses (`herald-bench worker`, ≤ ~5k connections each,
//! because a process may hold at most 20,000 open files here), driven by the
//! bench over a JSON-lines control protocol on the workers' stdin/stdout;
//! plus the publisher, which runs in the bench process itself.
//!
//! Control protocol (one JSON object per line):
//!
//! ```text
//! bench → worker  {"cmd":"connect", ...ConnectSpec}  open and subscribe
//! worker → bench  {"ev":"connected","ok":N,"failed":F,"first_error":…}
//! bench → worker  {"cmd":"start"}                   count deliveries from now
//! bench → worker  {"cmd":"stop"}                    …until now, and report
//! worker → bench  {"ev":"report","delivered":N,"hist":[[µs,count],…],…}
//! bench → worker  {"cmd":"quit"} (or EOF)           close everything, exit
//! ```

pub mod conn;
pub mod http_subs;
pub mod pool;
pub mod proto;
pub mod publisher;
pub mod system;
pub mod worker;

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

pub use system::System;

/// How subscribers connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubTransport {
    /// WebSocket (every system).
    Ws,
    /// Herald's Server-Sent Events.
    Sse,
    /// Herald's long-poll.
    Poll,
}

impl SubTransport {
    /// `ws`, `sse`, `poll`.
    pub fn name(self) -> &'static str {
        match self {
            SubTransport::Ws => "ws",
            SubTransport::Sse => "sse",
            SubTransport::Poll => "poll",
        }
    }
}

/// Which topic each connection takes: all `prefix` when `count` ≤ 1, else
/// `prefix.<(first + i) % count>` for the worker's i-th connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topics {
    /// The topic, or the prefix of numbered topics.
    pub prefix: String,
    /// How many distinct topics.
    pub count: usize,
    /// Index of the worker's first connection's topic.
    pub first: usize,
}

impl Topics {
    /// The one topic `prefix`.
    pub fn single(prefix: &str) -> Self {
        Topics {
            prefix: prefix.to_string(),
            count: 1,
            first: 0,
        }
    }

    /// The topic of the `i`-th connection (or publish).
    pub fn name(&self, i: usize) -> String {
        if self.count <= 1 {
            self.prefix.clone()
        } else {
            format!("{}.{}", self.prefix, (self.first + i) % self.count)
        }
    }
}

/// What one worker opens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnectSpec {
    /// The system.
    pub system: System,
    /// The transport (SSE and long-poll: Herald only).
    pub transport: SubTransport,
    /// The server.
    pub addr: SocketAddr,
    /// Local address to connect from (127.0.0.x), for more ephemeral ports.
    pub source: Option<IpAddr>,
    /// Connections to open.
    pub count: usize,
    /// Their topics.
    pub topics: Topics,
    /// Subscribe (false: connect and handshake only, the idle-memory case).
    pub subscribe: bool,
}

/// bench → worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Command {
    /// Open connections.
    Connect(ConnectSpec),
    /// Reset the counters and start counting.
    Start,
    /// Stop counting and report.
    Stop,
    /// Exit.
    Quit,
}

/// worker → bench.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "lowercase")]
pub enum Event {
    /// The outcome of a `connect`.
    Connected {
        /// Connections open (and subscribed).
        ok: usize,
        /// Connections that failed.
        failed: usize,
        /// The first failure, if any.
        first_error: Option<String>,
    },
    /// The deliveries between `start` and `stop`.
    Report {
        /// Deliveries received.
        delivered: u64,
        /// publish→deliver latency as (µs, count) pairs.
        hist: Vec<(u64, u64)>,
        /// Error frames and failed reads.
        errors: u64,
        /// Connections that closed since they were opened.
        closed: u64,
        /// Reconnects after the server closed a connection (long-poll), in
        /// the window.
        #[serde(default)]
        reconnects: u64,
        /// The first error seen, if any.
        first_error: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_lines_round_trip() {
        let spec = ConnectSpec {
            system: System::Nats,
            transport: SubTransport::Ws,
            addr: "127.0.0.1:9".parse().unwrap(),
            source: Some("127.0.0.3".parse().unwrap()),
            count: 5000,
            topics: Topics {
                prefix: "bench.m".into(),
                count: 10_000,
                first: 5000,
            },
            subscribe: true,
        };
        let line = serde_json::to_string(&Command::Connect(spec.clone())).unwrap();
        assert!(
            line.starts_with(r#"{"cmd":"connect","system":"nats""#),
            "{line}"
        );
        assert_eq!(
            serde_json::from_str::<Command>(&line).unwrap(),
            Command::Connect(spec)
        );
        assert_eq!(
            serde_json::to_string(&Command::Stop).unwrap(),
            r#"{"cmd":"stop"}"#
        );
        let ev = Event::Connected {
            ok: 1,
            failed: 0,
            first_error: None,
        };
        let line = serde_json::to_string(&ev).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), ev);
    }

    #[test]
    fn topic_names() {
        assert_eq!(Topics::single("a").name(7), "a");
        let t = Topics {
            prefix: "m".into(),
            count: 10,
            first: 8,
        };
        assert_eq!(
            (t.name(0), t.name(1), t.name(2)),
            ("m.8".into(), "m.9".into(), "m.0".into())
        );
    }
}
