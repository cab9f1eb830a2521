//! What a broker connection writes: message batches from its subscriber,
//! presence events, pings, each bounded by the idle timeout.

use std::future::Future;

use bytestring::ByteString;
use tokio::time::{timeout, Duration};

use super::{Connection, Exit, Handler, CLOSE_IDLE_TIMEOUT, CLOSE_SLOW_CONSUMER, EVENTS_PER_BATCH};
use crate::{
    hub::{Event, MailboxState},
    metrics::Transport,
    telemetry::trace,
    transport::protocol::Reply,
};

/// Runs a write to the session; a client that does not take it within
/// `limit` is given up on, a closed session means the client is gone.
pub(super) async fn bounded_write(
    limit: Duration,
    write: impl Future<Output = Result<(), actix_ws::Closed>>,
) -> Result<(), Exit> {
    match timeout(limit, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Exit::Gone),
        Err(_) => Err(Exit::Close(CLOSE_IDLE_TIMEOUT, "write timed out")),
    }
}

impl Connection {
    /// Sends one text frame under the idle timeout.
    pub(super) async fn send(&mut self, text: impl Into<ByteString>) -> Result<(), Exit> {
        let limit = self.state.config.transport.ws_idle_timeout;
        bounded_write(limit, self.session.text(text)).await
    }

    /// Sends a batch of frames under one write deadline (one timer per
    /// batch, not per frame: this is the fan-out hot path).
    pub(super) async fn send_all(&mut self, frames: Vec<ByteString>) -> Result<(), Exit> {
        let limit = self.state.config.transport.ws_idle_timeout;
        let session = &mut self.session;
        let write = async move {
            for frame in frames {
                session.text(frame).await?;
            }
            Ok::<(), actix_ws::Closed>(())
        };
        bounded_write(limit, write).await
    }

    /// Writes everything the subscriber has ready, in batches.
    pub(super) async fn deliver(&mut self) -> Result<(), Exit> {
        loop {
            let mut events = std::mem::take(&mut self.events);
            events.clear();
            let Handler::Broker(broker) = &mut self.handler else {
                return Ok(());
            };
            let state = broker
                .subscriber
                .next_events(&mut events, EVENTS_PER_BATCH)
                .map_err(|e| {
                    tracing::error!(error = %e, "log read failed during delivery");
                    Exit::Close(1011, "storage read failed")
                })?;
            for event in &events {
                broker.subscriber.delivered(event);
            }
            let count = events.len();
            let mut spans = Vec::new();
            let frames: Vec<ByteString> = events
                .iter()
                .map(|event| match event {
                    Event::Message(m) => {
                        spans.extend(trace::deliver_span(m, "ws"));
                        m.ws_frame().clone()
                    }
                    Event::Gap { topic, from, to } => Reply::Gap {
                        topic: topic.as_str(),
                        from: *from,
                        to: *to,
                    }
                    .encode()
                    .into(),
                })
                .collect();
            self.send_all(frames).await?;
            drop(spans);
            self.state
                .metrics
                .delivered(Transport::Ws)
                .inc_by(count as u64);
            self.events = events;
            match state {
                MailboxState::Overflowed => {
                    return Err(Exit::Close(
                        CLOSE_SLOW_CONSUMER,
                        "slow consumer: resume from your last seq",
                    ))
                }
                MailboxState::Closed => return Err(Exit::DRAINING),
                MailboxState::Open if count == 0 => return Ok(()),
                MailboxState::Open => {}
            }
        }
    }

    /// Sends queued join/leave events, each as its own frame.
    pub(super) async fn send_presence(&mut self) -> Result<(), Exit> {
        let Handler::Broker(b) = &self.handler else {
            return Ok(());
        };
        for event in b.presence.feed().drain() {
            self.send(ByteString::from(&*event)).await?;
        }
        Ok(())
    }

    pub(super) async fn ping(&mut self, idle_timeout: Duration) -> Result<(), Exit> {
        if self.last_heard.elapsed() > idle_timeout {
            return Err(Exit::Close(CLOSE_IDLE_TIMEOUT, "no response to pings"));
        }
        bounded_write(idle_timeout, self.session.ping(b"")).await
    }
}
