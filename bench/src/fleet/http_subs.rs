//! Herald subscribers over HTTP: an SSE stream (`/v1/sse`) and a chain of
//! long-polls (`/v1/poll`, passing the cursor back), on one keep-alive
//! connection each. Deliveries are reported like the WebSocket ones.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{client::conn::http1, header, Request};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::time::timeout;

use super::conn::tcp;
use crate::wire::find_stamp;

/// Opens `GET /v1/sse?topic=…` and returns once the 200 arrived; then
/// `on_delivery` is called with each `data:` line's send stamp until the
/// stream ends.
pub async fn sse(
    addr: SocketAddr,
    source: Option<IpAddr>,
    topic: &str,
    limit: Duration,
) -> Result<impl std::future::Future<Output = Result<()>> + Send> {
    let (mut sender, conn) = timeout(limit, async {
        let stream = tcp(addr, source).await?;
        Ok::<_, anyhow::Error>(http1::handshake(TokioIo::new(stream)).await?)
    })
    .await
    .context("SSE connect timed out")??;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::get(format!("/v1/sse?topic={topic}"))
        .header(header::HOST, addr.to_string())
        .header(header::ACCEPT, "text/event-stream")
        .body(Empty::<Bytes>::new())?;
    let resp = timeout(limit, sender.send_request(req))
        .await
        .context("SSE response timed out")??;
    if !resp.status().is_success() {
        bail!("SSE: HTTP {}", resp.status());
    }
    let mut body = resp.into_body();
    Ok(async move {
        let mut line = Vec::new();
        // Only `message` events are deliveries (not `hello`, `gap`, ...).
        let mut in_message = false;
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            for &b in data.iter() {
                if b == b'\n' {
                    if line.starts_with(b"event:") {
                        in_message = line == b"event: message";
                    } else if line.is_empty() {
                        in_message = false;
                    } else if in_message && line.starts_with(b"data:") {
                        super::worker::delivered(find_stamp(&line));
                    }
                    line.clear();
                } else {
                    line.push(b);
                }
            }
        }
        drop(sender);
        Ok(())
    })
}

#[derive(Deserialize)]
struct PollAnswer {
    cursor: String,
    #[serde(default)]
    messages: Vec<serde_json::Value>,
}

/// A long-poll subscriber: a first `timeout_ms=0` poll (to get the cursor
/// for "now") before returning, then polls in a loop, reporting each
/// message. When the server closes the connection (e.g. the slow-consumer
/// `disconnect` policy) it reconnects and resumes from its cursor, as a real
/// client does; each reconnect is counted with [`super::worker::reconnected`].
pub async fn poll(
    addr: SocketAddr,
    source: Option<IpAddr>,
    topic: &str,
    limit: Duration,
) -> Result<impl std::future::Future<Output = Result<()>> + Send> {
    let mut sender = timeout(limit, poll_conn(addr, source))
        .await
        .context("poll connect timed out")??;
    let host = addr.to_string();
    let topic = topic.to_string();
    let first = timeout(limit, poll_once(&mut sender, &host, &topic, None, 0))
        .await
        .context("first poll timed out")??;
    let mut cursor = first.cursor;
    Ok(async move {
        let mut failures = 0;
        loop {
            let answer = match poll_once(&mut sender, &host, &topic, Some(&cursor), 25_000).await {
                Ok(a) => a,
                Err(e) => {
                    failures += 1;
                    if failures > 20 {
                        return Err(e.context("long-poll: 20 reconnects in a row failed"));
                    }
                    super::worker::reconnected();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    if let Ok(s) = poll_conn(addr, source).await {
                        sender = s;
                    }
                    continue;
                }
            };
            failures = 0;
            for m in &answer.messages {
                let stamp = m
                    .get("data")
                    .and_then(|d| d.get("t"))
                    .and_then(|t| t.as_u64());
                super::worker::delivered(stamp);
            }
            cursor = answer.cursor;
        }
    })
}

/// A fresh keep-alive HTTP/1.1 connection for long-polls.
async fn poll_conn(
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> Result<http1::SendRequest<Empty<Bytes>>> {
    let stream = tcp(addr, source).await?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One `GET /v1/poll` on the connection.
async fn poll_once(
    sender: &mut http1::SendRequest<Empty<Bytes>>,
    host: &str,
    topic: &str,
    cursor: Option<&str>,
    wait_ms: u64,
) -> Result<PollAnswer> {
    let mut path = format!("/v1/poll?topic={topic}&timeout_ms={wait_ms}");
    if let Some(c) = cursor {
        path.push_str("&cursor=");
        path.push_str(c);
    }
    let req = Request::get(path)
        .header(header::HOST, host)
        .body(Empty::<Bytes>::new())?;
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    if !resp.status().is_success() {
        bail!("poll: HTTP {}", resp.status());
    }
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(serde_json::from_slice(&body)?)
}
