//! Prometheus metrics: lock-free counters, gauges and histograms, rendered
//! in the Prometheus text exposition format (0.0.4) at `/metrics`.

pub mod process;

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicI64, AtomicU64, Ordering},
};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds (seconds) for latency histograms: 50 µs to ~3.3 s.
const LATENCY_BUCKETS: [f64; 17] = [
    0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0,
    2.0, 5.0, 10.0,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    /// Sum in nanoseconds, to stay an integer.
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one observation in seconds.
    pub fn observe(&self, seconds: f64) {
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
    }
}

/// Transports, for per-transport series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// WebSocket.
    Ws,
    /// Server-Sent Events.
    Sse,
    /// HTTP long-poll.
    Poll,
}

impl Transport {
    /// Label value and presence name.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::Poll => "poll",
        }
    }
    const ALL: [Transport; 3] = [Transport::Ws, Transport::Sse, Transport::Poll];
    fn index(self) -> usize {
        self as usize
    }
}

/// Every metric the broker exports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open connections per transport.
    pub connections: [Gauge; 3],
    /// Active (pattern, connection) subscriptions.
    pub subscriptions: Gauge,
    /// Messages accepted and sequenced.
    pub messages_published: Counter,
    /// Publishes answered from the idempotency record.
    pub duplicate_publishes: Counter,
    /// Messages queued to subscriber mailboxes by fan-out.
    pub messages_fanned_out: Counter,
    /// Events written to clients, per transport.
    pub messages_delivered: [Counter; 3],
    /// Subscribers disconnected because their queue overflowed.
    pub slow_consumers: Counter,
    /// Messages dropped, conflated or deferred to catch-up for slow consumers.
    pub slow_consumer_actions: Counter,
    /// Publish requests refused, by error code.
    pub publish_errors: Counter,
    /// Log append + sync time per batch.
    pub commit_seconds: Histogram,
    /// Publish request to acknowledgement.
    pub publish_ack_seconds: Histogram,
    /// Messages removed by retention.
    pub retention_trimmed: Counter,
    /// WebSocket/HTTP requests refused for bad input.
    pub bad_requests: Counter,
    /// Connections refused by the connection limits.
    pub connections_refused: Counter,
    /// Publishes refused for exceeding the payload limit.
    pub payload_too_large: Counter,
    /// Subscribes refused for exceeding the per-connection limit.
    pub subscription_limit: Counter,
    /// Publishes refused by rate limits.
    pub rate_limited: Counter,
    /// WebSocket connections closed with 1009 (message over the limit).
    pub ws_oversized_messages: Counter,
    /// HTTP responses by status class (1xx..5xx).
    pub http_responses: [Counter; 5],
    /// Stored records that failed their checksum when read.
    pub log_corrupt_records: Counter,
    /// Stored messages replaced by a newer owner's at the same seq.
    pub cluster_replaced_messages: Counter,
    /// Forward requests sent to other nodes (each carries one or more
    /// coalesced publish requests).
    pub cluster_forwards: Counter,
    /// Publish requests forwarded to their topics' owner.
    pub cluster_forwarded_requests: Counter,
}

impl Metrics {
    /// Connections gauge for `transport`.
    pub fn connections(&self, transport: Transport) -> &Gauge {
        &self.connections[transport.index()]
    }

    /// Delivered counter for `transport`.
    pub fn delivered(&self, transport: Transport) -> &Counter {
        &self.messages_delivered[transport.index()]
    }

