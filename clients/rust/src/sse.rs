//! Server-Sent Events transport: `GET /v1/sse?topic=P&cursor=C`, one stream
//! per subscription; every block's `id:` is the cursor after it.

use futures_util::StreamExt;
use reqwest::{header, StatusCode, Url};

use crate::{
    client::{describe, endpoint, RequestError},
    cursor::{Cursor, Resume},
    decode,
    subscription::{Outcome, Ready, Runner},
    Error, Message, Transport,
};

/// An SSE event this client cannot decode.
fn undecodable(event: &str, e: Error) -> Error {
    Error::Protocol(format!("undecodable SSE {event} event: {e}"))
}

/// One SSE block (the lines up to a blank line).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Block {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
}

/// Incremental `text/event-stream` parser.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    buf: Vec<u8>,
    block: Block,
    has_fields: bool,
}

impl Parser {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete block, if the buffer holds one.
    pub fn next_block(&mut self) -> Option<Block> {
        loop {
            let end = self.buf.iter().position(|&b| b == b'\n')?;
            let mut line: Vec<u8> = self.buf.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.is_empty() {
                if std::mem::take(&mut self.has_fields) {
                    return Some(std::mem::take(&mut self.block));
                }
                continue;
            }
            if line[0] == b':' {
                continue;
            }
            let line = String::from_utf8_lossy(&line);
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_ref(), ""),
            };
            match field {
                "id" => self.block.id = Some(value.to_string()),
                "event" => self.block.event = Some(value.to_string()),
                "data" => match &mut self.block.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.block.data = Some(value.to_string()),
                },
                _ => continue,
            }
            self.has_fields = true;
        }
    }
}

/// `gap` event data.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct GapData {
    pub topic: String,
    pub from: u64,
    pub to: u64,
}

impl Runner {
    /// The `cursor` query parameter for a (re)connection over SSE or
    /// long-poll.
    pub(crate) fn http_cursor(&self) -> Option<String> {
        match self.progress.resume() {
            Resume::Live => None,
            Resume::Since(n) => Some(
                Cursor {
                    floor: 0,
                    positions: [(self.pattern.clone(), n)].into_iter().collect(),
                }
                .encode(),
            ),
            Resume::Cursor(c) => Some(c.encode()),
        }
    }

    pub(crate) async fn sse(&mut self, base: &Url, ready: &mut Ready) -> Outcome {
        let inner = self.inner.clone();
        let mut url = endpoint(base, &["v1", "sse"]);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("topic", &self.pattern);
            if let Some(cursor) = self.http_cursor() {
                query.append_pair("cursor", &cursor);
            }
        }
        let req = inner
            .authorize(inner.http.get(url))
            .header(header::ACCEPT, "text/event-stream");
        let res = match tokio::time::timeout(inner.request_timeout, req.send()).await {
            Err(_) => return Outcome::ConnectFailed("SSE request timed out".into()),
            Ok(Err(e)) => return Outcome::ConnectFailed(describe(&e)),
            Ok(Ok(res)) => res,
        };
        if res.status() != StatusCode::OK {
            let refused = RequestError::from_response(res).await;
            return if refused.fatal {
                Outcome::Fatal(refused.error)
            } else {
                Outcome::ConnectFailed(refused.error.to_string())
            };
        }
        let is_stream = res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_stream {
            return Outcome::ConnectFailed("the answer is not an event stream".into());
        }
        let mut body = res.bytes_stream();
        let mut parser = Parser::default();
        let mut established = false;
        let end = |established: bool, reason: String| {
            if established {
                Outcome::Disconnected(reason)
            } else {
                Outcome::ConnectFailed(reason)
            }
        };
        loop {
            let chunk = tokio::select! {
                chunk = tokio::time::timeout(inner.idle_timeout, body.next()) => chunk,
                _ = self.tx_closed() => return Outcome::Closed,
            };
            match chunk {
                Err(_) => return end(established, "no heartbeat from the server".into()),
                Ok(None) => return end(established, "the stream ended".into()),
                Ok(Some(Err(e))) => return end(established, describe(&e)),
                Ok(Some(Ok(bytes))) => parser.push(&bytes),
            }
            while let Some(block) = parser.next_block() {
                // An event that cannot be decoded ends the subscription with
                // the error: a reconnect would resume right before it again.
                let ok = match (block.event.as_deref(), block.data.as_deref()) {
                    (Some("message"), Some(data)) => match decode::from_str::<Message>(data) {
                        Ok(m) => self.message(m.topic, m.seq, m.ts, m.data).await,
                        Err(e) => return Outcome::Fatal(undecodable("message", e)),
                    },
                    (Some("gap"), Some(data)) => match decode::from_str::<GapData>(data) {
                        Ok(g) => self.gap(g.topic, g.from, g.to).await,
                        Err(e) => return Outcome::Fatal(undecodable("gap", e)),
                    },
                    _ => true,
                };
                if !ok {
                    return Outcome::Closed;
                }
                if let Some(id) = &block.id {
                    if !self.server_cursor(id).await {
                        return Outcome::Closed;
                    }
                    if !established {
                        established = true;
                        self.established(base, Transport::Sse, ready);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_blocks_across_chunks() {
        let mut p = Parser::default();
        p.push(b"retry: 1000\nid: 1~5\n\n: ping\nid: 1~6\n\nid: 1~7~a~1\r\nevent: message\r\ndata: {\"a\":");
        assert_eq!(
            p.next_block(),
            Some(Block {
                id: Some("1~5".into()),
                ..Block::default()
            })
        );
        assert_eq!(p.next_block().unwrap().id.as_deref(), Some("1~6"));
        assert_eq!(p.next_block(), None);
        p.push("1}\r\ndata: é\r\n\r\n".as_bytes());
        let b = p.next_block().unwrap();
        assert_eq!(b.event.as_deref(), Some("message"));
        assert_eq!(b.data.as_deref(), Some("{\"a\":1}\né"));
        assert_eq!(b.id.as_deref(), Some("1~7~a~1"));
        p.push(b": only a comment\n\n");
        assert_eq!(p.next_block(), None);
    }
}
