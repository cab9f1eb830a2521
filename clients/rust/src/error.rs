//! The error type of every fallible operation.

/// Everything that can go wrong talking to Herald.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server refused the request with a Herald error
    /// (`{"error":{"code":..,"message":..}}`, or an `error` frame on the
    /// WebSocket).
    #[error("{code}: {message}")]
    Server {
        /// HTTP status, when the error came over HTTP.
        status: Option<u16>,
        /// Machine-readable code, e.g. `invalid_topic`, `unavailable`.
        code: String,
        /// Human-readable message from the server.
        message: String,
    },
    /// No configured URL could be reached (every node and transport was
    /// tried until the configured timeout ran out).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The client was configured or called with an invalid argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The server sent something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An HTTP request failed below the Herald protocol (connect, read,
    /// timeout, ...).
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// A WebSocket failed below the Herald protocol.
    #[error("websocket: {0}")]
    WebSocket(#[from] Box<tokio_tungstenite::tungstenite::Error>),
    /// The node disconnected the client on purpose (admin API). The client
    /// does not reconnect on its own: subscribe again to decide otherwise
    /// ([`Subscription::cursor`](crate::Subscription::cursor) still resumes
    /// exactly).
    #[error("kicked: {0}")]
    Kicked(String),
    /// The node ended the subscription on its own (admin API); it is not
    /// subscribed again.
    #[error("unsubscribed by the server: {0}")]
    Unsubscribed(String),
}

impl Error {
    /// The Herald error code (`invalid_topic`, `unavailable`, ...) when the
    /// server sent one; `unavailable` for [`Error::Unavailable`].
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Server { code, .. } => Some(code),
            Error::Unavailable(_) => Some("unavailable"),
            Error::Kicked(_) => Some("kicked"),
            Error::Unsubscribed(_) => Some("unsubscribed"),
            _ => None,
        }
    }

    /// The HTTP status of a server error, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Server { status, .. } => *status,
            _ => None,
        }
    }

    pub(crate) fn server(status: Option<u16>, code: &str, message: &str) -> Self {
        Error::Server {
            status,
            code: code.to_string(),
            message: message.to_string(),
        }
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for Error {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        Error::WebSocket(Box::new(e))
    }
}

/// Codes that mean "this request will never succeed as sent": retrying it on
/// another node or transport is pointless.
pub(crate) fn is_fatal_code(code: &str) -> bool {
    matches!(
        code,
        "invalid_topic" | "bad_request" | "unauthorized" | "forbidden" | "payload_too_large"
    )
}
