//! REST publish: `POST /v1/topics/{topic}/messages` and batch `POST /v1/publish`.

use tracing::Instrument;

use crate::telemetry::trace;
use std::time::Instant;

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::read_body;
use crate::{
    auth::Authenticator,
    config::Config,
    engine::Engine,
    engine::{PublishItem, Published},
    hub::{Payload, Topic},
    json,
    limits::KeyedRates,
    metrics::Metrics,
    state::{handler_parts, identify},
};
use crate::{
    error::ApiError,
    validate::{check_idempotency_key, check_payload, json_payload},
};

#[derive(Serialize)]
struct Ack<'a> {
    topic: &'a str,
    seq: u64,
}

impl<'a> From<&'a Published> for Ack<'a> {
    fn from(p: &'a Published) -> Self {
        Ack {
            topic: p.topic.as_str(),
            seq: p.seq,
        }
    }
}

fn idempotency_header(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::bad_request("Idempotency-Key must be printable ASCII"))?;
    check_idempotency_key(key)?;
    Ok(Some(key.to_string()))
}

/// How a REST body is read, by its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    /// `application/json` or `application/*+json`: the `data` value.
    Json,
    /// `application/octet-stream`: raw bytes, stored as they are.
    Binary,
    /// Anything else: UTF-8 text, sent as a JSON string.
    Text,
}

fn body_kind(req: &HttpRequest) -> BodyKind {
    let mime = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| mime.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        BodyKind::Json
    } else if mime == "application/octet-stream" {
        BodyKind::Binary
    } else {
        BodyKind::Text
    }
}

/// Charges `n` publishes to the client's rate (API key or token subject,
/// else client address): 429 `rate_limited` beyond it.
fn charge(
    state: &PublishParts,
    req: &HttpRequest,
    identity: &crate::auth::Identity,
    n: usize,
) -> Result<(), ApiError> {
    let key = identity
        .sub
        .clone()
        .or_else(|| req.peer_addr().map(|a| a.ip().to_string()))
        .unwrap_or_default();
    if state.client_rates.try_take(&key, n as f64) {
        Ok(())
    } else {
        state.metrics.rate_limited.inc();
        Err(ApiError::new(
            crate::http::ErrorCode::RateLimited,
            "publish rate limit exceeded; slow down",
        ))
    }
}

/// The request's W3C `traceparent` header, if present and valid.
fn traceparent_header(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(trace::parse_traceparent)
}

async fn publish(
    state: &PublishParts,
    items: Vec<PublishItem>,
    span: tracing::Span,
) -> Result<Vec<Published>, ApiError> {
    let started = Instant::now();
    let result = state.engine.publish(items).instrument(span).await;
    match &result {
        Ok(published) => {
            state
                .metrics
                .publish_ack_seconds
                .observe(started.elapsed().as_secs_f64());
            let dups = published.iter().filter(|p| p.duplicate).count() as u64;
            state.metrics.duplicate_publishes.inc_by(dups);
        }
        Err(_) => state.metrics.publish_errors.inc(),
    }
    Ok(result?)
}