    /// Renders all metrics; `extra` adds gauges known only at scrape time.
    pub fn render(&self, extra: &[(&str, &str, f64)]) -> String {
        let mut out = String::with_capacity(4096);
        header(
            &mut out,
            "herald_connections",
            "Open client connections.",
            "gauge",
        );
        for t in Transport::ALL {
            let _ = writeln!(
                out,
                "herald_connections{{transport=\"{}\"}} {}",
                t.as_str(),
                self.connections(t).get()
            );
        }
        gauge(
            &mut out,
            "herald_subscriptions",
            "Active subscriptions (pattern, connection).",
            self.subscriptions.get() as f64,
        );
        counter(
            &mut out,
            "herald_messages_published_total",
            "Messages accepted and sequenced.",
            self.messages_published.get(),
        );
        counter(
            &mut out,
            "herald_duplicate_publishes_total",
            "Publishes answered from an earlier idempotency key.",
            self.duplicate_publishes.get(),
        );
        counter(
            &mut out,
            "herald_messages_fanned_out_total",
            "Messages queued to subscribers.",
            self.messages_fanned_out.get(),
        );
        header(
            &mut out,
            "herald_messages_delivered_total",
            "Messages written to clients.",
            "counter",
        );
        for t in Transport::ALL {
            let _ = writeln!(
                out,
                "herald_messages_delivered_total{{transport=\"{}\"}} {}",
                t.as_str(),
                self.delivered(t).get()
            );
        }
        counter(
            &mut out,
            "herald_slow_consumers_total",
            "Subscribers disconnected because their queue overflowed.",
            self.slow_consumers.get(),
        );
        counter(
            &mut out,
            "herald_slow_consumer_actions_total",
            "Messages dropped, conflated or deferred to catch-up for slow consumers.",
            self.slow_consumer_actions.get(),
        );
        counter(
            &mut out,
            "herald_publish_errors_total",
            "Publishes refused.",
            self.publish_errors.get(),
        );
        counter(
            &mut out,
            "herald_bad_requests_total",
            "Requests and frames refused as invalid.",
            self.bad_requests.get(),
        );
        counter(
            &mut out,
            "herald_connections_refused_total",
            "Connections refused by connection limits.",
            self.connections_refused.get(),
        );
        counter(
            &mut out,
            "herald_payload_too_large_total",
            "Publishes refused for exceeding the payload limit.",
            self.payload_too_large.get(),
        );
        counter(
            &mut out,
            "herald_subscription_limit_total",
            "Subscribes refused by the per-connection subscription limit.",
            self.subscription_limit.get(),
        );
        counter(
            &mut out,
            "herald_rate_limited_total",
            "Publishes refused by rate limits.",
            self.rate_limited.get(),
        );
        counter(
            &mut out,
            "herald_ws_oversized_messages_total",
            "WebSocket connections closed with 1009 for a message over the size limit.",
            self.ws_oversized_messages.get(),
        );
        header(
            &mut out,
            "herald_http_responses_total",
            "HTTP responses by status class.",
            "counter",
        );
        for (i, c) in self.http_responses.iter().enumerate() {
            let _ = writeln!(
                out,
                "herald_http_responses_total{{class=\"{}xx\"}} {}",
                i + 1,
                c.get()
            );
        }
        counter(
            &mut out,
            "herald_retention_trimmed_messages_total",
            "Messages removed by retention.",
            self.retention_trimmed.get(),
        );
        counter(
            &mut out,
            "herald_log_corrupt_records_total",
            "Stored records that failed their checksum when read.",
            self.log_corrupt_records.get(),
        );
        counter(
            &mut out,
            "herald_cluster_replaced_messages_total",
            "Stored messages replaced by a newer owner's at the same seq (a seq given out twice).",
            self.cluster_replaced_messages.get(),
        );
        counter(
            &mut out,
            "herald_cluster_forwards_total",
            "Forward requests sent to other nodes (each carries one or more publish requests).",
            self.cluster_forwards.get(),
        );
        counter(
            &mut out,
            "herald_cluster_forwarded_requests_total",
            "Publish requests forwarded to their topics' owner.",
            self.cluster_forwarded_requests.get(),
        );
        histogram(
            &mut out,
            "herald_log_commit_seconds",
            "Log append and sync time per batch.",
            &self.commit_seconds,
        );
        histogram(
            &mut out,
            "herald_publish_ack_seconds",
            "Time from publish request to acknowledgement.",
            &self.publish_ack_seconds,
        );
        for (name, help, value) in extra {
            gauge(&mut out, name, help, *value);
        }
        out
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    header(out, name, help, "counter");
    let _ = writeln!(out, "{name} {v}");
}

fn gauge(out: &mut String, name: &str, help: &str, v: f64) {
    header(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {v}");
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    header(out, name, help, "histogram");
    let mut cumulative = 0;
    for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&h.buckets) {
        cumulative += bucket.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let count = h.count.load(Ordering::Relaxed);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(
        out,
        "{name}_sum {}",
        h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
    );
    let _ = writeln!(out, "{name}_count {count}");
}
