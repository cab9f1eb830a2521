//! `refresh`: replace the connection's token before it expires. The new
//! token must still cover every current subscription.

use serde_json::value::RawValue;

use super::Ctx;
use crate::{auth::Credentials, transport::protocol::Reply};

pub fn apply(ctx: &mut Ctx<'_>, id: Option<&RawValue>, token: &str) {
    let session = &mut *ctx.session;
    let refreshed = ctx
        .state
        .auth
        .authenticate(&Credentials::token(token))
        .and_then(|identity| {
            session
                .subscriber
                .patterns()
                .try_for_each(|p| identity.check_subscribe(p))?;
            Ok(identity)
        });
    match refreshed {
        Ok(identity) => {
            let expires_at = identity.expires_at;
            session.identity = identity;
            ctx.reply(&Reply::Refreshed { id, expires_at });
        }
        Err(e) => ctx.error(id, &e.into()),
    }
}
