//! [`Client`], its builder, and the request/response calls (publish, history).

use std::{
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, OnceLock,
    },
    time::Duration,
};

use reqwest::{header, StatusCode, Url};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::{
    error::is_fatal_code,
    mux,
    subscription::{self, Subscription},
    ConnectionEvent, Error, History, Presence, Published, Start, Transport,
};

/// Builds a [`Client`]. Obtain one with [`Client::builder`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    urls: Vec<String>,
    token: Option<String>,
    transports: Vec<Transport>,
    reconnect_delay: (Duration, Duration),
    connect_timeout: Duration,
    request_timeout: Duration,
    publish_timeout: Duration,
    poll_timeout: Duration,
    idle_timeout: Duration,
    ping_interval: Duration,
    buffer: usize,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            urls: Vec::new(),
            token: None,
            transports: Transport::ALL.to_vec(),
            reconnect_delay: (Duration::from_millis(100), Duration::from_secs(5)),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            publish_timeout: Duration::from_secs(30),
            poll_timeout: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(45),
            ping_interval: Duration::from_secs(15),
            buffer: 1024,
        }
    }
}

impl ClientBuilder {
    /// The nodes to use, as base URLs (`http://host:port`, `https://...`;
    /// `ws://` and `wss://` are accepted too). The client starts with the
    /// first and rotates through the others whenever a node fails.
    pub fn urls<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.urls = urls.into_iter().map(|u| u.as_ref().to_string()).collect();
        self
    }

    /// Adds one node URL (see [`ClientBuilder::urls`]).
    pub fn url(mut self, url: impl AsRef<str>) -> Self {
        self.urls.push(url.as_ref().to_string());
        self
    }

    /// A bearer token (JWT or API key), sent as `Authorization: Bearer` on
    /// every request and WebSocket upgrade.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Streaming transports to use, in order of preference. Each
    /// (re)connection tries them in this order on a node before moving to
    /// the next node. Default: WebSocket, SSE, long-poll.
    pub fn transports<I>(mut self, transports: I) -> Self
    where
        I: IntoIterator<Item = Transport>,
    {
        self.transports = transports.into_iter().collect();
        self
    }

    /// Reconnection back-off: the first retry waits about `min`, each
    /// further one twice as long (with ±25% jitter), capped at `max`.
    /// Default 100 ms to 5 s.
    pub fn reconnect_delay(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_delay = (min, max.max(min));
        self
    }

    /// How long [`Client::subscribe`] keeps trying to establish a new
    /// subscription while no node can be reached before it gives up with
    /// [`Error::Unavailable`] (once established, a subscription reconnects
    /// forever). A node that answers `unavailable` (up, but not caught up
    /// with its cluster yet, or draining) restarts the wait: the
    /// subscription waits for it, or another node, to serve. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Timeout of one HTTP request or WebSocket handshake. Default 10 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long [`Client::publish`] and [`Client::history`] retry on
    /// unavailable nodes before giving up. Default 30 s.
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// How long one long-poll request waits for messages. Default 25 s.
    pub fn poll_timeout(mut self, timeout: Duration) -> Self {
        self.poll_timeout = timeout;
        self
    }

    /// A streaming connection that delivers nothing (no message, no
    /// heartbeat, no pong) for this long is considered dead and replaced.
    /// Default 45 s (servers send keepalives every 15 s).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How many events a subscription buffers before it stops reading from
    /// the network (the server then treats it as a slow consumer and the
    /// client resumes later). Default 1024.
    pub fn buffer(mut self, events: usize) -> Self {
        self.buffer = events.max(1);
        self
    }

    /// Checks the settings and builds the client.
    pub fn build(self) -> Result<Client, Error> {
        if self.urls.is_empty() {
            return Err(Error::InvalidArgument("no URL given".into()));
        }
        if self.transports.is_empty() {
            return Err(Error::InvalidArgument("no transport given".into()));
        }
        let urls = self
            .urls
            .iter()
            .map(|u| parse_base(u))
            .collect::<Result<Vec<_>, _>>()?;
        let http = reqwest::Client::builder()
            .connect_timeout(self.request_timeout)
            .build()?;
        let (events, _) = broadcast::channel(256);
        Ok(Client {
            mux: Arc::new(OnceLock::new()),
            inner: Arc::new(Inner {
                urls,
                token: self.token,
                transports: self.transports,
                http,
                backoff: Backoff {
                    min: self.reconnect_delay.0,
                    max: self.reconnect_delay.1,
                },
                connect_timeout: self.connect_timeout,
                request_timeout: self.request_timeout,
                publish_timeout: self.publish_timeout,
                poll_timeout: self.poll_timeout,
                idle_timeout: self.idle_timeout,
                ping_interval: self.ping_interval.min(self.idle_timeout / 2),
                buffer: self.buffer,
                events,
                next_id: AtomicU64::new(1),
                preferred: AtomicUsize::new(0),
            }),
        })
    }
}

