//! The WebSocket op parser and the server's reply frames.
//!
//! Every client frame is one JSON object with an `op`. Parsing is two-step —
//! first into raw fields, then each field checked — so that a bad field
//! still gets an error frame carrying the request's `id`.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{
    error::{ApiError, ErrorCode},
    hub::{Cursor, Pattern, Payload, Resume, Topic},
};

/// A request id as sent by the client (a JSON string or number), echoed verbatim.
pub type OpId = Box<RawValue>;

/// A parsed client op.
#[derive(Debug)]
pub enum ClientOp {
    /// Subscribe to a pattern: live, after `since` (concrete topics), or
    /// from a `cursor` (any pattern).
    Subscribe {
        /// Echoed id.
        id: Option<OpId>,
        /// What to subscribe to.
        pattern: Pattern,
        /// Where to start.
        resume: Resume,
        /// Also send this pattern's join/leave events.
        presence: bool,
    },
    /// Drop a subscription.
    Unsubscribe {
        /// Echoed id.
        id: Option<OpId>,
        /// The pattern as subscribed.
        pattern: Pattern,
    },
    /// Publish `data` to a concrete topic.
    Publish {
        /// Echoed id.
        id: Option<OpId>,
        /// Destination.
        topic: Topic,
        /// Compact JSON, or raw bytes (`"encoding":"base64"`, or a binary
        /// frame).
        data: Payload,
        /// Optional idempotency key.
        idempotency_key: Option<String>,
        /// W3C trace context of the publisher (invalid ones are ignored).
        traceparent: Option<String>,
    },
    /// Replace the connection's token before it expires.
    Refresh {
        /// Echoed id.
        id: Option<OpId>,
        /// The new token.
        token: String,
    },
    /// Application-level keepalive (browsers cannot send WebSocket pings).
    Ping {
        /// Echoed id.
        id: Option<OpId>,
    },
}

/// A refused op: the error to send, with the id if one could be read.
#[derive(Debug)]
pub struct OpError {
    /// The request's id, if readable.
    pub id: Option<OpId>,
    /// What is wrong.
    pub error: ApiError,
}

#[derive(Deserialize)]
struct RawFrame<'a> {
    #[serde(borrow, default)]
    op: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    topic: Option<&'a RawValue>,
    #[serde(borrow, default)]
    since: Option<&'a RawValue>,
    #[serde(borrow, default)]
    since_ts: Option<&'a RawValue>,
    #[serde(borrow, default)]
    cursor: Option<&'a RawValue>,
    /// Present-but-`null` must stay distinguishable from absent.
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    idempotency_key: Option<&'a RawValue>,
    #[serde(borrow, default)]
    token: Option<&'a RawValue>,
    #[serde(borrow, default)]
    presence: Option<&'a RawValue>,
    #[serde(borrow, default)]
    traceparent: Option<&'a RawValue>,
    #[serde(borrow, default)]
    encoding: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

fn string_field<'a>(
    raw: Option<&'a RawValue>,
    name: &str,
) -> Result<Option<Cow<'a, str>>, ApiError> {
    match raw {
        None => Ok(None),
        Some(v) => serde_json::from_str::<Cow<'a, str>>(v.get())
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("'{name}' must be a string"))),
    }
}

fn required<'a>(raw: Option<&'a RawValue>, name: &str) -> Result<Cow<'a, str>, ApiError> {
    string_field(raw, name)?.ok_or_else(|| ApiError::bad_request(format!("'{name}' is required")))
}

