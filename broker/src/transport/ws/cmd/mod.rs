//! Client ops on a broker connection, one file each: the op's checks, what
//! it does, and its reply (the parse is `transport::protocol`).

mod binary;
mod ping;
mod publish;
mod refresh;
mod subscribe;
mod unsubscribe;

use std::sync::Arc;

use serde_json::value::RawValue;

use super::{outbox::Outbox, session::Session};
use crate::{
    error::{ApiError, ErrorCode},
    state::AppState,
    transport::protocol::{parse_op, ClientOp, OpError, Reply},
    wire::websocket::{self, OpCode},
};

pub use binary::apply as apply_binary;
pub use publish::answer as answer_publish;

/// What an op works on: the node, the connection's session, and the frames
/// going back to the client.
pub struct Ctx<'a> {
    /// The node.
    pub state: &'a Arc<AppState>,
    /// The connection's session.
    pub session: &'a mut Session,
    /// Frames for the client, in order.
    pub out: &'a mut Outbox,
}

impl Ctx<'_> {
    /// Queues a reply frame.
    pub fn reply(&mut self, reply: &Reply<'_>) {
        self.out
            .push(&websocket::frame(OpCode::Text, reply.encode().as_bytes()));
    }

    /// Queues an `error` reply to the op with `id`.
    pub fn error(&mut self, id: Option<&RawValue>, error: &ApiError) {
        self.reply(&Reply::Error {
            id,
            code: error.code,
            message: &error.message,
        });
    }
}

/// Parses and applies one text frame.
pub fn apply(ctx: &mut Ctx<'_>, text: &str) {
    let op = match parse_op(text, ctx.state.config.limits.max_payload_bytes) {
        Ok(op) => op,
        Err(OpError { id, error }) => {
            ctx.state.metrics.bad_requests.inc();
            if error.code == ErrorCode::PayloadTooLarge {
                ctx.state.metrics.payload_too_large.inc();
            }
            return ctx.error(id.as_deref(), &error);
        }
    };
    match op {
        ClientOp::Subscribe {
            id,
            pattern,
            resume,
            presence,
        } => subscribe::apply(ctx, id.as_deref(), pattern, resume, presence),
        ClientOp::Unsubscribe { id, pattern } => unsubscribe::apply(ctx, id.as_deref(), &pattern),
        ClientOp::Publish {
            id,
            topic,
            data,
            idempotency_key,
            traceparent,
        } => publish::apply(ctx, id, topic, data, idempotency_key, traceparent),
        ClientOp::Ping { id } => ping::apply(ctx, id.as_deref()),
        ClientOp::Refresh { id, token } => refresh::apply(ctx, id.as_deref(), &token),
    }
}
