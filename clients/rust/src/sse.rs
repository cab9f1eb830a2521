//! Server-Sent Events transport: one `GET /v1/sse?topic=P1&topic=P2&cursor=C`
//! stream for every subscription of the client; every block's `id:` is the
//! cursor after it.

use futures_util::StreamExt;
use reqwest::{header, StatusCode, Url};

use crate::{
    binary::Envelope,
    client::{describe, endpoint},
    cursor::{combine, Cursor},
    decode,
    mux::{Manager, Outcome, DEFAULT_RETRY_AFTER},
    Error, Transport,
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
    /// The last `retry:` field (ms): how long the node asks to wait before
    /// reconnecting.
    pub retry: Option<u64>,
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
                "retry" => {
                    self.retry = value.parse().ok().or(self.retry);
                    continue;
                }
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

/// `unsubscribed` event data (and a long-poll answer's entries).
#[derive(Debug, serde::Deserialize)]
struct Unsubscribed {
    topic: String,
}

/// The message of a `kicked` error body (SSE event, long-poll 410).
pub(crate) fn kicked_reason(body: &str) -> String {
    match crate::client::RequestError::parse(410, body).error {
        Error::Server { message, .. } => message,
        other => other.to_string(),
    }
}

/// `gap` event data.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct GapData {
    pub topic: String,
    pub from: u64,
    pub to: u64,
}

impl Manager {
    pub(crate) async fn sse(&mut self, base: &Url) -> Outcome {
        let inner = self.inner.clone();
        // New live subscriptions among resuming ones need their own start
        // first; when all are new, the stream's opening cursor is it.
        let fresh = self.subs.entries().all(|e| !e.progress.started());
        if !fresh {
            if let Err(o) = self.probe(base).await {
                return o;
            }
        }
        let patterns = match self.stream_patterns().await {
            Ok(p) => p,
            Err(o) => return o,
        };
        let mut url = endpoint(base, &["v1", "sse"]);
        {
            let mut query = url.query_pairs_mut();
            for p in &patterns {
                query.append_pair("topic", p);
            }
            if !fresh {
                query.append_pair("cursor", &combine(self.subs.progresses(), None).encode());
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
            return self.refused(base, res, &patterns).await;
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
                cmd = self.cmds.recv() => {
                    if let Some(o) = self.stream_command(cmd) {
                        return o;
                    }
                    continue;
                }
            };
            match chunk {
                Err(_) => return end(established, "no heartbeat from the server".into()),
                Ok(None) => return end(established, "the stream ended".into()),
                Ok(Some(Err(e))) => return end(established, describe(&e)),
                Ok(Some(Ok(bytes))) => parser.push(&bytes),
            }
            while let Some(block) = parser.next_block() {
                // An event that cannot be decoded ends the subscriptions with
                // the error: a reconnect would resume right before it again.
                match (block.event.as_deref(), block.data.as_deref()) {
                    (Some("message"), Some(data)) => {
                        match decode::from_str::<Envelope>(data).and_then(Envelope::delivery) {
                            Ok(m) => self.subs.message(&m.topic, m.seq, m.ts, m.payload).await,
                            Err(e) => {
                                self.subs.fail_all(&undecodable("message", e)).await;
                                return Outcome::Idle;
                            }
                        }
                    }
                    (Some("gap"), Some(data)) => match decode::from_str::<GapData>(data) {
                        Ok(g) => self.subs.gap(&g.topic, g.from, g.to).await,
                        Err(e) => {
                            self.subs.fail_all(&undecodable("gap", e)).await;
                            return Outcome::Idle;
                        }
                    },
                    // The admin API ended one of the stream's patterns: the
                    // stream goes on; a new one leaves that pattern out.
                    (Some("unsubscribed"), Some(data)) => {
                        if let Ok(gone) = decode::from_str::<Unsubscribed>(data) {
                            self.subs
                                .server_unsubscribed(&gone.topic, base, Transport::Sse)
                                .await;
                            if self.subs.is_empty() {
                                return Outcome::Idle;
                            }
                            return Outcome::Restart;
                        }
                    }
                    // The admin API disconnected the client: do not come back.
                    (Some("kicked"), data) => {
                        return Outcome::Kicked(kicked_reason(data.unwrap_or("")));
                    }
                    // The node cannot serve a stream now (not caught up with
                    // its cluster, shutting down): it says so in a 200 stream,
                    // which a browser's EventSource retries after `retry:`.
                    (Some("unavailable"), data) => {
                        let retry = parser
                            .retry
                            .unwrap_or(DEFAULT_RETRY_AFTER.as_millis() as u64);
                        return Outcome::Unavailable {
                            reason: format!("SSE refused: {}", data.unwrap_or("unavailable")),
                            retry_after: std::time::Duration::from_millis(retry.min(60_000)),
                        };
                    }
                    _ => {}
                }
                let Some(id) = &block.id else { continue };
                let cursor = match Cursor::decode(id) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "herald: ignoring a cursor from the server");
                        continue;
                    }
                };
                if !established {
                    established = true;
                    if fresh {
                        self.start_all(&cursor).await;
                    }
                    let ids: Vec<u64> = self.subs.entries().map(|e| e.id).collect();
                    for id in ids {
                        self.subs.established(id, base, Transport::Sse);
                    }
                }
                self.subs.raise_floors(cursor.floor);
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
