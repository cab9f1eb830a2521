//! `GET /v1/topics/{topic}/presence`.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::error::{ApiError, ErrorCode};
use crate::{
    auth::Authenticator,
    hub::{presence::Presence, Pattern, Topic},
    state::identify,
};

/// Query of a presence read.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceQuery {
    /// Credentials for browsers that cannot set headers (see auth).
    #[serde(default)]
    pub token: Option<String>,
    /// `true`: only count (admin API), do not list.
    #[serde(default)]
    pub count: bool,
}

/// `{"topic":..,"clients":[{"client_id","sub","transport","node"}]}`: every
/// client, on any node, subscribed to a pattern matching `topic`. Needs
/// read permission on the topic; 404 where the namespace has presence off.
/// With `count=true` (admin API, the `admin` scope instead of the read
/// grant): `{"topic":..,"clients":N,"users":M}`, the number of those
/// clients and of their distinct `sub`s.
pub async fn presence(
    req: actix_web::HttpRequest,
    topic: web::Path<String>,
    query: web::Query<PresenceQuery>,
    auth: web::Data<Authenticator>,
    presence: web::Data<Presence>,
) -> Result<HttpResponse, ApiError> {
    let topic = Topic::parse(&topic)?;
    let identity = identify(&auth, &req)?;
    if query.count {
        identity.check_admin()?;
    } else {
        identity.check_read(&topic)?;
    }
    let as_pattern = Pattern::parse(topic.as_str())?;
    if !presence.enabled_for(&as_pattern) {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("presence is off for namespace {:?}", topic.namespace()),
        ));
    }
    if query.count {
        let (clients, users) = presence.count(&topic);
        return Ok(HttpResponse::Ok().json(serde_json::json!({
            "topic": topic.as_str(),
            "clients": clients,
            "users": users,
        })));
    }
    let clients = presence.list(&topic);
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "topic": topic.as_str(),
        "clients": clients,
    })))
}
