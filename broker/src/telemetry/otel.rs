//! OpenTelemetry providers: a tracer fed by Herald's `tracing` spans and a
//! meter exporting the broker's own counters, both over OTLP/HTTP.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use opentelemetry::{metrics::MeterProvider as _, trace::TracerProvider as _, KeyValue};
use opentelemetry_sdk::{
    metrics::{PeriodicReader, SdkMeterProvider},
    trace::SdkTracerProvider,
    Resource,
};
use tracing_subscriber::{filter::filter_fn, Layer, Registry};

use crate::metrics::{Metrics, Transport};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether OpenTelemetry export is on (spans are then worth creating).
pub fn otel_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The running exporters; flushed and stopped when dropped.
#[derive(Default)]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(tracer) = self.tracer.take() {
            let _ = tracer.force_flush();
            let _ = tracer.shutdown();
        }
    }
}

fn configured() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

fn resource() -> Resource {
    let builder = Resource::builder();
    // OTEL_SERVICE_NAME, when set, is read by the default detectors.
    if std::env::var("OTEL_SERVICE_NAME").is_ok() {
        builder.build()
    } else {
        builder.with_service_name("herald").build()
    }
}

type SpanLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// An exported counter: name, description, and how to read it.
type ObservedCounter = (&'static str, &'static str, fn(&Metrics) -> u64);

/// Starts the trace exporter if configured; returns its handle and the
/// layer that feeds it Herald's spans (a no-op layer otherwise).
pub(super) fn start() -> (Telemetry, Option<SpanLayer>) {
    if !configured() {
        return (Telemetry::default(), None);
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("herald: OpenTelemetry traces disabled: {e}");
            return (Telemetry::default(), None);
        }
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource())
        .build();
    let tracer = provider.tracer("herald");
    opentelemetry::global::set_tracer_provider(provider.clone());
    ENABLED.store(true, Ordering::Relaxed);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(filter_fn(|meta| meta.target().starts_with("herald")))
        .boxed();
    (
        Telemetry {
            tracer: Some(provider),
        },
        Some(layer),
    )
}

/// Exports the broker's counters and gauges over OTLP metrics while the
/// returned provider lives (`None` when OpenTelemetry is off).
pub fn export_metrics(metrics: Arc<Metrics>) -> Option<SdkMeterProvider> {
    if !otel_enabled() {
        return None;
    }
    let exporter = match opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "OpenTelemetry metrics disabled");
            return None;
        }
    };
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter).build())
        .with_resource(resource())
        .build();
    let meter = provider.meter("herald");
    let counters: [ObservedCounter; 5] = [
        (
            "herald.messages.published",
            "Messages accepted and sequenced.",
            |m| m.messages_published.get(),
        ),
        (
            "herald.messages.fanned_out",
            "Messages queued to subscribers.",
            |m| m.messages_fanned_out.get(),
        ),
        (
            "herald.slow_consumer.actions",
            "Slow-consumer drops, conflations and deferrals.",
            |m| m.slow_consumer_actions.get(),
        ),
        ("herald.publish.errors", "Publishes refused.", |m| {
            m.publish_errors.get()
        }),
        (
            "herald.retention.trimmed",
            "Messages removed by retention.",
            |m| m.retention_trimmed.get(),
        ),
    ];
    for (name, help, read) in counters {
        let m = metrics.clone();
        meter
            .u64_observable_counter(name)
            .with_description(help)
            .with_callback(move |o| o.observe(read(&m), &[]))
            .build();
    }
    let m = metrics.clone();
    meter
        .u64_observable_counter("herald.messages.delivered")
        .with_description("Messages written to clients.")
        .with_callback(move |o| {
            for t in [Transport::Ws, Transport::Sse, Transport::Poll] {
                o.observe(
                    m.delivered(t).get(),
                    &[KeyValue::new("transport", t.as_str())],
                );
            }
        })
        .build();
    let m = metrics.clone();
    meter
        .i64_observable_gauge("herald.connections")
        .with_description("Open client connections.")
        .with_callback(move |o| {
            for t in [Transport::Ws, Transport::Sse, Transport::Poll] {
                o.observe(
                    m.connections(t).get(),
                    &[KeyValue::new("transport", t.as_str())],
                );
            }
        })
        .build();
    let m = metrics;
    meter
        .i64_observable_gauge("herald.subscriptions")
        .with_description("Active subscriptions.")
        .with_callback(move |o| o.observe(m.subscriptions.get(), &[]))
        .build();
    Some(provider)
}
