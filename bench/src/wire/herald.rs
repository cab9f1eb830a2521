//! Herald's WebSocket ops (`/v1/ws`, text JSON; see `/work/shared/CONTRACT.md`)
//! as the generator sends and recognises them, without a full JSON parse on
//! the delivery path.

/// `{"op":"subscribe","id":"s","topic":T}`.
pub fn subscribe(topic: &str) -> String {
    format!(r#"{{"op":"subscribe","id":"s","topic":"{topic}"}}"#)
}

/// `{"op":"publish","id":ID,"topic":T,"data":DATA}`; `data` is JSON text.
pub fn publish(topic: &str, id: u64, data: &str) -> String {
    format!(r#"{{"op":"publish","id":"{id}","topic":"{topic}","data":{data}}}"#)
}

/// [`publish`] with an `idempotency_key`, as the official clients send.
pub fn publish_keyed(topic: &str, id: u64, data: &str, key: &str) -> String {
    format!(
        r#"{{"op":"publish","id":"{id}","topic":"{topic}","data":{data},"idempotency_key":"{key}"}}"#
    )
}

/// What a server frame is, by its leading `"type"`.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// `{"type":"message",…}`: a delivery.
    Message,
    /// `{"type":"ack",…}`: a publish was accepted.
    Ack,
    /// `{"type":"subscribed",…}`.
    Subscribed,
    /// `{"type":"error",…}`, `gap`, or anything else unexpected.
    Other,
}

/// Classifies a server frame (the server writes `type` first).
pub fn classify(frame: impl AsRef<[u8]>) -> Frame {
    let frame = frame.as_ref();
    if frame.starts_with(br#"{"type":"message""#) {
        return Frame::Message;
    }
    let head = &frame[..frame.len().min(24)];
    let has = |s: &[u8]| head.windows(s.len()).any(|w| w == s);
    if has(b"\"message\"") {
        Frame::Message
    } else if has(b"\"ack\"") {
        Frame::Ack
    } else if has(b"\"subscribed\"") {
        Frame::Subscribed
    } else {
        Frame::Other
    }
}

/// The numeric `id` of an `ack` or `error` frame (the generator's publishes
/// use numbers as ids), to match it with its publish.
pub fn frame_id(frame: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"id\":\"";
    let at = memchr::memmem::find(frame, KEY)? + KEY.len();
    let digits = frame[at..].iter().take_while(|b| b.is_ascii_digit());
    let (v, n) = digits.fold((0u64, 0usize), |(v, n), &b| {
        (v.wrapping_mul(10).wrapping_add(u64::from(b - b'0')), n + 1)
    });
    (n > 0).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        assert_eq!(
            publish("a.b", 7, r#"{"t":1}"#),
            r#"{"op":"publish","id":"7","topic":"a.b","data":{"t":1}}"#
        );
        let keyed: serde_json::Value =
            serde_json::from_str(&publish_keyed("a.b", 7, "1", "k-7")).unwrap();
        assert_eq!(keyed["idempotency_key"], "k-7");
        assert_eq!(keyed["data"], 1);
        let v: serde_json::Value = serde_json::from_str(&subscribe("x")).unwrap();
        assert_eq!(v["op"], "subscribe");
        assert_eq!(
            classify(r#"{"type":"message","topic":"x","seq":1,"ts":2,"data":1}"#),
            Frame::Message
        );
        assert_eq!(
            classify(r#"{"type":"ack","id":"3","topic":"x","seq":1}"#),
            Frame::Ack
        );
        assert_eq!(
            frame_id(br#"{"type":"ack","id":"3071","topic":"x","seq":1}"#),
            Some(3071)
        );
        assert_eq!(frame_id(br#"{"type":"ack","id":"s","topic":"x"}"#), None);
        assert_eq!(
            classify(r#"{"type":"subscribed","id":"s","topic":"x"}"#),
            Frame::Subscribed
        );
        assert_eq!(
            classify(r#"{"type":"error","code":"x","message":"ack"}"#),
            Frame::Other
        );
    }
}
