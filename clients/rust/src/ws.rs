//! WebSocket transport: one connection for every subscription of the
//! client, one `subscribe` op per distinct pattern (with the combined
//! `cursor` of its subscriptions when they resume), `unsubscribe` when the
//! last subscription to a pattern goes.

use std::collections::BTreeMap;

use futures_util::{SinkExt, StreamExt};
use reqwest::Url;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::{net::TcpStream, time::Instant};
use tokio_tungstenite::{
    tungstenite::{
        client::IntoClientRequest,
        http::{header, HeaderValue},
        protocol::{frame::coding::CloseCode, CloseFrame},
        Error as WsError, Message as WsMessage,
    },
    MaybeTlsStream, WebSocketStream,
};

use crate::{
    binary::{decode_delivery, payload},
    client::{endpoint, RequestError},
    cursor::{combine, overlap, Cursor},
    error::is_fatal_code,
    mux::{node_refusal, retry_after, Command, Manager, Outcome, DEFAULT_RETRY_AFTER},
    Error, Transport,
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Close code of a client the admin API disconnected: do not reconnect on
/// your own (protocol-spec §6.7).
const KICKED: u16 = 4004;

/// Any server frame; fields depend on `type`.
#[derive(Debug, Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    ts: Option<u64>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    encoding: Option<String>,
    #[serde(default)]
    from: Option<u64>,
    #[serde(default)]
    to: Option<u64>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
}

/// A pattern subscribed on this connection.
#[derive(Debug)]
struct PatternState {
    /// The id of its `subscribe` op while the reply is awaited.
    pending: Option<(String, Instant)>,
    /// It was subscribed without a cursor: its reply is a live start.
    fresh: bool,
    /// Subscriptions waiting for the reply to be established.
    waiting: Vec<u64>,
}

/// What the connection carries.
#[derive(Debug, Default)]
struct Conn {
    patterns: BTreeMap<String, PatternState>,
    /// `subscribe` op id → pattern.
    ops: BTreeMap<String, String>,
    next_op: u64,
}

impl Conn {
    fn op_id(&mut self) -> String {
        self.next_op += 1;
        format!("s{}", self.next_op)
    }
}