fn parse_base(text: &str) -> Result<Url, Error> {
    let mut url = Url::parse(text)
        .map_err(|e| Error::InvalidArgument(format!("invalid URL {text:?}: {e}")))?;
    let scheme = match url.scheme() {
        "http" | "ws" => "http",
        "https" | "wss" => "https",
        other => {
            return Err(Error::InvalidArgument(format!(
                "invalid URL {text:?}: scheme {other:?} is not http, https, ws or wss"
            )))
        }
    };
    url.set_scheme(scheme)
        .map_err(|_| Error::InvalidArgument(format!("invalid URL {text:?}")))?;
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(Error::InvalidArgument(format!(
            "invalid URL {text:?}: no host"
        )));
    }
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

/// Exponential back-off with jitter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Backoff {
    /// Delay before retry number `attempt` (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self
            .min
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max);
        let jitter: f64 = rand::random::<f64>() * 0.5 + 0.75;
        base.mul_f64(jitter).min(self.max)
    }
}

/// Shared state of a client and its subscriptions.
#[derive(Debug)]
pub(crate) struct Inner {
    pub urls: Vec<Url>,
    pub token: Option<String>,
    pub transports: Vec<Transport>,
    pub http: reqwest::Client,
    pub backoff: Backoff,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub publish_timeout: Duration,
    pub poll_timeout: Duration,
    pub idle_timeout: Duration,
    pub ping_interval: Duration,
    pub buffer: usize,
    pub events: broadcast::Sender<ConnectionEvent>,
    next_id: AtomicU64,
    /// Index of the URL that last worked: new connections start there.
    preferred: AtomicUsize,
}

impl Inner {
    pub fn preferred(&self) -> usize {
        self.preferred.load(Ordering::Relaxed) % self.urls.len()
    }

    pub fn set_preferred(&self, index: usize) {
        self.preferred
            .store(index % self.urls.len(), Ordering::Relaxed);
    }

    pub fn emit(&self, event: ConnectionEvent) {
        tracing::debug!(?event, "herald connection event");
        let _ = self.events.send(event);
    }

    pub fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }
}

/// A base URL as shown to users (no trailing `/`).
pub(crate) fn display(base: &Url) -> String {
    base.as_str().trim_end_matches('/').to_string()
}

/// `base` + `/segments...`, each segment percent-encoded.
pub(crate) fn endpoint(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    url.path_segments_mut()
        .expect("base URLs are checked")
        .pop_if_empty()
        .extend(segments);
    url
}

/// A Herald client: publishes, reads history and runs subscriptions that
/// survive node failures. Cheap to clone (clones share everything).
///
/// All subscriptions of a client (and of its clones) share one connection
/// to one node — one WebSocket with a `subscribe` op per pattern, or one
/// SSE stream / long-poll loop for every pattern — opened on the first
/// subscription and closed when the last one is dropped. Each subscription
/// keeps its own position, and a reconnection resumes every one of them.
///
/// ```no_run
/// # async fn demo() -> Result<(), herald_client::Error> {
/// use futures_util::StreamExt;
/// use herald_client::{Client, Event, Start};
///
/// let client = Client::builder().urls(["http://127.0.0.1:8080"]).build()?;
/// let mut sub = client.subscribe("orders.*", Start::Live).await?;
/// client.publish("orders.eu", serde_json::json!({"id": 1})).await?;
/// if let Some(Ok(Event::Message { topic, seq, data, .. })) = sub.next().await {
///     println!("{topic} #{seq}: {data}");
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
    /// The connection task, started by the first subscription. Kept apart
    /// from `inner` (which the task holds): it ends once the clients and
    /// their subscriptions are all dropped.
    mux: Arc<OnceLock<mux::Handle>>,
}

impl Client {
    /// Starts configuring a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The configured node URLs (normalized to `http`/`https`).
    pub fn urls(&self) -> Vec<String> {
        self.inner.urls.iter().map(display).collect()
    }

    /// Connection life-cycle events of every subscription of this client,
    /// from now on (a lagging receiver loses the oldest ones).
    pub fn connection_events(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.inner.events.subscribe()
    }

