//! Frames waiting for the socket, written in order with vectored writes.
//!
//! A message's frame is built once and shared by every subscriber. Small
//! frames are copied into one buffer per batch: a batch of them is one
//! slice of one `writev`, and no reference count is touched on a `Bytes`
//! that every subscriber's thread would otherwise clone and drop (that
//! cache-line traffic between cores costs more than copying ~100 bytes).
//! Large frames are queued as the shared `Bytes` they are, never copied.
//! An emptied outbox holds no allocation, so an idle connection costs none.

use std::{
    collections::VecDeque,
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWrite;

/// Frames up to this size are copied into the batch buffer.
const COPY_UP_TO: usize = 4 * 1024;
/// Copies stop once this much is queued; later frames are shared.
const COPY_LIMIT: usize = 64 * 1024;
/// Slices per `writev`.
const MAX_SLICES: usize = 64;

/// The frames one connection has yet to write.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Sealed chunks, in order; all go before `batch`.
    chunks: VecDeque<Bytes>,
    /// Small frames being gathered.
    batch: BytesMut,
    /// Bytes in `chunks` and `batch`.
    queued: usize,
}

impl Outbox {
    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.queued
    }

    /// Says `bytes` of frames are about to be pushed, so the batch buffer is
    /// allocated once at the size it needs instead of growing.
    pub fn expect(&mut self, bytes: usize) {
        let copied = bytes.min(COPY_LIMIT.saturating_sub(self.queued));
        if copied > 0 {
            self.batch.reserve(copied);
        }
    }

    /// Queues an encoded frame after everything queued so far.
    pub fn push(&mut self, frame: &Bytes) {
        if frame.len() <= COPY_UP_TO && self.queued < COPY_LIMIT {
            self.batch.extend_from_slice(frame);
        } else {
            self.seal();
            self.chunks.push_back(frame.clone());
        }
        self.queued += frame.len();
    }

    /// Ends the current batch: what follows goes after it.
    fn seal(&mut self) {
        if !self.batch.is_empty() {
            // Taken whole (not split): the buffer is freed once written.
            self.chunks
                .push_back(std::mem::take(&mut self.batch).freeze());
        }
    }

    /// Writes until everything is out (`Ready(Ok)`), the socket is full
    /// (`Pending`, progress kept) or it fails.
    pub fn poll_write<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut W,
    ) -> Poll<io::Result<()>> {
        self.seal();
        while !self.chunks.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let n = self
                .chunks
                .iter()
                .zip(slices.iter_mut())
                .map(|(chunk, slice)| *slice = IoSlice::new(chunk))
                .count();
            let written = match Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(written)) => written,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            self.advance(written);
        }
        if self.chunks.capacity() > 16 {
            self.chunks = VecDeque::new();
        }
        Poll::Ready(Ok(()))
    }

    fn advance(&mut self, mut written: usize) {
        self.queued -= written;
        while written > 0 {
            let front = self.chunks.front_mut().expect("wrote what was queued");
            if written < front.len() {
                front.advance(written);
                return;
            }
            written -= front.len();
            self.chunks.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket taking at most `room` bytes per write, recording them.
    struct Trickle {
        got: Vec<u8>,
        room: usize,
        writes: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.room);
            self.got.extend_from_slice(&buf[..n]);
            self.writes += 1;
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut left = self.room;
            for buf in bufs {
                let n = buf.len().min(left);
                self.got.extend_from_slice(&buf[..n]);
                left -= n;
            }
            self.writes += 1;
            Poll::Ready(Ok(self.room - left))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }
    }

    fn write_all(outbox: &mut Outbox, io: &mut Trickle) {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(
            outbox.poll_write(&mut cx, io),
            Poll::Ready(Ok(()))
        ));
    }

    #[test]
    fn frames_go_out_in_order_through_partial_writes() {
        let large = Bytes::from(vec![b'L'; COPY_UP_TO + 1]);
        let mut outbox = Outbox::default();
        for frame in [
            Bytes::from_static(b"a"),
            large.clone(),
            Bytes::from_static(b"b"),
        ] {
            outbox.push(&frame);
        }
        assert_eq!(outbox.len(), large.len() + 2);
        let mut io = Trickle {
            got: Vec::new(),
            room: 1000,
            writes: 0,
        };
        write_all(&mut outbox, &mut io);
        let mut expected = b"a".to_vec();
        expected.extend_from_slice(&large);
        expected.push(b'b');
        assert_eq!(io.got, expected);
        assert!(outbox.is_empty());
        assert_eq!(outbox.batch.capacity(), 0, "an idle outbox holds no buffer");
    }

    #[test]
    fn small_frames_are_one_slice_and_large_ones_stay_shared() {
        let mut outbox = Outbox::default();
        outbox.expect(3);
        for frame in [b"x", b"y", b"z"] {
            outbox.push(&Bytes::from_static(frame));
        }
        let large = Bytes::from(vec![b'L'; COPY_UP_TO + 1]);
        outbox.push(&large);
        outbox.seal();
        assert_eq!(outbox.chunks.len(), 2);
        assert_eq!(&outbox.chunks[0][..], b"xyz");
        assert_eq!(outbox.chunks[1].as_ptr(), large.as_ptr(), "not copied");
    }

    #[test]
    fn copies_stop_at_the_limit() {
        let mut outbox = Outbox::default();
        let frame = Bytes::from(vec![b'x'; COPY_UP_TO]);
        for _ in 0..2 * COPY_LIMIT / COPY_UP_TO {
            outbox.push(&frame);
        }
        outbox.seal();
        let copied: usize = outbox
            .chunks
            .iter()
            .filter(|c| c.as_ptr() != frame.as_ptr())
            .map(Bytes::len)
            .sum();
        assert_eq!(copied, COPY_LIMIT);
    }
}
