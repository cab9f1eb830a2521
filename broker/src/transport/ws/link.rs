//! The link: the one task that owns a WebSocket connection's socket.
//!
//! It `select!`s over the socket's read side (frames → ops), the
//! subscriber's mailbox (deliveries → one vectored write), acks of
//! publishes in flight, presence events, the admin API's orders, the ping
//! timer, token expiry and the node draining. Every step queues frames in the outbox; after each
//! step the outbox goes to the socket in one write, bounded by the idle
//! timeout. A client that stops reading stalls only its own link: its
//! messages wait in its bounded mailbox (under `disconnect` an overflow
//! closes it 4001 even mid-write), and a write that makes no progress for
//! the idle timeout closes it 4002.
//!
//! On the way out the link sends its close frame and shuts down its write
//! side at once, so the client sees TCP close right after the close frame
//! (RFC 6455 §7.1.1: the server closes first); it then reads until the
//! client's own FIN, briefly, so that late client bytes never turn the
//! close into a reset.

use std::{
    cell::RefCell,
    future::poll_fn,
    io,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
    time::Duration,
};

use bytes::BytesMut;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    time::{sleep, sleep_until, Instant},
};

use super::{
    close,
    cmd::{self, Ctx},
    codec::{Decoder, Incoming, Violation},
    outbox::Outbox,
    session::Session,
    Exit, LinkSetup,
};
use crate::{
    state::AppState,
    wire::websocket::{self, OpCode},
};

/// Bytes read from the socket per read call.
const READ_CHUNK: usize = 16 * 1024;
/// How long the link waits for the client's FIN after its own.
const LINGER: Duration = Duration::from_secs(1);
/// How long the FIN may take to leave (a TLS close_notify needs a write).
const SHUTDOWN_WRITE: Duration = Duration::from_millis(500);

