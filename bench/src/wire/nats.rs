//! The NATS client protocol (text, CRLF-terminated ops) as carried in
//! WebSocket binary frames by nats-server's `websocket {}` listener.
//!
//! An op may be split over frames or several ops may share one, so
//! [`Parser`] buffers bytes and yields whole ops.
//!
//! There is no publish ack in core NATS. The closest analogue, used for the
//! publisher's window, is a `PING` right after each `PUB`: the server
//! answers `PONG` once it has processed everything before it on that
//! connection (i.e. routed the message to every subscriber's outbound
//! buffer), so each `PONG` acknowledges one publish.
//!
//! JetStream does have one: a `PUB` with a reply subject, to a subject a
//! stream listens on, is answered on that subject with a PubAck
//! (`{"stream":"BENCH","seq":42}`) once the stream has stored it.

/// `CONNECT {…}\r\n` with no verbose `+OK`s and no pedantic checks.
pub const CONNECT: &str =
    "CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"lang\":\"rust\",\"name\":\"herald-bench\",\"headers\":true}\r\n";
/// `PING\r\n`.
pub const PING: &str = "PING\r\n";
/// `PONG\r\n`.
pub const PONG: &str = "PONG\r\n";

/// `SUB subject sid\r\n`.
pub fn sub(subject: &str, sid: u64) -> String {
    format!("SUB {subject} {sid}\r\n")
}

/// `PUB subject n\r\npayload\r\n`, followed by `PING\r\n` when `ping` (the
/// publisher's ack request).
pub fn publish(subject: &str, payload: &[u8], ping: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + subject.len() + 24);
    out.extend_from_slice(format!("PUB {subject} {}\r\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    if ping {
        out.extend_from_slice(PING.as_bytes());
    }
    out
}

/// `PUB subject reply n\r\npayload\r\n`: a publish whose JetStream PubAck
/// comes back on `reply`.
pub fn publish_with_reply(subject: &str, reply: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + subject.len() + reply.len() + 24);
    out.extend_from_slice(format!("PUB {subject} {reply} {}\r\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    out
}

/// [`publish_with_reply`] with a `Nats-Msg-Id` header (`HPUB`): JetStream
/// stores a message id once within its duplicate window, its counterpart of
/// an idempotency key.
pub fn publish_with_msg_id(subject: &str, reply: &str, msg_id: &str, payload: &[u8]) -> Vec<u8> {
    let headers = format!("NATS/1.0\r\nNats-Msg-Id: {msg_id}\r\n\r\n");
    let total = headers.len() + payload.len();
    let mut out = Vec::with_capacity(total + subject.len() + reply.len() + 32);
    out.extend_from_slice(
        format!("HPUB {subject} {reply} {} {total}\r\n", headers.len()).as_bytes(),
    );
    out.extend_from_slice(headers.as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    out
}

/// A JetStream API or PubAck answer: `Ok(seq)` (0 when the answer has no
/// `seq`, as API answers do), or the error's description.
pub fn js_answer(payload: &[u8]) -> Result<u64, String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        seq: u64,
        #[serde(default)]
        error: Option<serde_json::Value>,
    }
    let a: Answer = serde_json::from_slice(payload).map_err(|e| {
        format!(
            "unparsable JetStream answer ({e}): {}",
            String::from_utf8_lossy(&payload[..payload.len().min(200)])
        )
    })?;
    match a.error {
        Some(e) => Err(format!("JetStream error: {e}")),
        None => Ok(a.seq),
    }
}

/// One server op, borrowing from the [`Parser`].
#[derive(Debug, PartialEq, Eq)]
pub enum Op<'a> {
    /// `INFO {…}`.
    Info,
    /// `MSG subject sid [reply] n` + payload.
    Msg {
        /// Subject the message was published to.
        subject: &'a str,
        /// The subscription it is for.
        sid: &'a str,
        /// Payload bytes.
        payload: &'a [u8],
    },
    /// `PING` (must be answered with `PONG`).
    Ping,
    /// `PONG`.
    Pong,
    /// `+OK`.
    Ok,
    /// `-ERR '…'`.
    Err(&'a str),
}

/// Incremental parser of server ops. It allocates nothing per op: the
/// generator parses every delivery of the fleet, and what it spends comes out
/// of the CPU the server under test gets.
#[derive(Default)]
pub struct Parser {
    buf: Vec<u8>,
    start: usize,
}

