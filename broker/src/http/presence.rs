//! `GET /v1/topics/{topic}/presence`.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::error::{ApiError, ErrorCode};
use crate::{
    hub::{Pattern, Topic},
    state::AppState,
};

/// Query of a presence read.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceQuery {
    /// Credentials for browsers that cannot set headers (see auth).
    #[serde(default)]
    pub token: Option<String>,
}

/// `{"topic":..,"clients":[{"client_id","sub","transport","node"}]}`: every
/// client, on any node, subscribed to a pattern matching `topic`. Needs
/// read permission on the topic; 404 where the namespace has presence off.
pub async fn presence(
    req: actix_web::HttpRequest,
    topic: web::Path<String>,
    _query: web::Query<PresenceQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let topic = Topic::parse(&topic)?;
    state.identify(&req)?.check_read(&topic)?;
    let as_pattern = Pattern::parse(topic.as_str())?;
    if !state.presence.enabled_for(&as_pattern) {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("presence is off for namespace {:?}", topic.namespace()),
        ));
    }
    let clients = state.presence.list(&topic);
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "topic": topic.as_str(),
        "clients": clients,
    })))
}
