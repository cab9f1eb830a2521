//! The client side of RFC 6455 as the generator needs it: the upgrade
//! request and response, masked client frames, and an incremental reader of
//! server frames that parses a whole socket read at once.
//!
//! The subscriber fleet used tokio-tungstenite before. Per delivery it cost a
//! waker registration, a frame allocation, two UTF-8 checks and a clock read:
//! about half the generator's CPU. The generator shares two cores with the
//! server it measures, so that CPU came out of every system's figure. No
//! extension is offered, so frames carry no RSV bits and are not compressed.

/// Continuation frame.
pub const OP_CONT: u8 = 0x0;
/// Text frame.
pub const OP_TEXT: u8 = 0x1;
/// Binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame.
pub const OP_PING: u8 = 0x9;
/// Pong frame.
pub const OP_PONG: u8 = 0xA;

/// A message larger than this is a protocol error here (no system under test
/// sends one; it bounds what a broken peer can make the generator buffer).
const MAX_MESSAGE: usize = 64 << 20;

/// The `Sec-WebSocket-Key` of every connection (RFC 6455's example nonce:
/// the generator authenticates nothing, and a fixed key lets the answer be
/// checked without SHA-1).
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// The `Sec-WebSocket-Accept` a server must answer [`KEY`] with.
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The upgrade request for `path` on `host`.
pub fn handshake_request(host: &str, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Checks the server's answer to [`handshake_request`]: `Ok(None)` until the
/// head is complete, then the head's length (bytes after it are frames).
pub fn handshake_response(buf: &[u8]) -> Result<Option<usize>, String> {
    let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        if buf.len() > 16 << 10 {
            return Err("upgrade response head over 16 KiB".into());
        }
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split_ascii_whitespace().nth(1) != Some("101") {
        return Err(format!("upgrade refused: {status}"));
    }
    let accepted = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == ACCEPT
        })
    });
    if !accepted {
        return Err("upgrade response without the right Sec-WebSocket-Accept".into());
    }
    Ok(Some(end + 4))
}

/// Appends one final client frame (masked with `mask`, as a client must).
pub fn encode(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
}

/// A message or control frame from the server.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// [`OP_TEXT`], [`OP_BINARY`] (whole messages, reassembled) or a control
    /// opcode.
    pub opcode: u8,
    /// The unmasked payload.
    pub payload: &'a [u8],
}

/// Buffers what the socket gave and yields whole frames.
#[derive(Default)]
pub struct Reader {
    buf: Vec<u8>,
    start: usize,
    /// Opcode and payload so far of a fragmented message.
    partial: Option<(u8, Vec<u8>)>,
    /// The last reassembled message (what a [`Frame`] borrows).
    assembled: Vec<u8>,
}

impl Reader {
    /// The buffer to read more bytes into (append only), with consumed
    /// bytes dropped and room for at least 16 KiB more.
    pub fn buf_for_read(&mut self) -> &mut Vec<u8> {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > self.buf.capacity() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(16 << 10);
        &mut self.buf
    }

    /// Bytes received but not consumed.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Marks `n` pending bytes consumed (the upgrade response head).
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
    }

    /// The next whole message or control frame; `Ok(None)` when more bytes
    /// are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, String> {
        loop {
            let Some(h) = parse_header(&self.buf[self.start..])? else {
                return Ok(None);
            };
            let payload = self.start + h.payload_at..self.start + h.used;
            self.start += h.used;
            if h.opcode >= OP_CLOSE {
                if !h.fin {
                    return Err("fragmented control frame".into());
                }
                return Ok(Some(Frame {
                    opcode: h.opcode,
                    payload: &self.buf[payload],
                }));
            }
            match (h.opcode, &mut self.partial) {
                (OP_CONT, None) => return Err("continuation frame without a start".into()),
                (OP_CONT, Some((_, so_far))) => {
                    if so_far.len() + payload.len() > MAX_MESSAGE {
                        return Err("message over 64 MiB".into());
                    }
                    so_far.extend_from_slice(&self.buf[payload]);
                    if h.fin {
                        let (opcode, whole) = self.partial.take().expect("matched Some");
                        self.assembled = whole;
                        return Ok(Some(Frame {
                            opcode,
                            payload: &self.assembled,
                        }));
                    }
                }
                (_, Some(_)) => return Err("new message inside a fragmented one".into()),
                (opcode, None) if h.fin => {
                    return Ok(Some(Frame {
                        opcode,
                        payload: &self.buf[payload],
                    }))
                }
                (opcode, None) => self.partial = Some((opcode, self.buf[payload].to_vec())),
            }
        }
    }
}

/// A parsed frame header: where the payload starts and the frame ends,
/// relative to the frame's first byte.
struct Header {
    fin: bool,
    opcode: u8,
    payload_at: usize,
    used: usize,
}

