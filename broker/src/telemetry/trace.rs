//! W3C trace context through Herald: a `traceparent` given with a publish
//! (REST header or WebSocket field) parents Herald's `publish` span, and the
//! message carries the context on to every subscriber, so the publisher, the
//! broker (publish → cluster forward → log append → fan-out → delivery) and
//! the consumers share one trace.
//!
//! Without OpenTelemetry configured no span is created and the publisher's
//! `traceparent` travels in the message unchanged.

use opentelemetry::{
    trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
    Context,
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::otel_enabled;

/// Checks a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`); invalid
/// ones are ignored, as the W3C spec asks, so `None`.
pub fn parse_traceparent(text: &str) -> Option<String> {
    let text = text.trim();
    let mut parts = text.split('-');
    let (version, trace_id, parent_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && hex(parent_id, 16)
        && parent_id.bytes().any(|b| b != b'0')
        && hex(flags, 2)
        // Version 00 has exactly four fields; later versions may add more.
        && (parts.next().is_none() || version != "00");
    valid.then(|| format!("{version}-{trace_id}-{parent_id}-{flags}"))
}

fn remote_context(traceparent: &str) -> Option<Context> {
    let mut parts = traceparent.split('-').skip(1);
    let trace_id = TraceId::from_hex(parts.next()?).ok()?;
    let span_id = SpanId::from_hex(parts.next()?).ok()?;
    let flags = u8::from_str_radix(parts.next()?, 16).ok()?;
    let cx = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    Some(Context::new().with_remote_span_context(cx))
}

/// A span for `name` whose parent is the remote `traceparent`.
fn child_of(span: Span, traceparent: Option<&str>) -> Span {
    if let Some(cx) = traceparent.and_then(remote_context) {
        let _ = span.set_parent(cx);
    }
    span
}

/// The `publish` span of one request (disabled when OpenTelemetry is off),
/// continuing the publisher's trace when it sent a `traceparent`.
pub fn publish_span(transport: &'static str, topic: &str, traceparent: Option<&str>) -> Span {
    if !otel_enabled() {
        return Span::none();
    }
    child_of(
        tracing::info_span!(target: "herald::publish", "publish", otel.kind = "server", messaging.system = "herald", messaging.operation = "publish", messaging.destination.name = %topic, herald.transport = transport),
        traceparent,
    )
}

/// What a message published under `span` carries: Herald's own span when
/// it is traced and sampled, else the publisher's `traceparent` unchanged.
pub fn carried_traceparent(span: &Span, incoming: Option<String>) -> Option<String> {
    if span.is_none() {
        return incoming;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() && sc.is_sampled() {
        Some(format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        ))
    } else {
        incoming
    }
}

/// A span for a step of a traced message (`log.append`, `fanout`,
/// `deliver`, ...), child of the context the message carries. Ends when
/// dropped. Disabled when OpenTelemetry is off.
pub fn message_span(step: &'static str, traceparent: &str, topic: &str, seq: u64) -> Span {
    if !otel_enabled() {
        return Span::none();
    }
    let span = match step {
        "deliver" => {
            tracing::info_span!(target: "herald::deliver", "deliver", otel.kind = "producer", messaging.operation = "deliver", messaging.destination.name = %topic, herald.seq = seq, herald.transport = tracing::field::Empty)
        }
        "fanout" => {
            tracing::info_span!(target: "herald::fanout", "fanout", messaging.destination.name = %topic, herald.seq = seq, herald.subscribers = tracing::field::Empty)
        }
        _ => {
            tracing::info_span!(target: "herald::log", "log.append", messaging.destination.name = %topic, herald.seq = seq)
        }
    };
    child_of(span, Some(traceparent))
}

/// The `deliver` span of `message` to one subscriber over `transport`, if
/// the message is traced and OpenTelemetry is on; ends when dropped.
pub fn deliver_span(message: &herald_core::Message, transport: &'static str) -> Option<Span> {
    if !otel_enabled() {
        return None;
    }
    let tp = message.traceparent()?;
    let span = message_span("deliver", tp, message.topic.as_str(), message.seq);
    span.record("herald.transport", transport);
    Some(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_validation() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parse_traceparent(ok).as_deref(), Some(ok));
        assert_eq!(parse_traceparent(&format!(" {ok} ")).as_deref(), Some(ok));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
        assert!(remote_context(ok).is_some());
    }
}
