//! `publish`: check grants, size and rate, hand the message to the engine,
//! and answer `ack` (or `error`) once it is durable — without blocking the
//! connection, which goes on reading and delivering meanwhile.

use tracing::Instrument;

use super::Ctx;
use crate::{
    engine::{PublishItem, Published},
    error::{ApiError, ErrorCode},
    hub::Topic,
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
    data: String,
    idempotency_key: Option<String>,
    traceparent: Option<String>,
) {
    if let Err(e) = ctx.session.identity.check_publish(&topic) {
        return ctx.error(id.as_deref(), &e.into());
    }
    if let Err(e) = crate::validate::check_payload(ctx.state, &topic, &data) {
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
    let engine = ctx.state.engine.clone();
    let metrics = ctx.state.metrics.clone();
    let span = trace::publish_span("ws", topic.as_str(), traceparent.as_deref());
    let traceparent = trace::carried_traceparent(&span, traceparent);
    // Publishes of one connection reach the sequencer in the order they
    // were sent, so pipelined publishes to a topic get increasing seqs: each
    // one is handed to the engine in its first poll, and these are polled
    // first in the order pushed. Without `unconstrained`, tokio's
    // cooperative budget could turn a first poll into a deferred wake-up,
    // and deferred wake-ups run in reverse order.
    ctx.session
        .await_ack(Box::pin(tokio::task::unconstrained(async move {
            let started = std::time::Instant::now();
            let result = engine
                .publish(vec![PublishItem {
                    topic,
                    data,
                    idempotency_key,
                    traceparent,
                }])
                .instrument(span)
                .await;
            match &result {
                Ok(_) => metrics
                    .publish_ack_seconds
                    .observe(started.elapsed().as_secs_f64()),
                Err(_) => metrics.publish_errors.inc(),
            }
            (id, result)
        })));
}

/// Answers a publish whose outcome is known.
pub fn answer(ctx: &mut Ctx<'_>, (id, result): AckResult) {
    match result {
        Ok(published) => {
            let Some(Published { topic, seq, .. }) = published.first() else {
                return;
            };
            ctx.reply(&Reply::Ack {
                id: id.as_deref(),
                topic: topic.as_str(),
                seq: *seq,
            });
        }
        Err(e) => ctx.error(id.as_deref(), &e.into()),
    }
}
