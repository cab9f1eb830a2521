//! A binary frame: a raw publish. Its header (kind `0x01`: topic, and
//! optionally an id, an idempotency key and a traceparent) is parsed by
//! `herald_core::binary`; the rest of the frame is the payload, published
//! as the `publish` op publishes, without a copy.

use bytes::Bytes;
use serde_json::value::RawValue;

use super::{publish, Ctx};
use crate::{
    error::ApiError,
    hub::{Payload, Topic},
    telemetry::trace,
    transport::protocol::OpId,
};
use herald_core::binary::BinaryPublish;

/// The frame's id as the JSON string the reply echoes.
fn op_id(id: &str) -> OpId {
    RawValue::from_string(serde_json::to_string(id).expect("strings serialize"))
        .expect("a JSON string")
}

/// Parses and applies one binary frame. A malformed header is answered
/// with `bad_request` (with the id, if it could be read); the connection
/// stays open.
pub fn apply(ctx: &mut Ctx<'_>, frame: Bytes) {
    let parsed = match BinaryPublish::parse(&frame) {
        Ok(parsed) => parsed,
        Err(e) => {
            ctx.state.metrics.bad_requests.inc();
            let id = e.id.map(op_id);
            return ctx.error(id.as_deref(), &ApiError::bad_request(e.to_string()));
        }
    };
    let id = parsed.id.map(op_id);
    let refused = |ctx: &mut Ctx<'_>, id: &Option<OpId>, error: ApiError| {
        ctx.state.metrics.bad_requests.inc();
        ctx.error(id.as_deref(), &error);
    };
    let topic = match Topic::parse(parsed.topic) {
        Ok(topic) => topic,
        Err(e) => return refused(ctx, &id, e.into()),
    };
    let idempotency_key = parsed.idempotency_key.map(str::to_owned);
    if let Some(key) = &idempotency_key {
        if let Err(e) = crate::validate::check_idempotency_key(key) {
            return refused(ctx, &id, e);
        }
    }
    // As for the JSON op: a traceparent that is not W3C's form is ignored.
    let traceparent = parsed.traceparent.and_then(trace::parse_traceparent);
    let payload = frame.slice(frame.len() - parsed.payload.len()..);
    publish::apply(
        ctx,
        id,
        topic,
        Payload::Binary(payload),
        idempotency_key,
        traceparent,
    );
}