    /// Subscribes to a topic or pattern (`orders.*`, `orders.>`) and returns
    /// once a node has confirmed the subscription: everything published
    /// after this returns is delivered.
    ///
    /// The [`Subscription`] is a stream of events. It reconnects by itself
    /// (rotating through the URLs, falling back WebSocket → SSE →
    /// long-poll) and resumes where it was, on any node, with no gap and no
    /// duplicate. Dropping it ends the subscription.
    ///
    /// Fails with the server's error for an invalid pattern, with
    /// [`Error::InvalidArgument`] for a malformed cursor, and with [`Error::Unavailable`] if no node could be reached within
    /// the connect timeout.
    pub async fn subscribe(&self, pattern: &str, start: Start) -> Result<Subscription, Error> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mux = self
            .mux
            .get_or_init(|| mux::Handle::spawn(self.inner.clone()))
            .clone();
        subscription::start(&self.inner, mux, id, pattern, start).await
    }

    /// Publishes `data` (any serializable value, or a reference to one) to a
    /// concrete topic and returns its seq once the message is durable.
    ///
    /// Each call gets a fresh idempotency key, so the retries it makes on
    /// other nodes after a failure never store the message twice.
    pub async fn publish<T: Serialize>(&self, topic: &str, data: T) -> Result<Published, Error> {
        let key = format!("hc-{:032x}", rand::random::<u128>());
        self.publish_with_key(topic, data, &key).await
    }

    /// Like [`Client::publish`] with a caller-chosen idempotency key (1–255
    /// printable ASCII characters): a repeat within the server's dedup
    /// window (5 minutes by default) returns the first publish's seq.
    pub async fn publish_with_key<T: Serialize>(
        &self,
        topic: &str,
        data: T,
        key: &str,
    ) -> Result<Published, Error> {
        let body = serde_json::to_vec(&data)
            .map_err(|e| Error::InvalidArgument(format!("data is not serializable: {e}")))?;
        self.post_message(topic, "application/json", body.into(), key)
            .await
    }

    /// Publishes raw bytes (any content: `0x00`, `0xff`, invalid UTF-8, empty)
    /// as a binary message (REST `application/octet-stream`); subscribers
    /// get them byte for byte as [`Event::Binary`](crate::Event::Binary).
    /// Retried like [`Client::publish`], with one idempotency key.
    pub async fn publish_bytes(
        &self,
        topic: &str,
        data: impl Into<bytes::Bytes>,
    ) -> Result<Published, Error> {
        let key = format!("hc-{:032x}", rand::random::<u128>());
        self.publish_bytes_with_key(topic, data, &key).await
    }

    /// Like [`Client::publish_bytes`] with a caller-chosen idempotency key.
    pub async fn publish_bytes_with_key(
        &self,
        topic: &str,
        data: impl Into<bytes::Bytes>,
        key: &str,
    ) -> Result<Published, Error> {
        self.post_message(topic, "application/octet-stream", data.into(), key)
            .await
    }

    /// `POST /v1/topics/{topic}/messages` with `body`, retried on other
    /// nodes with the same idempotency key.
    async fn post_message(
        &self,
        topic: &str,
        content_type: &'static str,
        body: bytes::Bytes,
        key: &str,
    ) -> Result<Published, Error> {
        self.retrying(|client, base| {
            let url = endpoint(base, &["v1", "topics", topic, "messages"]);
            let req = client
                .inner
                .http
                .post(url)
                .header(header::CONTENT_TYPE, content_type)
                .header("Idempotency-Key", key)
                .body(body.clone());
            client.inner.authorize(req)
        })
        .await
    }

    /// One page of a topic's history: retained messages with `seq > since`,
    /// at most `limit` (the server caps pages at 1000).
    pub async fn history(&self, topic: &str, since: u64, limit: u32) -> Result<History, Error> {
        self.retrying(|client, base| {
            let mut url = endpoint(base, &["v1", "topics", topic, "messages"]);
            url.query_pairs_mut()
                .append_pair("since", &since.to_string())
                .append_pair("limit", &limit.to_string());
            client.inner.authorize(client.inner.http.get(url))
        })
        .await
    }

    /// One page of a topic's history as events: like [`Client::history`],
    /// with binary messages as [`Event::Binary`](crate::Event::Binary) (in
    /// [`History`] their `data` is the base64 text the node sends).
    pub async fn history_events(
        &self,
        topic: &str,
        since: u64,
        limit: u32,
    ) -> Result<Vec<crate::Event>, Error> {
        #[derive(Deserialize)]
        struct Page {
            messages: Vec<crate::binary::Envelope>,
        }
        let page: Page = self
            .retrying(|client, base| {
                let mut url = endpoint(base, &["v1", "topics", topic, "messages"]);
                url.query_pairs_mut()
                    .append_pair("since", &since.to_string())
                    .append_pair("limit", &limit.to_string());
                client.inner.authorize(client.inner.http.get(url))
            })
            .await?;
        page.messages
            .into_iter()
            .map(|m| m.delivery().map(crate::binary::Delivery::into_event))
            .collect()
    }

    /// Who is subscribed to `topic`, on every node of the cluster.
    pub async fn presence(&self, topic: &str) -> Result<Presence, Error> {
        self.retrying(|client, base| {
            let url = endpoint(base, &["v1", "topics", topic, "presence"]);
            client.inner.authorize(client.inner.http.get(url))
        })
        .await
    }

    /// Sends a request to the preferred node, retrying on other nodes with
    /// back-off while they are unreachable or answer `unavailable`.
    async fn retrying<R, F>(&self, build: F) -> Result<R, Error>
    where
        R: for<'de> Deserialize<'de>,
        F: Fn(&Client, &Url) -> reqwest::RequestBuilder,
    {
        let inner = &self.inner;
        let deadline = tokio::time::Instant::now() + inner.publish_timeout;
        let mut index = inner.preferred();
        let mut attempt = 0u32;
        loop {
            let base = &inner.urls[index % inner.urls.len()];
            let req = build(self, base).timeout(inner.request_timeout);
            let error = match req.send().await {
                Ok(res) if res.status() == StatusCode::OK => match res.bytes().await {
                    Ok(body) => match crate::decode::from_slice::<R>(&body) {
                        Ok(value) => {
                            inner.set_preferred(index);
                            return Ok(value);
                        }
                        // Another node would send the same message: final.
                        Err(e) => {
                            return Err(Error::Protocol(format!("{base}: undecodable answer: {e}")))
                        }
                    },
                    Err(e) => {
                        RequestError::retry(Error::Unavailable(format!("{base}: {}", describe(&e))))
                    }
                },
                Ok(res) => RequestError::from_response(res).await,
                Err(e) => {
                    RequestError::retry(Error::Unavailable(format!("{base}: {}", describe(&e))))
                }
            };
            if error.fatal {
                return Err(error.error);
            }
            let delay = inner.backoff.delay(attempt);
            if tokio::time::Instant::now() + delay >= deadline {
                return Err(error.error);
            }
            tracing::debug!(error = %error.error, ?delay, "herald request failed; retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
            index += 1;
        }
    }
}

