//! The publisher: one WebSocket connection sending time-stamped publishes,
//! either as fast as the system acknowledges them (a window of publishes
//! awaiting their ack) or at a fixed rate (open loop; a publish that had to
//! wait for a window slot, or for the server to read, keeps its scheduled
//! time as its stamp, so a stalling server is not hidden; one that went out
//! late with nothing of the server's in the way since its time was held up
//! by the generator itself, a busy machine starving its one thread, and is
//! timed from when it went out, so the server is not blamed for the
//! generator's CPU).
//!
//! With a *probe* (a subscriber connection of the bench's own on the same
//! topic) the window counts publishes not yet delivered to the probe instead
//! of not yet acked: fan-out is FIFO per subscriber, so this keeps the
//! servers' outbound queues bounded and measures the delivery rate a system
//! sustains, rather than how fast an unbounded backlog drains (acks come
//! back long before the fan-out is done, on every system).
//!
//! What counts as the ack: Herald's `ack` frame; socket.io's ack callback
//! (`43<id>[seq]`); JetStream's PubAck; for core NATS, which has none, the
//! `PONG` to a `PING` sent right after each `PUB` (see [`crate::wire::nats`]).
//! Each publish's send stamp is kept until its ack, matched by id (core
//! NATS: in order), for the publish→ack latency.

use std::{collections::BTreeMap, time::Duration};

use tokio::time::{sleep_until, Instant};

use super::{
    conn::{Conn, Incoming},
    Topics,
};
use crate::{
    load::{latency::stamped_payload, Timing},
    stats::LatencyHistogram,
    wire::mono_nanos,
};

/// What and how to publish.
#[derive(Clone, Debug)]
pub struct PublishPlan {
    /// Topics, taken round-robin.
    pub topics: Topics,
    /// Size of each message's `data`.
    pub payload_bytes: usize,
    /// Publishes awaiting their ack at most.
    pub window: usize,
    /// Fixed rate (msg/s) or `None` for as fast as acked.
    pub rate: Option<f64>,
    /// At a fixed rate: when the first publish is due, after the start (so
    /// several publishers sharing a total rate take turns).
    pub offset: Duration,
}

/// What the publisher did inside the measured window.
#[derive(Clone, Debug, Default)]
pub struct PublishOutcome {
    /// Publishes sent in the window.
    pub sent: u64,
    /// Acks received in the window.
    pub acked: u64,
    /// Publishes sent more than 1 ms after their scheduled time for want
    /// of a window slot (fixed rate only): timed from the schedule.
    pub late: u64,
    /// Publishes sent more than 1 ms after their scheduled time with a
    /// window slot free, the generator behind (fixed rate only): timed from
    /// when they went out.
    pub late_generator: u64,
    /// Error answers.
    pub errors: u64,
    /// The first error.
    pub first_error: Option<String>,
    /// publish→ack of the acks received in the window (from the scheduled
    /// time at a fixed rate).
    pub ack_hist: LatencyHistogram,
    /// Publishes still without an answer at the end.
    pub unanswered: u64,
}

/// The send stamps of publishes awaiting their ack, by id.
#[derive(Default)]
struct Pending(BTreeMap<u64, u64>);

impl Pending {
    /// The stamp of the publish an ack (or error) answers: by id, or the
    /// oldest for acks without one (core NATS answers in order).
    fn answer(&mut self, id: Option<u64>) -> Option<u64> {
        match id {
            Some(id) => self.0.remove(&id),
            None => self.0.pop_first().map(|(_, stamp)| stamp),
        }
    }
}

