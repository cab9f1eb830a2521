//! RFC 6455 frames: the header, masking, and close payloads.
//!
//! Herald reads the header of every client frame itself so that a frame's
//! declared length is checked against the limit *before* any of its payload
//! is buffered (a header can declare 2^63 bytes), and writes server frames
//! whose bytes are built once per message and shared by every subscriber.
//! Reassembly of fragmented messages and UTF-8 checks live in the
//! connection's decoder (`transport::ws::codec`).

use bytes::{BufMut, Bytes, BytesMut};

/// Largest payload of a control frame (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// Longest frame header: 2 bytes, 8 of extended length, 4 of mask.
pub const MAX_HEADER_LEN: usize = 14;

/// A frame's opcode (RFC 6455 §5.2); reserved values are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// Continues a fragmented message.
    Continuation,
    /// A UTF-8 text message (or its first fragment).
    Text,
    /// A binary message (or its first fragment).
    Binary,
    /// Close.
    Close,
    /// Ping.
    Ping,
    /// Pong.
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0 => OpCode::Continuation,
            1 => OpCode::Text,
            2 => OpCode::Binary,
            8 => OpCode::Close,
            9 => OpCode::Ping,
            10 => OpCode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0,
            OpCode::Text => 1,
            OpCode::Binary => 2,
            OpCode::Close => 8,
            OpCode::Ping => 9,
            OpCode::Pong => 10,
        }
    }

    /// Whether this is a control frame (close, ping, pong).
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Last fragment of its message.
    pub fin: bool,
    /// What the frame carries.
    pub opcode: OpCode,
    /// The client's masking key (every client frame has one).
    pub mask: [u8; 4],
    /// Declared payload length.
    pub payload_len: u64,
    /// Bytes the header occupies.
    pub header_len: usize,
}

/// A header that breaks RFC 6455: the connection fails with 1002.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// RSV bits set without a negotiated extension.
    #[error("reserved bits set")]
    ReservedBits,
    /// An opcode RFC 6455 reserves.
    #[error("reserved opcode {0}")]
    ReservedOpcode(u8),
    /// A client frame without a mask.
    #[error("client frames must be masked")]
    Unmasked,
    /// A fragmented control frame.
    #[error("control frames cannot be fragmented")]
    FragmentedControl,
    /// A control frame longer than 125 bytes.
    #[error("control frame longer than 125 bytes")]
    LongControl,
    /// A 64-bit length with its top bit set.
    #[error("payload length out of range")]
    BadLength,
}

/// Parses a client frame's header from the start of `buf`: `Ok(None)` while
/// `buf` holds less than the whole header.
pub fn parse_client_header(buf: &[u8]) -> Result<Option<FrameHeader>, HeaderError> {
    let [first, second, ..] = *buf else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return Err(HeaderError::ReservedBits);
    }
    let opcode =
        OpCode::from_bits(first & 0x0f).ok_or(HeaderError::ReservedOpcode(first & 0x0f))?;
    let fin = first & 0x80 != 0;
    if second & 0x80 == 0 {
        return Err(HeaderError::Unmasked);
    }
    let (payload_len, at) = match second & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let len = u64::from_be_bytes(b.try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return Err(HeaderError::BadLength);
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if opcode.is_control() {
        if !fin {
            return Err(HeaderError::FragmentedControl);
        }
        if payload_len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(HeaderError::LongControl);
        }
    }
    let Some(mask) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    Ok(Some(FrameHeader {
        fin,
        opcode,
        mask: mask.try_into().expect("4 bytes"),
        payload_len,
        header_len: at + 4,
    }))
}

/// Unmasks (or masks) `payload`, whose first byte is at `offset` bytes into
/// its frame's payload.
pub fn apply_mask(payload: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut key = [0u8; 8];
    for (i, k) in key.iter_mut().enumerate() {
        *k = mask[(offset + i) % 4];
    }
    let key = u64::from_ne_bytes(key);
    let mut words = payload.chunks_exact_mut(8);
    for word in &mut words {
        let w = u64::from_ne_bytes((&*word).try_into().expect("8 bytes")) ^ key;
        word.copy_from_slice(&w.to_ne_bytes());
    }
    let rest = words.into_remainder();
    let key = key.to_ne_bytes();
    for (i, b) in rest.iter_mut().enumerate() {
        *b ^= key[i];
    }
}

/// Appends an unmasked server frame header for a final frame.
pub fn put_header(dst: &mut BytesMut, opcode: OpCode, payload_len: usize) {
    let first = 0x80 | opcode.bits();
    if payload_len < 126 {
        dst.put_slice(&[first, payload_len as u8]);
    } else if let Ok(len) = u16::try_from(payload_len) {
        dst.put_slice(&[first, 126]);
        dst.put_u16(len);
    } else {
        dst.put_slice(&[first, 127]);
        dst.put_u64(payload_len as u64);
    }
}

/// Bytes of the header [`put_header`] writes for `payload_len`.
pub fn header_len(payload_len: usize) -> usize {
    match payload_len {
        0..=125 => 2,
        126..=0xffff => 4,
        _ => 10,
    }
}

/// One whole unmasked server frame.
pub fn frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(header_len(payload.len()) + payload.len());
    put_header(&mut buf, opcode, payload.len());
    buf.put_slice(payload);
    buf.freeze()
}

/// A close frame with `code` and `reason` (cut to fit 125 bytes at a char
/// boundary).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    frame(OpCode::Close, &payload)
}

