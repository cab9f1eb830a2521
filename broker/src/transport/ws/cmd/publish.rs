//! `publish`: check grants, size and rate, hand the message to the engine,
//! and answer `ack` (or `error`) once it is durable — without blocking the
//! connection, which goes on reading and delivering meanwhile.

use tracing::Instrument;

use super::Ctx;
use crate::{
    engine::{PublishItem, Published},
    error::{ApiError, ErrorCode},
    hub::{Payload, Topic},
    telemetry::trace,
    transport::{
        protocol::{OpId, Reply},
        ws::session::AckResult,
    },
};

pub fn apply(
    ctx: &mut Ctx<'_>,
    id: Option<OpId>,
    topic: Topic,
    data: Payload,
    idempotency_key: Option<String>,
    traceparent: Option<String>,
) {
    if let Err(e) = ctx.session.identity.check_publish(&topic) {
        return ctx.error(id.as_deref(), &e.into());
    }
    if let Err(e) =
        crate::validate::check_payload(&ctx.state.config, &ctx.state.metrics, &topic, &data)
    {
        return ctx.error(id.as_deref(), &e);
    }
    if let Some(rate) = &mut ctx.session.rate {
        if !rate.try_take(1.0) {
            ctx.state.metrics.rate_limited.inc();
            let error = ApiError::new(
                ErrorCode::RateLimited,
                "publish rate limit exceeded; slow down",
            );
            return ctx.error(id.as_deref(), &error);
        }
    }
    let item = PublishItem {
        topic,
        data,
        idempotency_key,
        traceparent,
    };
    if !crate::telemetry::otel_enabled() {
        return ctx.session.queue_publish(id, item);
    }
    // Traced: each publish its own engine call, inside its span (publish →
    // cluster.forward → log.append).
    let span = trace::publish_span("ws", item.topic.as_str(), item.traceparent.as_deref());
    let item = PublishItem {
        traceparent: trace::carried_traceparent(&span, item.traceparent),
        ..item
    };
    let engine = ctx.state.engine.clone();
    let metrics = ctx.state.metrics.clone();
    // `unconstrained`: see `Session::submit`.
    ctx.session.await_ack(
        1,
        Box::pin(tokio::task::unconstrained(async move {
            let started = std::time::Instant::now();
            let result = engine.publish(vec![item]).instrument(span).await;
            match &result {
                Ok(_) => metrics
                    .publish_ack_seconds
                    .observe(started.elapsed().as_secs_f64()),
                Err(_) => metrics.publish_errors.inc(),
            }
            (vec![id], result)
        })),
    );
}

/// Answers publishes whose outcome is known, each under its op id.
pub fn answer(ctx: &mut Ctx<'_>, (ids, result): AckResult) {
    match result {
        Ok(published) => {
            for (id, Published { topic, seq, .. }) in ids.iter().zip(&published) {
                ctx.reply(&Reply::Ack {
                    id: id.as_deref(),
                    topic: topic.as_str(),
                    seq: *seq,
                });
            }
        }
        Err(e) => {
            let error = e.into();
            for id in &ids {
                ctx.error(id.as_deref(), &error);
            }
        }
    }
}
