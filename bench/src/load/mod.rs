//! Load generation: publishers over WebSocket or REST, one connection each,
//! sharing a [`Timing`] (warm-up, measured window, drain) and reporting a
//! [`PublisherReport`] that the scenario merges.
//!
//! Only acks *received* inside the measured window count towards throughput
//! and latency, so the warm-up (connections, caches, the first fsyncs) and
//! the drain after it (outstanding acks) are excluded on every transport.

pub mod latency;
pub mod rest;
pub mod ws;

use std::{
    fmt,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Result;
use bytes::Bytes;
use tokio::time::Instant;

use crate::stats::LatencyHistogram;

/// How publishers talk to the broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// WebSocket `publish` op, pipelined up to `--window` per connection.
    Ws,
    /// `POST /v1/topics/{topic}/messages`, one request at a time per connection.
    Rest,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Ws => "ws",
            Transport::Rest => "rest",
        })
    }
}

/// The phases of one load run, fixed before any publisher starts.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Reference point for timestamps kept as integers.
    pub origin: Instant,
    /// Measuring starts here (after the warm-up)…
    pub measure_from: Instant,
    /// …and ends here; no publish is sent after it.
    pub stop_at: Instant,
    /// Outstanding acks are awaited until here, then given up on.
    pub drain_until: Instant,
}

impl Timing {
    pub fn starting_now(warmup: Duration, duration: Duration, drain: Duration) -> Self {
        let origin = Instant::now();
        let measure_from = origin + warmup;
        let stop_at = measure_from + duration;
        Timing {
            origin,
            measure_from,
            stop_at,
            drain_until: stop_at + drain,
        }
    }

    pub fn in_window(&self, t: Instant) -> bool {
        t >= self.measure_from && t < self.stop_at
    }

    pub fn measured(&self) -> Duration {
        self.stop_at - self.measure_from
    }

    /// `t` as nanoseconds since `origin`, for lock-free timestamp slots.
    pub fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.origin).as_nanos() as u64
    }
}

/// Live totals every publisher bumps, read by the progress display.
#[derive(Default)]
pub struct LiveCounters {
    pub acked: AtomicU64,
    pub errors: AtomicU64,
}

impl LiveCounters {
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }
}

/// What to publish.
pub struct PublishLoad {
    pub topics: Vec<String>,
    /// The `data` value as JSON text, exactly `payload_bytes` long.
    pub payload: Bytes,
    /// Publishes a WebSocket connection may have awaiting their ack.
    pub window: usize,
    /// Total publishes per second over all publishers (open loop), or
    /// `None` for as fast as the window allows (closed loop).
    pub rate: Option<f64>,
    pub publishers: usize,
}

impl PublishLoad {
    pub fn topic_for(&self, publisher: usize) -> &str {
        &self.topics[publisher % self.topics.len()]
    }

    /// The send schedule of one publisher at a fixed rate: publishers take
    /// turns, evenly staggered.
    pub fn pace_for(&self, publisher: usize, timing: &Timing) -> Option<Pace> {
        let rate = self.rate.filter(|r| *r > 0.0)?;
        let interval = Duration::from_secs_f64(self.publishers.max(1) as f64 / rate);
        let offset = interval.mul_f64(publisher as f64 / self.publishers.max(1) as f64);
        Some(Pace {
            interval,
            next: timing.origin + offset,
        })
    }
}

/// A fixed-rate schedule. When a publisher is behind schedule (its window
/// was full, or a REST reply was slow), latency is timed from the
/// *scheduled* send time, so a stalled server is not hidden by the publisher
/// waiting for it (no coordinated omission); when it is on time, from the
/// timer's wake-up, so timer slack is not blamed on the server.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    pub interval: Duration,
    pub next: Instant,
}

impl Pace {
    /// The next scheduled send time, advancing the schedule.
    pub fn advance(&mut self) -> Instant {
        let due = self.next;
        self.next += self.interval;
        due
    }
}

/// A JSON value whose text is exactly `bytes` long: a string of filler
/// characters (`"abc…"`), or a one-digit number when `bytes` is 1.
pub fn json_payload(bytes: usize) -> String {
    match bytes {
        0 | 1 => "0".to_string(),
        n => {
            let mut s = String::with_capacity(n);
            s.push('"');
            s.extend(
                b"abcdefghijklmnopqrstuvwxyz0123456789"
                    .iter()
                    .cycle()
                    .take(n - 2)
                    .map(|&b| b as char),
            );
            s.push('"');
            s
        }
    }
}

