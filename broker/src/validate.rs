//! Checks every publish path (REST, batch, WebSocket) applies to what a
//! client sends, in one place.

use crate::{error::ApiError, hub::Topic, json, state::AppState};

/// Longest accepted idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Checks an idempotency key: 1–255 printable ASCII characters.
pub fn check_idempotency_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| (0x21..=0x7e).contains(&b))
    {
        return Err(ApiError::bad_request(
            "Idempotency-Key must be 1-255 printable ASCII characters",
        ));
    }
    Ok(())
}

/// Checks compact, valid JSON `data` against the payload limit of its
/// namespace (413) and the node's nesting limit (400). Every publish path
/// (REST, batch, WebSocket) goes through here.
pub fn check_payload(state: &AppState, topic: &Topic, data: &str) -> Result<(), ApiError> {
    let limit = state.config.max_payload_for(topic);
    if data.len() > limit {
        state.metrics.payload_too_large.inc();
        return Err(ApiError::too_large(limit));
    }
    json::check_data(data, state.config.limits.max_json_depth)
        .map_err(|e| ApiError::bad_request(format!("data refused: {e}")))
}