/// `POST /v1/topics/{topic}/messages`: a JSON body is the `data` value, an
/// `application/octet-stream` body is published as raw bytes, and any
/// other body is sent as a JSON string.
pub async fn publish_one(
    req: HttpRequest,
    topic: web::Path<String>,
    body: web::Payload,
    state: PublishParts,
) -> Result<HttpResponse, ApiError> {
    let topic = Topic::parse(&topic)?;
    let identity = identify(&state.auth, &req)?;
    identity.check_publish(&topic)?;
    charge(&state, &req, &identity, 1)?;
    let key = idempotency_header(&req)?;
    let limit = state.config.limits.max_payload_bytes;
    let body = read_body(&req, body, limit).await?;
    let data = match body_kind(&req) {
        BodyKind::Json => Payload::Json(json::parse_data(&body, json::HARD_MAX_DEPTH).map_err(
            |e| match e {
                json::DataError::Syntax(e) => {
                    ApiError::bad_request(format!("body is not valid JSON: {e}"))
                }
                other => ApiError::bad_request(format!("data refused: {other}")),
            },
        )?),
        BodyKind::Binary => Payload::Binary(body),
        BodyKind::Text => {
            let text = std::str::from_utf8(&body).map_err(|_| {
                ApiError::bad_request(
                    "a text body must be UTF-8; send raw bytes as application/octet-stream",
                )
            })?;
            Payload::Json(json::string_value(text))
        }
    };
    check_payload(&state.config, &state.metrics, &topic, &data)?;
    let incoming = traceparent_header(&req);
    let span = trace::publish_span("http", topic.as_str(), incoming.as_deref());
    let traceparent = trace::carried_traceparent(&span, incoming);
    let published = publish(
        &state,
        vec![PublishItem {
            topic,
            data,
            idempotency_key: key,
            traceparent: traceparent.clone(),
        }],
        span,
    )
    .await?;
    let mut res = HttpResponse::Ok();
    // A repeat (idempotency key) stored nothing: the message carries the
    // first publish's context, not this one's.
    if let Some(tp) = traceparent.filter(|_| !published[0].duplicate) {
        res.insert_header(("traceparent", tp));
    }
    Ok(res.json(Ack::from(&published[0])))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem<'a> {
    #[serde(borrow)]
    topic: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    idempotency_key: Option<String>,
    /// `"base64"`: `data` is a base64 string of raw bytes.
    #[serde(borrow, default)]
    encoding: Option<&'a RawValue>,
}

/// `POST /v1/publish`: `[{"topic":..,"data":..}, ...]`, sequenced together;
/// the answer lists `{"topic","seq"}` in the same order. An
/// `Idempotency-Key` header applies to the whole batch (item `i` uses
/// `KEY:i`); items may carry their own `idempotency_key` instead.
pub async fn publish_batch(
    req: HttpRequest,
    body: web::Payload,
    state: PublishParts,
) -> Result<HttpResponse, ApiError> {
    let identity = identify(&state.auth, &req)?;
    let limits = &state.config.limits;
    let body_limit = limits.max_batch_bytes();
    let key = idempotency_header(&req)?;
    let body = read_body(&req, body, body_limit).await?;
    let raw: Vec<BatchItem> = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "body must be a JSON array of {{\"topic\",\"data\"}}: {e}"
        ))
    })?;
    if raw.is_empty() {
        return Err(ApiError::bad_request("batch is empty"));
    }
    if raw.len() > limits.max_batch_items {
        return Err(ApiError::bad_request(format!(
            "batch has more than {} items",
            limits.max_batch_items
        )));
    }
    let incoming = traceparent_header(&req);
    let span = trace::publish_span("http", "(batch)", incoming.as_deref());
    let traceparent = trace::carried_traceparent(&span, incoming);
    let mut items = Vec::with_capacity(raw.len());
    for (i, item) in raw.into_iter().enumerate() {
        let at = |e: ApiError| ApiError::new(e.code, format!("item {i}: {}", e.message));
        let topic = Topic::parse(&item.topic).map_err(|e| at(e.into()))?;
        identity.check_publish(&topic).map_err(|e| at(e.into()))?;
        let data = json_payload(item.data, item.encoding).map_err(at)?;
        check_payload(&state.config, &state.metrics, &topic, &data).map_err(at)?;
        let idempotency_key = match (item.idempotency_key, &key) {
            (Some(k), _) => {
                check_idempotency_key(&k).map_err(at)?;
                Some(k)
            }
            (None, Some(k)) => Some(format!("{k}:{i}")),
            (None, None) => None,
        };
        items.push(PublishItem {
            topic,
            data,
            idempotency_key,
            traceparent: traceparent.clone(),
        });
    }
    charge(&state, &req, &identity, items.len())?;
    let published = publish(&state, items, span).await?;
    let acks: Vec<Ack> = published.iter().map(Ack::from).collect();
    let mut res = HttpResponse::Ok();
    if let Some(tp) = traceparent.filter(|_| published.iter().any(|p| !p.duplicate)) {
        res.insert_header(("traceparent", tp));
    }
    Ok(res.json(acks))
}

handler_parts! {
    /// What a REST publish needs: credentials, limits and rates, the
    /// publish path and its counters.
    pub struct PublishParts {
        auth: Authenticator = "the authenticator",
        config: Config = "the configuration",
        client_rates: KeyedRates = "the publish rates",
        engine: dyn Engine = "the engine",
        metrics: Metrics = "the metrics",
    }
}
