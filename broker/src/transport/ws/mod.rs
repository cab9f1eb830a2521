//! WebSocket transport at `/v1/ws` (and the `/v1/echo` conformance
//! endpoint, which runs the same link with an echoing role).
//!
//! The upgrade request is an ordinary actix-web route ([`upgrade`]): CORS,
//! auth, connection limits and refusals in the contract's error shape all
//! apply as to any request. The route answers `101` and leaves a
//! [`LinkSetup`] in the request's [`TakeoverSlot`]; the takeover service
//! (`takeover`), which actix-http calls with the connection for every
//! upgrade request, writes the `101` and hands the socket to a [`link`]: one
//! task that owns it from then on, reading frames with Herald's own codec
//! (`codec`, limits checked on each frame header) and writing deliveries
//! from the subscriber's mailbox in batched vectored writes (`outbox`).
//!
//! Close codes are in [`close`].

pub mod close;
mod cmd;
pub mod codec;
mod link;
mod outbox;
mod session;
pub mod takeover;

use std::{cell::RefCell, rc::Rc, sync::Arc};

use actix_web::{http::StatusCode, web, HttpMessage, HttpRequest, HttpResponse};

use super::ConnectionTracker;
use crate::{error::ApiError, metrics::Transport, state::AppState};
use session::Session;

/// Largest message the echo endpoint takes: conformance suites send up to
/// 16 MiB. The broker endpoint's limit is a payload plus op overhead.
const ECHO_MAX_MESSAGE_BYTES: usize = 32 << 20;

/// Why a link ended, and what to tell the client.
#[derive(Debug)]
enum Exit {
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// The client sent a close frame (with this code): echo it.
    ClientClosed(Option<u16>),
    /// The client vanished; nothing more to send.
    Gone,
}

impl Exit {
    /// The node is draining (close 1012): reconnect elsewhere and resume.
    const DRAINING: Exit = Exit::Close(close::SERVICE_RESTART, close::DRAINING_REASON);
}

/// What the upgrade route decided for a connection, for its link.
pub struct LinkSetup {
    state: Arc<AppState>,
    /// `None` for the echo endpoint.
    session: Option<Box<Session>>,
    max_message: usize,
}

/// Put in every upgrade request's extensions by the takeover service; the
/// upgrade route fills it when it accepts the connection.
#[derive(Clone, Default)]
pub struct TakeoverSlot(Rc<RefCell<Option<LinkSetup>>>);

impl TakeoverSlot {
    fn fill(&self, setup: LinkSetup) {
        *self.0.borrow_mut() = Some(setup);
    }

    /// The accepted connection's setup, if the route accepted it.
    pub fn take(&self) -> Option<LinkSetup> {
        self.0.borrow_mut().take()
    }
}

/// `GET /v1/ws`: admits a broker connection.
pub async fn upgrade(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.admit_subscriber()?;
    // Refused before upgrading: a browser sees the 401 as a failed handshake.
    let identity = state.identify(&req)?;
    let tracker = ConnectionTracker::admit(&state, Transport::Ws, &req)?;
    let binary_as_base64 = binary_as_base64(&req)?;
    let (slot, response) = handshake(&req)?;
    let state = state.into_inner();
    let mut session = Session::new(&state, identity, tracker);
    session.binary_as_base64 = binary_as_base64;
    slot.fill(LinkSetup {
        max_message: state.config.limits.max_frame_bytes(),
        session: Some(Box::new(session)),
        state,
    });
    Ok(response)
}

/// The `binary` query parameter: absent or `frames` (binary messages as
/// binary frames), or `base64` (as JSON text frames with base64 `data`).
fn binary_as_base64(req: &HttpRequest) -> Result<bool, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string())
        .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?;
    let mut base64 = false;
    for (name, value) in pairs.iter().filter(|(name, _)| name == "binary") {
        base64 = match value.as_str() {
            "base64" => true,
            "frames" => false,
            other => {
                let shown: String = other.chars().take(32).collect();
                return Err(ApiError::bad_request(format!(
                    "{name}={shown:?}: expected \"base64\" or \"frames\""
                )));
            }
        };
    }
    Ok(base64)
}

/// `GET /v1/echo` (with `--enable-echo`): echoes text and binary messages.
pub async fn echo(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (slot, response) = handshake(&req)?;
    slot.fill(LinkSetup {
        state: state.into_inner(),
        session: None,
        max_message: ECHO_MAX_MESSAGE_BYTES,
    });
    Ok(response)
}

/// Checks the upgrade request (RFC 6455 §4.2.1) and builds the `101`.
fn handshake(req: &HttpRequest) -> Result<(TakeoverSlot, HttpResponse), ApiError> {
    let response = actix_http::ws::handshake(req.head())
        .map_err(|e| ApiError::bad_request(format!("not a valid WebSocket upgrade: {e}")))?
        .finish()
        .map_into_boxed_body();
    debug_assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    // Only the takeover service can hand over a socket; a request that did
    // not come through it (not HTTP/1.1) cannot be upgraded.
    let slot = req
        .extensions()
        .get::<TakeoverSlot>()
        .cloned()
        .ok_or_else(|| ApiError::bad_request("WebSocket upgrades need HTTP/1.1"))?;
    Ok((slot, HttpResponse::from(response)))
}
