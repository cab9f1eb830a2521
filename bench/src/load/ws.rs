//! WebSocket publisher: `{"op":"publish",…}` frames pipelined up to a window
//! of unacknowledged publishes, acks matched by `id`.
//!
//! The window is a free-list of slots; a publish's `id` is its slot number
//! and the slot holds its send time. A slot returns to the free-list when its
//! ack (or error) arrives, so acks may come back in any order and interleave
//! with other frames. The writer feeds frames while slots are free and
//! flushes when it runs out, so a burst of freed slots costs one write.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use anyhow::{Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use std::borrow::Cow;
use tokio::{
    net::TcpStream,
    sync::{mpsc, Notify},
    time::{sleep_until, timeout, Instant},
};
use tokio_tungstenite::{client_async, tungstenite::Message, WebSocketStream};

use super::{LiveCounters, PublishLoad, PublisherReport, Timing};

pub type WsConn = WebSocketStream<TcpStream>;

pub async fn connect(addr: SocketAddr) -> Result<WsConn> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (ws, _) = client_async(format!("ws://{addr}/v1/ws"), stream)
        .await
        .with_context(|| format!("WebSocket handshake with ws://{addr}/v1/ws"))?;
    Ok(ws)
}

/// The fields of a server frame the publisher looks at.
#[derive(Deserialize)]
struct Reply<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
}

/// What one server frame means to the publisher.
#[derive(Debug, PartialEq)]
enum Parsed {
    Ack(usize),
    Error { slot: Option<usize>, text: String },
    Other,
}

