//! Server-Sent Events read block by block, each block checked against the
//! specs.

use super::*;

pub(crate) type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// One SSE block, already checked against the spec.
#[derive(Debug)]
pub(crate) enum Block {
    Opening,
    Event { event: String, data: Value },
    Ping,
    Comment,
}

pub(crate) struct SseStream {
    pub(crate) stream: ByteStream,
    pub(crate) buf: Vec<u8>,
    pub(crate) events: Value,
    /// Events documented as sent without an `id:` line (presence).
    pub(crate) without_id: BTreeSet<String>,
    pub(crate) cursor: Value,
    pub(crate) opened: bool,
}

impl SseStream {
    pub(crate) async fn next(&mut self, limit: Duration) -> Option<Block> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8(raw).expect("SSE is UTF-8");
                return Some(self.check_block(text.trim_end_matches('\n')));
            }
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(Some(Ok(chunk))) => self.buf.extend_from_slice(&chunk),
                Ok(Some(Err(_))) | Ok(None) | Err(_) => return None,
            }
        }
    }

    pub(crate) fn check_cursor(&self, id: &str, what: &str) {
        assert_valid(&self.cursor, &json!(id), Dialect::OpenApi, what);
    }

    pub(crate) fn check_block(&mut self, block: &str) -> Block {
        let lines: Vec<&str> = block.split('\n').collect();
        let field = |line: &str, name: &str| -> String {
            line.strip_prefix(&format!("{name}: "))
                .unwrap_or_else(|| {
                    panic!("SSE block {block:?}: expected `{name}: ...` in {line:?}")
                })
                .to_string()
        };
        if !self.opened {
            self.opened = true;
            assert_eq!(
                lines.len(),
                2,
                "opening block must be retry + id: {block:?}"
            );
            let retry = field(lines[0], "retry");
            assert!(retry.parse::<u64>().is_ok(), "retry: {retry:?}");
            let id = field(lines[1], "id");
            self.check_cursor(&id, "SSE opening id");
            return Block::Opening;
        }
        // A `retry:` line may lead an event block (the `kicked` event's).
        let mut lines = lines;
        if lines.len() > 1 && lines[0].starts_with("retry: ") {
            let retry = field(lines[0], "retry");
            assert!(retry.parse::<u64>().is_ok(), "retry: {retry:?}");
            lines.remove(0);
        }
        if lines[0].starts_with(':') {
            if lines[0] == ": ping" {
                assert_eq!(lines.len(), 2, "heartbeat must carry an id: {block:?}");
                let id = field(lines[1], "id");
                self.check_cursor(&id, "SSE heartbeat id");
                return Block::Ping;
            }
            assert_eq!(lines.len(), 1, "unexpected comment block {block:?}");
            return Block::Comment;
        }
        let (event, data_line) = if lines[0].starts_with("event: ") {
            assert_eq!(lines.len(), 2, "event block must be event, data: {block:?}");
            let event = field(lines[0], "event");
            assert!(
                self.without_id.contains(&event),
                "SSE event {event:?} sent without an id, not in x-sse-events-without-id"
            );
            (event, lines[1])
        } else {
            assert_eq!(
                lines.len(),
                3,
                "event block must be id, event, data: {block:?}"
            );
            let id = field(lines[0], "id");
            self.check_cursor(&id, "SSE event id");
            let event = field(lines[1], "event");
            assert!(
                !self.without_id.contains(&event),
                "SSE event {event:?} is documented without an id but has one"
            );
            (event, lines[2])
        };
        let schema = self.events.get(&event).unwrap_or_else(|| {
            panic!(
                "SSE event {event:?} is not documented in x-sse-events ({:?})",
                self.events
                    .as_object()
                    .map(|m| m.keys().collect::<Vec<_>>())
            )
        });
        let data: Value =
            serde_json::from_str(&field(data_line, "data")).expect("SSE data is JSON");
        assert_valid(
            schema,
            &data,
            Dialect::OpenApi,
            &format!("SSE {event} data"),
        );
        Block::Event { event, data }
    }

    /// Reads blocks until `n` events arrived (or panics after the timeout).
    pub(crate) async fn events(&mut self, n: usize) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.next(TIMEOUT).await.expect("SSE event before timeout") {
                Block::Event { event, data, .. } => out.push((event, data)),
                Block::Opening | Block::Ping | Block::Comment => {}
            }
        }
        out
    }
}

/// Opens `/v1/sse?{query}`: a checked stream on 200, else the checked error.
pub(crate) async fn open_sse(
    spec: &OpenApi,
    node: &Node,
    query: &str,
    last_event_id: Option<&str>,
) -> Result<SseStream, Reply> {
    let mut req = reqwest::Client::new().get(node.url(&format!("/v1/sse?{query}")));
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    let res = req.send().await.expect("sse request");
    let status = res.status().as_u16();
    let ct = content_type(res.headers());
    if status != 200 {
        let headers = res.headers().clone();
        let bytes = res.bytes().await.expect("body");
        let body = spec.check("GET", Some("/v1/sse"), status, ct.as_deref(), &bytes);
        return Err(Reply {
            status,
            body,
            headers,
        });
    }
    let media = spec
        .media("GET", Some("/v1/sse"), 200, ct.as_deref())
        .expect("SSE 200 documents a body");
    Ok(SseStream {
        stream: Box::pin(res.bytes_stream()),
        buf: Vec::new(),
        events: media["x-sse-events"].clone(),
        without_id: media["x-sse-events-without-id"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e.as_str().expect("event name").to_string())
            .collect(),
        cursor: spec.schema("Cursor"),
        opened: false,
    })
}
