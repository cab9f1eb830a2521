//! What a broker connection writes: message batches from its subscriber,
//! presence events, pings, each bounded by the idle timeout.

use std::{
    borrow::Cow,
    future::{poll_fn, Future},
    pin::pin,
    task::Poll,
};

use actix_http::ws::OpCode;
use bytes::Bytes;
use tokio::time::{timeout, Duration};

use super::{
    wire, Connection, Exit, Handler, CLOSE_IDLE_TIMEOUT, CLOSE_SLOW_CONSUMER, EVENTS_PER_BATCH,
};
use crate::{
    hub::{Event, MailboxState},
    metrics::Transport,
    telemetry::trace,
    transport::protocol::Reply,
};

/// Runs a write to the socket; a client that does not take it within
/// `limit` is given up on, a closed socket means the client is gone.
pub(super) async fn bounded_write<E>(
    limit: Duration,
    write: impl Future<Output = Result<(), E>>,
) -> Result<(), Exit> {
    let mut write = pin!(write);
    // Most writes find room in the lane at once: no timer is armed for
    // those (a timer per batch showed in the fan-out profile).
    let done = poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    let result = match done {
        Poll::Ready(r) => Ok(r),
        Poll::Pending => timeout(limit, write).await,
    };
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Exit::Gone),
        Err(_) => Err(Exit::Close(CLOSE_IDLE_TIMEOUT, "write timed out")),
    }
}

impl Connection {
    /// Sends one text frame under the idle timeout.
    pub(super) async fn send(&mut self, text: impl AsRef<[u8]>) -> Result<(), Exit> {
        self.send_frames(vec![wire::frame(OpCode::Text, text.as_ref())])
            .await
    }

    /// Sends encoded frames under one write deadline (one timer per batch,
    /// not per frame: this is the fan-out hot path).
    pub(super) async fn send_frames(
        &mut self,
        frames: impl IntoIterator<Item = Bytes>,
    ) -> Result<(), Exit> {
        let limit = self.state.config.transport.ws_idle_timeout;
        bounded_write(limit, self.frames.send_all(frames)).await
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
            // Taken by reference as the lane copies or shares them: no list
            // of frames in between, no reference count touched per frame.
            let frames = events.iter().map(|event| match event {
                Event::Message(m) => {
                    spans.extend(trace::deliver_span(m, "ws"));
                    Cow::Borrowed(m.ws_wire())
                }
                Event::Gap { topic, from, to } => {
                    let gap = Reply::Gap {
                        topic: topic.as_str(),
                        from: *from,
                        to: *to,
                    };
                    Cow::Owned(wire::frame(OpCode::Text, gap.encode().as_bytes()))
                }
            });
            let limit = self.state.config.transport.ws_idle_timeout;
            bounded_write(limit, self.frames.send_all(frames)).await?;
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
                MailboxState::Open if broker.subscriber.emptied_by(count, EVENTS_PER_BATCH) => {
                    return Ok(())
                }
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
            self.send(&*event).await?;
        }
        Ok(())
    }

    pub(super) async fn ping(&mut self, idle_timeout: Duration) -> Result<(), Exit> {
        if self.last_heard.elapsed() > idle_timeout {
            return Err(Exit::Close(CLOSE_IDLE_TIMEOUT, "no response to pings"));
        }
        self.send_frames(vec![wire::frame(OpCode::Ping, b"")]).await
    }
}
