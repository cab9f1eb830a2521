//! Checks every publish path (REST, batch, WebSocket) applies to what a
//! client sends, in one place.

use base64::{engine::general_purpose::STANDARD, Engine as _};
use serde_json::value::RawValue;

use crate::{
    config::Config,
    error::ApiError,
    hub::{Payload, Topic},
    json,
    metrics::Metrics,
};

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

/// Checks a payload against the payload limit of its namespace (413) —
/// compact JSON text, or raw bytes as they are — and JSON against the
/// node's nesting limit (400). Every publish path (REST, batch, WebSocket)
/// goes through here.
pub fn check_payload(
    config: &Config,
    metrics: &Metrics,
    topic: &Topic,
    data: &Payload,
) -> Result<(), ApiError> {
    let limit = config.max_payload_for(topic);
    if data.len() > limit {
        metrics.payload_too_large.inc();
        return Err(ApiError::too_large(limit));
    }
    match data {
        Payload::Json(text) => json::check_data(text, config.limits.max_json_depth)
            .map_err(|e| ApiError::bad_request(format!("data refused: {e}"))),
        Payload::Binary(_) => Ok(()),
    }
}

/// The payload of a JSON publish (WebSocket `publish` op, batch item):
/// `data` compacted, or with `"encoding":"base64"` the bytes its base64
/// string (standard alphabet, padded) decodes to. Any other `encoding`
/// (besides absent or `null`) is refused, and so is invalid base64.
pub fn json_payload(data: &RawValue, encoding: Option<&RawValue>) -> Result<Payload, ApiError> {
    match encoding.map(RawValue::get) {
        None | Some("null") => {
            json::check_data(data.get(), json::HARD_MAX_DEPTH)
                .map_err(|e| ApiError::bad_request(format!("data refused: {e}")))?;
            Ok(Payload::Json(json::compact(data.get()).into_owned()))
        }
        Some("\"base64\"") => {
            let text: std::borrow::Cow<'_, str> =
                serde_json::from_str(data.get()).map_err(|_| {
                    ApiError::bad_request(
                        "with \"encoding\":\"base64\", 'data' must be a base64 string",
                    )
                })?;
            STANDARD
                .decode(text.as_bytes())
                .map(|raw| Payload::Binary(raw.into()))
                .map_err(|e| ApiError::bad_request(format!("'data' is not valid base64: {e}")))
        }
        Some(_) => Err(ApiError::bad_request(
            "'encoding' must be \"base64\" (or absent for JSON data)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.into()).unwrap()
    }

    #[test]
    fn json_payloads() {
        assert_eq!(
            json_payload(&raw(r#"{ "a" : 1 }"#), None).unwrap(),
            Payload::Json(r#"{"a":1}"#.into())
        );
        assert_eq!(
            json_payload(&raw(r#""AP/DKA==""#), Some(&raw("null"))).unwrap(),
            Payload::Json(r#""AP/DKA==""#.into())
        );
        assert_eq!(
            json_payload(&raw(r#""AP/DKA==""#), Some(&raw(r#""base64""#))).unwrap(),
            Payload::Binary(vec![0, 0xff, 0xc3, 0x28].into())
        );
        assert_eq!(
            json_payload(&raw(r#""""#), Some(&raw(r#""base64""#))).unwrap(),
            Payload::Binary(Vec::new().into())
        );
        for (data, encoding) in [
            (r#""not base64!""#, r#""base64""#),
            (r#""AP/DKA""#, r#""base64""#),
            ("[1]", r#""base64""#),
            (r#""eA==""#, r#""hex""#),
            (r#""eA==""#, "1"),
        ] {
            let e = json_payload(&raw(data), Some(&raw(encoding))).unwrap_err();
            assert_eq!(
                e.code,
                crate::error::ErrorCode::BadRequest,
                "{data} {encoding}"
            );
        }
    }
}