thread_local! {
    /// Reads land here first and only what is not decoded at once is kept
    /// by the link: an idle connection holds no read buffer.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// One WebSocket connection.
pub struct Link<IO> {
    io: IO,
    state: Arc<AppState>,
    /// Bytes read and not yet decoded (a partial frame, or frames held back
    /// while too many publishes are in flight).
    inbound: BytesMut,
    decoder: Decoder,
    outbox: Outbox,
    last_heard: Instant,
    /// `None` on the echo endpoint.
    session: Option<Box<Session>>,
    /// The mailbox signalled while a write was stalled: deliver before
    /// waiting again (the signal was taken).
    deliver_now: bool,
    /// The token's expiry and its timer, when the token expires (a timer
    /// only for the connections that need one, re-armed on `refresh`).
    expiry: Option<(u64, Pin<Box<tokio::time::Sleep>>)>,
}

enum Step {
    Draining,
    Read(io::Result<usize>),
    Ack(super::session::AckResult),
    Deliver,
    Presence,
    Order,
    Ping,
    Expired,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Link<IO> {
    /// A link over `io`, whose first bytes (read with the upgrade request)
    /// are `read`.
    pub fn new(io: IO, read: BytesMut, setup: LinkSetup) -> Self {
        Link {
            io,
            inbound: read,
            decoder: Decoder::new(setup.max_message),
            outbox: Outbox::default(),
            last_heard: Instant::now(),
            session: setup.session,
            state: setup.state,
            deliver_now: false,
            expiry: None,
        }
    }

    /// Serves the connection until it ends, then closes it.
    pub async fn run(mut self) {
        let exit = self.serve().await;
        let limit = self.state.config.transport.ws_idle_timeout;
        self.finish(exit, limit).await;
    }

    async fn serve(&mut self) -> Exit {
        let transport = &self.state.config.transport;
        let (ping_every, idle_timeout) = (transport.ws_ping_interval, transport.ws_idle_timeout);
        let mut shutdown = self.state.lifecycle.shutdown.clone();
        let draining = async move {
            let _ = shutdown.wait_for(|draining| *draining).await;
        };
        tokio::pin!(draining);
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Frames read earlier and held back (publishes in flight) or
            // left over from the upgrade request.
            if let Err(exit) = self.decode_ready() {
                return exit;
            }
            if let Err(exit) = self.flush(draining.as_mut(), idle_timeout).await {
                return exit;
            }
            let step = if std::mem::take(&mut self.deliver_now) {
                Step::Deliver
            } else {
                self.next_step(draining.as_mut(), &mut ping).await
            };
            let result = match step {
                Step::Draining => Err(Exit::DRAINING),
                Step::Read(Ok(0)) => Err(Exit::Gone),
                Step::Read(Ok(_)) => {
                    self.last_heard = Instant::now();
                    self.decode_ready()
                }
                Step::Read(Err(_)) => Err(Exit::Gone),
                Step::Ack(ack) => {
                    self.with_ctx(|ctx| cmd::answer_publish(ctx, ack));
                    Ok(())
                }
                Step::Deliver => match self.session.as_deref_mut() {
                    Some(session) => session.deliver(&mut self.outbox, &self.state.metrics),
                    None => Ok(()),
                },
                Step::Presence => {
                    self.send_presence();
                    Ok(())
                }
                Step::Order => match self.session.as_deref_mut() {
                    Some(session) => session.apply_orders(&mut self.outbox),
                    None => Ok(()),
                },
                Step::Ping => self.ping(idle_timeout),
                Step::Expired => Err(Exit::Close(
                    close::TOKEN_EXPIRED,
                    "token expired; reconnect with a fresh token",
                )),
            };
            if let Err(exit) = result {
                return exit;
            }
        }
    }

    async fn next_step(
        &mut self,
        draining: Pin<&mut impl std::future::Future<Output = ()>>,
        ping: &mut tokio::time::Interval,
    ) -> Step {
        // The timer follows the token (`refresh` replaces it).
        let exp = self.session.as_deref().and_then(|s| s.identity.expires_at);
        if self.expiry.as_ref().map(|(e, _)| *e) != exp {
            self.expiry = exp.map(|e| (e, Box::pin(sleep_until(deadline_of(e)))));
        }
        let Link {
            io,
            inbound,
            session,
            expiry,
            ..
        } = self;
        let Some(session) = session.as_deref_mut() else {
            // The echo endpoint: frames, the node draining and pings.
            return tokio::select! {
                biased;
                _ = draining => Step::Draining,
                read = poll_fn(|cx| poll_read_some(cx, io, inbound)) => Step::Read(read),
                _ = ping.tick() => Step::Ping,
            };
        };
        let reading = session.can_read();
        let Session {
            subscriber,
            presence,
            acks,
            control,
            ..
        } = session;
        let waiting = acks.waiting();
        let listening = presence.listening();
        tokio::select! {
            biased;
            _ = draining => Step::Draining,
            _ = async { expiry.as_mut().expect("checked").1.as_mut().await }, if expiry.is_some() => Step::Expired,
            read = poll_fn(|cx| poll_read_some(cx, io, inbound)), if reading => Step::Read(read),
            ack = acks.next(), if waiting => Step::Ack(ack),
            _ = control.notified() => Step::Order,
            _ = poll_fn(|cx| subscriber.poll_wake(cx)) => Step::Deliver,
            _ = presence.feed().wait(), if listening => Step::Presence,
            _ = ping.tick() => Step::Ping,
        }
    }

    /// Decodes and handles every whole frame read so far, as far as the
    /// session may take more ops.
    fn decode_ready(&mut self) -> Result<(), Exit> {
        let decoded = self.decode_frames();
        // Every publish this read brought goes to the engine together.
        if let Some(session) = self.session.as_deref_mut() {
            session.submit(&self.state.engine, &self.state.metrics);
        }
        decoded?;
        if self.inbound.is_empty() && self.inbound.capacity() > 0 {
            self.inbound = BytesMut::new();
        }
        Ok(())
    }

    fn decode_frames(&mut self) -> Result<(), Exit> {
        while self.session.as_deref().is_none_or(Session::can_read) {
            match self.decoder.decode(&mut self.inbound) {
                Ok(Some(item)) => self.on_incoming(item)?,
                Ok(None) => break,
                Err(violation) => return Err(self.violated(violation)),
            }
        }
        Ok(())
    }

    fn violated(&self, violation: Violation) -> Exit {
        tracing::debug!(%violation, "websocket protocol violation");
        let metrics = &self.state.metrics;
        metrics.bad_requests.inc();
        if violation == Violation::TooBig {
            metrics.ws_oversized_messages.inc();
        }
        Exit::Close(violation.close_code(), violation.reason())
    }

    fn on_incoming(&mut self, item: Incoming) -> Result<(), Exit> {
        match item {
            Incoming::Text(text) => {
                tracing::trace!(bytes = text.len(), "websocket text frame");
                if self.session.is_some() {
                    self.with_ctx(|ctx| cmd::apply(ctx, &text));
                } else {
                    self.outbox
                        .push(&websocket::frame(OpCode::Text, text.as_bytes()));
                }
            }
            Incoming::Binary(data) => {
                tracing::trace!(bytes = data.len(), "websocket binary frame");
                if self.session.is_some() {
                    self.with_ctx(|ctx| cmd::apply_binary(ctx, data));
                } else {
                    self.outbox.push(&websocket::frame(OpCode::Binary, &data));
                }
            }
            // Pongs take the same queue, so they keep their place among
            // the replies (a ping before a message is answered before it).
            Incoming::Ping(payload) => self.outbox.push(&websocket::frame(OpCode::Pong, &payload)),
            Incoming::Pong => {}
            Incoming::Close(code) => return Err(Exit::ClientClosed(code)),
        }
        Ok(())
    }

    fn with_ctx(&mut self, f: impl FnOnce(&mut Ctx<'_>)) {
        if let Some(session) = self.session.as_deref_mut() {
            f(&mut Ctx {
                state: &self.state,
                session,
                out: &mut self.outbox,
            });
            session.acks.compact();
        }
    }

    fn send_presence(&mut self) {
        if let Some(session) = self.session.as_deref() {
            for event in session.presence.feed().drain() {
                self.outbox
                    .push(&websocket::frame(OpCode::Text, event.as_bytes()));
            }
        }
    }

    /// Pings the client, or closes a connection that went quiet.
    fn ping(&mut self, idle_timeout: Duration) -> Result<(), Exit> {
        if self.last_heard.elapsed() > idle_timeout {
            return Err(Exit::Close(close::IDLE_TIMEOUT, "no response to pings"));
        }
        self.outbox.push(&websocket::frame(OpCode::Ping, b""));
        Ok(())
    }

    /// Writes the outbox. Most writes complete at once, with no timer armed
    /// (one per batch showed in the fan-out profile); a stalled one is given
    /// up after `limit` without progress, and watched for the mailbox
    /// overflowing and the node draining meanwhile.
    async fn flush(
        &mut self,
        mut draining: Pin<&mut impl std::future::Future<Output = ()>>,
        limit: Duration,
    ) -> Result<(), Exit> {
        if self.outbox.is_empty() {
            return Ok(());
        }
        let Link {
            io,
            outbox,
            session,
            deliver_now,
            ..
        } = self;
        let first = poll_fn(|cx| Poll::Ready(outbox.poll_write(cx, io))).await;
        match first {
            Poll::Ready(result) => return result.map_err(|_| Exit::Gone),
            Poll::Pending => {}
        }
        let stalled = sleep(limit);
        tokio::pin!(stalled);
        let mut progress = outbox.len();
        loop {
            let changed = session.as_deref().map(|s| s.subscriber.mailbox_changed());
            tokio::select! {
                biased;
                _ = draining.as_mut() => return Err(Exit::DRAINING),
                written = poll_fn(|cx| outbox.poll_write(cx, io)) => {
                    return written.map_err(|_| Exit::Gone);
                }
                _ = async { changed.expect("checked").await }, if session.is_some() => {
                    if session.as_deref().is_some_and(|s| s.subscriber.overflowed()) {
                        return Err(Exit::Close(close::SLOW_CONSUMER, close::SLOW_CONSUMER_REASON));
                    }
                    *deliver_now = true;
                }
                _ = stalled.as_mut() => {
                    if outbox.len() == progress {
                        return Err(Exit::Close(close::IDLE_TIMEOUT, "write timed out"));
                    }
                    progress = outbox.len();
                    stalled.as_mut().reset(Instant::now() + limit);
                }
            }
        }
    }

    /// Sends the close frame (if any) behind what is already queued, giving
    /// the client `limit` to take it as for any write, closes TCP from this
    /// side and waits briefly for the client's side to close.
    async fn finish(mut self, exit: Exit, limit: Duration) {
        // The subscriber goes first: nothing is delivered after the close.
        drop(self.session.take());
        let frame = match exit {
            Exit::Close(code, reason) => Some(websocket::close_frame(code, reason)),
            // RFC 6455 §5.5.1: echo the client's code (none if it gave none).
            Exit::ClientClosed(Some(code)) => Some(websocket::close_frame(code, "")),
            Exit::ClientClosed(None) => Some(websocket::frame(OpCode::Close, b"")),
            Exit::Gone => None,
        };
        let Link { io, outbox, .. } = &mut self;
        if let Some(frame) = frame {
            outbox.push(&frame);
            let write = poll_fn(|cx| outbox.poll_write(cx, io));
            if !matches!(tokio::time::timeout(limit, write).await, Ok(Ok(()))) {
                return;
            }
        }
        if !matches!(
            tokio::time::timeout(SHUTDOWN_WRITE, io.shutdown()).await,
            Ok(Ok(()))
        ) {
            return;
        }
        if matches!(exit, Exit::Gone) {
            return;
        }
        // Discard whatever the client still sends until its FIN.
        let _ = tokio::time::timeout(LINGER, async {
            let mut discard = BytesMut::new();
            loop {
                discard.clear();
                match poll_fn(|cx| poll_read_some(cx, io, &mut discard)).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
}

/// Reads what the socket has into `inbound`: through the thread's scratch
/// buffer while `inbound` has no room, straight into it while it is
/// waiting for the rest of a frame it has reserved room for.
fn poll_read_some<R: AsyncRead + Unpin>(
    cx: &mut Context<'_>,
    io: &mut R,
    inbound: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    if inbound.capacity() - inbound.len() >= READ_CHUNK {
        let spare = inbound.capacity() - inbound.len();
        let before = inbound.len();
        inbound.resize(before + spare, 0);
        let mut buf = ReadBuf::new(&mut inbound[before..]);
        let polled = Pin::new(io).poll_read(cx, &mut buf);
        let n = buf.filled().len();
        inbound.truncate(before + n);
        ready!(polled)?;
        return Poll::Ready(Ok(n));
    }
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let mut buf = ReadBuf::new(&mut scratch[..]);
        ready!(Pin::new(io).poll_read(cx, &mut buf))?;
        inbound.extend_from_slice(buf.filled());
        Poll::Ready(Ok(buf.filled().len()))
    })
}

/// When a token expiring at `exp` (seconds since the epoch) runs out.
fn deadline_of(exp: u64) -> Instant {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let left = Duration::from_secs(exp).saturating_sub(now);
    Instant::now() + left
}

#[cfg(test)]
mod tests {
    use super::*;

    fn returned_size<A, R>(_: fn(A) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    #[test]
    fn an_idle_link_is_small() {
        let task = returned_size(Link::<tokio::net::TcpStream>::run);
        let link = std::mem::size_of::<Link<tokio::net::TcpStream>>();
        let session = std::mem::size_of::<Session>();
        eprintln!("link future {task} B, link {link} B, session {session} B");
    }
}
