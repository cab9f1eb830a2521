//! Publish→deliver latency over WebSocket.
//!
//! One [`stamped publisher`](run_publisher) sends `publish` ops at a fixed
//! rate; every message's `data` carries its send time as nanoseconds since
//! the run's [`Timing::origin`] — a monotonic clock shared with the
//! subscribers, which run in this same process. Each
//! [`subscriber`](run_subscriber) subtracts that from its receive time and
//! checks that seqs arrive exactly once and in order ([`SeqCheck`]).
//!
//! Only messages *sent* inside the measured window count towards latency;
//! the warm-up's and the drain's do not, but every message is checked.

use std::{
    borrow::Cow,
    fmt::Write as _,
    net::SocketAddr,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::{
    sync::{mpsc, watch, Notify},
    time::{sleep_until, timeout, Instant},
};
use tokio_tungstenite::tungstenite::Message;

use super::{
    ws::{self, WsConn},
    Pace, Timing,
};
use crate::stats::LatencyHistogram;

/// Publishes one connection may have unanswered (the server stops reading a
/// connection at 256).
pub const PUBLISH_WINDOW: usize = 256;

/// Filler for the padding string.
const FILL: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// The message's `data`: `{"t":NANOS,"p":"abc…"}`, padded to exactly `bytes`
/// when that is long enough (≥ 8 bytes more than `{"t":NANOS`), else just
/// `{"t":NANOS}`.
pub fn stamped_payload(t_nanos: u64, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes.max(32));
    let _ = write!(s, r#"{{"t":{t_nanos}"#);
    // `,"p":"` + fill + `"}`
    if let Some(fill) = bytes.checked_sub(s.len() + 8) {
        s.push_str(r#","p":""#);
        s.extend(FILL.iter().cycle().take(fill).map(|&b| b as char));
        s.push_str("\"}");
    } else {
        s.push('}');
    }
    s
}

/// The publish op for slot `slot` (its `id`).
fn publish_frame(topic: &str, slot: usize, data: &str) -> String {
    format!(r#"{{"op":"publish","id":"{slot}","topic":"{topic}","data":{data}}}"#)
}

#[derive(Deserialize)]
struct Stamp {
    t: u64,
}

/// The fields of a server frame either side looks at.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    data: Option<Stamp>,
    #[serde(default)]
    from: Option<u64>,
    #[serde(default)]
    to: Option<u64>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
}

/// What one server frame means here.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// A delivery with its seq and send stamp.
    Message {
        seq: u64,
        t: u64,
    },
    /// A publish was acknowledged with this seq.
    Ack {
        slot: usize,
        seq: u64,
    },
    Subscribed,
    /// Seqs `from..=to` will never come.
    Gap {
        from: u64,
        to: u64,
    },
    Error {
        slot: Option<usize>,
        text: String,
    },
    Other,
}

pub fn parse_event(text: &str) -> Event {
    let Ok(f) = serde_json::from_str::<Frame>(text) else {
        return Event::Error {
            slot: None,
            text: format!("unparsable frame: {}", truncate(text)),
        };
    };
    let slot =
        f.id.as_deref()
            .and_then(|id| id.parse::<usize>().ok())
            .filter(|&s| s < PUBLISH_WINDOW);
    match f.kind.as_ref() {
        "message" => match (f.seq, f.data) {
            (Some(seq), Some(Stamp { t })) => Event::Message { seq, t },
            _ => Event::Error {
                slot: None,
                text: format!("message without seq or stamp: {}", truncate(text)),
            },
        },
        "ack" => match (slot, f.seq) {
            (Some(slot), Some(seq)) => Event::Ack { slot, seq },
            _ => Event::Error {
                slot: None,
                text: format!("ack with an unknown id or no seq: {}", truncate(text)),
            },
        },
        "subscribed" => Event::Subscribed,
        "gap" => Event::Gap {
            from: f.from.unwrap_or(0),
            to: f.to.unwrap_or(0),
        },
        "error" => Event::Error {
            slot,
            text: format!(
                "{}: {}",
                f.code.as_deref().unwrap_or("?"),
                f.message.as_deref().unwrap_or("")
            ),
        },
        _ => Event::Other,
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(200) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Seqs one subscriber received, checked for order as they arrive.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeqCheck {
    pub first: Option<u64>,
    /// Highest seq seen.
    pub last: u64,
    pub received: u64,
    /// Seqs skipped over (a jump ahead), counted when the jump happens.
    pub skipped: u64,
    /// Seqs at or below one already seen: duplicates or late arrivals.
    pub backwards: u64,
}

impl SeqCheck {
    pub fn observe(&mut self, seq: u64) {
        self.received += 1;
        if self.first.is_none() {
            self.first = Some(seq);
            self.last = seq;
        } else if seq == self.last + 1 {
            self.last = seq;
        } else if seq > self.last {
            self.skipped += seq - self.last - 1;
            self.last = seq;
        } else {
            self.backwards += 1;
        }
    }

    /// Anomalies against `first..=last`: messages missing or extra, plus
    /// every delivery at or below a seq already seen (a late message counts
    /// once missing and once out of order, as the subscriber saw it).
    pub fn error_count(&self, first: u64, last: u64) -> u64 {
        let expected = if last >= first { last - first + 1 } else { 0 };
        let distinct = self.received - self.backwards;
        expected.abs_diff(distinct) + self.backwards
    }

    /// What is wrong if this subscriber should have received exactly
    /// `first..=last` (the acknowledged seqs of the run), in order.
    pub fn problems(&self, first: u64, last: u64) -> Vec<String> {
        let mut out = Vec::new();
        if last < first {
            if self.received > 0 {
                out.push(format!(
                    "{} messages although none was acknowledged",
                    self.received
                ));
            }
            return out;
        }
        let Some(got_first) = self.first else {
            out.push(format!("received nothing of seqs {first}..={last}"));
            return out;
        };
        if got_first > first {
            out.push(format!(
                "missing the first {} (starts at seq {got_first}, expected {first})",
                got_first - first
            ));
        } else if got_first < first {
            out.push(format!(
                "seq {got_first} from before the run (expected to start at {first})"
            ));
        }
        if self.last < last {
            out.push(format!(
                "missing the last {} (ends at seq {}, expected {last})",
                last - self.last,
                self.last
            ));
        } else if self.last > last {
            out.push(format!(
                "{} seqs after the last acknowledged one ({last}), up to {}",
                self.last - last,
                self.last
            ));
        }
        if self.skipped > 0 {
            out.push(format!("{} seqs skipped (gaps)", self.skipped));
        }
        if self.backwards > 0 {
            out.push(format!(
                "{} duplicates or out-of-order deliveries",
                self.backwards
            ));
        }
        out
    }
}

/// One subscriber's results.
#[derive(Clone, Default)]
pub struct SubscriberReport {
    pub latency: LatencyHistogram,
    /// Deliveries of messages sent in the measured window.
    pub received_in_window: u64,
    pub seqs: SeqCheck,
    pub gap_frames: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub failure: Option<String>,
    /// The slowest delivery in the window and when it arrived (since
    /// `origin`).
    pub slowest: Option<(Duration, Duration)>,
}

impl SubscriberReport {
    /// Adds another subscriber's latency and counts (not its seq check).
    pub fn merge(&mut self, o: &SubscriberReport) {
        self.latency.merge(&o.latency);
        self.received_in_window += o.received_in_window;
        self.gap_frames += o.gap_frames;
        self.errors += o.errors;
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

/// Connects and subscribes to `topic` (live: from its current end), and
/// waits for the `subscribed` reply.
pub async fn subscribe(addr: SocketAddr, topic: &str) -> Result<WsConn> {
    let mut ws = ws::connect(addr).await?;
    ws.send(Message::Text(format!(
        r#"{{"op":"subscribe","id":"sub","topic":"{topic}"}}"#
    )))
    .await?;
    let answer = timeout(Duration::from_secs(10), async {
        while let Some(frame) = ws.next().await {
            if let Message::Text(text) = frame? {
                match parse_event(&text) {
                    Event::Subscribed => return Ok(()),
                    Event::Error { text, .. } => bail!("subscribe refused: {text}"),
                    _ => {}
                }
            }
        }
        bail!("connection closed before the subscribe was answered")
    })
    .await;
    match answer {
        Ok(r) => r.with_context(|| format!("subscribing to {topic} at {addr}"))?,
        Err(_) => bail!("no answer to subscribe from {addr} within 10 s"),
    }
    Ok(ws)
}

/// Receives until it has seq `done_at` (sent on `done` once the publisher
/// knows its last acknowledged seq) or `timing.drain_until`.
pub async fn run_subscriber(
    mut ws: WsConn,
    timing: Timing,
    mut done: watch::Receiver<Option<u64>>,
    delivered: &AtomicU64,
) -> SubscriberReport {
    let mut rep = SubscriberReport::default();
    let (from, until) = (
        timing.nanos(timing.measure_from),
        timing.nanos(timing.stop_at),
    );
    let mut watching = true;
    loop {
        if let Some(target) = *done.borrow() {
            if rep.seqs.last >= target {
                break;
            }
        }
        let frame = tokio::select! {
            frame = ws.next() => frame,
            changed = done.changed(), if watching => {
                watching = changed.is_ok();
                continue;
            }
            _ = sleep_until(timing.drain_until) => break,
        };
        let now = Instant::now();
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(close))) => {
                rep.failure = Some(format!("server closed the connection: {close:?}"));
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                rep.failure = Some(format!("connection error: {e}"));
                break;
            }
            None => {
                rep.failure = Some("connection closed by the server".into());
                break;
            }
        };
        match parse_event(&text) {
            Event::Message { seq, t } => {
                rep.seqs.observe(seq);
                delivered.fetch_add(1, Ordering::Relaxed);
                if t >= from && t < until {
                    let latency = Duration::from_nanos(timing.nanos(now).saturating_sub(t));
                    rep.latency.record(latency);
                    rep.received_in_window += 1;
                    if rep.slowest.is_none_or(|(l, _)| latency > l) {
                        rep.slowest = Some((latency, now - timing.origin));
                    }
                }
            }
            Event::Gap { from, to } => {
                rep.gap_frames += 1;
                rep.errors += 1;
                rep.first_error
                    .get_or_insert(format!("gap frame: seqs {from}..={to}"));
            }
            Event::Error { text, .. } => {
                rep.errors += 1;
                rep.first_error.get_or_insert(text);
            }
            _ => {}
        }
    }
    let _ = timeout(Duration::from_secs(1), ws.close(None)).await;
    rep
}

/// The publisher's results.
#[derive(Clone, Default)]
pub struct PublisherReport {
    /// publish → ack, for publishes sent in the window.
    pub ack_latency: LatencyHistogram,
    pub sent_total: u64,
    pub sent_in_window: u64,
    pub acked_total: u64,
    pub acked_in_window: u64,
    /// Lowest and highest acknowledged seq.
    pub first_seq: Option<u64>,
    pub last_seq: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub unanswered: u64,
    pub failure: Option<String>,
    /// Publishes that waited for a free window slot (timed from their
    /// scheduled send time).
    pub window_waits: u64,
}

/// Publishes to `topic` at `rate` msg/s until `timing.stop_at`, waits for the
/// outstanding acks (until `timing.drain_until`), then sends the highest
/// acknowledged seq on `done`.
///
/// A publish is stamped with the time it is written to the socket. If it
/// had to wait for a window slot (256 unanswered), it is stamped with its
/// scheduled time instead, so a stalling server is not hidden.
pub async fn run_publisher(
    ws: WsConn,
    topic: &str,
    rate: f64,
    payload_bytes: usize,
    timing: Timing,
    done: watch::Sender<Option<u64>>,
) -> PublisherReport {
    let (mut sink, mut stream) = ws.split();
    let sent_at: Vec<AtomicU64> = (0..PUBLISH_WINDOW).map(|_| AtomicU64::new(0)).collect();
    let (free_tx, mut free_rx) = mpsc::unbounded_channel::<usize>();
    for slot in 0..PUBLISH_WINDOW {
        let _ = free_tx.send(slot);
    }
    let sent_total = AtomicU64::new(0);
    let writer_done = AtomicBool::new(false);
    let writer_exited = Notify::new();
    let mut pace = Pace {
        interval: Duration::from_secs_f64(1.0 / rate.max(0.001)),
        next: timing.origin,
    };

    let writer = async {
        let mut sent_in_window = 0u64;
        let mut waits = 0u64;
        let result: Result<()> = async {
            loop {
                let due = pace.advance();
                if due >= timing.stop_at {
                    break;
                }
                sleep_until(due).await;
                let (slot, waited) = match free_rx.try_recv() {
                    Ok(slot) => (slot, false),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        waits += 1;
                        tokio::select! {
                            slot = free_rx.recv() => match slot {
                                Some(slot) => (slot, true),
                                None => break,
                            },
                            _ = sleep_until(timing.stop_at) => break,
                        }
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                };
                let now = Instant::now();
                if now >= timing.stop_at {
                    break;
                }
                let stamp = timing.nanos(if waited { due } else { now });
                sent_at[slot].store(stamp, Ordering::Relaxed);
                let frame = publish_frame(topic, slot, &stamped_payload(stamp, payload_bytes));
                // one frame per write: this is a latency test
                sink.send(Message::Text(frame)).await?;
                sent_total.fetch_add(1, Ordering::Release);
                if timing.in_window(now) {
                    sent_in_window += 1;
                }
            }
            Ok(())
        }
        .await;
        writer_done.store(true, Ordering::Release);
        writer_exited.notify_one();
        (sent_in_window, waits, result)
    };

    let reader = async {
        let mut rep = PublisherReport::default();
        let mut answered = 0u64;
        let (from, until) = (
            timing.nanos(timing.measure_from),
            timing.nanos(timing.stop_at),
        );
        loop {
            if writer_done.load(Ordering::Acquire) && answered >= sent_total.load(Ordering::Acquire)
            {
                break;
            }
            let frame = tokio::select! {
                frame = stream.next() => frame,
                _ = writer_exited.notified() => continue,
                _ = sleep_until(timing.drain_until) => break,
            };
            let text = match frame {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(close))) => {
                    rep.failure = Some(format!("server closed the connection: {close:?}"));
                    break;
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    rep.failure = Some(format!("connection error: {e}"));
                    break;
                }
                None => {
                    rep.failure = Some("connection closed by the server".into());
                    break;
                }
            };
            match parse_event(&text) {
                Event::Ack { slot, seq } => {
                    let now = timing.nanos(Instant::now());
                    let sent = sent_at[slot].load(Ordering::Relaxed);
                    if sent >= from && sent < until {
                        rep.ack_latency
                            .record(Duration::from_nanos(now.saturating_sub(sent)));
                        rep.acked_in_window += 1;
                    }
                    rep.acked_total += 1;
                    rep.first_seq = Some(rep.first_seq.map_or(seq, |f| f.min(seq)));
                    rep.last_seq = rep.last_seq.max(seq);
                    answered += 1;
                    let _ = free_tx.send(slot);
                }
                Event::Error { slot, text } => {
                    rep.errors += 1;
                    rep.first_error.get_or_insert(text);
                    if let Some(slot) = slot {
                        answered += 1;
                        let _ = free_tx.send(slot);
                    }
                }
                _ => {}
            }
        }
        rep.unanswered = sent_total.load(Ordering::Acquire).saturating_sub(answered);
        rep
    };

    let ((sent_in_window, waits, write_result), mut rep) = tokio::join!(writer, reader);
    rep.sent_total = sent_total.load(Ordering::Acquire);
    rep.sent_in_window = sent_in_window;
    rep.window_waits = waits;
    if let Err(e) = write_result {
        rep.failure.get_or_insert(format!("send failed: {e:#}"));
    }
    let _ = done.send(Some(rep.last_seq));
    let _ = timeout(Duration::from_secs(1), sink.close()).await;
    rep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_exact_json_with_the_stamp() {
        for (t, n) in [(0u64, 40usize), (123_456_789_012, 256), (7, 17), (7, 4096)] {
            let p = stamped_payload(t, n);
            assert_eq!(p.len(), n, "{p}");
            let v: serde_json::Value = serde_json::from_str(&p).unwrap();
            assert_eq!(v["t"], t);
        }
        // too small to pad: just the stamp
        assert_eq!(stamped_payload(42, 3), r#"{"t":42}"#);
        let f = publish_frame("bench.lat", 9, &stamped_payload(5, 64));
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["op"], "publish");
        assert_eq!(v["id"], "9");
        assert_eq!(v["data"]["t"], 5);
    }

    #[test]
    fn frames() {
        assert_eq!(
            parse_event(
                r#"{"type":"message","topic":"bench.lat","seq":3,"ts":1,"data":{"t":99,"p":"x\"y"}}"#
            ),
            Event::Message { seq: 3, t: 99 }
        );
        assert_eq!(
            parse_event(r#"{"type":"ack","id":"255","topic":"bench.lat","seq":8}"#),
            Event::Ack { slot: 255, seq: 8 }
        );
        assert!(matches!(
            parse_event(r#"{"type":"ack","id":"256","seq":8}"#),
            Event::Error { slot: None, .. }
        ));
        assert_eq!(
            parse_event(r#"{"type":"subscribed","id":"sub","topic":"bench.lat","cursor":"1~2"}"#),
            Event::Subscribed
        );
        assert_eq!(
            parse_event(r#"{"type":"gap","topic":"bench.lat","from":4,"to":6}"#),
            Event::Gap { from: 4, to: 6 }
        );
        assert_eq!(
            parse_event(r#"{"type":"error","id":"3","code":"unavailable","message":"no"}"#),
            Event::Error {
                slot: Some(3),
                text: "unavailable: no".into()
            }
        );
        assert!(matches!(
            parse_event(r#"{"type":"message","seq":1,"data":"plain"}"#),
            Event::Error { .. }
        ));
        assert_eq!(parse_event(r#"{"type":"pong","floor":1}"#), Event::Other);
    }

    #[test]
    fn seq_check_accepts_exactly_the_range() {
        let mut c = SeqCheck::default();
        for s in 5..=9 {
            c.observe(s);
        }
        assert!(c.problems(5, 9).is_empty(), "{:?}", c.problems(5, 9));
        assert_eq!(c.problems(4, 10).len(), 2);
        assert_eq!(c.error_count(5, 9), 0);
        assert_eq!(c.error_count(4, 10), 2);
        assert!(c.problems(5, 8)[0].contains("after the last acknowledged"));
        assert!(SeqCheck::default().problems(1, 3)[0].contains("nothing"));
        assert!(SeqCheck::default().problems(1, 0).is_empty());
    }

    #[test]
    fn seq_check_sees_gaps_and_duplicates() {
        let mut c = SeqCheck::default();
        for s in [1, 2, 4, 4, 3, 5] {
            c.observe(s);
        }
        assert_eq!(c.skipped, 1);
        assert_eq!(c.backwards, 2);
        assert_eq!(c.received, 6);
        // 3 was late (counted as skipped, then as out of order), 4 doubled
        assert_eq!(c.error_count(1, 5), 3);
        let p = c.problems(1, 5);
        assert_eq!(p.len(), 2, "{p:?}");
    }
}
