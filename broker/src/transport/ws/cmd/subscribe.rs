//! `subscribe`: check the grants, subscribe (replaying as asked), join
//! presence, answer `subscribed` with the subscription's cursor.

use serde_json::value::RawValue;

use super::Ctx;
use crate::{
    hub::{Pattern, Resume, SubscribeError},
    transport::protocol::Reply,
};

pub fn apply(
    ctx: &mut Ctx<'_>,
    id: Option<&RawValue>,
    pattern: Pattern,
    resume: Resume,
    presence: bool,
) {
    // The node may have lost the cluster since the connection opened.
    if let Err(e) = ctx.state.admit_subscriber() {
        return ctx.error(id, &e);
    }
    let identity = &ctx.session.identity;
    // A cursor may only name topics the client may read.
    let allowed = identity
        .check_subscribe(&pattern)
        .and_then(|()| match &resume {
            Resume::Cursor(c) => c.positions.keys().try_for_each(|t| identity.check_read(t)),
            _ => Ok(()),
        });
    if let Err(e) = allowed {
        return ctx.error(id, &e.into());
    }
    match ctx.session.subscriber.subscribe(pattern.clone(), resume) {
        Ok(cursor) => {
            ctx.session.presence.join(&pattern, presence);
            ctx.reply(&Reply::Subscribed {
                id,
                topic: pattern.as_str(),
                cursor: cursor.map(|c| c.encode()),
            });
        }
        Err(e) => {
            if matches!(e, SubscribeError::TooMany(_)) {
                ctx.state.metrics.subscription_limit.inc();
            }
            ctx.error(id, &e.into());
        }
    }
}
