//! `ping`: the application-level keepalive (browsers cannot send WebSocket
//! pings), answered with the connection's floor and presence id.

use serde_json::value::RawValue;

use super::Ctx;
use crate::transport::protocol::Reply;

pub fn apply(ctx: &mut Ctx<'_>, id: Option<&RawValue>) {
    let subscriber = &ctx.session.subscriber;
    // While a replay is still being sent, older messages are owed: promise
    // nothing (0) until it is done.
    let floor = if subscriber.has_work() {
        0
    } else {
        subscriber.cursor().floor
    };
    let client_id = ctx.session.presence.client_id().to_string();
    ctx.reply(&Reply::Pong {
        id,
        floor,
        client_id: &client_id,
    });
}
