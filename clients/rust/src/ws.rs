//! WebSocket transport: one connection per subscription, one `subscribe`
//! op (live, `since`, or `cursor` to resume), then deliveries.

use futures_util::{SinkExt, StreamExt};
use reqwest::Url;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{
    client::IntoClientRequest,
    http::{header, HeaderValue},
    Error as WsError, Message as WsMessage,
};

use crate::{
    client::{endpoint, RequestError},
    cursor::Resume,
    error::is_fatal_code,
    subscription::{Outcome, Ready, Runner},
    Error, Transport,
};

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

const SUBSCRIBE_ID: &str = "sub";

impl Runner {
    pub(crate) async fn ws(&mut self, base: &Url, ready: &mut Ready) -> Outcome {
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
                    return Outcome::Fatal(Error::InvalidArgument(
                        "token is not a valid header value".into(),
                    ))
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
            Ok(Err(WsError::Http(response))) => return handshake_refused(response),
            Ok(Err(e)) => return Outcome::ConnectFailed(format!("WebSocket: {e}")),
            Ok(Ok((socket, _))) => socket,
        };

        let mut op = json!({"op": "subscribe", "id": SUBSCRIBE_ID, "topic": self.pattern});
        match self.progress.resume() {
            Resume::Live => {}
            Resume::Since(n) => op["since"] = json!(n),
            Resume::Cursor(c) => op["cursor"] = json!(c.encode()),
        }
        if let Err(e) = socket.send(WsMessage::Text(op.to_string())).await {
            return Outcome::ConnectFailed(format!("WebSocket: {e}"));
        }

        // Wait for the reply to the subscribe.
        let deadline = tokio::time::Instant::now() + inner.request_timeout;
        loop {
            let next = match tokio::time::timeout_at(deadline, socket.next()).await {
                Err(_) => return Outcome::ConnectFailed("no reply to subscribe".into()),
                Ok(None) => return Outcome::ConnectFailed("connection closed".into()),
                Ok(Some(Err(e))) => return Outcome::ConnectFailed(format!("WebSocket: {e}")),
                Ok(Some(Ok(m))) => m,
            };
            let text = match next {
                WsMessage::Text(text) => text,
                WsMessage::Close(frame) => {
                    return Outcome::ConnectFailed(format!("closed by the server: {frame:?}"))
                }
                _ => continue,
            };
            let frame: Frame = match crate::decode::from_str(&text) {
                Ok(f) => f,
                Err(e) => return Outcome::Fatal(undecodable(e)),
            };
            let ours = frame.id.as_ref().and_then(Value::as_str) == Some(SUBSCRIBE_ID);
            match frame.kind.as_str() {
                "subscribed" if ours => {
                    if let Some(cursor) = &frame.cursor {
                        if !self.server_cursor(cursor).await {
                            return Outcome::Closed;
                        }
                    } else if self.progress.floor.is_none() {
                        // A server without cursors: the subscription can
                        // only be resumed by `since` on concrete topics.
                        tracing::warn!("herald: the server sent no cursor in `subscribed`");
                    }
                    self.established(base, Transport::Ws, ready);
                    break;
                }
                "error" if ours => {
                    let code = frame.code.unwrap_or_default();
                    let message = frame.message.unwrap_or_default();
                    let error = Error::server(None, &code, &message);
                    return if is_fatal_code(&code) {
                        Outcome::Fatal(error)
                    } else {
                        Outcome::ConnectFailed(error.to_string())
                    };
                }
                _ => {
                    if let Some(outcome) = self.deliver(frame).await {
                        return outcome;
                    }
                }
            }
        }

        // Deliveries.
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + inner.ping_interval,
            inner.ping_interval,
        );
        let mut last_seen = tokio::time::Instant::now();
        loop {
            tokio::select! {
                next = socket.next() => {
                    last_seen = tokio::time::Instant::now();
                    match next {
                        None => return Outcome::Disconnected("connection closed".into()),
                        Some(Err(e)) => return Outcome::Disconnected(format!("WebSocket: {e}")),
                        Some(Ok(WsMessage::Close(frame))) => {
                            let reason = match frame {
                                Some(f) => format!("closed by the server: {} {}", u16::from(f.code), f.reason),
                                None => "closed by the server".into(),
                            };
                            return Outcome::Disconnected(reason);
                        }
                        Some(Ok(WsMessage::Text(text))) => {
                            match crate::decode::from_str::<Frame>(&text) {
                                Ok(frame) => {
                                    if let Some(outcome) = self.deliver(frame).await {
                                        return outcome;
                                    }
                                }
                                // Skipping it would lose a message without a
                                // word; reconnecting would get it again.
                                Err(e) => return Outcome::Fatal(undecodable(e)),
                            }
                        }
                        Some(Ok(_)) => {}
                    }
                }
                _ = ping.tick() => {
                    if last_seen.elapsed() > inner.idle_timeout {
                        return Outcome::Disconnected("the server stopped answering".into());
                    }
                    if let Err(e) = socket.send(WsMessage::Ping(Vec::new())).await {
                        return Outcome::Disconnected(format!("WebSocket: {e}"));
                    }
                }
                _ = self.tx_closed() => return Outcome::Closed,
            }
        }
    }

    /// Handles a frame after (or before) the `subscribed` reply; `Some`
    /// ends the session.
    async fn deliver(&mut self, frame: Frame) -> Option<Outcome> {
        let ok = match (frame.kind.as_str(), frame.topic) {
            ("message", Some(topic)) => {
                let (Some(seq), Some(ts)) = (frame.seq, frame.ts) else {
                    return Some(Outcome::Disconnected("message without seq or ts".into()));
                };
                self.message(topic, seq, ts, frame.data.unwrap_or(Value::Null))
                    .await
            }
            ("gap", Some(topic)) => {
                let (Some(from), Some(to)) = (frame.from, frame.to) else {
                    return Some(Outcome::Disconnected("gap without from or to".into()));
                };
                self.gap(topic, from, to).await
            }
            ("error", _) => {
                tracing::warn!(
                    code = frame.code.as_deref().unwrap_or(""),
                    message = frame.message.as_deref().unwrap_or(""),
                    "herald: error frame"
                );
                true
            }
            _ => true,
        };
        (!ok).then_some(Outcome::Closed)
    }
}

/// A frame this client cannot decode: the subscription ends with the error.
fn undecodable(e: Error) -> Error {
    Error::Protocol(format!("undecodable WebSocket frame: {e}"))
}

/// The WebSocket upgrade was answered with an HTTP error.
fn handshake_refused(
    response: tokio_tungstenite::tungstenite::http::Response<Option<Vec<u8>>>,
) -> Outcome {
    let status = response.status().as_u16();
    let body = response
        .body()
        .as_deref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    let refused = RequestError::parse(status, &body);
    // Only a refusal about the client itself is final: anything else (a
    // proxy that blocks upgrades, a 400 because it stripped the headers)
    // means "try another transport".
    match refused.error.code() {
        Some("unauthorized" | "forbidden") => Outcome::Fatal(refused.error),
        _ => Outcome::ConnectFailed(format!("upgrade refused: {}", refused.error)),
    }
}
