//! Herald patch: response body chunks written to the socket as they are.
//!
//! Upstream copies every body chunk into the dispatcher's write buffer before writing it. A
//! body whose bytes go on the wire unchanged (a stream without a length or chunked framing,
//! which is what a WebSocket's frames are) can hand its chunks over instead: they queue here,
//! shared, and go out with one vectored write, saving a copy of every byte the connection
//! sends.

use std::{collections::VecDeque, io::IoSlice, mem};

use bytes::{Buf as _, Bytes, BytesMut};

/// Chunks at least this long are queued shared; shorter ones are cheaper to copy into the
/// write buffer than to give an I/O vector slot of their own.
pub(super) const SHARE_FROM: usize = 256;

/// I/O vector slots a flush fills per write (well under every platform's `IOV_MAX`).
pub(super) const MAX_SLICES: usize = 64;

/// Bytes queued for the socket ahead of the dispatcher's write buffer.
///
/// Everything queued here was written by the dispatcher before what its write buffer now
/// holds, so a flush writes these chunks first, then the write buffer.
#[derive(Debug, Default)]
pub(super) struct SharedChunks {
    chunks: VecDeque<Bytes>,
    len: usize,
}

impl SharedChunks {
    /// Bytes queued.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Queues `chunk` after everything written so far, moving the write buffer's bytes (the
    /// bytes written before `chunk`) into the queue first without copying them.
    pub(super) fn push(&mut self, write_buf: &mut BytesMut, chunk: Bytes) {
        if !write_buf.is_empty() {
            // Taken whole rather than split so the allocation goes when written, and the next
            // write starts a new buffer.
            let head = mem::take(write_buf).freeze();
            self.len += head.len();
            self.chunks.push_back(head);
        }
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    /// Fills `slices` with the queued chunks in order, followed by `tail` (the write buffer)
    /// when every chunk fit; returns how many slots were filled.
    pub(super) fn slices<'a>(&'a self, tail: &'a [u8], slices: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for chunk in &self.chunks {
            if filled == slices.len() {
                return filled;
            }
            slices[filled] = IoSlice::new(chunk);
            filled += 1;
        }
        if filled < slices.len() && !tail.is_empty() {
            slices[filled] = IoSlice::new(tail);
            filled += 1;
        }
        filled
    }

    /// Drops the first `written` bytes from the queue; returns how many of them were past the
    /// queue's end (written from the tail).
    pub(super) fn consume(&mut self, mut written: usize) -> usize {
        while let Some(front) = self.chunks.front_mut() {
            if written < front.len() {
                front.advance(written);
                self.len -= written;
                return 0;
            }
            written -= front.len();
            self.len -= front.len();
            self.chunks.pop_front();
        }
        if self.chunks.capacity() > 16 {
            // A connection that went quiet keeps no queue allocation.
            self.chunks = VecDeque::new();
        }
        written
    }

    /// Everything queued followed by `write_buf`, as one buffer (copied; for handing the
    /// connection over on upgrade).
    pub(super) fn take_all(&mut self, write_buf: BytesMut) -> BytesMut {
        if self.chunks.is_empty() {
            return write_buf;
        }
        let mut all = BytesMut::with_capacity(self.len + write_buf.len());
        for chunk in self.chunks.drain(..) {
            all.extend_from_slice(&chunk);
        }
        all.extend_from_slice(&write_buf);
        self.len = 0;
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(queue: &SharedChunks, tail: &[u8]) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let n = queue.slices(tail, &mut slices);
        slices[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn queued_chunks_go_before_the_buffer_and_in_order() {
        let mut queue = SharedChunks::default();
        let mut buf = BytesMut::from(&b"head"[..]);
        let body = Bytes::from(vec![b'x'; 300]);
        queue.push(&mut buf, body.clone());
        assert!(buf.is_empty(), "the buffer's bytes moved into the queue");
        buf.extend_from_slice(b"tail");
        let mut want = b"head".to_vec();
        want.extend_from_slice(&body);
        want.extend_from_slice(b"tail");
        assert_eq!(written(&queue, &buf), want);
        assert_eq!(queue.len(), 304);
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut queue = SharedChunks::default();
        let mut buf = BytesMut::new();
        queue.push(&mut buf, Bytes::from_static(b"abc"));
        queue.push(&mut buf, Bytes::from_static(b"defg"));
        buf.extend_from_slice(b"hi");
        assert_eq!(queue.consume(2), 0);
        assert_eq!(written(&queue, &buf), b"cdefghi");
        assert_eq!(queue.consume(3), 0);
        assert_eq!(written(&queue, &buf), b"fghi");
        // Through the queue's end and one byte into the tail.
        assert_eq!(queue.consume(3), 1);
        assert!(queue.is_empty());
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn more_chunks_than_slots_leave_the_tail_for_a_later_write() {
        let mut queue = SharedChunks::default();
        let mut buf = BytesMut::new();
        for _ in 0..MAX_SLICES + 1 {
            queue.push(&mut buf, Bytes::from_static(b"c"));
        }
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        assert_eq!(queue.slices(b"tail", &mut slices), MAX_SLICES);
        assert_eq!(queue.consume(MAX_SLICES), 0);
        assert_eq!(written(&queue, b"tail"), b"ctail");
    }

    #[test]
    fn take_all_keeps_the_order() {
        let mut queue = SharedChunks::default();
        let mut buf = BytesMut::from(&b"a"[..]);
        queue.push(&mut buf, Bytes::from_static(b"b"));
        buf.extend_from_slice(b"c");
        assert_eq!(&queue.take_all(buf)[..], b"abc");
        assert!(queue.is_empty());
    }
}
