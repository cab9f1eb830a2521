//! Engine.IO v4 / Socket.IO v5 over the WebSocket transport
//! (`/socket.io/?EIO=4&transport=websocket`), the packets a socket.io 4
//! client exchanges on the default namespace:
//!
//! - server `0{"sid":…,"pingInterval":…}` (Engine.IO open), client `40`
//!   (Socket.IO connect), server `40{"sid":…}`;
//! - events `42["name",args…]`, with an ack id `42<id>[…]`, answered by
//!   `43<id>[…]`;
//! - the server pings with `2`, the client answers `3`.
//!
//! Every WebSocket text frame carries exactly one Engine.IO packet.

/// The handshake path and query.
pub const PATH: &str = "/socket.io/?EIO=4&transport=websocket";
/// Socket.IO connect to the default namespace.
pub const CONNECT: &str = "40";
/// Engine.IO pong.
pub const PONG: &str = "3";

/// `42[<json args…>]` or `42<ack>[…]`: an event; `args` are JSON texts
/// (the event name is the first, quoted).
pub fn event(ack: Option<u64>, args: &[&str]) -> String {
    let mut out = String::from("42");
    if let Some(id) = ack {
        out.push_str(&id.to_string());
    }
    out.push('[');
    out.push_str(&args.join(","));
    out.push(']');
    out
}

/// A packet from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Engine.IO open (`0{…}`).
    Open,
    /// Engine.IO ping (`2`): answer [`PONG`].
    Ping,
    /// Socket.IO connect ack (`40{"sid":…}`).
    Connected,
    /// Socket.IO connect error (`44{…}`).
    ConnectError(&'a str),
    /// `42[…]`: an event; `json` is the argument array (name first).
    Event {
        /// Ack id requested by the sender.
        ack: Option<u64>,
        /// The JSON array text.
        json: &'a str,
    },
    /// `43<id>[…]`: the answer to an event we sent with ack `id`.
    Ack {
        /// The id of our event.
        id: u64,
        /// The JSON array text.
        json: &'a str,
    },
    /// Engine.IO close (`1`) or Socket.IO disconnect (`41`).
    Close,
    /// Anything else (noop, binary events…).
    Other,
}

/// Parses one text frame.
pub fn parse(text: &str) -> Packet<'_> {
    let b = text.as_bytes();
    match b.first() {
        Some(b'0') => Packet::Open,
        Some(b'1') => Packet::Close,
        Some(b'2') => Packet::Ping,
        Some(b'4') => {
            let rest = &text[1..];
            let Some(kind) = rest.as_bytes().first() else {
                return Packet::Other;
            };
            let mut body = &rest[1..];
            // a namespace other than "/" would come as "/nsp," first
            if body.starts_with('/') {
                body = body.find(',').map_or("", |i| &body[i + 1..]);
            }
            let digits = body.bytes().take_while(u8::is_ascii_digit).count();
            let id = body[..digits].parse::<u64>().ok();
            let json = &body[digits..];
            match kind {
                b'0' => Packet::Connected,
                b'1' => Packet::Close,
                b'2' => Packet::Event { ack: id, json },
                b'3' => match id {
                    Some(id) => Packet::Ack { id, json },
                    None => Packet::Other,
                },
                b'4' => Packet::ConnectError(json),
                _ => Packet::Other,
            }
        }
        _ => Packet::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_events() {
        assert_eq!(
            event(None, &["\"subscribe\"", "\"t\""]),
            r#"42["subscribe","t"]"#
        );
        assert_eq!(
            event(
                Some(12),
                &["\"publish\"", r#"{"topic":"t","data":{"t":1}}"#]
            ),
            r#"4212["publish",{"topic":"t","data":{"t":1}}]"#
        );
    }

    #[test]
    fn parses_server_packets() {
        assert_eq!(
            parse(
                r#"0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
            ),
            Packet::Open
        );
        assert_eq!(parse(r#"40{"sid":"xyz"}"#), Packet::Connected);
        assert_eq!(parse("2"), Packet::Ping);
        assert_eq!(
            parse(r#"42["msg","t",7,{"t":5}]"#),
            Packet::Event {
                ack: None,
                json: r#"["msg","t",7,{"t":5}]"#
            }
        );
        assert_eq!(
            parse(r#"4213["ping"]"#),
            Packet::Event {
                ack: Some(13),
                json: r#"["ping"]"#
            }
        );
        assert_eq!(
            parse("4312[42]"),
            Packet::Ack {
                id: 12,
                json: "[42]"
            }
        );
        assert_eq!(
            parse(r#"43/admin,5["ok"]"#),
            Packet::Ack {
                id: 5,
                json: r#"["ok"]"#
            }
        );
        assert_eq!(
            parse(r#"44{"message":"nope"}"#),
            Packet::ConnectError(r#"{"message":"nope"}"#)
        );
        assert_eq!(parse("41"), Packet::Close);
        assert_eq!(parse("1"), Packet::Close);
        assert_eq!(parse("6"), Packet::Other);
        assert_eq!(parse(""), Packet::Other);
    }
}
