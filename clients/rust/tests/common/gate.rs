//! A gate in front of a node that can answer, instead of the node, the way a
//! Herald node that cannot serve answers (not caught up with its cluster,
//! draining): a 503 `unavailable` with `Retry-After: 1`, an SSE stream of
//! one `unavailable` event, or a WebSocket whose `subscribe` ops get an
//! `unavailable` error frame. While it forwards, bytes pass through as they
//! are; switching to refusing cuts every forwarded connection.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Instant,
};

use futures_util::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tokio_tungstenite::{
    tungstenite::{handshake::derive_accept_key, protocol::Role, Message},
    WebSocketStream,
};

/// How a refusing gate answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every request: 503 `unavailable` with `Retry-After: 1`.
    Http503,
    /// `/v1/sse`: a 200 event stream with `retry: 1000` and one
    /// `unavailable` event, then its end; other requests: 503.
    SseEvent,
    /// `/v1/ws`: the upgrade succeeds, every `subscribe` op is answered with
    /// an `unavailable` error frame; other requests: 503.
    WsErrorFrame,
}

#[derive(Debug, Default)]
struct State {
    refusing: Option<Refusal>,
    /// Every refused request: when, and its path.
    refused: Vec<(Instant, String)>,
}

/// The gate; dropped, it stops accepting.
pub struct Gate {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    cut: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Gate {
    /// Starts forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let (cut, _) = watch::channel(0u64);
        let (shared, cuts) = (state.clone(), cut.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(connection(
                    client,
                    upstream,
                    shared.clone(),
                    cuts.subscribe(),
                ));
            }
        });
        Gate {
            addr,
            state,
            cut,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Refuses from now on, and cuts the connections it was forwarding.
    pub fn refuse(&self, how: Refusal) {
        self.state.lock().unwrap().refusing = Some(how);
        self.cut.send_modify(|n| *n += 1);
    }

    /// Forwards from now on.
    pub fn forward(&self) {
        self.state.lock().unwrap().refusing = None;
    }

    /// The requests refused so far: when, and their path.
    pub fn refused(&self) -> Vec<(Instant, String)> {
        self.state.lock().unwrap().refused.clone()
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const UNAVAILABLE: &str = r#"{"error":{"code":"unavailable","message":"node not ready (not connected to NATS); retry, on another node if possible"}}"#;

async fn connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    state: Arc<Mutex<State>>,
    mut cut: watch::Receiver<u64>,
) {
    let mut buf = Vec::new();
    let head = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break buf.drain(..end + 4).collect::<Vec<u8>>();
        }
        let mut chunk = [0u8; 4096];
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let text = String::from_utf8_lossy(&head).into_owned();
    let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
    let refusing = {
        let mut s = state.lock().unwrap();
        let how = s.refusing;
        if how.is_some() {
            s.refused.push((Instant::now(), path.clone()));
        }
        how
    };
    match refusing {
        None => forward(client, upstream, head, buf, &mut cut).await,
        Some(Refusal::SseEvent) if path.starts_with("/v1/sse") => {
            let body = format!("retry: 1000\n\nevent: unavailable\ndata: {UNAVAILABLE}\n\n");
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
                 Retry-After: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(answer.as_bytes()).await;
            let _ = client.shutdown().await;
        }
        Some(Refusal::WsErrorFrame) if path.starts_with("/v1/ws") => {
            let key = text
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.trim()
                        .eq_ignore_ascii_case("sec-websocket-key")
                        .then(|| value.trim().to_string())
                })
                .unwrap_or_default();
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\n\r\n",
                derive_accept_key(key.as_bytes())
            );
            if client.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
            let mut ws = WebSocketStream::from_raw_socket(client, Role::Server, None).await;
            while let Some(Ok(msg)) = ws.next().await {
                let Message::Text(text) = msg else { continue };
                let op: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                if op["op"] == "subscribe" {
                    let reply = serde_json::json!({
                        "type": "error", "id": op["id"], "code": "unavailable",
                        "message": "node not ready (not connected to NATS); retry, on another node if possible",
                    });
                    if ws.send(Message::Text(reply.to_string())).await.is_err() {
                        return;
                    }
                } else if op["op"] == "ping" {
                    let reply = serde_json::json!({"type": "pong", "id": op["id"], "floor": 0, "client_id": "gate"});
                    let _ = ws.send(Message::Text(reply.to_string())).await;
                }
            }
        }
        Some(_) => {
            let answer = format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{UNAVAILABLE}",
                UNAVAILABLE.len()
            );
            let _ = client.write_all(answer.as_bytes()).await;
            let _ = client.shutdown().await;
        }
    }
}

/// Passes bytes both ways until either side closes or the gate cuts.
async fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    head: Vec<u8>,
    rest: Vec<u8>,
    cut: &mut watch::Receiver<u64>,
) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    if server.write_all(&head).await.is_err() || server.write_all(&rest).await.is_err() {
        return;
    }
    cut.borrow_and_update();
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = cut.changed() => {}
    }
}
