//! Long-poll transport: `GET /v1/poll?topic=P1&topic=P2&cursor=C&timeout_ms=T`
//! in a loop for every subscription of the client. Every (re)connection
//! starts with `timeout_ms=0`, so it is confirmed at once; then each request
//! waits up to the poll timeout.
//!
//! Also what SSE and long-poll share: the patterns of one stream, its
//! refusals, and the zero-timeout poll ("probe") that gives a new live
//! subscription its start while others resume.

use std::{collections::BTreeMap, pin::pin, time::Duration};

use reqwest::{header, StatusCode, Url};
use serde::Deserialize;

use crate::{
    binary::Envelope,
    client::{describe, endpoint, RequestError},
    cursor::{combine, Cursor},
    mux::{node_refusal, retry_after, Command, Manager, Outcome},
    sse::{kicked_reason, GapData},
    Error, Transport,
};

/// Most `topic=` parameters one SSE or long-poll request may carry.
pub(crate) const MAX_STREAM_PATTERNS: usize = 64;

#[derive(Debug, Deserialize)]
struct Answer {
    messages: Vec<Envelope>,
    cursor: String,
    #[serde(default)]
    gaps: Vec<GapData>,
    /// The poll session (presence) to name in the next request.
    #[serde(default)]
    client_id: Option<String>,
    /// Patterns the admin API ended since the previous answer.
    #[serde(default)]
    unsubscribed: Vec<String>,
}

impl Answer {
    /// The answer's events in delivery order: each gap right before the
    /// first message of its topic that follows it.
    fn events(self) -> Vec<Event> {
        let mut gaps = self.gaps;
        gaps.sort_by_key(|g| g.from);
        let mut out = Vec::with_capacity(self.messages.len() + gaps.len());
        for m in self.messages {
            let (before, after): (Vec<GapData>, Vec<GapData>) = gaps
                .into_iter()
                .partition(|g| g.topic == m.topic() && g.to < m.seq());
            out.extend(before.into_iter().map(Event::Gap));
            gaps = after;
            out.push(Event::Message(m));
        }
        out.extend(gaps.into_iter().map(Event::Gap));
        out
    }

    /// The answer's cursor with every topic it brought a message or gap of
    /// moved back to just before it: the starting point of subscriptions
    /// that are to receive those events.
    fn start(&self) -> Result<Cursor, Error> {
        let mut cursor = Cursor::decode(&self.cursor)?;
        let mut first: BTreeMap<&str, u64> = BTreeMap::new();
        let seqs = self
            .messages
            .iter()
            .map(|m| (m.topic(), m.seq()))
            .chain(self.gaps.iter().map(|g| (g.topic.as_str(), g.from)));
        for (topic, seq) in seqs {
            let e = first.entry(topic).or_insert(seq);
            *e = (*e).min(seq);
        }
        for (topic, seq) in first {
            cursor.positions.insert(topic.to_string(), seq - 1);
        }
        Ok(cursor)
    }
}

enum Event {
    Message(Envelope),
    Gap(GapData),
}

