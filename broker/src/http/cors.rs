//! Origin checks and CORS for browsers on other origins.
//!
//! `--allowed-origins` lists who may call the HTTP endpoints from a browser
//! and open WebSockets. A request whose `Origin` is not allowed is refused
//! with 403 before it reaches a handler (for WebSockets that is the upgrade
//! request, so cross-site WebSocket hijacking is refused too). Requests from
//! the node's own origin and requests without `Origin` (servers, CLIs) are
//! always allowed. Preflight `OPTIONS` requests are answered here.

use std::{
    future::{ready, Ready},
    rc::Rc,
    sync::Arc,
};

use actix_web::{
    body::EitherBody,
    dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform},
    http::{
        header::{self, HeaderValue},
        Method,
    },
    HttpResponse,
};
use futures_util::future::LocalBoxFuture;

use crate::config::Config;
use crate::error::{ApiError, ErrorCode};

/// Which origins are allowed.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    any: bool,
    allowed: Vec<String>,
}

impl OriginPolicy {
    /// From the configuration: the listed origins, or any when none are
    /// listed (auth is off, so any page may use the broker).
    pub fn from_config(config: &Config) -> Self {
        // With auth on, an empty list means "same origin only": credentials
        // must not be usable from pages the operator did not list.
        let default_any = !config.auth.enabled();
        let allowed: Vec<String> = config
            .allowed_origins
            .iter()
            .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
            .collect();
        OriginPolicy {
            any: (allowed.is_empty() && default_any) || allowed.iter().any(|o| o == "*"),
            allowed,
        }
    }

    /// Whether `origin` may use the broker; `host` is the request's Host
    /// header, so same-origin pages are always allowed.
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        if self.any {
            return true;
        }
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if let (Some(host), Some(rest)) = (host, origin.split_once("://").map(|(_, r)| r)) {
            if rest.eq_ignore_ascii_case(host) {
                return true;
            }
        }
        self.allowed.contains(&origin)
    }
}

/// Middleware factory.
pub struct Cors {
    policy: Arc<OriginPolicy>,
}

impl Cors {
    /// CORS per the configuration.
    pub fn new(config: &Config) -> Self {
        Cors {
            policy: Arc::new(OriginPolicy::from_config(config)),
        }
    }
}

impl<S, B> Transform<S, ServiceRequest> for Cors
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = CorsMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(CorsMiddleware {
            service: Rc::new(service),
            policy: self.policy.clone(),
        }))
    }
}

/// The middleware itself.
pub struct CorsMiddleware<S> {
    service: Rc<S>,
    policy: Arc<OriginPolicy>,
}

const ALLOW_HEADERS: &str = "authorization, content-type, idempotency-key, last-event-id, x-api-key, traceparent, tracestate";
const EXPOSE_HEADERS: &str = "content-type, traceparent";

impl<S, B> Service<ServiceRequest> for CorsMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let origin = req.headers().get(header::ORIGIN).cloned();
        let Some(origin) = origin else {
            let fut = self.service.call(req);
            return Box::pin(async move { Ok(fut.await?.map_into_left_body()) });
        };
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        let allowed = origin
            .to_str()
            .map(|o| self.policy.allows(o, host))
            .unwrap_or(false);
        if !allowed {
            let error = ApiError::new(ErrorCode::Forbidden, "origin not allowed");
            let response = HttpResponse::Forbidden()
                .content_type("application/json")
                .body(error.body());
            return Box::pin(ready(Ok(req.into_response(response).map_into_right_body())));
        }
        let preflight = req.method() == Method::OPTIONS
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if preflight {
            let mut response = HttpResponse::NoContent();
            if self.policy.any {
                // Any origin, but never with credentials: a page on another
                // site must not ride on a visitor's cookies.
                response.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"));
            } else {
                response
                    .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin))
                    .insert_header((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true"));
            }
            let response = response
                .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, OPTIONS"))
                .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS))
                .insert_header((header::ACCESS_CONTROL_MAX_AGE, "86400"))
                .insert_header((header::VARY, "Origin"))
                .finish();
            return Box::pin(ready(Ok(req.into_response(response).map_into_right_body())));
        }
        let fut = self.service.call(req);
        let any = self.policy.any;
        Box::pin(async move {
            let mut res = fut.await?;
            let headers = res.headers_mut();
            if any {
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                );
            } else {
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSE_HEADERS),
            );
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
            Ok(res.map_into_left_body())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        let open = OriginPolicy::from_config(&Config::default());
        assert!(open.allows("https://evil.example", None));
        let config = Config {
            allowed_origins: vec!["https://app.example".into()],
            ..Default::default()
        };
        let strict = OriginPolicy::from_config(&config);
        assert!(strict.allows("https://app.example", None));
        assert!(strict.allows("https://APP.example/", None));
        assert!(!strict.allows("https://evil.example", None));
        assert!(
            strict.allows("http://127.0.0.1:8080", Some("127.0.0.1:8080")),
            "same origin"
        );
    }
}
