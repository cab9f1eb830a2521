//! Finding credentials in a request.

use actix_web::{http::header, HttpRequest};

/// Credentials presented with a request. Its `Debug` shows which kinds
/// are present, never their values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// A bearer token (JWT, or an API key), from `Authorization`, the
    /// `herald_token` cookie or the `token` query parameter.
    pub token: Option<String>,
    /// An `X-API-Key` header.
    pub api_key: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |v: &Option<String>| v.as_ref().map(|_| "[redacted]");
        f.debug_struct("Credentials")
            .field("token", &shown(&self.token))
            .field("api_key", &shown(&self.api_key))
            .finish()
    }
}

impl Credentials {
    /// Reads, in order of preference: `X-API-Key`, `Authorization: Bearer`,
    /// the `herald_token` cookie, the `token` query parameter.
    ///
    /// The query parameter exists because browsers cannot set headers on
    /// `WebSocket` and `EventSource`; it can end up in access logs and
    /// browser history, so prefer the cookie (same site) or short-lived
    /// tokens.
    pub fn from_request(req: &HttpRequest) -> Self {
        let api_key = req
            .headers()
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string());
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(|v| v.trim().to_string());
        let cookie = || {
            req.headers()
                .get_all(header::COOKIE)
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|c| c.trim().strip_prefix("herald_token=").map(str::to_string))
        };

        let query = || {
            serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
                .ok()?
                .into_iter()
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v)
        };
        Credentials {
            token: bearer
                .or_else(cookie)
                .or_else(query)
                .filter(|t| !t.is_empty()),
            api_key: api_key.filter(|k| !k.is_empty()),
        }
    }

    /// Just a bearer token (the WebSocket `refresh` op).
    pub fn token(token: &str) -> Self {
        Credentials {
            token: Some(token.to_string()),
            api_key: None,
        }
    }
}