/// The header of the frame at the start of `b`, once all of the frame is
/// there.
fn parse_header(b: &[u8]) -> Result<Option<Header>, String> {
    let [b0, b1, ..] = *b else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err("RSV bits set without an extension".into());
    }
    if b1 & 0x80 != 0 {
        return Err("masked frame from the server".into());
    }
    let opcode = b0 & 0x0F;
    if !matches!(
        opcode,
        OP_CONT | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(format!("reserved opcode {opcode:#x}"));
    }
    let (len, payload_at) = match b1 & 0x7F {
        126 => match b.get(2..4) {
            Some(n) => (u64::from(u16::from_be_bytes([n[0], n[1]])), 4),
            None => return Ok(None),
        },
        127 => match b.get(2..10) {
            Some(n) => (u64::from_be_bytes(n.try_into().expect("8 bytes")), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if len > MAX_MESSAGE as u64 {
        return Err(format!("frame of {len} bytes"));
    }
    let used = payload_at + len as usize;
    if b.len() < used {
        return Ok(None);
    }
    Ok(Some(Header {
        fin: b0 & 0x80 != 0,
        opcode,
        payload_at,
        used,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server frame (unmasked).
    fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n if n <= 0xFFFF => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    fn frames(r: &mut Reader) -> Vec<(u8, Vec<u8>)> {
        let mut got = Vec::new();
        while let Some(f) = r.next_frame().unwrap() {
            got.push((f.opcode, f.payload.to_vec()));
        }
        got
    }

    #[test]
    fn frames_split_anywhere_come_out_whole_and_in_order() {
        let big = vec![b'x'; 70_000];
        let mut wire = server_frame(true, OP_TEXT, b"hello");
        wire.extend(server_frame(true, OP_BINARY, &vec![7; 300]));
        wire.extend(server_frame(true, OP_PING, b"p"));
        wire.extend(server_frame(true, OP_TEXT, &big));
        wire.extend(server_frame(true, OP_TEXT, b""));
        let want = vec![
            (OP_TEXT, b"hello".to_vec()),
            (OP_BINARY, vec![7; 300]),
            (OP_PING, b"p".to_vec()),
            (OP_TEXT, big.clone()),
            (OP_TEXT, Vec::new()),
        ];
        for step in [1, 2, 3, 7, 126, 4096, wire.len()] {
            let mut r = Reader::default();
            let mut got = Vec::new();
            for chunk in wire.chunks(step) {
                r.buf_for_read().extend_from_slice(chunk);
                got.extend(frames(&mut r));
            }
            assert_eq!(got, want, "fed {step} bytes at a time");
            assert!(r.pending().is_empty());
        }
    }

    #[test]
    fn fragments_are_reassembled_around_control_frames() {
        let mut r = Reader::default();
        let buf = r.buf_for_read();
        buf.extend(server_frame(false, OP_TEXT, b"ab"));
        buf.extend(server_frame(true, OP_PING, b""));
        buf.extend(server_frame(false, OP_CONT, b"cd"));
        buf.extend(server_frame(true, OP_CONT, b"ef"));
        buf.extend(server_frame(true, OP_BINARY, b"g"));
        assert_eq!(
            frames(&mut r),
            vec![
                (OP_PING, Vec::new()),
                (OP_TEXT, b"abcdef".to_vec()),
                (OP_BINARY, b"g".to_vec())
            ]
        );
    }

    #[test]
    fn protocol_errors_are_errors() {
        for bad in [
            server_frame(true, OP_CONT, b"x"),
            server_frame(true, 0x3, b"x"),
            server_frame(false, OP_PING, b""),
            vec![0x81 | 0x40, 0],
            vec![0x81, 0x80 | 1, 0, 0, 0, 0, b'x'],
            [&[0x82, 127][..], &u64::MAX.to_be_bytes()].concat(),
        ] {
            let mut r = Reader::default();
            r.buf_for_read().extend_from_slice(&bad);
            assert!(r.next_frame().is_err(), "{bad:?}");
        }
        let mut r = Reader::default();
        let buf = r.buf_for_read();
        buf.extend(server_frame(false, OP_TEXT, b"a"));
        buf.extend(server_frame(true, OP_TEXT, b"b"));
        assert!(r.next_frame().is_err());
    }

    #[test]
    fn client_frames_are_masked_with_the_right_length_form() {
        let mask = [1, 2, 3, 4];
        for len in [0, 5, 125, 126, 65_535, 65_536] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = Vec::new();
            encode(&mut out, OP_BINARY, &payload, mask);
            assert_eq!(out[0], 0x82);
            assert_eq!(out[1] & 0x80, 0x80, "mask bit");
            let (n, at) = match out[1] & 0x7F {
                126 => (u16::from_be_bytes([out[2], out[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(out[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            assert_eq!(n, len);
            assert_eq!(&out[at..at + 4], &mask);
            let unmasked: Vec<u8> = out[at + 4..]
                .iter()
                .zip(mask.iter().cycle())
                .map(|(b, m)| b ^ m)
                .collect();
            assert_eq!(unmasked, payload);
        }
    }

    #[test]
    fn upgrade_response_is_checked() {
        let req = handshake_request("127.0.0.1:9", "/v1/ws");
        assert!(req.starts_with("GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"));
        assert!(req.ends_with("\r\n\r\n"));
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
             connection: Upgrade\r\nsec-websocket-accept: {ACCEPT}\r\n\r\n"
        );
        let mut ok = head.clone().into_bytes();
        ok.extend_from_slice(&[0x81, 1, b'x']);
        assert_eq!(handshake_response(&ok[..head.len() - 1]), Ok(None));
        assert_eq!(handshake_response(&ok), Ok(Some(head.len())));
        let wrong_accept = head.replace(ACCEPT, "AAAA");
        assert!(handshake_response(wrong_accept.as_bytes()).is_err());
        let refused = "HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n";
        let err = handshake_response(refused.as_bytes()).unwrap_err();
        assert!(err.contains("403"), "{err}");
    }
}