/// A failed request and whether retrying elsewhere can help.
pub(crate) struct RequestError {
    pub error: Error,
    pub fatal: bool,
}

impl RequestError {
    pub fn retry(error: Error) -> Self {
        RequestError {
            error,
            fatal: false,
        }
    }

    /// Reads a non-200 answer: a Herald error body with a code that
    /// retrying cannot fix is fatal; anything else (503, a proxy's page) is
    /// worth retrying elsewhere.
    pub async fn from_response(res: reqwest::Response) -> Self {
        let status = res.status().as_u16();
        let url = res.url().clone();
        let body = res.text().await.unwrap_or_default();
        let mut refused = Self::parse(status, &body);
        if let Error::Protocol(text) = &mut refused.error {
            *text = format!("{url}: {text}");
        }
        refused
    }

    /// Classifies an error answer from its status and body.
    pub fn parse(status: u16, body: &str) -> Self {
        #[derive(Deserialize)]
        struct Body {
            error: ErrorBody,
        }
        #[derive(Deserialize)]
        struct ErrorBody {
            code: String,
            message: String,
        }
        match serde_json::from_str::<Body>(body) {
            Ok(Body { error }) => RequestError {
                fatal: is_fatal_code(&error.code) || (error.code == "not_found" && status == 404),
                error: Error::Server {
                    status: Some(status),
                    code: error.code,
                    message: error.message,
                },
            },
            Err(_) => {
                let snippet: String = body.chars().take(200).collect();
                RequestError::retry(Error::Protocol(format!(
                    "HTTP {status}: {}",
                    snippet.trim()
                )))
            }
        }
    }
}

/// An error with its sources, on one line.
pub(crate) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert_eq!(
            endpoint(&parse_base("http://h:1").unwrap(), &["v1", "sse"]).as_str(),
            "http://h:1/v1/sse"
        );
        assert_eq!(
            endpoint(
                &parse_base("ws://h:1/prefix/").unwrap(),
                &["v1", "topics", "a b", "messages"]
            )
            .as_str(),
            "http://h:1/prefix/v1/topics/a%20b/messages"
        );
        assert!(parse_base("ftp://h").is_err());
        assert!(parse_base("nope").is_err());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for _ in 0..50 {
            let d0 = b.delay(0);
            assert!(d0 >= Duration::from_millis(75) && d0 <= Duration::from_millis(125));
            let d3 = b.delay(3);
            assert!(d3 >= Duration::from_millis(600) && d3 <= Duration::from_millis(1000));
            assert!(b.delay(30) <= Duration::from_secs(2));
        }
    }
}