impl Manager {
    pub(crate) async fn poll(&mut self, base: &Url) -> Outcome {
        let inner = self.inner.clone();
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
        let mut cursor = (!fresh).then(|| combine(self.subs.progresses(), None).encode());
        let mut established = false;
        // Sent back so the node keeps one presence entry for the client
        // rather than one per request (or per change of its patterns).
        let mut client_id = self
            .poll_session
            .take()
            .and_then(|(url, id)| (&url == base).then_some(id));
        loop {
            let wait = if established {
                inner.poll_timeout
            } else {
                Duration::ZERO
            };
            let mut url = endpoint(base, &["v1", "poll"]);
            {
                let mut query = url.query_pairs_mut();
                for p in &patterns {
                    query.append_pair("topic", p);
                }
                if let Some(c) = &cursor {
                    query.append_pair("cursor", c);
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
            let mut send = pin!(req.send());
            let res = loop {
                tokio::select! {
                    res = &mut send => break res,
                    // The request is dropped when the patterns change; the
                    // next one repeats it from the same cursor.
                    cmd = self.cmds.recv() => {
                        if let Some(o) = self.stream_command(cmd) {
                            return o;
                        }
                    }
                }
            };
            let res = match res {
                Err(e) => return end(describe(&e)),
                Ok(res) => res,
            };
            if res.status() == StatusCode::GONE {
                // The admin API disconnected this session: do not come back.
                let body = res.text().await.unwrap_or_default();
                return Outcome::Kicked(kicked_reason(&body));
            }
            if res.status() != StatusCode::OK {
                return self.refused(base, res, &patterns).await;
            }
            let body = match res.bytes().await {
                Ok(body) => body,
                Err(e) => return end(describe(&e)),
            };
            // An answer that cannot be decoded ends the subscriptions with
            // the error: polling again from the same cursor would get it again.
            let mut answer: Answer = match crate::decode::from_slice(&body) {
                Ok(a) => a,
                Err(e) => {
                    let e = Error::Protocol(format!("undecodable poll answer: {e}"));
                    self.subs.fail_all(&e).await;
                    return Outcome::Idle;
                }
            };
            if let Some(id) = &answer.client_id {
                client_id = Some(id.clone());
                self.poll_session = Some((base.clone(), id.clone()));
            }
            let next = match Cursor::decode(&answer.cursor) {
                Ok(c) => c,
                Err(e) => {
                    self.subs.fail_all(&e).await;
                    return Outcome::Idle;
                }
            };
            if !established {
                if fresh {
                    match answer.start() {
                        Ok(start) => self.start_all(&start).await,
                        Err(e) => {
                            self.subs.fail_all(&e).await;
                            return Outcome::Idle;
                        }
                    }
                }
                established = true;
                let ids: Vec<u64> = self.subs.entries().map(|e| e.id).collect();
                for id in ids {
                    self.subs.established(id, base, Transport::Poll);
                }
            }
            cursor = Some(answer.cursor.clone());
            let ended = std::mem::take(&mut answer.unsubscribed);
            for pattern in &ended {
                self.subs
                    .server_unsubscribed(pattern, base, Transport::Poll)
                    .await;
            }
            for event in answer.events() {
                match event {
                    Event::Message(m) => match m.delivery() {
                        Ok(m) => self.subs.message(&m.topic, m.seq, m.ts, m.payload).await,
                        Err(e) => {
                            self.subs.fail_all(&e).await;
                            return Outcome::Idle;
                        }
                    },
                    Event::Gap(g) => self.subs.gap(&g.topic, g.from, g.to).await,
                }
            }
            self.subs.raise_floors(next.floor);
            self.subs.sweep();
            if self.subs.is_empty() {
                return Outcome::Idle;
            }
            if !ended.is_empty() {
                // The next poll leaves the ended patterns out.
                return Outcome::Restart;
            }
        }
    }

    /// Starts every subscription that has no start yet from `cursor`.
    pub(crate) async fn start_all(&mut self, cursor: &Cursor) {
        let ids: Vec<u64> = self
            .subs
            .entries()
            .filter(|e| !e.progress.started())
            .map(|e| e.id)
            .collect();
        for id in ids {
            self.subs.start(id, cursor, true).await;
        }
    }

    /// The patterns one SSE or long-poll request carries. Beyond the
    /// protocol's limit, the newest subscriptions fail.
    pub(crate) async fn stream_patterns(&mut self) -> Result<Vec<String>, Outcome> {
        let mut seen: Vec<String> = Vec::new();
        let mut over = Vec::new();
        for e in self.subs.entries() {
            if seen.iter().any(|p| p == e.pattern()) {
                continue;
            }
            if seen.len() == MAX_STREAM_PATTERNS {
                over.push(e.pattern().to_string());
            } else {
                seen.push(e.pattern().to_string());
            }
        }
        for pattern in over {
            let e = Error::InvalidArgument(format!(
                "SSE and long-poll carry at most {MAX_STREAM_PATTERNS} patterns per client; \
                 {pattern:?} is one too many (use the WebSocket, or another client)"
            ));
            self.subs.fail_pattern(&pattern, &e).await;
        }
        if self.subs.is_empty() {
            return Err(Outcome::Idle);
        }
        Ok(self.subs.patterns())
    }

    /// A command while a stream is open: `Some` ends it (a new
    /// subscription or a pattern no longer used needs a new request).
    pub(crate) fn stream_command(&mut self, cmd: Option<Command>) -> Option<Outcome> {
        let mut cmd = cmd;
        let mut restart = false;
        loop {
            match cmd {
                None => return Some(Outcome::Closed),
                Some(Command::Add(e)) => {
                    self.subs.add(*e);
                    restart = true;
                }
                Some(Command::Remove(id)) => {
                    if let Some(p) = self.subs.remove(id) {
                        restart |= !self.subs.uses(&p);
                    }
                }
            }
            cmd = match self.cmds.try_recv() {
                Ok(c) => Some(c),
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => None,
            };
        }
        self.subs.sweep();
        if self.subs.is_empty() {
            return Some(Outcome::Idle);
        }
        restart.then_some(Outcome::Restart)
    }

    /// Gives every new live subscription its start with a zero-timeout
    /// poll of its pattern, while others resume from their own positions.
    pub(crate) async fn probe(&mut self, base: &Url) -> Result<(), Outcome> {
        let mut patterns: Vec<String> = self
            .subs
            .entries()
            .filter(|e| !e.progress.started())
            .map(|e| e.pattern().to_string())
            .collect();
        patterns.sort();
        patterns.dedup();
        for chunk in patterns.chunks(MAX_STREAM_PATTERNS) {
            self.probe_patterns(base, chunk).await?;
        }
        Ok(())
    }

    async fn probe_patterns(&mut self, base: &Url, patterns: &[String]) -> Result<(), Outcome> {
        let inner = self.inner.clone();
        let mut url = endpoint(base, &["v1", "poll"]);
        {
            let mut query = url.query_pairs_mut();
            for p in patterns {
                query.append_pair("topic", p);
            }
            query.append_pair("timeout_ms", "0");
        }
        let req = inner
            .authorize(inner.http.get(url))
            .timeout(inner.request_timeout);
        let res = match req.send().await {
            Err(e) => return Err(Outcome::ConnectFailed(describe(&e))),
            Ok(res) => res,
        };
        if res.status() != StatusCode::OK {
            // Culprits failed: the next attempt probes the others again.
            return Err(self.refused(base, res, patterns).await);
        }
        let body = res
            .bytes()
            .await
            .map_err(|e| Outcome::ConnectFailed(describe(&e)))?;
        let start = match crate::decode::from_slice::<Answer>(&body).and_then(|a| a.start()) {
            Ok(start) => start,
            Err(e) => {
                self.subs.fail_all(&e).await;
                return Err(Outcome::Idle);
            }
        };
        let ids: Vec<u64> = self
            .subs
            .entries()
            .filter(|e| !e.progress.started() && patterns.iter().any(|p| p == e.pattern()))
            .map(|e| e.id)
            .collect();
        for id in ids {
            self.subs.start(id, &start, true).await;
        }
        Ok(())
    }

    /// A refused SSE or long-poll request (or probe). A node that cannot
    /// serve now sends the client to another node; a refusal of the
    /// request itself fails the subscriptions concerned (the culprits, one
    /// probe per pattern, when there are several patterns) and
    /// [`Outcome::Restart`]s without them; anything else (a proxy's page)
    /// tries the next transport.
    pub(crate) async fn refused(
        &mut self,
        base: &Url,
        res: reqwest::Response,
        patterns: &[String],
    ) -> Outcome {
        let status = res.status().as_u16();
        let after = res
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let refused = RequestError::from_response(res).await;
        if node_refusal(status, refused.error.code()) {
            return Outcome::Unavailable {
                reason: refused.error.to_string(),
                retry_after: retry_after(after.as_deref()),
            };
        }
        if !refused.fatal {
            return Outcome::ConnectFailed(refused.error.to_string());
        }
        if status == 401 || patterns.len() < 2 {
            match patterns {
                [only] if status != 401 => self.subs.fail_pattern(only, &refused.error).await,
                _ => self.subs.fail_all(&refused.error).await,
            }
            return if self.subs.is_empty() {
                Outcome::Idle
            } else {
                Outcome::Restart
            };
        }
        let before = self.subs.entries().count();
        for p in patterns {
            // Boxed: the probe may come back here for one pattern.
            if let Err(o) = Box::pin(self.probe_one(base, p)).await {
                return o;
            }
        }
        if self.subs.entries().count() == before {
            // Every pattern passes alone: the resume cursor is refused.
            self.subs.fail_all(&refused.error).await;
            return Outcome::Idle;
        }
        if self.subs.is_empty() {
            Outcome::Idle
        } else {
            Outcome::Restart
        }
    }

    /// Asks whether the node refuses `pattern` on its own (fails its
    /// subscriptions if so).
    async fn probe_one(&mut self, base: &Url, pattern: &str) -> Result<(), Outcome> {
        let inner = self.inner.clone();
        let mut url = endpoint(base, &["v1", "poll"]);
        url.query_pairs_mut()
            .append_pair("topic", pattern)
            .append_pair("timeout_ms", "0");
        let res = inner
            .authorize(inner.http.get(url))
            .timeout(inner.request_timeout)
            .send()
            .await
            .map_err(|e| Outcome::ConnectFailed(describe(&e)))?;
        if res.status() == StatusCode::OK {
            return Ok(());
        }
        match self.refused(base, res, &[pattern.to_string()]).await {
            Outcome::Restart | Outcome::Idle => Ok(()),
            other => Err(other),
        }
    }
}
