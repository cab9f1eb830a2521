//! Logs (`tracing` to stderr) and, when configured through the standard
//! `OTEL_*` environment variables, OpenTelemetry traces and metrics over
//! OTLP/HTTP.
//!
//! OpenTelemetry is off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set and `OTEL_SDK_DISABLED` is
//! not `true`. The exporter reads the rest itself (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_TRACES_SAMPLER`, `OTEL_BSP_SCHEDULE_DELAY`,
//! `OTEL_METRIC_EXPORT_INTERVAL`, ...).

mod otel;
pub mod redact;
pub mod trace;

use std::io::IsTerminal;

use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

pub use self::otel::{export_metrics, otel_enabled, Telemetry};

/// Installs the global subscriber: human-readable lines on stderr, filtered
/// by `filter` (`RUST_LOG` wins when set); `HERALD_LOG_FORMAT=json` switches
/// to JSON lines for log shippers. Every line passes through `redactor`
/// (see [`redact`]), at every level. With OpenTelemetry configured, Herald's
/// spans also go to the OTLP exporter, whatever the log filter says.
/// Keep the returned handle until exit: dropping it flushes the exporter.
pub fn init(filter: &str, redactor: redact::Redactor) -> Telemetry {
    let stderr = redact::RedactingStderr::new(redactor);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let json = std::env::var("HERALD_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let logs = if json {
        fmt::layer()
            .json()
            .with_writer(stderr)
            .with_filter(filter)
            .boxed()
    } else {
        fmt::layer()
            .with_writer(stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(filter)
            .boxed()
    };
    let (telemetry, spans) = otel::start();
    let mut layers = vec![logs];
    layers.extend(spans);
    let result = tracing_subscriber::registry().with(layers).try_init();
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
    telemetry
}