impl Parser {
    /// Appends received bytes (ops already returned are dropped first).
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole op, `Ok(None)` when more bytes are needed.
    pub fn next_op(&mut self) -> Result<Option<Op<'_>>, String> {
        let rest = &self.buf[self.start..];
        let Some(eol) = memchr::memmem::find(rest, b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&rest[..eol]).map_err(|_| "non-UTF-8 op line")?;
        let (verb, args) = line.split_once(' ').unwrap_or((line, ""));
        let is = |v: &str| verb.eq_ignore_ascii_case(v);
        let (op, used) = if is("MSG") {
            let mut words = args.split_ascii_whitespace();
            let (Some(subject), Some(sid), Some(third)) =
                (words.next(), words.next(), words.next())
            else {
                return Err(format!("bad MSG line: {line}"));
            };
            // `MSG subject sid [reply-to] size`
            let size = match (words.next(), words.next()) {
                (None, _) => third,
                (Some(size), None) => size,
                _ => return Err(format!("bad MSG line: {line}")),
            };
            let n: usize = size.parse().map_err(|_| format!("bad MSG size: {line}"))?;
            let body = eol + 2;
            if rest.len() < body + n + 2 {
                return Ok(None);
            }
            let op = Op::Msg {
                subject,
                sid,
                payload: &rest[body..body + n],
            };
            (op, body + n + 2)
        } else if is("INFO") {
            (Op::Info, eol + 2)
        } else if is("PING") {
            (Op::Ping, eol + 2)
        } else if is("PONG") {
            (Op::Pong, eol + 2)
        } else if is("+OK") {
            (Op::Ok, eol + 2)
        } else if is("-ERR") {
            (Op::Err(args.trim()), eol + 2)
        } else {
            return Err(format!("unknown op: {line}"));
        };
        self.start += used;
        Ok(Some(op))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_client_ops() {
        assert_eq!(sub("bench.f", 1), "SUB bench.f 1\r\n");
        assert_eq!(publish("a", b"hello", false), b"PUB a 5\r\nhello\r\n");
        assert_eq!(
            publish("a.b", b"{}", true),
            b"PUB a.b 2\r\n{}\r\nPING\r\n".to_vec()
        );
        assert_eq!(
            publish_with_reply("a", "_INBOX.x.7", b"{}"),
            b"PUB a _INBOX.x.7 2\r\n{}\r\n".to_vec()
        );
        // HPUB subject reply <header bytes> <total bytes>.
        assert_eq!(
            publish_with_msg_id("a", "_INBOX.x.7", "k-1", b"{}"),
            b"HPUB a _INBOX.x.7 30 32\r\nNATS/1.0\r\nNats-Msg-Id: k-1\r\n\r\n{}\r\n".to_vec()
        );
        assert!(CONNECT.starts_with("CONNECT {") && CONNECT.ends_with("}\r\n"));
        let json = &CONNECT[8..CONNECT.len() - 2];
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["verbose"], false);
    }

    #[test]
    fn jetstream_answers() {
        assert_eq!(js_answer(br#"{"stream":"BENCH","seq":42}"#), Ok(42));
        assert_eq!(
            js_answer(br#"{"type":"io.nats.jetstream.api.v1.stream_create_response","config":{}}"#),
            Ok(0)
        );
        let e = js_answer(
            br#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}"#,
        )
        .unwrap_err();
        assert!(e.contains("maximum messages exceeded"), "{e}");
        assert!(js_answer(b"nope").is_err());
    }

    #[test]
    fn parses_ops_split_and_merged_across_frames() {
        let mut p = Parser::default();
        p.feed(b"INFO {\"server_id\":\"x\"}\r\nPI");
        assert_eq!(p.next_op().unwrap(), Some(Op::Info));
        assert_eq!(p.next_op().unwrap(), None);
        p.feed(b"NG\r\nMSG a.b 1 5\r\nhel");
        assert_eq!(p.next_op().unwrap(), Some(Op::Ping));
        assert_eq!(p.next_op().unwrap(), None);
        p.feed(b"lo\r\nMSG a.b 1 _INBOX.x 2\r\n\r\n\r\nPONG\r\n+OK\r\n");
        assert_eq!(
            p.next_op().unwrap(),
            Some(Op::Msg {
                subject: "a.b",
                sid: "1",
                payload: b"hello"
            })
        );
        // a payload may contain CRLF itself
        assert_eq!(
            p.next_op().unwrap(),
            Some(Op::Msg {
                subject: "a.b",
                sid: "1",
                payload: b"\r\n"
            })
        );
        assert_eq!(p.next_op().unwrap(), Some(Op::Pong));
        assert_eq!(p.next_op().unwrap(), Some(Op::Ok));
        assert_eq!(p.next_op().unwrap(), None);
        p.feed(b"-ERR 'Slow Consumer'\r\n");
        assert_eq!(p.next_op().unwrap(), Some(Op::Err("'Slow Consumer'")));
        p.feed(b"BOGUS\r\n");
        assert!(p.next_op().is_err());
    }
}