/// Publishes per `plan` until `timing.stop_at`, then waits for outstanding
/// acks until `timing.drain_until`.
pub async fn run(
    mut conn: Conn,
    mut probe: Option<Conn>,
    plan: &PublishPlan,
    timing: Timing,
) -> PublishOutcome {
    let mut out = PublishOutcome::default();
    let window = plan.window.max(1);
    let mut inflight = 0usize;
    let mut next = 0u64;
    let mut got = Vec::new();
    let mut probed = Vec::new();
    let paced_by_probe = probe.is_some();
    let interval = plan
        .rate
        .map(|r| Duration::from_secs_f64(1.0 / r.max(1e-3)));
    let due = |i: u64| interval.map(|d| timing.origin + plan.offset + d.mul_f64(i as f64));
    let mut pending = Pending::default();
    // The last moment the server held this publisher up: its window full,
    // or a flush waiting for the server to read. A publish late past its
    // due time was held by the server if this comes after that time.
    let mut held_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        // with a probe, outstanding deliveries are not awaited
        if now >= timing.stop_at && (inflight == 0 || paced_by_probe || now >= timing.drain_until) {
            break;
        }
        if now < timing.stop_at {
            let mut fed = 0;
            while fed < 256 {
                if inflight >= window {
                    held_until = Some(now);
                    break;
                }
                let stamp = match due(next) {
                    None => mono_nanos(),
                    Some(at) if at > now => break,
                    Some(at) => {
                        let behind = now - at;
                        let held = held_until.is_some_and(|t| t >= at);
                        if behind > Duration::from_millis(1) && timing.in_window(now) {
                            match held {
                                true => out.late += 1,
                                false => out.late_generator += 1,
                            }
                        }
                        paced_stamp(mono_nanos(), behind, held)
                    }
                };
                let payload = stamped_payload(stamp, plan.payload_bytes);
                let id = conn.feed_publish(&plan.topics.name(next as usize), &payload);
                pending.0.insert(id, stamp);
                next += 1;
                inflight += 1;
                fed += 1;
                if timing.in_window(now) {
                    out.sent += 1;
                }
            }
            if fed > 0 {
                let flushing = Instant::now();
                if let Err(e) = conn.flush().await {
                    out.first_error.get_or_insert_with(|| format!("{e:#}"));
                    out.unanswered = pending.0.len() as u64;
                    return out;
                }
                if flushing.elapsed() > Duration::from_millis(1) {
                    held_until = Some(Instant::now());
                }
            }
        }
        let wake = if now >= timing.stop_at {
            timing.drain_until
        } else if inflight < window {
            due(next).unwrap_or(timing.stop_at).min(timing.stop_at)
        } else {
            timing.stop_at
        };
        tokio::select! {
            r = conn.recv(&mut got) => match r {
                Ok(true) => {}
                Ok(false) => {
                    out.first_error.get_or_insert_with(|| "publisher connection closed".into());
                    out.unanswered = pending.0.len() as u64;
                    return out;
                }
                Err(e) => {
                    out.errors += 1;
                    out.first_error.get_or_insert_with(|| format!("{e:#}"));
                    out.unanswered = pending.0.len() as u64;
                    return out;
                }
            },
            r = recv_probe(&mut probe, &mut probed) => {
                if let Err(e) = r {
                    out.errors += 1;
                    out.first_error.get_or_insert_with(|| format!("probe: {e:#}"));
                    return out;
                }
            }
            _ = sleep_until(wake) => {}
        }
        for inc in probed.drain(..) {
            if let Incoming::Delivery(_) = inc {
                if inflight >= window {
                    held_until = Some(Instant::now());
                }
                inflight = inflight.saturating_sub(1);
            }
        }
        let in_window = timing.in_window(Instant::now());
        let now_ns = mono_nanos();
        for inc in got.drain(..) {
            match inc {
                Incoming::Ack(id) => {
                    if !paced_by_probe {
                        if inflight >= window {
                            held_until = Some(Instant::now());
                        }
                        inflight = inflight.saturating_sub(1);
                    }
                    let stamp = pending.answer(id);
                    if in_window {
                        out.acked += 1;
                        if let Some(sent) = stamp {
                            out.ack_hist
                                .record(Duration::from_nanos(now_ns.saturating_sub(sent)));
                        }
                    }
                }
                Incoming::Error(id, e) => {
                    if id.is_some() {
                        pending.answer(id);
                    }
                    if inflight >= window {
                        held_until = Some(Instant::now());
                    }
                    inflight = inflight.saturating_sub(1);
                    out.errors += 1;
                    out.first_error.get_or_insert(e);
                }
                Incoming::Delivery(_) => {}
            }
        }
    }
    out.unanswered = if paced_by_probe {
        0
    } else {
        pending.0.len() as u64
    };
    out
}

/// The send stamp of a publish `behind` its schedule: the scheduled time
/// when the server held the publisher up since then (window full, socket
/// not read), else `now` (the generator did).
fn paced_stamp(now_ns: u64, behind: Duration, held: bool) -> u64 {
    match held {
        true => now_ns.saturating_sub(behind.as_nanos() as u64),
        false => now_ns,
    }
}

/// The probe's next frame; never resolves without a probe.
async fn recv_probe(probe: &mut Option<Conn>, out: &mut Vec<Incoming>) -> anyhow::Result<()> {
    match probe {
        Some(p) => {
            if !p.recv(out).await? {
                anyhow::bail!("probe connection closed");
            }
            Ok(())
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::{paced_stamp, Pending};
    use std::time::Duration;

    #[test]
    fn lateness_counts_against_the_server_only_when_the_window_held_the_publish() {
        let behind = Duration::from_millis(30);
        assert_eq!(paced_stamp(100_000_000, behind, true), 70_000_000);
        assert_eq!(paced_stamp(100_000_000, behind, false), 100_000_000);
    }

    #[test]
    fn acks_find_their_publish_by_id_or_in_order() {
        let mut p = Pending::default();
        for (id, stamp) in [(0, 100), (1, 200), (2, 300)] {
            p.0.insert(id, stamp);
        }
        assert_eq!(p.answer(Some(1)), Some(200));
        assert_eq!(p.answer(Some(1)), None);
        // core NATS: the oldest outstanding
        assert_eq!(p.answer(None), Some(100));
        assert_eq!(p.answer(None), Some(300));
        assert_eq!(p.answer(None), None);
    }
}
