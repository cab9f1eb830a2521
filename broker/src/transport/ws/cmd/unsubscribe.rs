//! `unsubscribe`: nothing matched only by the pattern is delivered after
//! the `unsubscribed` reply.

use serde_json::value::RawValue;

use super::Ctx;
use crate::{hub::Pattern, transport::protocol::Reply};

pub fn apply(ctx: &mut Ctx<'_>, id: Option<&RawValue>, pattern: &Pattern) {
    ctx.session.subscriber.unsubscribe(pattern);
    ctx.session.presence.leave(pattern);
    ctx.reply(&Reply::Unsubscribed {
        id,
        topic: pattern.as_str(),
    });
}
