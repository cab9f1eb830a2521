//! The lane Herald's outgoing frames (all but close) take to the socket.
//!
//! actix-ws sends every message through a channel to its response body,
//! which encodes it into a frame there: per subscriber, per message, a
//! channel hop and an encode. A server frame is unmasked, so a message's
//! frame is the same bytes for every subscriber; [`Message::ws_wire`] builds
//! it once and this lane queues it for the response body, which hands it
//! straight to the HTTP dispatcher.
//!
//! Small frames are copied into one buffer per connection, so a batch reaches
//! the dispatcher as one chunk: one body poll and one lock per batch instead
//! of per frame, and no reference-count traffic on a `Bytes` that every
//! subscriber's thread would otherwise clone and drop (that cache line
//! bouncing between cores cost more than copying ~100 bytes). Large frames
//! are queued shared, never copied here.
//!
//! Deliveries do not pass through the lane's lock and the connection task:
//! the body pulls them itself ([`Pull`]) whenever the lane is empty, in the
//! dispatcher's own poll, so a message wakes one task per subscriber (the
//! dispatcher) instead of two, and the batch goes to the socket in that poll.
//!
//! Pings and pongs take this lane too, so every frame keeps its order.
//! actix-ws keeps the rest: the handshake, reading and decoding client
//! frames, and the close frame its `Session` sends. [`FramedBody`] wraps
//! actix-ws's body and yields queued frames first, so a close sent after
//! data reaches the client after that data.
//!
//! [`Message::ws_wire`]: crate::hub::Message::ws_wire

use std::{
    borrow::Borrow,
    collections::VecDeque,
    error::Error as StdError,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use actix_http::ws::{OpCode, Parser};
use actix_web::body::{BodySize, BoxBody, MessageBody};
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::Notify;

/// Bytes queued before a sender waits for the socket to take some: a few
/// batches' worth; the subscriber's mailbox is the real queue.
const LANE_CAPACITY: usize = 16 * 1024;
/// Frames up to this size are copied into the batch buffer (while the lane
/// is under capacity); larger ones are queued as the shared `Bytes` they are.
const COPY_UP_TO: usize = 4 * 1024;
/// First allocation of a batch buffer (it grows as frames arrive).
const BATCH_START: usize = 1024;

/// Encodes one unmasked server frame.
pub fn frame(op: OpCode, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(payload.len() + 10);
    Parser::write_message(&mut buf, payload, op, true, false);
    buf.freeze()
}

/// The socket went away: nothing sent now reaches the client.
#[derive(Debug)]
pub struct LaneClosed;

/// Frames a [`FramedBody`] fetches itself whenever its lane is empty.
pub trait Pull {
    /// Queues whatever is ready into `fill`; when nothing is, arranges for
    /// `cx` to be woken once something may be.
    fn pull(&mut self, cx: &mut Context<'_>, fill: &mut Fill<'_>);
}

/// The lane, open to a [`Pull`] for queuing frames.
pub struct Fill<'a>(&'a mut Lane);

impl Fill<'_> {
    /// Queues one encoded frame after everything queued so far.
    pub fn push(&mut self, frame: &Bytes) {
        self.0.push(frame);
    }

    /// Says `bytes` of frames are about to be pushed, so the batch buffer is
    /// allocated once at the size it will need instead of growing (and
    /// copying itself) as they arrive.
    pub fn expect(&mut self, bytes: usize) {
        self.0.expect(bytes);
    }
}

#[derive(Default)]
struct Lane {
    /// Chunks ready for the socket, in order; all of them go before `batch`.
    chunks: VecDeque<Bytes>,
    /// Small frames being gathered into one chunk.
    batch: BytesMut,
    /// Bytes in `chunks` and `batch`.
    queued: usize,
    /// The dispatcher task polling the body, woken when frames arrive.
    body: Option<Waker>,
    closed: bool,
}

impl Lane {
    fn push(&mut self, frame: &Bytes) {
        // Past capacity (a sender's batch may overshoot it) frames are shared,
        // not copied: a connection whose socket has stalled holds at most
        // LANE_CAPACITY + COPY_UP_TO bytes of copies, never a batch's worth.
        let copy = frame.len() <= COPY_UP_TO && self.queued < LANE_CAPACITY;
        self.queued += frame.len();
        if copy {
            if self.batch.capacity() == 0 {
                self.batch.reserve(BATCH_START.max(frame.len()));
            }
            self.batch.extend_from_slice(frame);
        } else {
            self.seal();
            self.chunks.push_back(frame.clone());
        }
    }

