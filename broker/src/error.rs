//! The error shape of the contract and its mapping to HTTP statuses:
//! `{"error":{"code":"invalid_topic","message":"..."}}`.
//!
//! Every refusal on every transport goes through [`ApiError`], so codes and
//! statuses are decided in this one place.

use actix_web::{http::StatusCode, HttpResponse, ResponseError};
use serde::Serialize;

use crate::{
    engine::PublishError,
    hub::{cursor::CursorError, SubscribeError, TopicError},
};

/// Machine-readable error codes of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed request or op (400).
    BadRequest,
    /// Topic or pattern refused (400).
    InvalidTopic,
    /// Missing or invalid credentials (401).
    Unauthorized,
    /// Credentials do not cover the topic, or origin refused (403).
    Forbidden,
    /// No such route (404).
    NotFound,
    /// Method not allowed on the route (405).
    MethodNotAllowed,
    /// The client was disconnected by the admin API and must not carry on
    /// blindly (410; long-poll).
    Kicked,
    /// Payload over the limit (413).
    PayloadTooLarge,
    /// Too many requests (429).
    RateLimited,
    /// Cannot serve now; retry (503).
    Unavailable,
    /// WebSocket op not known (WebSocket only).
    UnknownOp,
    /// Unexpected server failure (500).
    Internal,
}

impl ErrorCode {
    /// HTTP status for this code.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest | ErrorCode::InvalidTopic | ErrorCode::UnknownOp => {
                StatusCode::BAD_REQUEST
            }
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Kicked => StatusCode::GONE,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answered to a client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    /// The code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
    /// Close the connection after the answer (see [`ApiError::closing`]).
    close: bool,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: ErrorCode,
    message: &'a str,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            close: false,
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// 413 `payload_too_large` for a limit in bytes.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            ErrorCode::PayloadTooLarge,
            format!("payload exceeds the limit of {limit} bytes"),
        )
    }

    /// The same error, answered with `Connection: close`: a refused
    /// connection must not keep holding a descriptor as an idle keep-alive.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// The contract's JSON body.
    pub fn body(&self) -> String {
        serde_json::to_string(&Body {
            error: Inner {
                code: self.code,
                message: &self.message,
            },
        })
        .expect("error body serializes")
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        if self.close {
            res.force_close();
        }
        if self.code == ErrorCode::Unavailable {
            // Every 503 is worth retrying soon (elsewhere, behind a balancer).
            res.insert_header((actix_web::http::header::RETRY_AFTER, "1"));
        }
        res.content_type("application/json").body(self.body())
    }
}

impl From<TopicError> for ApiError {
    fn from(e: TopicError) -> Self {
        ApiError::new(ErrorCode::InvalidTopic, e.to_string())
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        use crate::auth::AuthError;
        match e {
            AuthError::Unauthorized(m) => ApiError::new(ErrorCode::Unauthorized, m),
            AuthError::Forbidden(m) => ApiError::new(ErrorCode::Forbidden, m),
            AuthError::Config(m) => ApiError::new(ErrorCode::Internal, m),
        }
    }
}

impl From<crate::hub::presence::SessionKicked> for ApiError {
    fn from(e: crate::hub::presence::SessionKicked) -> Self {
        ApiError::new(ErrorCode::Kicked, e.to_string())
    }
}

impl From<CursorError> for ApiError {
    fn from(e: CursorError) -> Self {
        ApiError::bad_request(format!("invalid cursor: {e}"))
    }
}

impl From<SubscribeError> for ApiError {
    fn from(e: SubscribeError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Unavailable(m) => ApiError::new(ErrorCode::Unavailable, m),
        }
    }
}

impl From<crate::log::LogError> for ApiError {
    fn from(e: crate::log::LogError) -> Self {
        use crate::log::LogError;
        tracing::error!(error = %e, "log read failed");
        match e {
            // Damage: a 500 naming the record, never a silent gap.
            LogError::CorruptRecord { record, reason } => ApiError::new(
                ErrorCode::Internal,
                format!("stored {record} is damaged ({reason}); the operator has been alerted"),
            ),
            // Being repaired from a peer: retry shortly (here or elsewhere).
            LogError::Unrepaired(range) => ApiError::new(
                ErrorCode::Unavailable,
                format!("{range} are being repaired on this node; retry shortly"),
            ),
            _ => ApiError::new(ErrorCode::Unavailable, "storage read failed"),
        }
    }
}

/// Turns actix's extractor errors (bad query strings, paths) into the
/// contract's shape.
pub fn extractor_error(err: impl std::fmt::Display) -> actix_web::Error {
    ApiError::bad_request(err.to_string()).into()
}
