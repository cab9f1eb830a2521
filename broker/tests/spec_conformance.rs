//! Checks a running `herald` against the machine-readable protocol specs in
//! `protocol-spec/`: `asyncapi.yaml` (every WebSocket frame) and
//! `openapi.yaml` (every HTTP response), in both directions:
//!
//! * every server frame the test provokes must have a `type` documented in
//!   `asyncapi.yaml` and validate against its (strict) schema; every accepted
//!   client op must validate against its op schema and every op refused for
//!   its shape must not;
//! * every HTTP response must have a status documented for its path and
//!   method, a documented content type, and a body that validates; every
//!   documented status except 500/503 must actually be provoked;
//! * every documented path and method must be routed by the server, and every
//!   documented example op must be accepted;
//! * auth (401/403, `refresh`, `unauthorized`/`forbidden` frames, close 4003)
//!   and limits (429/503, `rate_limited` frames) are provoked on extra nodes
//!   started with `--jwt-secret` and small `[limits]`; cursor resume and the
//!   `pong` floor are checked end to end;
//! * documented response headers are checked (`Allow` on 405, `traceparent`
//!   on publish); presence (REST list, `join`/`leave` WebSocket frames, SSE
//!   events without `id:`, long-poll `presence`/`client_id`), the history and
//!   presence switches (404) and trace context in envelopes are provoked and
//!   validated; a node drained with SIGTERM closes WebSockets with 1012;
//! * the admin API (`spec_conformance/admin.rs`): every status of its routes,
//!   presence counts, the long-poll 410, the SSE `unsubscribed`/`kicked`
//!   events, the unasked `unsubscribed` frame and close 4004.
//!
//! `$ref`s are resolved here (local `#/...` references only); OpenAPI schemas
//! are checked as JSON Schema 2020-12, AsyncAPI payloads as draft 7.

#[path = "spec_conformance/admin.rs"]
mod admin;
mod common;

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    pin::Pin,
    time::Duration,
};

use common::*;
use futures_util::{SinkExt, Stream, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{
    protocol::{
        frame::{
            coding::{CloseCode, Data, OpCode},
            Frame,
        },
        CloseFrame,
    },
    Message as WsMessage,
};

// ---------------------------------------------------------------------------
// Loading the specs
// ---------------------------------------------------------------------------

fn spec_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../protocol-spec")
        .join(name)
}

fn load_yaml(name: &str) -> Value {
    let path = spec_path(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}"));
    yaml_to_json(yaml)
}

/// YAML → JSON, turning non-string mapping keys (`200:`) into strings.
fn yaml_to_json(v: serde_yaml::Value) -> Value {
    use serde_yaml::Value as Y;
    match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().expect("number"))
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(yaml_to_json).collect()),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Y::String(s) => s,
                        Y::Number(n) => n.to_string(),
                        Y::Bool(b) => b.to_string(),
                        other => panic!("unsupported YAML mapping key {other:?}"),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(tagged) => yaml_to_json(tagged.value),
    }
}