    fn expect(&mut self, bytes: usize) {
        // At most what push will copy before it starts sharing frames
        // (`reserve` does nothing when the spare capacity already holds it).
        self.batch
            .reserve(bytes.min(LANE_CAPACITY.saturating_sub(self.queued) + COPY_UP_TO));
    }

    /// Ends the current batch: what follows goes after it.
    fn seal(&mut self) {
        if !self.batch.is_empty() {
            // Taken whole (not split), so the buffer is freed once written
            // and an idle connection keeps no allocation.
            self.chunks
                .push_back(std::mem::take(&mut self.batch).freeze());
        }
    }

    fn pop(&mut self) -> Option<Bytes> {
        let chunk = match self.chunks.pop_front() {
            Some(chunk) => chunk,
            None if !self.batch.is_empty() => std::mem::take(&mut self.batch).freeze(),
            None => return None,
        };
        self.queued -= chunk.len();
        if self.chunks.is_empty() && self.chunks.capacity() > 16 {
            self.chunks = VecDeque::new();
        }
        Some(chunk)
    }
}

#[derive(Default)]
struct Shared {
    lane: Mutex<Lane>,
    /// Signalled when the lane drops below capacity or closes.
    space: Notify,
}

/// The connection task's end: queues encoded frames.
pub struct FrameSender(Arc<Shared>);

impl FrameSender {
    /// Queues `frames` (encoded, e.g. by [`frame`]) in order, waiting while
    /// the lane is full. Cancel-safe: nothing is queued until it returns `Ok`.
    pub async fn send_all<I, B>(&self, frames: I) -> Result<(), LaneClosed>
    where
        I: IntoIterator<Item = B>,
        B: Borrow<Bytes>,
    {
        let mut frames = Some(frames);
        loop {
            let space = self.0.space.notified();
            {
                let mut lane = self.0.lane.lock();
                if lane.closed {
                    return Err(LaneClosed);
                }
                if lane.queued < LANE_CAPACITY {
                    for frame in frames.take().into_iter().flatten() {
                        lane.push(frame.borrow());
                    }
                    let body = lane.body.take();
                    drop(lane);
                    wake(body);
                    return Ok(());
                }
            }
            space.await;
        }
    }

    /// Has the body polled again, for frames its [`Pull`] may now give.
    pub fn wake_body(&self) {
        let body = self.0.lane.lock().body.take();
        wake(body);
    }
}

/// Wakes the body's task, if it is waiting (outside the lane's lock).
fn wake(body: Option<Waker>) {
    if let Some(body) = body {
        body.wake();
    }
}

/// The response body of a WebSocket connection: Herald's data frames, then
/// whatever actix-ws's own body has (control frames, and its end).
pub struct FramedBody {
    shared: Arc<Shared>,
    control: BoxBody,
    pull: Option<Box<dyn Pull>>,
}

impl FramedBody {
    /// Wraps actix-ws's body; the sender feeds the data lane, and `pull`
    /// (if any) is asked for frames whenever the lane is empty.
    pub fn new(control: BoxBody, pull: Option<Box<dyn Pull>>) -> (Self, FrameSender) {
        let shared = Arc::new(Shared::default());
        let sender = FrameSender(shared.clone());
        (
            FramedBody {
                shared,
                control,
                pull,
            },
            sender,
        )
    }
}

impl MessageBody for FramedBody {
    type Error = Box<dyn StdError>;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        {
            let mut lane = this.shared.lane.lock();
            let was_full = lane.queued >= LANE_CAPACITY;
            if lane.queued == 0 {
                if let Some(pull) = &mut this.pull {
                    pull.pull(cx, &mut Fill(&mut lane));
                }
            }
            if let Some(chunk) = lane.pop() {
                let has_space = lane.queued < LANE_CAPACITY;
                drop(lane);
                if was_full && has_space {
                    this.shared.space.notify_one();
                }
                return Poll::Ready(Some(Ok(chunk)));
            }
            if !lane.body.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                lane.body = Some(cx.waker().clone());
            }
        }
        // The connection task and this body run on the same actix worker
        // thread, so nothing is queued between the check above and a close
        // frame actix-ws yields here: data sent before a close goes first.
        Pin::new(&mut this.control).poll_next(cx)
    }
}