impl Manager {
    pub(crate) async fn ws(&mut self, base: &Url) -> Outcome {
        let inner = self.inner.clone();
        let mut url = endpoint(base, &["v1", "ws"]);
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        let _ = url.set_scheme(scheme);
        let mut request = match url.as_str().into_client_request() {
            Ok(r) => r,
            Err(e) => return Outcome::ConnectFailed(e.to_string()),
        };
        if let Some(token) = &inner.token {
            match HeaderValue::from_str(&format!("Bearer {token}")) {
                Ok(v) => {
                    request.headers_mut().insert(header::AUTHORIZATION, v);
                }
                Err(_) => {
                    let e = Error::InvalidArgument("token is not a valid header value".into());
                    self.subs.fail_all(&e).await;
                    return Outcome::Idle;
                }
            }
        }
        let connect = tokio::time::timeout(
            inner.request_timeout,
            tokio_tungstenite::connect_async(request),
        )
        .await;
        let mut socket = match connect {
            Err(_) => return Outcome::ConnectFailed("WebSocket handshake timed out".into()),
            Ok(Err(WsError::Http(response))) => return self.handshake_refused(response).await,
            Ok(Err(e)) => return Outcome::ConnectFailed(format!("WebSocket: {e}")),
            Ok(Ok((socket, _))) => socket,
        };
        let mut conn = Conn::default();
        let mut established = false;
        let outcome = self
            .ws_session(base, &mut socket, &mut conn, &mut established)
            .await;
        // A close frame lets the node drop its subscriber at once.
        let _ = tokio::time::timeout(
            std::time::Duration::from_millis(250),
            socket.close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })),
        )
        .await;
        match outcome {
            Outcome::Disconnected(r) if !established => Outcome::ConnectFailed(r),
            other => other,
        }
    }

    async fn ws_session(
        &mut self,
        base: &Url,
        socket: &mut Socket,
        conn: &mut Conn,
        established: &mut bool,
    ) -> Outcome {
        let inner = self.inner.clone();
        if let Err(o) = self.ws_sync(base, socket, conn).await {
            return o;
        }
        let mut tick =
            tokio::time::interval_at(Instant::now() + inner.ping_interval, inner.ping_interval);
        let mut last_seen = Instant::now();
        loop {
            tokio::select! {
                next = socket.next() => {
                    last_seen = Instant::now();
                    let text = match next {
                        None => return Outcome::Disconnected("connection closed".into()),
                        Some(Err(e)) => return Outcome::Disconnected(format!("WebSocket: {e}")),
                        Some(Ok(WsMessage::Close(frame))) => return closed_by_server(frame),
                        Some(Ok(WsMessage::Text(text))) => text,
                        // A binary frame is the delivery of a binary message.
                        Some(Ok(WsMessage::Binary(frame))) => {
                            match decode_delivery(&frame) {
                                Ok(d) => self.subs.message(&d.topic, d.seq, d.ts, d.payload).await,
                                Err(e) => {
                                    self.subs.fail_all(&e).await;
                                    return Outcome::Idle;
                                }
                            }
                            continue;
                        }
                        Some(Ok(_)) => continue,
                    };
                    let frame: Frame = match crate::decode::from_str(&text) {
                        Ok(f) => f,
                        // Skipping it would lose a message without a word;
                        // reconnecting would get it again.
                        Err(e) => {
                            let e = Error::Protocol(format!("undecodable WebSocket frame: {e}"));
                            self.subs.fail_all(&e).await;
                            return Outcome::Idle;
                        }
                    };
                    if let Some(o) = self.ws_frame(base, frame, conn, established).await {
                        return o;
                    }
                }
                cmd = self.cmds.recv() => {
                    let Some(cmd) = cmd else { return Outcome::Closed };
                    let mut restart = self.ws_command(cmd, conn);
                    loop {
                        match self.cmds.try_recv() {
                            Ok(cmd) => restart |= self.ws_command(cmd, conn),
                            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                                return Outcome::Closed
                            }
                        }
                    }
                    self.subs.sweep();
                    if self.subs.is_empty() {
                        return Outcome::Idle;
                    }
                    if restart {
                        return Outcome::Restart;
                    }
                    if let Err(o) = self.ws_sync(base, socket, conn).await {
                        return o;
                    }
                }
                _ = tick.tick() => {
                    if last_seen.elapsed() > inner.idle_timeout {
                        return Outcome::Disconnected("the server stopped answering".into());
                    }
                    let late = conn.patterns.values().any(|p| {
                        p.pending.as_ref().is_some_and(|(_, at)| at.elapsed() > inner.request_timeout)
                    });
                    if late {
                        return Outcome::Disconnected("no reply to subscribe".into());
                    }
                    if let Err(e) = socket.send(WsMessage::Ping(Vec::new())).await {
                        return Outcome::Disconnected(format!("WebSocket: {e}"));
                    }
                }
            }
        }
    }

    /// Takes in a command while connected; true when the connection must be
    /// replaced: a subscription with its own position (since, cursor)
    /// overlapping a pattern this connection already delivers, whose topics
    /// the node would not replay for it.
    fn ws_command(&mut self, cmd: Command, conn: &Conn) -> bool {
        match cmd {
            Command::Add(e) => {
                let restart =
                    e.progress.started() && conn.patterns.keys().any(|p| overlap(p, e.pattern()));
                self.subs.add(*e);
                restart
            }
            Command::Remove(id) => {
                self.subs.remove(id);
                false
            }
        }
    }

    /// Brings the connection's patterns in line with the subscriptions:
    /// subscribes what is new (resuming subscriptions with their combined
    /// cursor), starts new subscriptions to patterns already live here, and
    /// unsubscribes patterns nobody uses any more.
    async fn ws_sync(
        &mut self,
        base: &Url,
        socket: &mut Socket,
        conn: &mut Conn,
    ) -> Result<(), Outcome> {
        let mut ops = Vec::new();
        for pattern in self.subs.patterns() {
            let ids: Vec<u64> = self
                .subs
                .entries()
                .filter(|e| e.pattern() == pattern && !e.live)
                .filter(|e| {
                    !conn
                        .patterns
                        .get(&pattern)
                        .is_some_and(|p| p.waiting.contains(&e.id))
                })
                .map(|e| e.id)
                .collect();
            if ids.is_empty() {
                continue;
            }
            match conn.patterns.get_mut(&pattern) {
                Some(state) if state.pending.is_some() => state.waiting.extend(ids),
                Some(_) => {
                    // Live here already: a second subscription starts where
                    // the first one stands.
                    for id in ids {
                        if !self.subs.start_like_peer(id).await {
                            return Err(Outcome::Restart);
                        }
                        self.subs.established(id, base, Transport::Ws);
                    }
                }
                None => {
                    let started: Vec<u64> = ids
                        .iter()
                        .copied()
                        .filter(|id| self.subs.get(*id).is_some_and(|e| e.progress.started()))
                        .collect();
                    let mut op = json!({"op": "subscribe", "topic": pattern});
                    let fresh = started.is_empty();
                    if !fresh {
                        let cursor = combine(self.subs.progresses(), Some(&pattern));
                        op["cursor"] = json!(cursor.encode());
                    }
                    let id = conn.op_id();
                    op["id"] = json!(id);
                    conn.ops.insert(id.clone(), pattern.clone());
                    conn.patterns.insert(
                        pattern.clone(),
                        PatternState {
                            pending: Some((id, Instant::now())),
                            fresh,
                            waiting: ids,
                        },
                    );
                    ops.push(op.to_string());
                }
            }
        }
        let unused: Vec<String> = conn
            .patterns
            .keys()
            .filter(|p| !self.subs.uses(p))
            .cloned()
            .collect();
        for pattern in unused {
            conn.patterns.remove(&pattern);
            let id = conn.op_id();
            ops.push(json!({"op": "unsubscribe", "id": id, "topic": pattern}).to_string());
        }
        for op in ops {
            if let Err(e) = socket.send(WsMessage::Text(op)).await {
                return Err(Outcome::Disconnected(format!("WebSocket: {e}")));
            }
        }
        Ok(())
    }

    /// Handles one frame; `Some` ends the session.
    async fn ws_frame(
        &mut self,
        base: &Url,
        frame: Frame,
        conn: &mut Conn,
        established: &mut bool,
    ) -> Option<Outcome> {
        match frame.kind.as_str() {
            "message" => {
                let (Some(topic), Some(seq), Some(ts)) = (frame.topic, frame.seq, frame.ts) else {
                    let e = Error::Protocol("message frame without topic, seq or ts".into());
                    self.subs.fail_all(&e).await;
                    return Some(Outcome::Idle);
                };
                // `?binary=base64` connections get binary messages this way.
                match payload(frame.data.unwrap_or(Value::Null), frame.encoding.as_deref()) {
                    Ok(p) => self.subs.message(&topic, seq, ts, p).await,
                    Err(e) => {
                        self.subs.fail_all(&e).await;
                        return Some(Outcome::Idle);
                    }
                }
            }
            // Without `id` the client did not ask: the admin API ended it.
            "unsubscribed" if frame.id.is_none() => {
                let pattern = frame.topic?;
                conn.patterns.remove(&pattern);
                self.subs
                    .server_unsubscribed(&pattern, base, Transport::Ws)
                    .await;
                return self.subs.is_empty().then_some(Outcome::Idle);
            }
            "gap" => {
                let (Some(topic), Some(from), Some(to)) = (frame.topic, frame.from, frame.to)
                else {
                    let e = Error::Protocol("gap frame without topic, from or to".into());
                    self.subs.fail_all(&e).await;
                    return Some(Outcome::Idle);
                };
                self.subs.gap(&topic, from, to).await;
            }
            "subscribed" | "error" => {
                let id = frame
                    .id
                    .as_ref()
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let Some(pattern) = id.as_ref().and_then(|id| conn.ops.remove(id)) else {
                    if frame.kind == "error" {
                        tracing::warn!(
                            code = frame.code.as_deref().unwrap_or(""),
                            message = frame.message.as_deref().unwrap_or(""),
                            "herald: error frame"
                        );
                    }
                    return None;
                };
                let Some(state) = conn.patterns.get_mut(&pattern) else {
                    return None; // unsubscribed meanwhile
                };
                state.pending = None;
                let mut waiting = std::mem::take(&mut state.waiting);
                let fresh = state.fresh;
                if frame.kind == "error" {
                    conn.patterns.remove(&pattern);
                    let code = frame.code.unwrap_or_default();
                    let message = frame.message.unwrap_or_default();
                    if is_fatal_code(&code) {
                        let e = Error::server(None, &code, &message);
                        self.subs.fail_pattern(&pattern, &e).await;
                        return self.subs.is_empty().then_some(Outcome::Idle);
                    }
                    // `unavailable`: the node lost its cluster since the
                    // connection opened; any other code: the same advice.
                    let reason = format!("subscribe {pattern:?} refused: {code}: {message}");
                    return Some(if node_refusal(0, Some(&code)) {
                        Outcome::Unavailable {
                            reason,
                            retry_after: DEFAULT_RETRY_AFTER,
                        }
                    } else {
                        Outcome::Disconnected(reason)
                    });
                }
                let start = frame.cursor.as_deref().map(Cursor::decode);
                // Resumed ones first: a new one joining them starts where
                // they stand once they are established.
                waiting.sort_by_key(|id| !self.subs.get(*id).is_some_and(|e| e.progress.started()));
                for id in waiting {
                    let Some(entry) = self.subs.get(id) else {
                        continue;
                    };
                    if !entry.progress.started() {
                        match &start {
                            Some(Ok(c)) if fresh => self.subs.start(id, c, false).await,
                            _ => {
                                if !self.subs.start_like_peer(id).await {
                                    let e = Error::Protocol(
                                        "the node sent no usable starting cursor".into(),
                                    );
                                    self.subs.fail(id, e).await;
                                    continue;
                                }
                            }
                        }
                    }
                    self.subs.established(id, base, Transport::Ws);
                    *established = true;
                }
            }
            _ => {}
        }
        None
    }

    /// The WebSocket upgrade was answered with an HTTP error.
    async fn handshake_refused(
        &mut self,
        response: tokio_tungstenite::tungstenite::http::Response<Option<Vec<u8>>>,
    ) -> Outcome {
        let status = response.status().as_u16();
        let after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response
            .body()
            .as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        let refused = RequestError::parse(status, &body);
        if node_refusal(status, refused.error.code()) {
            return Outcome::Unavailable {
                reason: format!("upgrade refused: {}", refused.error),
                retry_after: retry_after(after.as_deref()),
            };
        }
        // Only a refusal about the client itself is final: anything else (a
        // proxy that blocks upgrades, a 400 because it stripped the headers)
        // means "try another transport".
        match refused.error.code() {
            Some("unauthorized" | "forbidden") => {
                self.subs.fail_all(&refused.error).await;
                Outcome::Idle
            }
            _ => Outcome::ConnectFailed(format!("upgrade refused: {}", refused.error)),
        }
    }
}

/// What a close frame from the node means.
fn closed_by_server(frame: Option<CloseFrame<'_>>) -> Outcome {
    let Some(f) = frame else {
        return Outcome::Disconnected("closed by the server".into());
    };
    let code = u16::from(f.code);
    let reason = format!("closed by the server: {code} {}", f.reason);
    if code == KICKED {
        return Outcome::Kicked(f.reason.to_string());
    }
    if code == 1012 || code == 1001 {
        // Draining or going away: another node now, this one not before
        // it could be back.
        Outcome::Unavailable {
            reason,
            retry_after: DEFAULT_RETRY_AFTER,
        }
    } else {
        Outcome::Disconnected(reason)
    }
}