/// Replaces every `{"$ref": "#/..."}` by (a resolved copy of) its target.
fn resolve(root: &Value, v: &Value) -> Value {
    fn go(root: &Value, v: &Value, trail: &mut Vec<String>) -> Value {
        match v {
            Value::Object(map) => {
                if let Some(reference) = map.get("$ref") {
                    let reference = reference.as_str().expect("$ref is a string");
                    assert!(
                        !trail.iter().any(|r| r == reference),
                        "$ref cycle through {reference}: {trail:?}"
                    );
                    let pointer = reference
                        .strip_prefix('#')
                        .unwrap_or_else(|| panic!("only local $refs are supported: {reference}"));
                    let target = root
                        .pointer(pointer)
                        .unwrap_or_else(|| panic!("dangling $ref {reference}"));
                    trail.push(reference.to_string());
                    let out = go(root, target, trail);
                    trail.pop();
                    return out;
                }
                Value::Object(
                    map.iter()
                        .map(|(k, v)| (k.clone(), go(root, v, trail)))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(|v| go(root, v, trail)).collect()),
            other => other.clone(),
        }
    }
    go(root, v, &mut Vec::new())
}

#[derive(Clone, Copy)]
enum Dialect {
    /// OpenAPI 3.1 schemas are JSON Schema 2020-12.
    OpenApi,
    /// AsyncAPI 3.0 schemas are a superset of draft 7.
    AsyncApi,
}

/// The validation errors of `instance` against `schema` (empty when valid).
fn schema_errors(schema: &Value, instance: &Value, dialect: Dialect) -> Vec<String> {
    let validator = match dialect {
        Dialect::OpenApi => jsonschema::draft202012::new(schema),
        Dialect::AsyncApi => jsonschema::draft7::new(schema),
    }
    .unwrap_or_else(|e| panic!("schema does not compile: {e}\n{schema:#}"));
    validator
        .iter_errors(instance)
        .map(|e| format!("{e} (at {})", e.instance_path()))
        .collect()
}

fn assert_valid(schema: &Value, instance: &Value, dialect: Dialect, what: &str) {
    let errors = schema_errors(schema, instance, dialect);
    assert!(
        errors.is_empty(),
        "{what} does not match the spec:\n  instance: {instance}\n  errors: {errors:#?}"
    );
}

// ---------------------------------------------------------------------------
// OpenAPI
// ---------------------------------------------------------------------------

const METHODS: [&str; 7] = ["get", "post", "put", "delete", "patch", "options", "head"];
/// Statuses documented but not provoked here (storage failure, shutdown).
const NOT_PROVOKED: [&str; 2] = ["500", "503"];
const UNROUTED: &str = "(unrouted)";
/// Request headers.
type Headers = &'static [(&'static str, &'static str)];
const JSON: Headers = &[("content-type", "application/json")];
const TEXT: Headers = &[("content-type", "text/plain")];
const JSON_ONCE: Headers = &[
    ("content-type", "application/json"),
    ("idempotency-key", "once-1"),
];

struct OpenApi {
    root: Value,
    /// (path template, METHOD or `*`, status) seen so far.
    covered: RefCell<BTreeSet<(String, String, String)>>,
}

/// A fully read HTTP response.
struct Reply {
    status: u16,
    body: Value,
    headers: reqwest::header::HeaderMap,
}

impl OpenApi {
    fn load() -> Self {
        let root = load_yaml("openapi.yaml");
        assert!(
            root["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1")),
            "openapi.yaml must be OpenAPI 3.1"
        );
        OpenApi {
            root,
            covered: RefCell::new(BTreeSet::new()),
        }
    }

    /// Every documented (path, method, status), in the same form as `covered`.
    fn documented(&self) -> BTreeSet<(String, String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in self.root["paths"].as_object().expect("paths") {
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    for status in op["responses"].as_object().expect("responses").keys() {
                        out.insert((path.clone(), method.to_uppercase(), status.clone()));
                    }
                }
            }
            if let Some(other) = item.get("x-other-methods") {
                for status in other["responses"].as_object().expect("responses").keys() {
                    out.insert((path.clone(), "*".into(), status.clone()));
                }
            }
        }
        for status in self.root["x-unrouted"]["responses"]
            .as_object()
            .expect("x-unrouted.responses")
            .keys()
        {
            out.insert((UNROUTED.into(), "*".into(), status.clone()));
        }
        out
    }

    /// Documented operations as (path template, METHOD).
    fn operations(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (path, item) in self.root["paths"].as_object().expect("paths") {
            for method in METHODS {
                if item.get(method).is_some() {
                    out.push((path.clone(), method.to_uppercase()));
                }
            }
        }
        out
    }

    /// The resolved response object for `status`; panics if undocumented.
    /// `template` is `None` for a path the spec does not list.
    fn response(&self, method: &str, template: Option<&str>, status: u16) -> Value {
        let status_key = status.to_string();
        let (key, responses) = match template {
            None => (
                (UNROUTED.to_string(), "*".to_string()),
                &self.root["x-unrouted"]["responses"],
            ),
            Some(t) => {
                let item = &self.root["paths"][t];
                assert!(item.is_object(), "path {t} is not in openapi.yaml");
                match item.get(method.to_lowercase()) {
                    Some(op) => ((t.to_string(), method.to_uppercase()), &op["responses"]),
                    None => (
                        (t.to_string(), "*".to_string()),
                        &item["x-other-methods"]["responses"],
                    ),
                }
            }
        };
        let response = responses.get(&status_key).unwrap_or_else(|| {
            panic!(
                "{method} {}: status {status} is not documented in openapi.yaml (documented: {:?})",
                template.unwrap_or(UNROUTED),
                responses.as_object().map(|m| m.keys().collect::<Vec<_>>())
            )
        });
        self.covered.borrow_mut().insert((key.0, key.1, status_key));
        resolve(&self.root, response)
    }

    /// The documented media type object matching `content_type`, or `None`
    /// when the response is documented without a body.
    fn media(
        &self,
        method: &str,
        template: Option<&str>,
        status: u16,
        content_type: Option<&str>,
    ) -> Option<Value> {
        let response = self.response(method, template, status);
        let content = response.get("content")?;
        let ct = content_type.unwrap_or_else(|| {
            panic!(
                "{method} {template:?} {status}: no Content-Type, documented {:?}",
                content.as_object().map(|m| m.keys().collect::<Vec<_>>())
            )
        });
        let mime = ct.split(';').next().unwrap().trim().to_ascii_lowercase();
        let media = content.get(&mime).unwrap_or_else(|| {
            panic!(
                "{method} {template:?} {status}: Content-Type {ct:?} is not documented (documented: {:?})",
                content.as_object().map(|m| m.keys().collect::<Vec<_>>())
            )
        });
        Some(media.clone())
    }

    /// Checks one complete response against the spec; returns the body as
    /// JSON (a string for text bodies, null for an empty one).
    fn check(
        &self,
        method: &str,
        template: Option<&str>,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Value {
        let what = format!("{method} {} → {status}", template.unwrap_or(UNROUTED));
        match self.media(method, template, status, content_type) {
            None => {
                assert!(
                    body.is_empty(),
                    "{what}: documented without a body, got {:?}",
                    String::from_utf8_lossy(body)
                );
                Value::Null
            }
            Some(media) => {
                let mime = content_type.unwrap().split(';').next().unwrap().trim();
                let instance = if mime.ends_with("json") {
                    serde_json::from_slice(body).unwrap_or_else(|e| {
                        panic!(
                            "{what}: body is not JSON ({e}): {:?}",
                            String::from_utf8_lossy(body)
                        )
                    })
                } else {
                    Value::String(
                        String::from_utf8(body.to_vec())
                            .unwrap_or_else(|_| panic!("{what}: text body is not UTF-8")),
                    )
                };
                let schema = media.get("schema").cloned().unwrap_or(json!({}));
                assert_valid(&schema, &instance, Dialect::OpenApi, &what);
                instance
            }
        }
    }

    /// Sends a request, reads the whole response and checks it.
    async fn call(
        &self,
        node: &Node,
        method: &str,
        template: Option<&str>,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut req = http().request(
            Method::from_bytes(method.as_bytes()).expect("method"),
            node.url(path),
        );
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = res.status().as_u16();
        let ct = content_type(res.headers());
        let headers = res.headers().clone();
        let bytes = res.bytes().await.expect("body");
        let body = self.check(method, template, status, ct.as_deref(), &bytes);
        self.check_headers(method, template, status, &headers);
        Reply {
            status,
            body,
            headers,
        }
    }

    /// Checks the response headers the spec documents for this status:
    /// `required` ones are present, and every present one matches its
    /// schema (`const`, `pattern`).
    fn check_headers(
        &self,
        method: &str,
        template: Option<&str>,
        status: u16,
        headers: &reqwest::header::HeaderMap,
    ) {
        let response = self.response(method, template, status);
        let Some(documented) = response.get("headers").and_then(Value::as_object) else {
            return;
        };
        for (name, header) in documented {
            let what = format!(
                "{method} {} → {status}: header {name}",
                template.unwrap_or(UNROUTED)
            );
            match headers.get(name.as_str()) {
                None => assert!(
                    header["required"] != json!(true),
                    "{what} is documented as required but missing"
                ),
                Some(value) => {
                    let value = json!(value.to_str().expect("header is text"));
                    let schema = header.get("schema").cloned().unwrap_or(json!({}));
                    assert_valid(&schema, &value, Dialect::OpenApi, &what);
                }
            }
        }
    }

    async fn get(&self, node: &Node, template: &str, path: &str) -> Reply {
        self.call(node, "GET", Some(template), path, &[], None)
            .await
    }

    async fn post_json(&self, node: &Node, template: &str, path: &str, body: &Value) -> Reply {
        self.call(
            node,
            "POST",
            Some(template),
            path,
            &[("content-type", "application/json")],
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    fn schema(&self, name: &str) -> Value {
        resolve(&self.root, &self.root["components"]["schemas"][name])
    }
}

fn content_type(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get("content-type")
        .map(|v| v.to_str().expect("content-type is text").to_string())
}

fn expect(reply: &Reply, status: u16, code: Option<&str>, what: &str) {
    assert_eq!(reply.status, status, "{what}: {}", reply.body);
    if let Some(code) = code {
        assert_eq!(reply.body["error"]["code"], code, "{what}: {}", reply.body);
    }
}

// ---------------------------------------------------------------------------
// SSE, checked block by block
// ---------------------------------------------------------------------------

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// One SSE block, already checked against the spec.
#[derive(Debug)]
enum Block {
    Opening,
    Event { event: String, data: Value },
    Ping,
    Comment,
}

struct SseStream {
    stream: ByteStream,
    buf: Vec<u8>,
    events: Value,
    /// Events documented as sent without an `id:` line (presence).
    without_id: BTreeSet<String>,
    cursor: Value,
    opened: bool,
}

impl SseStream {
    async fn next(&mut self, limit: Duration) -> Option<Block> {
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

    fn check_cursor(&self, id: &str, what: &str) {
        assert_valid(&self.cursor, &json!(id), Dialect::OpenApi, what);
    }

    fn check_block(&mut self, block: &str) -> Block {
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
    async fn events(&mut self, n: usize) -> Vec<(String, Value)> {
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
async fn open_sse(
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

// ---------------------------------------------------------------------------
// AsyncAPI
// ---------------------------------------------------------------------------

struct AsyncApi {
    root: Value,
    /// Server frame schemas by `type`.
    frames: BTreeMap<String, Value>,
    /// Client op schemas by `op`.
    ops: BTreeMap<String, Value>,
    /// Example client ops.
    examples: Vec<Value>,
    close_codes: BTreeSet<u16>,
}

impl AsyncApi {
    fn load() -> Self {
        let root = load_yaml("asyncapi.yaml");
        assert!(
            root["asyncapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.")),
            "asyncapi.yaml must be AsyncAPI 3.x"
        );
        let resolved = resolve(&root, &root);
        let mut frames = BTreeMap::new();
        let mut ops = BTreeMap::new();
        let mut examples = Vec::new();
        let key = |m: &Value, field: &str| -> String {
            m["payload"]["properties"][field]["const"]
                .as_str()
                .unwrap_or_else(|| panic!("message {} has no {field} const", m["name"]))
                .to_string()
        };
        for (name, op) in resolved["operations"].as_object().expect("operations") {
            // Binary frames (README §6.8) are checked byte for byte by
            // tests/binary.rs; the JSON frames are checked here.
            let messages: Vec<&Value> = op["messages"]
                .as_array()
                .expect("operation messages")
                .iter()
                .filter(|m| m["contentType"] != "application/octet-stream")
                .collect();
            match op["action"].as_str() {
                Some("send") => {
                    for m in messages {
                        frames.insert(key(m, "type"), m["payload"].clone());
                    }
                }
                Some("receive") => {
                    for m in messages {
                        ops.insert(key(m, "op"), m["payload"].clone());
                        for ex in m["examples"].as_array().into_iter().flatten() {
                            examples.push(ex["payload"].clone());
                        }
                    }
                    for m in op["reply"]["messages"].as_array().into_iter().flatten() {
                        frames.insert(key(m, "type"), m["payload"].clone());
                    }
                }
                other => panic!("operation {name}: action {other:?}"),
            }
        }
        for (name, schema) in &frames {
            assert_eq!(
                schema["additionalProperties"],
                json!(false),
                "server frame {name} must set additionalProperties: false"
            );
        }
        let close_codes = resolved["channels"]["herald"]["x-close-codes"]
            .as_array()
            .expect("x-close-codes")
            .iter()
            .map(|c| c["code"].as_u64().expect("code") as u16)
            .collect();
        AsyncApi {
            root,
            frames,
            ops,
            examples,
            close_codes,
        }
    }

    fn check_frame(&self, frame: &Value) {
        let ty = frame["type"]
            .as_str()
            .unwrap_or_else(|| panic!("server frame without a string type: {frame}"));
        let schema = self
            .frames
            .get(ty)
            .unwrap_or_else(|| panic!("server frame type {ty:?} is not in asyncapi.yaml: {frame}"));
        assert_valid(
            schema,
            frame,
            Dialect::AsyncApi,
            &format!("server frame {ty:?}"),
        );
    }

    /// Why `op` does not match any client op schema (empty when it does).
    fn op_errors(&self, op: &Value) -> Vec<String> {
        match op["op"].as_str().and_then(|name| self.ops.get(name)) {
            Some(schema) => schema_errors(schema, op, Dialect::AsyncApi),
            None => vec![format!("no op schema for {}", op["op"])],
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A valid W3C traceparent.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

const REPLY_TYPES: [&str; 6] = [
    "subscribed",
    "unsubscribed",
    "ack",
    "pong",
    "refreshed",
    "error",
];

/// Sends an op and returns its reply: the frame echoing its `id`, or for an
/// op without a usable `id`, the next reply frame without one.
async fn exchange(ws: &mut Ws, op: &Value) -> Value {
    let id = op
        .get("id")
        .filter(|v| v.is_string() || v.is_number())
        .cloned();
    ws.send(op.clone()).await;
    reply_to(ws, id.as_ref()).await
}

async fn reply_to(ws: &mut Ws, id: Option<&Value>) -> Value {
    loop {
        let frame = ws.recv().await;
        let is_reply = frame["type"]
            .as_str()
            .is_some_and(|t| REPLY_TYPES.contains(&t));
        if is_reply && frame.get("id") == id {
            return frame;
        }
    }
}

/// A config file: fast retention on the `gap` namespace (keeps 2 messages),
/// fast SSE heartbeats, no presence and no history API in `quiet`.
fn test_config(dir: &std::path::Path) -> String {
    let file = dir.join("herald.toml");
    std::fs::write(
        &file,
        "[log]\nretention_interval = \"100ms\"\n\
         [transport]\nsse_heartbeat = \"300ms\"\n\
         [namespaces.gap.retention]\nmax_messages = 2\n\
         [namespaces.quiet]\npresence = false\nhistory = false\n",
    )
    .unwrap();
    file.to_str().unwrap().to_string()
}

/// Publishes 5 messages to `topic` (namespace `gap`) and waits until
/// retention has kept only the last 2.
async fn trimmed_topic(node: &Node, topic: &str) {
    for i in 1..=5 {
        let (status, _) = publish(node, topic, &json!({ "i": i })).await;
        assert_eq!(status, 200);
    }
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let (_, page) = get_json(node, &format!("/v1/topics/{topic}/messages")).await;
        if page["first_seq"] == 4 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention did not trim: {page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn close_code_after(node: &Node, message: WsMessage) -> Option<u16> {
    let mut ws = node.ws().await;
    ws.stream.send(message).await.expect("send");
    ws.closed().await
}

// ---------------------------------------------------------------------------
// Auth and limits
// ---------------------------------------------------------------------------

const SECRET: &str = "spec-conformance-secret-0123456789";
const API_KEY: &str = "spec-api-key-1";
/// The headers of a WebSocket upgrade, for handshakes refused before the
/// upgrade (their answer is an ordinary JSON error).
const UPGRADE: Headers = &[
    ("connection", "Upgrade"),
    ("upgrade", "websocket"),
    ("sec-websocket-version", "13"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token signed with `secret` and `alg` carrying `claims`.
fn sign(alg: jsonwebtoken::Algorithm, secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token")
}

/// An HS256 token of `alice` expiring at `exp` with these grants.
fn mint(exp: u64, subscribe: &[&str], publish: &[&str]) -> String {
    sign(
        jsonwebtoken::Algorithm::HS256,
        SECRET,
        &json!({"sub":"alice","exp":exp,"subscribe":subscribe,"publish":publish}),
    )
}

/// Alice may subscribe to `chat.*` and `public.>`, and publish to `chat.room1`.
fn alice() -> String {
    mint(now_secs() + 600, &["chat.*", "public.>"], &["chat.room1"])
}

fn base64url(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// An unsigned (`alg: none`) token granting everything.
fn unsigned_token() -> String {
    let claims = json!({"sub":"eve","exp":now_secs() + 600,"subscribe":[">"],"publish":[">"]});
    format!(
        "{}.{}.",
        base64url(br#"{"alg":"none","typ":"JWT"}"#),
        base64url(claims.to_string().as_bytes())
    )
}

/// A node with auth on (HS256 with `SECRET`, the API key `API_KEY`) whose
/// `public` namespace anonymous clients may subscribe to; `extra` is
/// appended to its config file.
fn auth_node(dir: &std::path::Path, extra: &str) -> Node {
    let file = dir.join("auth.toml");
    std::fs::write(
        &file,
        format!("[namespaces.public]\nanonymous_subscribe = true\n{extra}"),
    )
    .unwrap();
    Node::start(&[
        "--jwt-secret",
        SECRET,
        "--api-key",
        API_KEY,
        "--config",
        file.to_str().unwrap(),
    ])
}

/// A node whose config file is `text`.
fn node_with_config(dir: &std::path::Path, text: &str) -> Node {
    let file = dir.join("limits.toml");
    std::fs::write(&file, text).unwrap();
    Node::start(&["--config", file.to_str().unwrap()])
}

/// 401 and 403 (and what credentials make work) against openapi.yaml.
async fn check_auth_responses(spec: &OpenApi) {
    const MSGS: &str = "/v1/topics/{topic}/messages";
    const PRES: &str = "/v1/topics/{topic}/presence";
    const BATCH: &str = "/v1/publish";
    let dir = tempfile::tempdir().unwrap();
    let node = auth_node(dir.path(), "");
    let alice = alice();
    let bearer = format!("Bearer {alice}");
    let cookie = format!("herald_token={alice}");
    // JSON request headers plus one credentials header, if any.
    let json_as = |auth: Option<(&'static str, String)>| -> Vec<(&'static str, String)> {
        let mut h = vec![("content-type", "application/json".to_string())];
        h.extend(auth);
        h
    };
    let call = |method: &'static str,
                template: &'static str,
                path: String,
                headers: Vec<(&'static str, String)>,
                body: Option<&'static str>| {
        let node = &node;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            spec.call(
                node,
                method,
                Some(template),
                &path,
                &headers,
                body.map(|b| b.as_bytes().to_vec()),
            )
            .await
        }
    };
    let upgrade = |auth: Option<(&'static str, String)>| -> Vec<(&'static str, String)> {
        let mut h: Vec<(&'static str, String)> =
            UPGRADE.iter().map(|(k, v)| (*k, v.to_string())).collect();
        h.extend(auth);
        h
    };
    let expired = mint(now_secs() - 60, &[">"], &[">"]);
    let wrong_secret = sign(
        jsonwebtoken::Algorithm::HS256,
        "another-secret-another-secret",
        &json!({"sub":"alice","exp":now_secs() + 600,"publish":[">"]}),
    );
    let wrong_alg = sign(
        jsonwebtoken::Algorithm::HS384,
        SECRET,
        &json!({"sub":"alice","exp":now_secs() + 600,"publish":[">"]}),
    );
    let no_exp = sign(
        jsonwebtoken::Algorithm::HS256,
        SECRET,
        &json!({"sub":"alice","publish":[">"]}),
    );

    // 401: no credentials (and no anonymous grant), or unusable ones.
    let publish_path = || "/v1/topics/chat.room1/messages".to_string();
    let mut unauthorized = vec![
        ("POST", MSGS, publish_path(), json_as(None), Some("1")),
        (
            "POST",
            MSGS,
            publish_path(),
            json_as(Some(("x-api-key", "not-a-key".into()))),
            Some("1"),
        ),
        (
            "POST",
            BATCH,
            BATCH.to_string(),
            json_as(None),
            Some(r#"[{"topic":"chat.room1","data":1}]"#),
        ),
        (
            "GET",
            MSGS,
            "/v1/topics/chat.room1/messages".into(),
            vec![],
            None,
        ),
        (
            "GET",
            PRES,
            "/v1/topics/chat.room1/presence".into(),
            vec![],
            None,
        ),
        (
            // Invalid credentials are refused even where anonymous clients
            // would be let in.
            "GET",
            MSGS,
            "/v1/topics/public.news/messages?token=garbage".into(),
            vec![],
            None,
        ),
        (
            "GET",
            "/v1/sse",
            "/v1/sse?topic=chat.*".into(),
            vec![],
            None,
        ),
        (
            "GET",
            "/v1/sse",
            "/v1/sse?topic=public.%3E&topic=chat.*".into(),
            vec![],
            None,
        ),
        (
            "GET",
            "/v1/poll",
            "/v1/poll?topic=chat.*&timeout_ms=0".into(),
            vec![],
            None,
        ),
        (
            "GET",
            "/v1/ws",
            "/v1/ws?token=garbage".into(),
            upgrade(None),
            None,
        ),
        (
            "GET",
            "/v1/ws",
            "/v1/ws".into(),
            upgrade(Some(("cookie", format!("herald_token={expired}")))),
            None,
        ),
    ];
    for token in [
        &expired,
        &wrong_secret,
        &wrong_alg,
        &no_exp,
        &unsigned_token(),
    ] {
        unauthorized.push((
            "POST",
            MSGS,
            publish_path(),
            json_as(Some(("authorization", format!("Bearer {token}")))),
            Some("1"),
        ));
    }
    for (method, template, path, headers, body) in unauthorized {
        let what = format!("{method} {path} {headers:?}");
        let r = call(method, template, path, headers, body).await;
        expect(&r, 401, Some("unauthorized"), &what);
    }

    // 403: valid credentials, topic outside their grants.
    let as_alice = || vec![("authorization", bearer.clone())];
    let forbidden = [
        (
            "POST",
            MSGS,
            "/v1/topics/chat.room2/messages".to_string(),
            json_as(Some(("authorization", bearer.clone()))),
            Some("1"),
        ),
        (
            "POST",
            BATCH,
            BATCH.into(),
            json_as(Some(("authorization", bearer.clone()))),
            Some(r#"[{"topic":"chat.room1","data":1},{"topic":"chat.x","data":2}]"#),
        ),
        (
            "GET",
            MSGS,
            "/v1/topics/chat.x.y/messages".into(),
            as_alice(),
            None,
        ),
        (
            "GET",
            PRES,
            "/v1/topics/chat.x.y/presence".into(),
            as_alice(),
            None,
        ),
        (
            // Keys given with --api-key publish anywhere and read nothing.
            "GET",
            MSGS,
            "/v1/topics/chat.x/messages".into(),
            vec![("x-api-key", API_KEY.to_string())],
            None,
        ),
        (
            // `chat.*` never grants `chat.>`.
            "GET",
            "/v1/sse",
            format!("/v1/sse?topic=chat.%3E&token={alice}"),
            vec![],
            None,
        ),
        (
            "GET",
            "/v1/poll",
            "/v1/poll?topic=chat.*&cursor=1~0~other.x~1&timeout_ms=0".into(),
            as_alice(),
            None,
        ),
        (
            "GET",
            "/v1/poll",
            "/v1/poll?topic=%3E&timeout_ms=0".into(),
            as_alice(),
            None,
        ),
    ];
    for (method, template, path, headers, body) in forbidden {
        let what = format!("{method} {path}");
        let r = call(method, template, path, headers, body).await;
        expect(&r, 403, Some("forbidden"), &what);
    }

    // What the credentials allow, by every way of sending them.
    let allowed = [
        (
            "POST",
            MSGS,
            publish_path(),
            json_as(Some(("authorization", bearer.clone()))),
        ),
        (
            "POST",
            MSGS,
            publish_path(),
            json_as(Some(("cookie", cookie.clone()))),
        ),
        (
            "POST",
            MSGS,
            format!("{}?token={alice}", publish_path()),
            json_as(None),
        ),
        (
            "POST",
            MSGS,
            publish_path(),
            json_as(Some(("x-api-key", API_KEY.into()))),
        ),
        (
            "POST",
            MSGS,
            publish_path(),
            json_as(Some(("authorization", format!("Bearer {API_KEY}")))),
        ),
    ];
    for (method, template, path, headers) in allowed {
        let what = format!("{method} {path} {headers:?}");
        let r = call(method, template, path, headers, Some("1")).await;
        expect(&r, 200, None, &what);
    }
    let r = call(
        "GET",
        MSGS,
        "/v1/topics/chat.room1/messages".into(),
        as_alice(),
        None,
    )
    .await;
    expect(&r, 200, None, "history with a token");
    assert_eq!(r.body["last_seq"], 5, "{}", r.body);
    let r = call(
        "GET",
        PRES,
        format!("/v1/topics/chat.room1/presence?token={alice}"),
        vec![],
        None,
    )
    .await;
    expect(&r, 200, None, "presence with a token");
    for (path, headers) in [
        ("/v1/poll?topic=public.%3E&timeout_ms=0".to_string(), vec![]),
        (
            format!("/v1/poll?topic=chat.*&topic=public.news&timeout_ms=0&token={alice}"),
            vec![],
        ),
    ] {
        let r = call("GET", "/v1/poll", path.clone(), headers, None).await;
        expect(&r, 200, None, &path);
    }
    let mut sse = open_sse(spec, &node, &format!("topic=chat.*&token={alice}"), None)
        .await
        .unwrap_or_else(|r| panic!("SSE with a token refused: {}", r.body));
    assert!(matches!(sse.next(TIMEOUT).await, Some(Block::Opening)));
    // The stream is present, under its token's subject (so is the
    // long-poll session above, for 5 s after its request).
    let r = call(
        "GET",
        PRES,
        "/v1/topics/chat.room1/presence".into(),
        as_alice(),
        None,
    )
    .await;
    expect(&r, 200, None, "presence with a bearer token");
    assert!(
        r.body["clients"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["sub"] == "alice" && c["transport"] == "sse"),
        "{}",
        r.body
    );
    let (_ws, response) =
        tokio_tungstenite::connect_async(node.ws_url(&format!("/v1/ws?token={alice}")))
            .await
            .expect("upgrade with a token");
    spec.check("GET", Some("/v1/ws"), response.status().as_u16(), None, b"");

    // With auth on and no --allowed-origins, only the node's own origin.
    let r = call(
        "GET",
        "/healthz",
        "/healthz".into(),
        vec![("origin", "https://app.example".into())],
        None,
    )
    .await;
    expect(&r, 403, Some("forbidden"), "another origin with auth on");
    let own = format!("http://{}", node.addr);
    let res = http()
        .get(node.url("/healthz"))
        .header("origin", &own)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "own origin");
    assert_eq!(res.headers()["access-control-allow-origin"], own.as_str());
    assert_eq!(res.headers()["access-control-allow-credentials"], "true");
}

/// 429 and 503 from small limits against openapi.yaml.
async fn check_limit_responses(spec: &OpenApi) {
    let streams = [
        ("/v1/ws", "/v1/ws", UPGRADE),
        ("/v1/sse", "/v1/sse?topic=a", &[] as Headers),
        ("/v1/poll", "/v1/poll?topic=a&timeout_ms=0", &[]),
    ];

    // One connection per client address, one publish per ~17 minutes.
    let dir = tempfile::tempdir().unwrap();
    let node = node_with_config(
        dir.path(),
        "[limits]\nmax_connections_per_ip = 1\npublish_rate_per_client = 0.001\npublish_burst = 1\n",
    );
    let held = open_sse(spec, &node, "topic=held", None)
        .await
        .unwrap_or_else(|r| panic!("first connection refused: {}", r.body));
    for (template, path, headers) in streams {
        let r = spec
            .call(&node, "GET", Some(template), path, headers, None)
            .await;
        expect(
            &r,
            429,
            Some("rate_limited"),
            &format!("{path}, second connection"),
        );
    }
    drop(held);
    const MSGS: &str = "/v1/topics/{topic}/messages";
    let path = "/v1/topics/rated/messages";
    let r = spec
        .call(&node, "POST", Some(MSGS), path, JSON, Some(b"1".to_vec()))
        .await;
    expect(&r, 200, None, "first publish");
    let r = spec
        .call(&node, "POST", Some(MSGS), path, JSON, Some(b"2".to_vec()))
        .await;
    expect(&r, 429, Some("rate_limited"), "second publish");
    let r = spec
        .call(
            &node,
            "POST",
            Some("/v1/publish"),
            "/v1/publish",
            JSON,
            Some(br#"[{"topic":"rated","data":3}]"#.to_vec()),
        )
        .await;
    expect(&r, 429, Some("rate_limited"), "batch");
    assert_eq!(metric(&node, "herald_connections_refused_total").await, 3);
    assert_eq!(metric(&node, "herald_rate_limited_total").await, 2);
    let (_, history) = get_json(&node, "/v1/topics/rated/messages").await;
    assert_eq!(history["last_seq"], 1, "refused publishes store nothing");

    // One connection per node.
    let dir = tempfile::tempdir().unwrap();
    let node = node_with_config(dir.path(), "[limits]\nmax_connections = 1\n");
    let _held = open_sse(spec, &node, "topic=held", None)
        .await
        .unwrap_or_else(|r| panic!("first connection refused: {}", r.body));
    for (template, path, headers) in streams {
        let r = spec
            .call(&node, "GET", Some(template), path, headers, None)
            .await;
        expect(&r, 503, Some("unavailable"), &format!("{path}, node full"));
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn specs_are_self_consistent() {
    let openapi = OpenApi::load();
    let resolved = resolve(&openapi.root, &openapi.root);
    // Every schema compiles and its examples are valid.
    for (name, schema) in resolved["components"]["schemas"].as_object().unwrap() {
        for example in schema["examples"].as_array().into_iter().flatten() {
            assert_valid(
                schema,
                example,
                Dialect::OpenApi,
                &format!("openapi example of {name}"),
            );
        }
    }
    let asyncapi = AsyncApi::load();
    assert!(!asyncapi.examples.is_empty());
    for example in &asyncapi.examples {
        let errors = asyncapi.op_errors(example);
        assert!(errors.is_empty(), "example op {example}: {errors:?}");
    }
    let resolved = resolve(&asyncapi.root, &asyncapi.root);
    for (name, m) in resolved["components"]["messages"].as_object().unwrap() {
        for example in m["examples"].as_array().into_iter().flatten() {
            assert_valid(
                &m["payload"],
                &example["payload"],
                Dialect::AsyncApi,
                &format!("asyncapi example of {name}"),
            );
        }
    }
    // Client ops and server frames are told apart by `op` / `type`.
    assert_eq!(
        asyncapi.ops.keys().collect::<Vec<_>>(),
        ["ping", "publish", "refresh", "subscribe", "unsubscribe"]
    );
    assert_eq!(
        asyncapi.frames.keys().collect::<Vec<_>>(),
        [
            "ack",
            "error",
            "gap",
            "join",
            "leave",
            "message",
            "pong",
            "refreshed",
            "subscribed",
            "unsubscribed"
        ]
    );
}

/// The ops the WebSocket test sends: expected reply type, expected error
/// code (`-` for none), the op.
const SCRIPT: &str = r#"
pong          -                 {"op":"ping","id":"p1"}
pong          -                 {"op":"ping","id":7}
pong          -                 {"op":"ping"}
pong          -                 {"op":"ping","id":null}
subscribed    -                 {"op":"subscribe","id":"s1","topic":"conf.*"}
subscribed    -                 {"op":"subscribe","id":"s2","topic":"conf.>"}
subscribed    -                 {"op":"subscribe","id":"s3","topic":"conf.a","since":0}
subscribed    -                 {"op":"subscribe","id":"s4","topic":"conf.b","since":null}
subscribed    -                 {"op":"subscribe","id":"s5","topic":"conf.*"}
ack           -                 {"op":"publish","id":"w1","topic":"conf.a","data":{"n":1}}
ack           -                 {"op":"publish","id":"w2","topic":"conf.b","data":[1,"two",3.5,true]}
ack           -                 {"op":"publish","id":"w3","topic":"conf.a","data":"x","idempotency_key":"k-1"}
ack           -                 {"op":"publish","id":"w4","topic":"conf.a","data":"x","idempotency_key":"k-1"}
ack           -                 {"op":"publish","id":"w5","topic":"conf.c","data":0,"idempotency_key":null,"extra":"ignored"}
ack           -                 {"op":"publish","id":"w6","topic":"conf.c","data":"traced","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
ack           -                 {"op":"publish","id":"w7","topic":"conf.c","data":"invalid tp","traceparent":"not-a-traceparent"}
ack           -                 {"op":"publish","id":"w8","topic":"conf.c","data":"null tp","traceparent":null}
error         bad_request       {"op":"publish","id":"e14","topic":"conf.a","data":1,"traceparent":7}
subscribed    -                 {"op":"subscribe","id":"pr1","topic":"pres.ws","presence":true}
subscribed    -                 {"op":"subscribe","id":"pr2","topic":"pres.other","presence":false}
subscribed    -                 {"op":"subscribe","id":"pr3","topic":"pres.third","presence":null}
error         bad_request       {"op":"subscribe","id":"pr4","topic":"pres.x","presence":"yes"}
error         bad_request       {"op":"subscribe","id":"pr5","topic":"pres.x","presence":1}
unsubscribed  -                 {"op":"unsubscribe","id":"u1","topic":"conf.>"}
unsubscribed  -                 {"op":"unsubscribe","id":"u2","topic":"never.subscribed"}
subscribed    -                 {"op":"subscribe","id":"g1","topic":"gap.t","since":0}
error         unknown_op        {"op":"explode","id":"e1"}
error         bad_request       {"id":"e2","topic":"a"}
error         bad_request       {"op":7,"id":"e3"}
error         bad_request       {"op":"ping","id":{"x":1}}
error         invalid_topic     {"op":"subscribe","id":"e5","topic":"a..b"}
error         invalid_topic     {"op":"subscribe","id":"e6","topic":"a.>.b"}
error         invalid_topic     {"op":"unsubscribe","id":"e7","topic":"bad topic"}
error         invalid_topic     {"op":"publish","id":"e8","topic":"conf.*","data":1}
error         bad_request       {"op":"publish","id":"e9","topic":"conf.a"}
error         bad_request       {"op":"subscribe","id":"e10"}
error         bad_request       {"op":"subscribe","id":"e11","topic":"conf.*","since":3,"since_ts":1}
error         bad_request       {"op":"subscribe","id":"e12","topic":"conf.a","since":-3}
error         bad_request       {"op":"publish","id":"e13","topic":"conf.a","data":1,"idempotency_key":"has space"}
refreshed     -                 {"op":"refresh","id":"r1","token":"any-token-while-auth-is-off"}
error         bad_request       {"op":"refresh","id":"r2"}
error         bad_request       {"op":"refresh","id":"r3","token":7}
subscribed    -                 {"op":"subscribe","id":"c1","topic":"cur.*","cursor":"1~0"}
subscribed    -                 {"op":"subscribe","id":"c2","topic":"cur.x","cursor":null}
subscribed    -                 {"op":"subscribe","id":"c3","topic":"cur.>","cursor":"1~0~cur.x~0~zzz~5"}
error         bad_request       {"op":"subscribe","id":"c4","topic":"cur.*","cursor":"garbage"}
error         bad_request       {"op":"subscribe","id":"c5","topic":"cur.y","since":1,"cursor":"1~0"}
error         bad_request       {"op":"subscribe","id":"c6","topic":"cur.y","cursor":7}
"#;

#[tokio::test]
async fn websocket_frames_match_asyncapi() {
    let spec = AsyncApi::load();
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let node = Node::start(&["--config", &config]);
    trimmed_topic(&node, "gap.t").await;

    let mut ws = node.ws().await;
    let mut script: Vec<(Value, &str, Option<&str>)> = SCRIPT
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let brace = line.find('{').expect("op");
            let mut head = line[..brace].split_whitespace();
            let want = head.next().expect("reply type");
            let code = head.next().filter(|c| *c != "-");
            (
                serde_json::from_str(&line[brace..]).expect(line),
                want,
                code,
            )
        })
        .collect();
    script.push((
        json!({"op":"publish","id":14,"topic":"conf.a","data":"x".repeat(65 * 1024)}),
        "error",
        Some("payload_too_large"),
    ));
    let mut acks = BTreeMap::new();
    for (op, want, code) in &script {
        let reply = exchange(&mut ws, op).await;
        assert_eq!(reply["type"], *want, "{op} → {reply}");
        if let Some(code) = code {
            assert_eq!(reply["code"], *code, "{op} → {reply}");
        }
        match op.get("id").filter(|v| v.is_string() || v.is_number()) {
            Some(id) => assert_eq!(reply.get("id"), Some(id), "id echoed: {reply}"),
            None => assert!(reply.get("id").is_none(), "no id to echo: {reply}"),
        }
        // The op schemas accept what the server accepts and refuse what it
        // refuses for its shape (a too-large payload is not a shape error).
        let errors = spec.op_errors(op);
        if *want != "error" {
            assert!(
                errors.is_empty(),
                "accepted op {op} fails its schema: {errors:?}"
            );
        } else if *code != Some("payload_too_large") {
            assert!(!errors.is_empty(), "refused op {op} passes its schema");
        }
        if *want == "ack" {
            acks.insert(op["id"].as_str().unwrap().to_string(), reply["seq"].clone());
        }
    }
    assert_eq!(
        acks["w3"], acks["w4"],
        "idempotent repeat returns the first seq"
    );

    // Frames that are not ops at all: an error without an id.
    for text in [
        "{not json",
        "[1,2]",
        "\"just a string\"",
        "",
        "{\"op\":\"ping\",\"op\":\"ping\"}",
    ] {
        ws.send_text(text).await;
        let reply = reply_to(&mut ws, None).await;
        assert_eq!(reply["code"], "bad_request", "{text:?}: {reply}");
    }
    ws.stream
        .send(WsMessage::Binary(b"\x01\x02".to_vec()))
        .await
        .unwrap();
    let reply = reply_to(&mut ws, None).await;
    assert_eq!(reply["code"], "bad_request", "binary frame: {reply}");

    // Deliveries: conf.a 1 and 2 (once each despite three overlapping
    // subscriptions), conf.b 1, conf.c 1 to 4, then gap.t: gap 1..=3, 4, 5.
    let mut messages = Vec::new();
    let mut gaps = Vec::new();
    for frame in ws.seen.clone() {
        match frame["type"].as_str() {
            Some("message") => messages.push(frame),
            Some("gap") => gaps.push(frame),
            _ => {}
        }
    }
    while messages.len() < 9 || gaps.is_empty() {
        let frame = ws.recv().await;
        match frame["type"].as_str() {
            Some("message") => messages.push(frame),
            Some("gap") => gaps.push(frame),
            _ => {}
        }
    }
    if let Some(frame) = ws.try_recv(Duration::from_millis(300)).await {
        panic!("unexpected extra frame {frame}");
    }
    assert_eq!(
        gaps,
        vec![json!({"type":"gap","topic":"gap.t","from":1,"to":3})]
    );
    let mut got: Vec<(String, u64)> = messages
        .iter()
        .map(|m| {
            (
                m["topic"].as_str().unwrap().into(),
                m["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    let want: Vec<(String, u64)> = [
        ("conf.a", 1),
        ("conf.a", 2),
        ("conf.b", 1),
        ("conf.c", 1),
        ("conf.c", 2),
        ("conf.c", 3),
        ("conf.c", 4),
        ("gap.t", 4),
        ("gap.t", 5),
    ]
    .iter()
    .map(|(t, s)| (t.to_string(), *s))
    .collect();
    assert_eq!(got, want);
    // A valid traceparent is carried in the message (between ts and data);
    // an invalid or null one is ignored.
    let traced: Vec<(u64, Value)> = messages
        .iter()
        .filter(|m| m["topic"] == "conf.c")
        .map(|m| (m["seq"].as_u64().unwrap(), m["traceparent"].clone()))
        .collect();
    assert_eq!(
        traced,
        [
            (1, Value::Null),
            (2, json!(TRACEPARENT)),
            (3, Value::Null),
            (4, Value::Null)
        ]
    );

    // Presence: another client joins and leaves the pattern this connection
    // listens on (`presence: true`); on `pres.other` (`presence: false`)
    // nothing is heard.
    let mut other = node.ws().await;
    other.subscribe("pres.other").await;
    other.subscribe("pres.ws").await;
    let join = ws.recv().await;
    assert_eq!(join["type"], "join", "{join}");
    assert_eq!(join["topic"], "pres.ws", "{join}");
    assert_eq!(join["client"]["transport"], "ws", "{join}");
    let op = json!({"op":"unsubscribe","id":"bye","topic":"pres.ws"});
    assert_eq!(exchange(&mut other, &op).await["type"], "unsubscribed");
    let leave = ws.recv().await;
    assert_eq!(leave["type"], "leave", "{leave}");
    assert_eq!(leave["topic"], "pres.ws", "{leave}");
    assert_eq!(leave["client"], join["client"]);
    ws.assert_silent(Duration::from_millis(300)).await;

    // Every frame the server sent matches asyncapi.yaml, and every server
    // frame the spec documents was seen.
    let mut seen_types = BTreeSet::new();
    for frame in &ws.seen {
        spec.check_frame(frame);
        seen_types.insert(frame["type"].as_str().unwrap().to_string());
    }
    let documented: BTreeSet<String> = spec.frames.keys().cloned().collect();
    assert_eq!(
        seen_types, documented,
        "server frame types seen vs documented"
    );

    // Documented close codes.
    let too_big = format!(
        "{{\"op\":\"publish\",\"topic\":\"a\",\"data\":\"{}\"}}",
        "x".repeat(200 * 1024)
    );
    let cases = [
        (WsMessage::Text(too_big), 1009),
        (
            WsMessage::Frame(Frame::message(
                b"{\"op\":\"ping\",\"x\":\"\xff\xfe\"}".to_vec(),
                OpCode::Data(Data::Text),
                true,
            )),
            1007,
        ),
        (
            WsMessage::Frame(Frame::message(
                b"{}".to_vec(),
                OpCode::Data(Data::Continue),
                true,
            )),
            1002,
        ),
        (
            WsMessage::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            })),
            1000,
        ),
    ];
    for (message, want) in cases {
        let code = close_code_after(&node, message).await;
        assert_eq!(code, Some(want), "close code");
        assert!(
            spec.close_codes.contains(&want),
            "close code {want} is not in x-close-codes"
        );
    }
    // The first connection is unaffected.
    assert_eq!(
        exchange(&mut ws, &json!({"op":"ping","id":"end"})).await["type"],
        "pong"
    );
}

#[tokio::test]
async fn http_responses_match_openapi() {
    let spec = OpenApi::load();
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let node = Node::start(&["--config", &config, "--enable-echo"]);
    const MSGS: &str = "/v1/topics/{topic}/messages";
    const BATCH: &str = "/v1/publish";

    // Health.
    for path in ["/healthz", "/readyz", "/metrics"] {
        expect(&spec.get(&node, path, path).await, 200, None, path);
    }
    // Every metric README §4.5 lists is exported.
    let metrics = spec.get(&node, "/metrics", "/metrics").await.body;
    let metrics = metrics.as_str().expect("metrics text");
    let readme = std::fs::read_to_string(spec_path("README.md")).unwrap();
    let listed = readme
        .split("Metrics exported:")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .expect("README lists the metrics");
    let names: BTreeSet<&str> = listed
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|m| m.split('{').next().unwrap())
        .collect();
    assert!(names.len() > 10, "{names:?}");
    for name in names {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{', '_'])),
            "README lists {name}, /metrics does not export it"
        );
    }

    // Publish one.
    let publish_one = |topic: &str, headers: Headers, body: &[u8]| {
        let path = format!("/v1/topics/{topic}/messages");
        let body = body.to_vec();
        let (spec, node) = (&spec, &node);
        async move {
            spec.call(node, "POST", Some(MSGS), &path, headers, Some(body))
                .await
        }
    };
    let r = publish_one("orders.eu", JSON, br#"{"n":1}"#).await;
    expect(&r, 200, None, "publish json");
    assert_eq!(r.body, json!({"topic":"orders.eu","seq":1}));
    let r = publish_one("orders.eu", TEXT, b"hello").await;
    expect(&r, 200, None, "publish text");
    let r = publish_one("orders.eu", JSON, b"null").await;
    expect(&r, 200, None, "publish null");
    for _ in 0..2 {
        let r = publish_one("orders.eu", JSON_ONCE, br#"{"once":true}"#).await;
        expect(&r, 200, None, "idempotent publish");
        assert_eq!(r.body["seq"], 4, "a repeat returns the first seq");
    }
    let too_big = vec![b'1'; 70 * 1024];
    let bad_publishes: [(&str, Headers, &[u8], u16, &str); 8] = [
        ("a..b", JSON, b"1", 400, "invalid_topic"),
        ("orders.*", JSON, b"1", 400, "invalid_topic"),
        ("orders.%3E", JSON, b"1", 400, "invalid_topic"),
        ("a", JSON, b"{oops", 400, "bad_request"),
        ("a", JSON, b"", 400, "bad_request"),
        ("a", TEXT, b"\xff\xfe", 400, "bad_request"),
        (
            "a",
            &[("idempotency-key", "has space")],
            b"x",
            400,
            "bad_request",
        ),
        ("a", JSON, &too_big, 413, "payload_too_large"),
    ];
    for (topic, headers, body, status, code) in bad_publishes {
        let path = format!("/v1/topics/{topic}/messages");
        let r = spec
            .call(
                &node,
                "POST",
                Some(MSGS),
                &path,
                headers,
                Some(body.to_vec()),
            )
            .await;
        expect(&r, status, Some(code), &path);
    }

    // Batch publish.
    let batch = json!([
        {"topic":"orders.eu","data":{"b":1}},
        {"topic":"orders.us","data":null,"idempotency_key":"own-key"},
        {"topic":"orders.eu","data":[2],"idempotency_key":null}
    ]);
    let mut answers = Vec::new();
    for _ in 0..2 {
        let r = spec
            .call(
                &node,
                "POST",
                Some(BATCH),
                BATCH,
                &[
                    ("content-type", "application/json"),
                    ("idempotency-key", "batch-1"),
                ],
                Some(batch.to_string().into_bytes()),
            )
            .await;
        expect(&r, 200, None, "batch");
        answers.push(r.body);
    }
    assert_eq!(
        answers[0],
        json!([{"topic":"orders.eu","seq":5},{"topic":"orders.us","seq":1},{"topic":"orders.eu","seq":6}])
    );
    assert_eq!(
        answers[1], answers[0],
        "a repeated batch with the same key stores nothing"
    );
    let big_item = json!([{"topic":"a","data":"x".repeat(70 * 1024)}]);
    let huge = Value::Array(
        (0..20)
            .map(|_| json!({"topic":"a","data":"x".repeat(60 * 1024)}))
            .collect(),
    );
    let bad_batches: Vec<(Value, u16, &str)> = [
        (r#"{}"#, 400, "bad_request"),
        (r#"[]"#, 400, "bad_request"),
        (r#"[{"topic":"a"}]"#, 400, "bad_request"),
        (
            r#"[{"topic":"a","data":1,"extra":true}]"#,
            400,
            "bad_request",
        ),
        (
            r#"[{"topic":"a","data":1,"idempotency_key":""}]"#,
            400,
            "bad_request",
        ),
        (
            r#"[{"topic":"a","data":1},{"topic":"b.*","data":2}]"#,
            400,
            "invalid_topic",
        ),
    ]
    .into_iter()
    .map(|(body, status, code)| (serde_json::from_str(body).unwrap(), status, code))
    .chain([
        (big_item, 413, "payload_too_large"),
        (huge, 413, "payload_too_large"),
    ])
    .collect();
    for (body, status, code) in bad_batches {
        let r = spec.post_json(&node, BATCH, BATCH, &body).await;
        let shown: String = body.to_string().chars().take(80).collect();
        expect(&r, status, Some(code), &format!("batch {shown}"));
    }

    // History.
    let r = spec
        .get(&node, MSGS, "/v1/topics/orders.eu/messages?since=1&limit=2")
        .await;
    expect(&r, 200, None, "history");
    assert_eq!(r.body["messages"].as_array().unwrap().len(), 2);
    assert_eq!(
        (r.body["first_seq"].as_u64(), r.body["last_seq"].as_u64()),
        (Some(1), Some(6))
    );
    let r = spec
        .get(&node, MSGS, "/v1/topics/never.published/messages")
        .await;
    assert_eq!(r.body, json!({"messages":[],"first_seq":1,"last_seq":0}));
    trimmed_topic(&node, "gap.h").await;
    let r = spec.get(&node, MSGS, "/v1/topics/gap.h/messages").await;
    assert_eq!(
        (r.body["first_seq"].as_u64(), r.body["last_seq"].as_u64()),
        (Some(4), Some(5))
    );
    for (path, code) in [
        ("/v1/topics/orders.%3E/messages", "invalid_topic"),
        ("/v1/topics/orders.*/messages", "invalid_topic"),
        ("/v1/topics/a/messages?since=x", "bad_request"),
        ("/v1/topics/a/messages?since=-1", "bad_request"),
        ("/v1/topics/a/messages?foo=1", "bad_request"),
    ] {
        expect(&spec.get(&node, MSGS, path).await, 400, Some(code), path);
    }
    // History switched off for a namespace (`quiet`): 404.
    let r = spec.get(&node, MSGS, "/v1/topics/quiet.x/messages").await;
    expect(&r, 404, Some("not_found"), "history off");

    // Trace context: a valid traceparent is carried and echoed, an invalid
    // one ignored; a batch carries it into every item.
    const TRACED: Headers = &[
        ("content-type", "application/json"),
        ("traceparent", TRACEPARENT),
    ];
    let r = publish_one("trace.t", TRACED, b"1").await;
    expect(&r, 200, None, "publish with traceparent");
    assert_eq!(
        r.headers.get("traceparent").and_then(|v| v.to_str().ok()),
        Some(TRACEPARENT)
    );
    let r = publish_one(
        "trace.t",
        &[
            ("content-type", "application/json"),
            ("traceparent", "00-zz-11-01"),
        ],
        b"2",
    )
    .await;
    expect(&r, 200, None, "publish with an invalid traceparent");
    assert!(r.headers.get("traceparent").is_none(), "{:?}", r.headers);
    let r = spec
        .call(
            &node,
            "POST",
            Some(BATCH),
            BATCH,
            TRACED,
            Some(br#"[{"topic":"trace.t","data":3},{"topic":"trace.u","data":4}]"#.to_vec()),
        )
        .await;
    expect(&r, 200, None, "batch with traceparent");
    assert_eq!(
        r.headers.get("traceparent").and_then(|v| v.to_str().ok()),
        Some(TRACEPARENT),
        "the batch answer echoes the carried context"
    );
    let r = spec.get(&node, MSGS, "/v1/topics/trace.t/messages").await;
    let carried: Vec<&Value> = r.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["traceparent"])
        .collect();
    assert_eq!(
        carried,
        [&json!(TRACEPARENT), &Value::Null, &json!(TRACEPARENT)]
    );
    let raw = get_text(&node, "/v1/topics/trace.u/messages").await;
    assert!(
        raw.contains(&format!(",\"traceparent\":\"{TRACEPARENT}\",\"data\":4}}")),
        "traceparent sits between ts and data: {raw}"
    );

    // Presence: who is subscribed to a pattern matching the topic.
    const PRES: &str = "/v1/topics/{topic}/presence";
    let r = spec.get(&node, PRES, "/v1/topics/pres.room/presence").await;
    expect(&r, 200, None, "presence, nobody");
    assert_eq!(r.body, json!({"topic":"pres.room","clients":[]}));
    let mut member = node.ws().await;
    member.subscribe("pres.*").await;
    member.subscribe("pres.room").await;
    let r = spec.get(&node, PRES, "/v1/topics/pres.room/presence").await;
    expect(&r, 200, None, "presence");
    let clients = r.body["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 1, "once per client: {}", r.body);
    assert_eq!(clients[0]["transport"], "ws");
    assert_eq!(clients[0]["sub"], Value::Null);
    for (path, code) in [
        ("/v1/topics/pres.*/presence", "invalid_topic"),
        ("/v1/topics/a..b/presence", "invalid_topic"),
        ("/v1/topics/pres.room/presence?foo=1", "bad_request"),
    ] {
        expect(&spec.get(&node, PRES, path).await, 400, Some(code), path);
    }
    let r = spec.get(&node, PRES, "/v1/topics/quiet.x/presence").await;
    expect(&r, 404, Some("not_found"), "presence off");

    // Methods a routed path does not have: 405 on every one of them, with
    // the documented `Allow` header.
    for (method, path, template) in [
        ("PUT", "/v1/topics/a/messages", MSGS),
        ("POST", "/v1/topics/a/presence", PRES),
        ("PUT", "/v1/topics/a/presence", PRES),
        ("DELETE", "/v1/topics/a/messages", MSGS),
        ("OPTIONS", "/v1/topics/a/messages", MSGS),
        ("GET", BATCH, BATCH),
        ("PUT", BATCH, BATCH),
        ("POST", "/v1/ws", "/v1/ws"),
        ("POST", "/v1/sse", "/v1/sse"),
        ("POST", "/v1/poll", "/v1/poll"),
        ("OPTIONS", "/v1/poll", "/v1/poll"),
        ("POST", "/v1/echo", "/v1/echo"),
        ("POST", "/healthz", "/healthz"),
        ("DELETE", "/readyz", "/readyz"),
        ("POST", "/metrics", "/metrics"),
    ] {
        let r = spec
            .call(&node, method, Some(template), path, &[], None)
            .await;
        expect(
            &r,
            405,
            Some("method_not_allowed"),
            &format!("{method} {path}"),
        );
    }
    // Paths that are not routed.
    for path in [
        "/v1/nowhere",
        "/v1/topics/a/presence/extra",
        "/v1/topics/a/messages/extra",
        "/",
    ] {
        let r = spec.call(&node, "GET", None, path, &[], None).await;
        expect(&r, 404, Some("not_found"), path);
    }

    // Long-poll.
    const POLL: &str = "/v1/poll";
    // A concrete topic the cursor does not list resumes from the cursor's
    // floor, wherever it stands in the query (README §9.1).
    let r = spec
        .get(&node, POLL, "/v1/poll?topic=late.*&timeout_ms=0")
        .await;
    let floor_only = r.body["cursor"].as_str().unwrap().to_string();
    assert!(
        !floor_only[2..].contains('~'),
        "nothing delivered, so only a floor: {floor_only}"
    );
    publish(&node, "late.eu", &json!("while away")).await;
    for query in [
        "topic=late.eu",
        "topic=late.eu&topic=late.*",
        "topic=late.*&topic=late.eu",
    ] {
        let r = spec
            .get(
                &node,
                POLL,
                &format!("/v1/poll?{query}&cursor={floor_only}&timeout_ms=5000"),
            )
            .await;
        expect(&r, 200, None, query);
        assert_eq!(
            r.body["messages"],
            json!([{"topic":"late.eu","seq":1,"ts":r.body["messages"][0]["ts"],"data":"while away"}]),
            "{query}: {}",
            r.body
        );
    }
    let r = spec
        .get(
            &node,
            POLL,
            "/v1/poll?topic=orders.eu&topic=orders.*&timeout_ms=0",
        )
        .await;
    expect(&r, 200, None, "poll from now");
    assert_eq!(r.body["messages"], json!([]));
    let cursor = r.body["cursor"].as_str().unwrap().to_string();
    publish(&node, "orders.eu", &json!("after")).await;
    let r = spec
        .get(
            &node,
            POLL,
            &format!("/v1/poll?topic=orders.eu&topic=orders.*&cursor={cursor}&timeout_ms=5000"),
        )
        .await;
    expect(&r, 200, None, "poll with cursor");
    assert_eq!(r.body["messages"][0]["data"], "after", "{}", r.body);
    let r = spec
        .get(
            &node,
            POLL,
            "/v1/poll?topic=gap.*&cursor=1~0~gap.h~0&timeout_ms=0",
        )
        .await;
    expect(&r, 200, None, "poll with a gap");
    assert_eq!(
        r.body["gaps"],
        json!([{"topic":"gap.h","from":1,"to":3}]),
        "{}",
        r.body
    );
    // Long-poll presence: the session id comes back on every answer; with
    // `presence=true` join/leave events come too.
    let r = spec
        .get(
            &node,
            POLL,
            "/v1/poll?topic=pres.room&presence=true&timeout_ms=0",
        )
        .await;
    expect(&r, 200, None, "poll with presence");
    assert_eq!(r.body["presence"], json!([]), "{}", r.body);
    let client_id = r.body["client_id"].as_str().unwrap().to_string();
    let mut joiner = node.ws().await;
    joiner.subscribe("pres.room").await;
    let r = spec
        .get(
            &node,
            POLL,
            &format!("/v1/poll?topic=pres.room&presence=1&client_id={client_id}&timeout_ms=5000"),
        )
        .await;
    expect(&r, 200, None, "poll with presence events");
    assert_eq!(r.body["client_id"], client_id.as_str());
    let events = r.body["presence"].as_array().expect("presence events");
    assert_eq!(events.len(), 1, "{}", r.body);
    assert_eq!(events[0]["type"], "join");
    assert_eq!(events[0]["topic"], "pres.room");
    assert_eq!(events[0]["client"]["transport"], "ws");
    let r = spec.get(&node, PRES, "/v1/topics/pres.room/presence").await;
    let transports: Vec<&str> = r.body["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["transport"].as_str().unwrap())
        .collect();
    assert_eq!(
        transports.len(),
        3,
        "member, poll session, joiner: {}",
        r.body
    );
    assert!(transports.contains(&"poll"), "{}", r.body);
    let r = spec
        .get(
            &node,
            POLL,
            "/v1/poll?topic=pres.room&client_id=unknown&timeout_ms=0",
        )
        .await;
    expect(&r, 200, None, "poll with an unknown client id");
    assert_ne!(r.body["client_id"], "unknown", "a fresh session");
    assert!(r.body.get("presence").is_none(), "{}", r.body);
    let long_id = format!("/v1/poll?topic=a&client_id={}", "x".repeat(129));
    for (path, code) in [
        ("/v1/poll?topic=a&presence=maybe", "bad_request"),
        (long_id.as_str(), "bad_request"),
        ("/v1/poll", "bad_request"),
        ("/v1/poll?topic=a&cursor=garbage", "bad_request"),
        ("/v1/poll?topic=a&timeout_ms=soon", "bad_request"),
        ("/v1/poll?topic=a&bogus=1", "bad_request"),
        ("/v1/poll?topic=a..b", "invalid_topic"),
    ] {
        expect(&spec.get(&node, POLL, path).await, 400, Some(code), path);
    }

    // SSE: opening block, gap, messages, live message, heartbeat.
    let mut sse = open_sse(
        &spec,
        &node,
        "topic=gap.h&topic=live.%3E",
        Some("1~0~gap.h~0"),
    )
    .await
    .unwrap_or_else(|r| panic!("SSE refused: {}", r.body));
    let first = sse.next(TIMEOUT).await.expect("opening block");
    assert!(matches!(first, Block::Opening), "{first:?}");
    let hello = sse.events(1).await;
    assert_eq!(
        hello[0].0, "hello",
        "the hello block follows the opening one"
    );
    assert!(hello[0].1["client_id"].is_string());
    let events = sse.events(3).await;
    assert_eq!(
        events[0],
        ("gap".into(), json!({"topic":"gap.h","from":1,"to":3}))
    );
    assert_eq!(
        (events[1].1["seq"].as_u64(), events[2].1["seq"].as_u64()),
        (Some(4), Some(5))
    );
    publish(&node, "live.x", &json!({"live":true})).await;
    let events = sse.events(1).await;
    assert_eq!(events[0].0, "message");
    assert_eq!(events[0].1["topic"], "live.x");
    let mut pinged = false;
    while !pinged {
        match sse.next(TIMEOUT).await.expect("heartbeat") {
            Block::Ping => pinged = true,
            other => panic!("unexpected block {other:?}"),
        }
    }
    // SSE presence: join/leave events without an id.
    let mut listener = open_sse(&spec, &node, "topic=pres.sse&presence=true", None)
        .await
        .unwrap_or_else(|r| panic!("SSE with presence refused: {}", r.body));
    assert!(matches!(listener.next(TIMEOUT).await, Some(Block::Opening)));
    assert_eq!(listener.events(1).await[0].0, "hello");
    let mut visitor = node.ws().await;
    visitor.subscribe("pres.sse").await;
    let events = listener.events(1).await;
    assert_eq!(events[0].0, "join", "{events:?}");
    assert_eq!(events[0].1["topic"], "pres.sse");
    drop(visitor);
    let events = listener.events(1).await;
    assert_eq!(events[0].0, "leave", "{events:?}");
    for (query, last_event_id, code) in [
        ("", None, "bad_request"),
        ("topic=a&timeout_ms=5", None, "bad_request"),
        ("topic=a&presence=maybe", None, "bad_request"),
        ("topic=a&client_id=x", None, "bad_request"),
        ("topic=a&cursor=2~1", None, "bad_request"),
        ("topic=a", Some("garbage"), "bad_request"),
        ("topic=a.%3E.b", None, "invalid_topic"),
    ] {
        match open_sse(&spec, &node, query, last_event_id).await {
            Ok(_) => panic!("SSE {query:?} was accepted"),
            Err(r) => expect(&r, 400, Some(code), query),
        }
    }

    // WebSocket handshakes: 101 on an upgrade, a JSON 400 otherwise.
    for path in ["/v1/ws", "/v1/echo"] {
        let (_ws, response) = tokio_tungstenite::connect_async(node.ws_url(path))
            .await
            .expect("upgrade");
        spec.check("GET", Some(path), response.status().as_u16(), None, b"");
        let r = spec.get(&node, path, path).await;
        expect(&r, 400, Some("bad_request"), path);
    }

    // Refused origins: 403 on every documented operation.
    let strict = Node::start(&["--allowed-origins", "https://app.example", "--enable-echo"]);
    for (template, method) in spec.operations() {
        let path = template.replace("{topic}", "orders.eu");
        let r = spec
            .call(
                &strict,
                &method,
                Some(&template),
                &path,
                &[("origin", "https://evil.example")],
                None,
            )
            .await;
        expect(
            &r,
            403,
            Some("forbidden"),
            &format!("{method} {path} from a refused origin"),
        );
    }
    let r = spec
        .call(
            &strict,
            "GET",
            Some("/healthz"),
            "/healthz",
            &[("origin", "https://app.example")],
            None,
        )
        .await;
    expect(&r, 200, None, "allowed origin");

    // Auth (401, 403) and limits (429, 503) on their own nodes.
    check_auth_responses(&spec).await;
    check_limit_responses(&spec).await;
    check_dashboard_responses(&spec, &node).await;
    admin::check_admin_responses(&spec).await;

    // Every documented status except those needing a failure was provoked.
    let missing: Vec<_> = spec
        .documented()
        .difference(&spec.covered.borrow())
        .filter(|(_, _, status)| !NOT_PROVOKED.contains(&status.as_str()))
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "documented but never provoked: {missing:#?}"
    );
}

#[tokio::test]
async fn every_documented_route_and_op_is_served() {
    let openapi = OpenApi::load();
    let asyncapi = AsyncApi::load();
    let node = Node::start(&["--enable-echo"]);
    for (template, method) in openapi.operations() {
        let path = template.replace("{topic}", "spec.route");
        let res = http()
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                node.url(&path),
            )
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let ct = content_type(res.headers());
        if ct.as_deref() == Some("text/event-stream") {
            // An endless stream: its status and media type are documented.
            openapi.media(&method, Some(&template), status, ct.as_deref());
            continue;
        }
        let body = res.bytes().await.unwrap();
        let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert!(
            !(status == 404 && parsed["error"]["code"] == "not_found"),
            "{method} {template} is documented but not routed"
        );
        openapi.check(&method, Some(&template), status, ct.as_deref(), &body);
    }
    // Every example op of asyncapi.yaml is accepted and answered with one of
    // its documented replies.
    let mut ws = node.ws().await;
    for example in &asyncapi.examples {
        let reply = exchange(&mut ws, example).await;
        assert_ne!(reply["type"], "error", "example {example} refused: {reply}");
        asyncapi.check_frame(&reply);
    }
    for frame in &ws.seen {
        asyncapi.check_frame(frame);
    }
}

/// Sends each op, checks its reply's type and code, and that accepted ops
/// match their schema; returns the replies.
async fn run_ops(
    spec: &AsyncApi,
    ws: &mut Ws,
    script: &[(Value, &str, Option<&str>)],
) -> Vec<Value> {
    let mut replies = Vec::new();
    for (op, want, code) in script {
        let reply = exchange(ws, op).await;
        assert_eq!(reply["type"], *want, "{op} → {reply}");
        assert_eq!(reply["code"].as_str(), *code, "{op} → {reply}");
        assert_eq!(reply.get("id"), op.get("id"), "id echoed: {reply}");
        spec.check_frame(&reply);
        let errors = spec.op_errors(op);
        assert!(errors.is_empty(), "op {op} fails its schema: {errors:?}");
        replies.push(reply);
    }
    replies
}

#[tokio::test]
async fn websocket_auth_frames_match_asyncapi() {
    let spec = AsyncApi::load();
    let dir = tempfile::tempdir().unwrap();
    let node = auth_node(
        dir.path(),
        "[limits]\npublish_rate_per_connection = 0.001\npublish_burst = 2\n",
    );
    let now = now_secs();
    let renewed = now + 900;

    // A token holder: every refusal is an error frame, the connection stays.
    let mut ws = Ws::connect(&node.ws_url(&format!("/v1/ws?token={}", alice()))).await;
    let script = [
        (
            json!({"op":"subscribe","id":"a1","topic":"chat.*"}),
            "subscribed",
            None,
        ),
        (
            json!({"op":"subscribe","id":"a2","topic":"chat.>"}),
            "error",
            Some("forbidden"),
        ),
        (
            json!({"op":"subscribe","id":"a3","topic":">"}),
            "error",
            Some("forbidden"),
        ),
        (
            json!({"op":"subscribe","id":"a4","topic":"chat.room1","cursor":"1~0~other.x~1"}),
            "error",
            Some("forbidden"),
        ),
        (
            json!({"op":"subscribe","id":"a5","topic":"public.news","since":0}),
            "subscribed",
            None,
        ),
        (
            json!({"op":"publish","id":"a6","topic":"chat.room2","data":1}),
            "error",
            Some("forbidden"),
        ),
        (
            json!({"op":"publish","id":"a7","topic":"chat.room1","data":1}),
            "ack",
            None,
        ),
        (
            json!({"op":"publish","id":"a8","topic":"chat.room1","data":2}),
            "ack",
            None,
        ),
        (
            json!({"op":"publish","id":"a9","topic":"chat.room1","data":3}),
            "error",
            Some("rate_limited"),
        ),
        (
            json!({"op":"refresh","id":"a10","token":"garbage"}),
            "error",
            Some("unauthorized"),
        ),
        (
            // Does not cover the current subscription `chat.*`.
            json!({"op":"refresh","id":"a11","token":mint(now + 600, &["other.>"], &[])}),
            "error",
            Some("forbidden"),
        ),
        (
            json!({"op":"refresh","id":"a12","token":mint(now - 60, &[">"], &[])}),
            "error",
            Some("unauthorized"),
        ),
        (
            json!({"op":"refresh","id":"a13","token":mint(renewed, &["chat.>", "public.>"], &[">"])}),
            "refreshed",
            None,
        ),
        (
            // The refreshed grants apply at once.
            json!({"op":"subscribe","id":"a14","topic":"chat.>"}),
            "subscribed",
            None,
        ),
        (json!({"op":"ping","id":"a15"}), "pong", None),
    ];
    let replies = run_ops(&spec, &mut ws, &script).await;
    assert_eq!(replies[12]["expires_at"], renewed, "{}", replies[12]);
    // The two acked publishes reach the subscriber (`exchange` skipped them).
    let mut delivered: Vec<Value> = ws
        .seen
        .iter()
        .filter(|f| f["type"] == "message")
        .cloned()
        .collect();
    while delivered.len() < 2 {
        let frame = ws.recv().await;
        if frame["type"] == "message" {
            delivered.push(frame);
        }
    }
    assert_eq!(
        delivered.iter().map(|m| &m["data"]).collect::<Vec<_>>(),
        [&json!(1), &json!(2)]
    );

    // Without credentials: only the anonymous namespace, refusals are
    // `unauthorized`; a refresh brings credentials.
    let mut anon = node.ws().await;
    let script = [
        (
            json!({"op":"subscribe","id":"n1","topic":"public.>"}),
            "subscribed",
            None,
        ),
        (
            json!({"op":"subscribe","id":"n2","topic":"chat.*"}),
            "error",
            Some("unauthorized"),
        ),
        (
            json!({"op":"publish","id":"n3","topic":"public.news","data":1}),
            "error",
            Some("unauthorized"),
        ),
        (
            json!({"op":"refresh","id":"n4","token":alice()}),
            "refreshed",
            None,
        ),
        (
            json!({"op":"subscribe","id":"n5","topic":"chat.*"}),
            "subscribed",
            None,
        ),
    ];
    run_ops(&spec, &mut anon, &script).await;

    // An API key from --api-key publishes anywhere, subscribes nowhere; it
    // does not expire.
    let mut service = Ws::connect(&node.ws_url(&format!("/v1/ws?token={API_KEY}"))).await;
    let script = [
        (
            json!({"op":"publish","id":"k1","topic":"any.topic","data":1}),
            "ack",
            None,
        ),
        (
            json!({"op":"subscribe","id":"k2","topic":"any.topic"}),
            "error",
            Some("forbidden"),
        ),
        (
            json!({"op":"refresh","id":"k3","token":API_KEY}),
            "refreshed",
            None,
        ),
    ];
    let replies = run_ops(&spec, &mut service, &script).await;
    assert!(replies[2].get("expires_at").is_none(), "{}", replies[2]);

    // A token that runs out closes the connection with 4003, unless it was
    // refreshed in time.
    let close_codes = spec.close_codes.clone();
    let expiring = async {
        let mut ws = Ws::connect(&node.ws_url(&format!(
            "/v1/ws?token={}",
            mint(now_secs() + 1, &[">"], &[])
        )))
        .await;
        let code = ws.closed().await;
        assert_eq!(code, Some(4003), "close code at expiry");
        assert!(close_codes.contains(&4003), "4003 is not in x-close-codes");
    };
    let refreshed = async {
        // Two seconds, so the refresh is surely read before the first token
        // runs out (expiry has one-second granularity).
        let exp = now_secs() + 2;
        let mut ws =
            Ws::connect(&node.ws_url(&format!("/v1/ws?token={}", mint(exp, &[">"], &[])))).await;
        let op = json!({"op":"refresh","id":"f1","token":mint(now_secs() + 600, &[">"], &[])});
        assert_eq!(exchange(&mut ws, &op).await["type"], "refreshed");
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let past_exp = (exp * 1000 + 700).saturating_sub(now_ms);
        tokio::time::sleep(Duration::from_millis(past_exp)).await;
        assert_eq!(
            exchange(&mut ws, &json!({"op":"ping","id":"f2"})).await["type"],
            "pong",
            "a refreshed connection outlives the first token"
        );
        ws
    };
    let (_, refreshed) = tokio::join!(expiring, refreshed);

    let mut codes = BTreeSet::new();
    for frame in [&ws, &anon, &service, &refreshed]
        .iter()
        .flat_map(|ws| &ws.seen)
    {
        spec.check_frame(frame);
        if let Some(code) = frame["code"].as_str() {
            codes.insert(code);
        }
    }
    assert_eq!(
        codes,
        BTreeSet::from(["forbidden", "rate_limited", "unauthorized"])
    );
}

#[tokio::test]
async fn websocket_cursor_resume_and_pong_floor() {
    let spec = AsyncApi::load();
    let node = Node::start(&[]);
    for (topic, n) in [("res.a", 3), ("res.b", 2)] {
        for i in 1..=n {
            assert_eq!(publish(&node, topic, &json!(i)).await.0, 200);
        }
    }

    // A cursor replays what it does not cover; the starting cursor lists no
    // topic that nothing was delivered from yet.
    let mut ws = node.ws().await;
    let op = json!({"op":"subscribe","id":"c","topic":"res.*","cursor":"1~0"});
    let reply = exchange(&mut ws, &op).await;
    assert_eq!(
        reply,
        json!({"type":"subscribed","id":"c","topic":"res.*","cursor":"1~0"})
    );
    let mut last: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for m in ws.messages(5).await {
        let topic = m["topic"].as_str().unwrap().to_string();
        let (seq, ts) = (m["seq"].as_u64().unwrap(), m["ts"].as_u64().unwrap());
        let before = last.insert(topic.clone(), (seq, ts)).map_or(0, |(s, _)| s);
        assert_eq!(seq, before + 1, "{topic} in seq order");
    }
    assert_eq!(last["res.a"].0, 3);
    assert_eq!(last["res.b"].0, 2);

    // The pong floor covers everything received, and never goes down.
    let mut floor = 0;
    for id in ["p1", "p2"] {
        let pong = exchange(&mut ws, &json!({"op":"ping","id":id})).await;
        let f = pong["floor"].as_u64().expect("pong has a floor");
        assert!(f >= floor, "pong floors never decrease: {f} < {floor}");
        floor = f;
    }
    let newest = last.values().map(|(_, ts)| *ts).max().unwrap();
    assert!(
        floor >= newest,
        "floor {floor} below a received ts {newest}"
    );

    // README §9.3: raise the floor to the pong's and drop the entries it covers.
    let mut cursor = format!("1~{floor}");
    for (topic, (seq, ts)) in &last {
        if *ts >= floor {
            cursor.push_str(&format!("~{topic}~{seq}"));
        }
    }
    for frame in &ws.seen {
        spec.check_frame(frame);
    }
    drop(ws);
    publish(&node, "res.a", &json!(4)).await;
    publish(&node, "res.c", &json!(1)).await;

    // Resuming with it delivers exactly what was published since.
    let mut ws = node.ws().await;
    let op = json!({"op":"subscribe","id":"r","topic":"res.*","cursor":cursor});
    assert!(spec.op_errors(&op).is_empty());
    let reply = exchange(&mut ws, &op).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    assert_eq!(reply["cursor"], cursor.as_str(), "resumed starting cursor");
    let mut got: Vec<(String, u64)> = ws
        .messages(2)
        .await
        .iter()
        .map(|m| {
            (
                m["topic"].as_str().unwrap().into(),
                m["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(got, [("res.a".to_string(), 4), ("res.c".to_string(), 1)]);
    ws.assert_silent(Duration::from_millis(300)).await;
    let pong = exchange(&mut ws, &json!({"op":"ping"})).await;
    assert!(pong["floor"].as_u64().unwrap() >= floor);
    for frame in &ws.seen {
        spec.check_frame(frame);
    }
}

/// The dashboard, its assets and the stats endpoints (README §4.6), auth
/// included, against openapi.yaml.
async fn check_dashboard_responses(spec: &OpenApi, node: &Node) {
    const STATS: &str = "/v1/stats";
    const STREAM: &str = "/v1/stats/stream";
    for path in [
        "/dashboard",
        "/dashboard/app.js",
        "/dashboard/style.css",
        STATS,
    ] {
        expect(&spec.get(node, path, path).await, 200, None, path);
        let r = spec.call(node, "POST", Some(path), path, &[], None).await;
        expect(&r, 405, Some("method_not_allowed"), path);
    }
    let r = spec
        .call(node, "PUT", Some(STREAM), STREAM, &[], None)
        .await;
    expect(&r, 405, Some("method_not_allowed"), STREAM);
    for (template, path) in [
        (STATS, "/v1/stats?topic=a"),
        (STREAM, "/v1/stats/stream?interval_ms=1"),
        (STREAM, "/v1/stats/stream?cursor=x"),
    ] {
        expect(
            &spec.get(node, template, path).await,
            400,
            Some("bad_request"),
            path,
        );
    }

    // The stream: `retry:`, then `stats` events whose data is documented.
    let res = http_stream(node, "/v1/stats/stream?interval_ms=100").await;
    let ct = content_type(res.headers());
    let media = spec
        .media("GET", Some(STREAM), res.status().as_u16(), ct.as_deref())
        .expect("the stream documents a body");
    let schema = resolve(&spec.root, &media["x-sse-events"]["stats"]);
    let mut stream = res.bytes_stream();
    let mut text = String::new();
    while text.matches("event: stats").count() < 2 {
        let chunk = tokio::time::timeout(TIMEOUT, stream.next())
            .await
            .expect("stats before the timeout")
            .expect("stream open")
            .expect("chunk");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let mut blocks = text.split("\n\n");
    assert_eq!(blocks.next(), Some("retry: 1000"));
    for block in blocks.filter(|b| b.starts_with("event:")) {
        let data = block
            .strip_prefix("event: stats\ndata: ")
            .unwrap_or_else(|| panic!("stats block {block:?}"));
        let data: Value = serde_json::from_str(data).expect("stats data is JSON");
        assert_valid(&schema, &data, Dialect::OpenApi, "SSE stats data");
    }

    // Auth on: 401 without credentials, 403 for narrower grants, an API key
    // or a token granting `>` pass.
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_node(dir.path(), "");
    let alice = alice();
    for (template, path) in [(STATS, STATS.to_string()), (STREAM, STREAM.to_string())] {
        expect(
            &spec.get(&auth, template, &path).await,
            401,
            Some("unauthorized"),
            &path,
        );
        let path = format!("{path}?token={alice}");
        expect(
            &spec.get(&auth, template, &path).await,
            403,
            Some("forbidden"),
            &path,
        );
    }
    let r = spec
        .call(
            &auth,
            "GET",
            Some(STATS),
            STATS,
            &[("x-api-key", API_KEY)],
            None,
        )
        .await;
    expect(&r, 200, None, "stats with an API key");
    let admin = mint(now_secs() + 600, &[">"], &[]);
    let path = format!("{STATS}?token={admin}");
    expect(
        &spec.get(&auth, STATS, &path).await,
        200,
        None,
        "stats with `>`",
    );
    let path = format!("{STREAM}?token={admin}");
    let res = http_stream(&auth, &path).await;
    assert_eq!(res.status(), 200, "stream with `>`");
    expect(
        &spec.get(&auth, "/dashboard", "/dashboard").await,
        200,
        None,
        "page, auth on",
    );
}

/// Starts a GET whose body is not read to the end.
async fn http_stream(node: &Node, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(node.url(path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// SIGTERM drains: WebSockets close with 1012, a waiting long-poll answers
/// at once, the node exits 0.
#[tokio::test]
async fn drain_closes_websockets_with_1012() {
    let asyncapi = AsyncApi::load();
    let openapi = OpenApi::load();
    let mut node = Node::start(&[]);
    let mut ws = node.ws().await;
    ws.subscribe("drain.t").await;
    let poll = tokio::spawn(
        http()
            .get(node.url("/v1/poll?topic=drain.t&timeout_ms=30000"))
            .send(),
    );
    // Signal only once the poll is held by the node (counted while it waits).
    let waiting = std::time::Instant::now();
    loop {
        let (_, stats) = get_json(&node, "/v1/stats").await;
        if stats["connections"]["poll"] == 1 {
            break;
        }
        assert!(
            waiting.elapsed() < TIMEOUT,
            "the long-poll never arrived: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = std::time::Instant::now();
    signal(node.pid(), "TERM");
    assert_eq!(ws.closed().await, Some(1012), "close code on drain");
    assert!(
        asyncapi.close_codes.contains(&1012),
        "1012 is not in x-close-codes"
    );
    let res = poll.await.unwrap().expect("long-poll answered");
    let status = res.status().as_u16();
    let ct = content_type(res.headers());
    let body = res.bytes().await.unwrap();
    let body = openapi.check("GET", Some("/v1/poll"), status, ct.as_deref(), &body);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messages"], json!([]));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the long-poll answered at once"
    );
    let exit = node.sigterm_wait();
    assert!(exit.success(), "exit status after a drain: {exit:?}");
}
