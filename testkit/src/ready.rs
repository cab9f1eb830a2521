//! The ready line `herald serve` prints on stdout once it serves.

use std::net::SocketAddr;

/// Where a started node serves, read from its ready line:
/// `{"listening":"http://127.0.0.1:40123","addr":"127.0.0.1:40123","node":"n1"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// The bound address.
    pub addr: SocketAddr,
    /// The base URL (`http://…`, or `https://…` with TLS).
    pub url: String,
    /// The node id.
    pub node: String,
}

impl Ready {
    /// The ready line's fields, or `None` for any other line (a log line,
    /// even a JSON one, has no `listening` field).
    pub fn parse(line: &str) -> Option<Ready> {
        let line = line.trim();
        if !line.starts_with('{') {
            return None;
        }
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        Some(Ready {
            url: value.get("listening")?.as_str()?.to_string(),
            addr: value.get("addr")?.as_str()?.parse().ok()?,
            node: value.get("node")?.as_str()?.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_ready_line_and_nothing_else() {
        let ready = Ready::parse(
            r#"{"listening":"https://127.0.0.1:40123","addr":"127.0.0.1:40123","node":"n1"}"#,
        )
        .expect("a ready line");
        assert_eq!(ready.addr, "127.0.0.1:40123".parse().unwrap());
        assert_eq!(ready.url, "https://127.0.0.1:40123");
        assert_eq!(ready.node, "n1");
        // The log line that announces the same address is not the ready line.
        assert_eq!(
            Ready::parse(
                "INFO herald::server: herald listening on http://127.0.0.1:9 addr=127.0.0.1:9"
            ),
            None
        );
        assert_eq!(
            Ready::parse(
                r#"{"level":"INFO","fields":{"message":"herald listening","addr":"127.0.0.1:9"}}"#
            ),
            None
        );
        assert_eq!(
            Ready::parse(r#"{"listening":"http://x","addr":"nope","node":"n1"}"#),
            None
        );
    }
}