impl Drop for FramedBody {
    fn drop(&mut self) {
        let mut lane = self.shared.lane.lock();
        lane.closed = true;
        let dropped = (
            std::mem::take(&mut lane.chunks),
            std::mem::take(&mut lane.batch),
        );
        drop(lane);
        drop(dropped);
        self.shared.space.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_codec::Decoder;
    use actix_http::ws::{Codec, Frame};
    use actix_web::body::{self, BoxBody};

    #[test]
    fn frames_decode_as_sent() {
        for len in [0, 1, 125, 126, 65535, 65536] {
            let payload = vec![b'x'; len];
            let mut wire = BytesMut::from(&frame(OpCode::Text, &payload)[..]);
            let decoded = Codec::new()
                .client_mode()
                .max_size(1 << 20)
                .decode(&mut wire)
                .unwrap();
            assert_eq!(decoded, Some(Frame::Text(Bytes::from(payload))), "{len}");
            assert!(wire.is_empty());
        }
    }

    #[actix_web::test]
    async fn data_before_control_and_closed_after_drop() {
        let control = BoxBody::new(Bytes::from_static(b"CLOSE"));
        let (body, sender) = FramedBody::new(control, None);
        sender
            .send_all(vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")])
            .await
            .unwrap();
        let all = body::to_bytes(body).await.unwrap();
        assert_eq!(&all[..], b"abCLOSE");
        assert!(sender.send_all(vec![Bytes::new()]).await.is_err());
    }

    #[actix_web::test]
    async fn a_full_lane_waits_for_the_socket() {
        let (mut body, sender) = FramedBody::new(BoxBody::new(()), None);
        let frames = [Bytes::from(vec![b'x'; LANE_CAPACITY])];
        sender.send_all(&frames).await.unwrap();
        let second = sender.send_all(&frames);
        tokio::pin!(second);
        assert!(futures_util::poll!(second.as_mut()).is_pending());
        let mut body = Pin::new(&mut body);
        std::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await;
        assert!(futures_util::poll!(second.as_mut()).is_ready());
    }

    #[actix_web::test]
    async fn small_frames_batch_and_large_ones_stay_shared_in_order() {
        let (mut body, sender) = FramedBody::new(BoxBody::new(()), None);
        let large = Bytes::from(vec![b'L'; COPY_UP_TO + 1]);
        let frames = [
            Bytes::from_static(b"a"),
            Bytes::from_static(b"b"),
            large.clone(),
            Bytes::from_static(b"c"),
        ];
        sender.send_all(&frames).await.unwrap();
        sender.send_all([Bytes::from_static(b"d")]).await.unwrap();
        let mut body = Pin::new(&mut body);
        let mut chunks = Vec::new();
        while let Poll::Ready(Some(chunk)) =
            futures_util::poll!(std::future::poll_fn(|cx| body.as_mut().poll_next(cx)))
        {
            chunks.push(chunk.unwrap());
        }
        assert_eq!(chunks.len(), 3);
        assert_eq!(&chunks[0][..], b"ab");
        assert_eq!(chunks[1].as_ptr(), large.as_ptr(), "large frame not copied");
        assert_eq!(&chunks[2][..], b"cd");
    }

    #[test]
    fn expected_frames_are_copied_into_one_allocation() {
        let mut lane = Lane::default();
        let frame = Bytes::from(vec![b'x'; 1000]);
        Fill(&mut lane).expect(10 * frame.len());
        let start = lane.batch.as_ptr();
        for _ in 0..10 {
            Fill(&mut lane).push(&frame);
        }
        assert_eq!(lane.batch.len(), 10 * frame.len());
        assert_eq!(lane.batch.as_ptr(), start, "the batch grew while filling");

        // What will be shared, not copied, is not allocated for.
        let mut lane = Lane::default();
        Fill(&mut lane).expect(1 << 20);
        assert!(lane.batch.capacity() < 2 * (LANE_CAPACITY + COPY_UP_TO));
    }

    #[actix_web::test]
    async fn copies_stop_at_capacity() {
        let (mut body, sender) = FramedBody::new(BoxBody::new(()), None);
        let frame = Bytes::from(vec![b'x'; COPY_UP_TO]);
        let batch = vec![frame.clone(); 2 * LANE_CAPACITY / COPY_UP_TO];
        sender.send_all(&batch).await.unwrap();
        let mut body = Pin::new(&mut body);
        let first = std::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await;
        assert_eq!(
            first.unwrap().unwrap().len(),
            LANE_CAPACITY,
            "copied up to capacity"
        );
        let second = std::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await;
        assert_eq!(
            second.unwrap().unwrap().as_ptr(),
            frame.as_ptr(),
            "then shared"
        );
    }
}
