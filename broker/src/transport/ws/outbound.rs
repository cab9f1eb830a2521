//! What a connection task writes: replies, presence events, pings, each
//! bounded by the idle timeout (deliveries are the body's, see `delivery`).

use std::{
    future::{poll_fn, Future},
    pin::pin,
    task::Poll,
};

use actix_http::ws::OpCode;
use bytes::Bytes;
use tokio::time::{timeout, Duration, Instant};

use super::{
    wire, Connection, Exit, Handler, CLOSE_IDLE_TIMEOUT, CLOSE_SLOW_CONSUMER, SLOW_CONSUMER_REASON,
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

    /// Pings the client. Closes a connection whose mailbox overflowed or
    /// whose messages have waited untaken for the idle timeout (a client
    /// that stopped reading is not polled for deliveries, so nothing else
    /// notices), or whose client stopped answering.
    pub(super) async fn ping(&mut self, idle_timeout: Duration) -> Result<(), Exit> {
        if let Handler::Broker(b) = &self.handler {
            if b.deliveries.overflowed() {
                return Err(Exit::Close(CLOSE_SLOW_CONSUMER, SLOW_CONSUMER_REASON));
            }
            if b.deliveries.stalled_for(Instant::now()) > idle_timeout {
                return Err(Exit::Close(CLOSE_IDLE_TIMEOUT, "write timed out"));
            }
        }
        if self.last_heard.elapsed() > idle_timeout {
            return Err(Exit::Close(CLOSE_IDLE_TIMEOUT, "no response to pings"));
        }
        self.send_frames(vec![wire::frame(OpCode::Ping, b"")]).await
    }
}