/// One publisher's results.
#[derive(Default)]
pub struct PublisherReport {
    pub latency: LatencyHistogram,
    pub sent_total: u64,
    pub sent_in_window: u64,
    pub acked_total: u64,
    pub acked_in_window: u64,
    pub errors: u64,
    /// Publishes still without an answer when the drain gave up.
    pub unanswered: u64,
    pub first_error: Option<String>,
    /// The connection failed (closed, reset, protocol error).
    pub failure: Option<String>,
    /// The slowest answer in the window and when it arrived (since `origin`),
    /// to line a stall up with what the server was doing then.
    pub slowest: Option<(Duration, Duration)>,
}

impl PublisherReport {
    /// Records one answered publish received at `now`.
    pub fn answered(&mut self, timing: &Timing, now: Instant, latency: Duration) {
        if timing.in_window(now) {
            self.latency.record(latency);
            self.acked_in_window += 1;
            if self.slowest.is_none_or(|(l, _)| latency > l) {
                self.slowest = Some((latency, now - timing.origin));
            }
        }
        self.acked_total += 1;
    }
}

impl PublisherReport {
    pub fn merge(&mut self, o: &PublisherReport) {
        self.latency.merge(&o.latency);
        self.sent_total += o.sent_total;
        self.sent_in_window += o.sent_in_window;
        self.acked_total += o.acked_total;
        self.acked_in_window += o.acked_in_window;
        self.errors += o.errors;
        self.unanswered += o.unanswered;
        if self.first_error.is_none() {
            self.first_error.clone_from(&o.first_error);
        }
        if self.failure.is_none() {
            self.failure.clone_from(&o.failure);
        }
        if let Some((l, at)) = o.slowest {
            if self.slowest.is_none_or(|(mine, _)| l > mine) {
                self.slowest = Some((l, at));
            }
        }
    }
}

/// A connected publisher, ready to run.
pub enum Publisher {
    Ws(Box<ws::WsConn>),
    Rest(crate::http::HttpConn),
}

impl Publisher {
    pub async fn connect(transport: Transport, addr: SocketAddr) -> Result<Self> {
        Ok(match transport {
            Transport::Ws => Publisher::Ws(Box::new(ws::connect(addr).await?)),
            Transport::Rest => Publisher::Rest(crate::http::HttpConn::connect(addr).await?),
        })
    }

    pub async fn run(
        self,
        index: usize,
        load: Arc<PublishLoad>,
        timing: Timing,
        live: Arc<LiveCounters>,
    ) -> PublisherReport {
        match self {
            Publisher::Ws(conn) => ws::run(*conn, index, &load, timing, &live).await,
            Publisher::Rest(conn) => rest::run(conn, index, &load, timing, &live).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_exact_size_and_is_json() {
        for n in [1usize, 2, 3, 64, 256, 1024, 65536] {
            let p = json_payload(n);
            assert_eq!(p.len(), n, "size {n}");
            serde_json::from_str::<serde_json::Value>(&p).unwrap();
        }
    }

    #[test]
    fn window_bounds() {
        let t = Timing::starting_now(
            Duration::from_millis(100),
            Duration::from_millis(200),
            Duration::from_secs(1),
        );
        assert!(!t.in_window(t.origin));
        assert!(t.in_window(t.measure_from));
        assert!(!t.in_window(t.stop_at));
        assert_eq!(t.measured(), Duration::from_millis(200));
        assert_eq!(t.nanos(t.measure_from), 100_000_000);
    }

    #[test]
    fn pace_staggers_publishers_and_sums_to_the_rate() {
        let t = Timing::starting_now(Duration::ZERO, Duration::from_secs(1), Duration::ZERO);
        let mut load = PublishLoad {
            topics: vec!["bench.t".into()],
            payload: Bytes::from_static(b"0"),
            window: 1,
            rate: Some(1000.0),
            publishers: 4,
        };
        let mut p0 = load.pace_for(0, &t).unwrap();
        let p1 = load.pace_for(1, &t).unwrap();
        assert_eq!(p0.interval, Duration::from_millis(4));
        assert_eq!(p1.next - t.origin, Duration::from_millis(1));
        assert_eq!(p0.advance(), t.origin);
        assert_eq!(p0.advance(), t.origin + Duration::from_millis(4));
        load.rate = None;
        assert!(load.pace_for(0, &t).is_none());
    }
}
