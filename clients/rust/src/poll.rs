//! Long-poll transport: `GET /v1/poll?topic=P&cursor=C&timeout_ms=T` in a
//! loop. Every (re)connection starts with `timeout_ms=0`, so it is confirmed
//! at once; then each request waits up to the poll timeout.

use reqwest::{StatusCode, Url};
use serde::Deserialize;

use crate::{
    client::{describe, endpoint, RequestError},
    sse::GapData,
    subscription::{Outcome, Ready, Runner},
    Message, Transport,
};

#[derive(Debug, Deserialize)]
struct Answer {
    messages: Vec<Message>,
    cursor: String,
    #[serde(default)]
    gaps: Vec<GapData>,
    /// The poll session (presence) to name in the next request.
    #[serde(default)]
    client_id: Option<String>,
}

impl Runner {
    pub(crate) async fn poll(&mut self, base: &Url, ready: &mut Ready) -> Outcome {
        let inner = self.inner.clone();
        let mut established = false;
        // Sent back so the node keeps one presence entry for this loop
        // rather than one per request.
        let mut client_id: Option<String> = None;
        loop {
            let wait = if established {
                inner.poll_timeout
            } else {
                std::time::Duration::ZERO
            };
            let mut url = endpoint(base, &["v1", "poll"]);
            {
                let mut query = url.query_pairs_mut();
                query.append_pair("topic", &self.pattern);
                if let Some(cursor) = self.http_cursor() {
                    query.append_pair("cursor", &cursor);
                }
                query.append_pair("timeout_ms", &wait.as_millis().to_string());
                if let Some(id) = &client_id {
                    query.append_pair("client_id", id);
                }
            }
            let req = inner
                .authorize(inner.http.get(url))
                .timeout(wait + inner.request_timeout);
            let end = |reason: String| {
                if established {
                    Outcome::Disconnected(reason)
                } else {
                    Outcome::ConnectFailed(reason)
                }
            };
            let res = tokio::select! {
                res = req.send() => res,
                _ = self.tx_closed() => return Outcome::Closed,
            };
            let res = match res {
                Err(e) => return end(describe(&e)),
                Ok(res) => res,
            };
            if res.status() != StatusCode::OK {
                let refused = RequestError::from_response(res).await;
                return if refused.fatal {
                    Outcome::Fatal(refused.error)
                } else {
                    end(refused.error.to_string())
                };
            }
            let body = match res.bytes().await {
                Ok(body) => body,
                Err(e) => return end(describe(&e)),
            };
            // An answer that cannot be decoded ends the subscription with the
            // error: polling again from the same cursor would get it again.
            let answer: Answer = match crate::decode::from_slice(&body) {
                Ok(a) => a,
                Err(e) => {
                    return Outcome::Fatal(crate::Error::Protocol(format!(
                        "undecodable poll answer: {e}"
                    )))
                }
            };
            if answer.client_id.is_some() {
                client_id = answer.client_id.clone();
            }
            for g in answer.gaps {
                if !self.gap(g.topic, g.from, g.to).await {
                    return Outcome::Closed;
                }
            }
            for m in answer.messages {
                if !self.message(m.topic, m.seq, m.ts, m.data).await {
                    return Outcome::Closed;
                }
            }
            if !self.server_cursor(&answer.cursor).await {
                return Outcome::Closed;
            }
            if !established {
                established = true;
                self.established(base, Transport::Poll, ready);
            }
        }
    }
}