/// Parses one text frame. `max_payload` bounds a publish's `data`, and so
/// does [`crate::json::HARD_MAX_DEPTH`]; the node's (and a namespace's) own limits
/// are applied by [`check_payload`](crate::validate::check_payload).
pub fn parse_op(text: &str, max_payload: usize) -> Result<ClientOp, OpError> {
    // serde would read a JSON array into the struct positionally.
    if !text.trim_start().starts_with('{') {
        return Err(OpError {
            id: None,
            error: ApiError::bad_request("frame must be a JSON object"),
        });
    }
    let frame: RawFrame = serde_json::from_str(text).map_err(|e| OpError {
        id: None,
        error: ApiError::bad_request(format!("frame must be a JSON object: {e}")),
    })?;
    let id = match frame.id {
        Some(v)
            if v.get().starts_with('"')
                || v.get()
                    .starts_with(|c: char| c == '-' || c.is_ascii_digit()) =>
        {
            Some(v.to_owned())
        }
        Some(_) => {
            return Err(OpError {
                id: None,
                error: ApiError::bad_request("'id' must be a string or a number"),
            })
        }
        None => None,
    };
    let fail = |error: ApiError| OpError {
        id: id.clone(),
        error,
    };
    let op = required(frame.op, "op").map_err(fail)?;
    let op = match &*op {
        "subscribe" => {
            let pattern = Pattern::parse(&required(frame.topic, "topic").map_err(fail)?)
                .map_err(|e| fail(e.into()))?;
            let number = |raw: Option<&RawValue>, name: &str| match raw {
                None => Ok(None),
                Some(v) if v.get() == "null" => Ok(None),
                Some(v) => v.get().parse::<u64>().map(Some).map_err(|_| {
                    fail(ApiError::bad_request(format!(
                        "'{name}' must be a non-negative integer"
                    )))
                }),
            };
            let since = number(frame.since, "since")?;
            let since_ts = number(frame.since_ts, "since_ts")?;
            let cursor = string_field(frame.cursor, "cursor").map_err(fail)?;
            let resume = match (since, since_ts, cursor) {
                (None, None, None) => Resume::Live,
                (Some(n), None, None) => Resume::Since(n),
                (None, Some(ts), None) => Resume::SinceTs(ts),
                (None, None, Some(c)) => {
                    Resume::Cursor(Cursor::decode(&c).map_err(|e| fail(e.into()))?)
                }
                _ => {
                    return Err(fail(ApiError::bad_request(
                        "give one of 'since', 'since_ts' and 'cursor'",
                    )))
                }
            };
            let presence = match frame.presence.map(RawValue::get) {
                None | Some("false") | Some("null") => false,
                Some("true") => true,
                Some(_) => {
                    return Err(fail(ApiError::bad_request(
                        "'presence' must be true or false",
                    )))
                }
            };
            ClientOp::Subscribe {
                id,
                pattern,
                resume,
                presence,
            }
        }
        "unsubscribe" => {
            let pattern = Pattern::parse(&required(frame.topic, "topic").map_err(fail)?)
                .map_err(|e| fail(e.into()))?;
            ClientOp::Unsubscribe { id, pattern }
        }
        "publish" => {
            let topic = Topic::parse(&required(frame.topic, "topic").map_err(fail)?)
                .map_err(|e| fail(e.into()))?;
            let data = frame
                .data
                .ok_or_else(|| fail(ApiError::bad_request("'data' is required")))?;
            let data = crate::validate::json_payload(data, frame.encoding).map_err(fail)?;
            if data.len() > max_payload {
                return Err(fail(ApiError::too_large(max_payload)));
            }
            let idempotency_key = string_field(frame.idempotency_key, "idempotency_key")
                .map_err(fail)?
                .map(Cow::into_owned);
            if let Some(key) = &idempotency_key {
                crate::validate::check_idempotency_key(key).map_err(fail)?;
            }
            let traceparent = string_field(frame.traceparent, "traceparent")
                .map_err(fail)?
                .and_then(|t| crate::telemetry::trace::parse_traceparent(&t));
            ClientOp::Publish {
                traceparent,
                id,
                topic,
                data,
                idempotency_key,
            }
        }
        "ping" => ClientOp::Ping { id },
        "refresh" => {
            let token = required(frame.token, "token").map_err(fail)?.into_owned();
            ClientOp::Refresh { id, token }
        }
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(fail(ApiError::new(
                ErrorCode::UnknownOp,
                format!("unknown op {shown:?}"),
            )));
        }
    };
    Ok(op)
}

/// Frames the server sends besides message deliveries.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply<'a> {
    /// Subscription confirmed (history, if asked for, follows).
    Subscribed {
        /// Echoed id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
        /// The pattern.
        topic: &'a str,
        /// Where the subscription starts; update its positions with every
        /// message received and send it back as `cursor` to resume.
        #[serde(skip_serializing_if = "Option::is_none")]
        cursor: Option<String>,
    },
    /// Subscription removed.
    Unsubscribed {
        /// Echoed id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
        /// The pattern.
        topic: &'a str,
    },
    /// Publish acknowledged (durable and handed to fan-out).
    Ack {
        /// Echoed id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
        /// The topic.
        topic: &'a str,
        /// Assigned seq.
        seq: u64,
    },
    /// Messages `from..=to` of `topic` were lost to retention.
    Gap {
        /// The topic.
        topic: &'a str,
        /// First lost seq.
        from: u64,
        /// Last lost seq.
        to: u64,
    },
    /// The connection now runs on the refreshed token.
    Refreshed {
        /// Echoed id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
        /// The new token's expiry, seconds since the epoch.
        #[serde(skip_serializing_if = "Option::is_none")]
        expires_at: Option<u64>,
    },
    /// Answer to the `ping` op.
    Pong {
        /// Echoed id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
        /// Every message matching this connection's subscriptions with
        /// `ts` below this has been sent before this frame: a client may
        /// raise its cursors' floors to it and forget topics whose last
        /// message is older, keeping resume cursors small.
        floor: u64,
        /// This connection's presence id (as presence reads and events
        /// show it).
        client_id: &'a str,
    },
    /// An op was refused; the connection stays open.
    Error {
        /// Echoed id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
        /// Error code.
        code: ErrorCode,
        /// Explanation.
        message: &'a str,
    },
}

impl Reply<'_> {
    /// The frame text.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("replies serialize")
    }
}

#[cfg(test)]
mod tests;