fn parse_reply(text: &str, window: usize) -> Parsed {
    let Ok(r) = serde_json::from_str::<Reply>(text) else {
        return Parsed::Error {
            slot: None,
            text: format!("unparsable frame: {}", truncate(text)),
        };
    };
    let slot =
        r.id.as_deref()
            .and_then(|id| id.parse::<usize>().ok())
            .filter(|&s| s < window);
    match (r.kind.as_ref(), slot) {
        ("ack", Some(slot)) => Parsed::Ack(slot),
        ("ack", None) => Parsed::Error {
            slot: None,
            text: format!("ack with an unknown id: {}", truncate(text)),
        },
        ("error", slot) => Parsed::Error {
            slot,
            text: format!(
                "{}: {}",
                r.code.as_deref().unwrap_or("?"),
                r.message.as_deref().unwrap_or("")
            ),
        },
        _ => Parsed::Other,
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(200) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The frame with everything but the id prebuilt: `…,"id":"` + slot + `"}`.
fn frame_prefix(topic: &str, payload: &str) -> String {
    format!(r#"{{"op":"publish","topic":"{topic}","data":{payload},"id":""#)
}

pub async fn run(
    ws: WsConn,
    index: usize,
    load: &PublishLoad,
    timing: Timing,
    live: &LiveCounters,
) -> PublisherReport {
    let window = load.window.max(1);
    let prefix = frame_prefix(
        load.topic_for(index),
        std::str::from_utf8(&load.payload).expect("payload is JSON text"),
    );
    let (mut sink, mut stream) = ws.split();
    let sent_at: Vec<AtomicU64> = (0..window).map(|_| AtomicU64::new(0)).collect();
    let (free_tx, mut free_rx) = mpsc::unbounded_channel::<usize>();
    for slot in 0..window {
        let _ = free_tx.send(slot);
    }
    let sent_total = AtomicU64::new(0);
    let writer_done = AtomicBool::new(false);
    let writer_exited = Notify::new();

    let writer = async {
        let mut sent_in_window = 0u64;
        let mut pace = load.pace_for(index, &timing);
        let result: Result<()> = async {
            loop {
                let due = match pace.as_mut() {
                    Some(pace) => {
                        let due = pace.advance();
                        if due >= timing.stop_at {
                            break;
                        }
                        if due > Instant::now() {
                            sink.flush().await?;
                            sleep_until(due).await;
                            // tokio's timer wakes up to ~1 ms late; that is
                            // ours, not the server's, so time from the wake-up
                            Some(Instant::now())
                        } else {
                            // behind schedule (window full or a slow ack):
                            // the wait counts
                            Some(due)
                        }
                    }
                    None => None,
                };
                let slot = match free_rx.try_recv() {
                    Ok(slot) => slot,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        sink.flush().await?;
                        tokio::select! {
                            slot = free_rx.recv() => match slot {
                                Some(slot) => slot,
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
                // at a fixed rate, time from when it should have been sent
                sent_at[slot].store(timing.nanos(due.unwrap_or(now)), Ordering::Relaxed);
                let mut frame = String::with_capacity(prefix.len() + 8);
                frame.push_str(&prefix);
                let _ = write!(frame, "{slot}\"}}");
                sink.feed(Message::Text(frame)).await?;
                sent_total.fetch_add(1, Ordering::Release);
                if now >= timing.measure_from {
                    sent_in_window += 1;
                }
            }
            sink.flush().await?;
            Ok(())
        }
        .await;
        writer_done.store(true, Ordering::Release);
        writer_exited.notify_one();
        (sent_in_window, result)
    };

    let reader = async {
        let mut rep = PublisherReport::default();
        // answers (acks + errors carrying one of our ids)
        let mut answered = 0u64;
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
            match parse_reply(&text, window) {
                Parsed::Ack(slot) => {
                    let now = Instant::now();
                    let sent = sent_at[slot].load(Ordering::Relaxed);
                    let latency = Duration::from_nanos(timing.nanos(now).saturating_sub(sent));
                    rep.answered(&timing, now, latency);
                    answered += 1;
                    live.acked.fetch_add(1, Ordering::Relaxed);
                    let _ = free_tx.send(slot);
                }
                Parsed::Error { slot, text } => {
                    rep.errors += 1;
                    live.errors.fetch_add(1, Ordering::Relaxed);
                    rep.first_error.get_or_insert(text);
                    if let Some(slot) = slot {
                        answered += 1;
                        let _ = free_tx.send(slot);
                    }
                }
                Parsed::Other => {}
            }
        }
        rep.unanswered = sent_total.load(Ordering::Acquire).saturating_sub(answered);
        rep
    };

    let ((sent_in_window, write_result), mut rep) = tokio::join!(writer, reader);
    rep.sent_total = sent_total.load(Ordering::Acquire);
    rep.sent_in_window = sent_in_window;
    if let Err(e) = write_result {
        rep.failure.get_or_insert(format!("send failed: {e:#}"));
    }
    let _ = timeout(Duration::from_secs(1), sink.close()).await;
    rep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_is_the_publish_op() {
        let mut frame = frame_prefix("bench.t", "\"xx\"");
        frame.push_str("17\"}");
        let v: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"op":"publish","id":"17","topic":"bench.t","data":"xx"})
        );
    }

    #[test]
    fn replies_are_matched_by_id() {
        assert_eq!(
            parse_reply(r#"{"type":"ack","id":"5","topic":"bench.t","seq":9}"#, 64),
            Parsed::Ack(5)
        );
        assert_eq!(
            parse_reply(r#"{"topic":"bench.t","seq":9,"id":"63","type":"ack"}"#, 64),
            Parsed::Ack(63)
        );
        assert!(matches!(
            parse_reply(r#"{"type":"ack","id":"64","seq":1}"#, 64),
            Parsed::Error { slot: None, .. }
        ));
        assert_eq!(
            parse_reply(
                r#"{"type":"error","id":"3","code":"rate_limited","message":"slow \"down\""}"#,
                64
            ),
            Parsed::Error {
                slot: Some(3),
                text: "rate_limited: slow \"down\"".into()
            }
        );
        assert_eq!(
            parse_reply(
                r#"{"type":"message","topic":"bench.t","seq":1,"ts":1,"data":{}}"#,
                64
            ),
            Parsed::Other
        );
        assert!(matches!(
            parse_reply("not json", 64),
            Parsed::Error { slot: None, .. }
        ));
    }
}