/// A close frame's payload that breaks RFC 6455.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CloseError {
    /// One byte, or a code no endpoint may send (1002).
    #[error("invalid close code")]
    BadCode,
    /// A reason that is not UTF-8 (1007).
    #[error("close reason is not UTF-8")]
    BadReason,
}

/// The code of a close frame's payload (`None` when it has none).
pub fn parse_close(payload: &[u8]) -> Result<Option<u16>, CloseError> {
    match payload {
        [] => Ok(None),
        [_] => Err(CloseError::BadCode),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            // 1004-1006 and 1015 are never sent; 1016-2999 are unassigned.
            if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                return Err(CloseError::BadCode);
            }
            std::str::from_utf8(reason).map_err(|_| CloseError::BadReason)?;
            Ok(Some(code))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn client_frame(opcode: u8, fin: bool, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        let mut body = payload.to_vec();
        apply_mask(&mut body, mask, 0);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn a_huge_declared_length_is_known_from_the_header_alone() {
        let mut wire = vec![0x81, 0xff];
        wire.extend_from_slice(&(1u64 << 40).to_be_bytes());
        wire.extend_from_slice(&[1, 2, 3, 4]);
        let header = parse_client_header(&wire).unwrap().unwrap();
        assert_eq!(header.payload_len, 1 << 40);
        assert_eq!(header.header_len, 14);
        wire[2] = 0x80;
        assert_eq!(parse_client_header(&wire), Err(HeaderError::BadLength));
    }

    #[test]
    fn refuses_what_rfc_6455_forbids() {
        let ok = client_frame(1, true, b"hi", [1, 2, 3, 4]);
        assert!(parse_client_header(&ok).unwrap().is_some());
        let mut rsv = ok.clone();
        rsv[0] |= 0x40;
        assert_eq!(parse_client_header(&rsv), Err(HeaderError::ReservedBits));
        let mut unmasked = ok.clone();
        unmasked[1] &= 0x7f;
        assert_eq!(parse_client_header(&unmasked), Err(HeaderError::Unmasked));
        for op in [3, 7, 11, 15] {
            let f = client_frame(op, true, b"", [0; 4]);
            assert_eq!(
                parse_client_header(&f),
                Err(HeaderError::ReservedOpcode(op))
            );
        }
        let f = client_frame(9, false, b"", [0; 4]);
        assert_eq!(parse_client_header(&f), Err(HeaderError::FragmentedControl));
        let f = client_frame(9, true, &[0; 126], [0; 4]);
        assert_eq!(parse_client_header(&f), Err(HeaderError::LongControl));
    }

    #[test]
    fn close_payloads() {
        assert_eq!(parse_close(b""), Ok(None));
        assert_eq!(parse_close(b"\x03"), Err(CloseError::BadCode));
        assert_eq!(parse_close(b"\x03\xe8bye"), Ok(Some(1000)));
        assert_eq!(parse_close(b"\x03\xed"), Err(CloseError::BadCode)); // 1005
        assert_eq!(parse_close(b"\x03\xe8\xff"), Err(CloseError::BadReason));
        let frame = close_frame(4001, &"é".repeat(100));
        assert_eq!(frame[1] as usize, frame.len() - 2);
        assert!(frame.len() - 2 <= MAX_CONTROL_PAYLOAD);
        assert!(parse_close(&frame[2..]).unwrap().is_some());
    }

    proptest! {
        /// Every header is read back as written, from any prefix length:
        /// too short is `None`, never an error or a wrong length.
        #[test]
        fn headers_round_trip(
            opcode in prop::sample::select(vec![0u8, 1, 2]),
            fin: bool,
            len in prop::sample::select(vec![0usize, 1, 125, 126, 127, 65535, 65536, 70000]),
            mask: [u8; 4],
        ) {
            let wire = client_frame(opcode, fin, &vec![7u8; len], mask);
            let header = parse_client_header(&wire).unwrap().unwrap();
            prop_assert_eq!(header.fin, fin);
            prop_assert_eq!(header.payload_len as usize, len);
            prop_assert_eq!(header.mask, mask);
            prop_assert_eq!(wire.len() - header.header_len, len);
            for cut in 0..header.header_len {
                prop_assert_eq!(parse_client_header(&wire[..cut]), Ok(None));
            }
        }

        /// Masking in pieces at any offsets equals masking at once.
        #[test]
        fn masking_in_pieces(data: Vec<u8>, mask: [u8; 4], cut in 0usize..64) {
            let mut whole = data.clone();
            apply_mask(&mut whole, mask, 0);
            let cut = cut.min(data.len());
            let mut pieces = data.clone();
            let (a, b) = pieces.split_at_mut(cut);
            apply_mask(a, mask, 0);
            apply_mask(b, mask, cut);
            prop_assert_eq!(&whole, &pieces);
            let naive: Vec<u8> = data.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
            prop_assert_eq!(whole, naive);
        }

        /// Server frames decode with an independent implementation.
        #[test]
        fn server_frames_decode_with_tungstenite(len in 0usize..70_000) {
            use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader as Th;
            let payload = vec![b'x'; len];
            let wire = frame(OpCode::Binary, &payload);
            let mut cursor = std::io::Cursor::new(&wire[..]);
            let (header, length) = Th::parse(&mut cursor).unwrap().unwrap();
            prop_assert!(header.is_final);
            prop_assert!(header.mask.is_none());
            prop_assert_eq!(length as usize, len);
            prop_assert_eq!(cursor.position() as usize, header_len(len));
        }
    }
}
