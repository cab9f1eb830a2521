//! HTTP routes, CORS and the actix server.

pub mod admin;
pub mod cors;
pub mod dashboard;
pub mod health;
pub mod history;
pub mod presence;
pub mod publish;

use std::{net::TcpListener, sync::Arc, time::Duration};

use actix_http::{HttpService, KeepAlive, TlsAcceptorConfig};
use actix_service::{map_config, IntoServiceFactory, ServiceFactory, ServiceFactoryExt};
use actix_web::{
    body::MessageBody,
    dev::{AppConfig, Server, ServiceRequest, ServiceResponse},
    web, App, HttpRequest, HttpResponse,
};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

pub use crate::error::{ApiError, ErrorCode};
use crate::{
    engine::Engine,
    log::MessageLog,
    metrics::Metrics,
    state::{AppState, Lifecycle, NodeId},
    transport::{
        self,
        ws::takeover::{AppFactory, Takeover},
    },
};

/// Builds the HTTP server on an already bound listener.
///
/// actix-web's `HttpServer` has no place for an upgrade handler, so the
/// server is assembled here from its parts (actix-server's accept loop and
/// actix-http's `HttpService`) with Herald's WebSocket takeover as the
/// upgrade service; everything else is the same actix-web app.
pub fn server(
    state: Arc<AppState>,
    listener: TcpListener,
    shutdown_timeout: Duration,
) -> std::io::Result<Server> {
    let data = web::Data::from(state.clone());
    let addr = listener.local_addr()?;
    let tls = state.config.tls.as_ref().map(tls_config).transpose()?;
    let workers = match state.config.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let builder = actix_server::Server::build()
        .workers(workers)
        .max_concurrent_connections(50_000)
        .shutdown_timeout(shutdown_timeout.as_secs().max(1))
        .disable_signals();
    // A macro, not a function: the service's IO type (TCP or TLS) is fixed
    // by how it is finished.
    macro_rules! service {
        ($data:expr) => {
            HttpService::build()
                .keep_alive(KeepAlive::Timeout(Duration::from_secs(5)))
                .client_request_timeout(Duration::from_secs(5))
                .client_disconnect_timeout(Duration::from_secs(1))
                // Acks and deliveries are small writes that must leave at
                // once; Nagle would hold each until the peer's next packet.
                .tcp_nodelay(true)
                .local_addr(addr)
                .upgrade(Takeover::new(boxed_app($data.clone())))
                .finish(map_config(app($data.clone()).into_factory(), |_: ()| {
                    AppConfig::default()
                }))
        };
    }
    let builder = match tls {
        Some(tls) => builder.listen("herald", listener, move || {
            service!(data).rustls_0_23_with_config(
                tls.clone(),
                TlsAcceptorConfig::default().handshake_timeout(Duration::from_secs(3)),
            )
        })?,
        None => builder.listen("herald", listener, move || service!(data).tcp())?,
    };
    Ok(builder.run())
}

/// The app as the WebSocket takeover runs it.
fn boxed_app(data: web::Data<AppState>) -> AppFactory {
    actix_service::boxed::factory(
        app(data)
            .into_factory()
            .map(|res: ServiceResponse<_>| res.map_into_boxed_body().into()),
    )
}

/// Every route of the node.
fn app(
    data: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let echo = data.config.enable_echo;
    let app = App::new()
        .app_data(data.clone())
        // Each part on its own too: a handler names only what it uses.
        .app_data(web::Data::from(data.config.clone()))
        .app_data(web::Data::new(NodeId(data.node_id.clone())))
        .app_data(web::Data::from(data.hub.clone()))
        .app_data(web::Data::<dyn MessageLog>::from(data.log.clone()))
        .app_data(web::Data::<dyn Engine>::from(data.engine.clone()))
        .app_data(web::Data::from(data.metrics.clone()))
        .app_data(web::Data::from(data.auth.clone()))
        .app_data(web::Data::from(data.client_rates.clone()))
        .app_data(web::Data::from(data.lifecycle.clone()))
        .app_data(web::Data::from(data.presence.clone()))
        .app_data(web::Data::from(data.poll_sessions.clone()))
        .app_data(web::Data::from(data.control.clone()))
        .app_data(
            web::QueryConfig::default().error_handler(|e, _| crate::error::extractor_error(e)),
        )
        .app_data(web::PathConfig::default().error_handler(|e, _| crate::error::extractor_error(e)))
        .wrap(cors::Cors::new(&data.config))
        .wrap_fn(count_responses)
        .service(get_only("/healthz").route(web::get().to(health::healthz)))
        .service(get_only("/readyz").route(web::get().to(health::readyz)))
        .service(get_only("/metrics").route(web::get().to(health::metrics)))
        .service(
            web::resource("/v1/topics/{topic}/messages")
                .route(web::post().to(publish::publish_one))
                .route(web::get().to(history::history))
                .default_service(web::to(|req| method_not_allowed(req, "GET, POST"))),
        )
        .service(get_only("/v1/topics/{topic}/presence").route(web::get().to(presence::presence)))
        .service(get_only("/v1/topics").route(web::get().to(admin::topics)))
        .service(
            post_only("/v1/clients/{client_id}/disconnect")
                .route(web::post().to(admin::disconnect_client)),
        )
        .service(
            post_only("/v1/clients/{client_id}/unsubscribe")
                .route(web::post().to(admin::unsubscribe_client)),
        )
        .service(
            post_only("/v1/users/{sub}/disconnect").route(web::post().to(admin::disconnect_user)),
        )
        .service(
            post_only("/v1/users/{sub}/unsubscribe").route(web::post().to(admin::unsubscribe_user)),
        )
        .service(post_only("/v1/publish").route(web::post().to(publish::publish_batch)))
        .service(get_only("/v1/ws").route(web::get().to(transport::ws::upgrade)))
        .service(get_only("/v1/sse").route(web::get().to(transport::sse::stream)))
        .service(get_only("/v1/poll").route(web::get().to(transport::poll::poll)))
        .configure(dashboard::routes);
    let app = if echo {
        app.service(get_only("/v1/echo").route(web::get().to(transport::ws::echo)))
    } else {
        app
    };
    app.default_service(web::to(not_found))
}

/// Loads the certificate chain and key into a rustls server configuration.
fn tls_config(tls: &crate::config::TlsConfig) -> std::io::Result<rustls::ServerConfig> {
    use std::io::{Error, ErrorKind};
    let open = |path: &std::path::Path| {
        std::fs::File::open(path)
            .map(std::io::BufReader::new)
            .map_err(|e| Error::new(e.kind(), format!("cannot read {}: {e}", path.display())))
    };
    let certs = rustls_pemfile::certs(&mut open(&tls.cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::new(
                ErrorKind::InvalidData,
                format!("{}: {e}", tls.cert.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("{}: no certificate found", tls.cert.display()),
        ));
    }
    let key = rustls_pemfile::private_key(&mut open(&tls.key)?)
        .map_err(|e| {
            Error::new(
                ErrorKind::InvalidData,
                format!("{}: {e}", tls.key.display()),
            )
        })?
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidData,
                format!("{}: no private key found", tls.key.display()),
            )
        })?;
    rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::other(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| {
        Error::new(
            ErrorKind::InvalidData,
            format!("certificate and key do not match: {e}"),
        )
    })
}

/// A resource answering 405 for methods it has no route for.
fn get_only(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(|req| method_not_allowed(req, "GET")))
}

/// A resource answering 405 for methods other than POST.
fn post_only(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(|req| method_not_allowed(req, "POST")))
}

/// Counts every response by status class (and 400s as bad requests), and
/// closes keep-alive connections once the node is leaving.
fn count_responses<S, B>(
    req: actix_web::dev::ServiceRequest,
    srv: &S,
) -> impl std::future::Future<Output = Result<actix_web::dev::ServiceResponse<B>, actix_web::Error>>
where
    S: actix_web::dev::Service<
        actix_web::dev::ServiceRequest,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
{
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let lifecycle = req.app_data::<web::Data<Lifecycle>>().cloned();
    let response = srv.call(req);
    async move {
        let mut res = response.await?;
        if let (Some(metrics), Some(lifecycle)) = (metrics, lifecycle) {
            // A leaving node ends keep-alive connections after each answer:
            // a client that keeps one busy would otherwise hold the drain
            // for the whole shutdown timeout, and it should move to a node
            // that stays.
            if lifecycle.leaving() {
                res.response_mut()
                    .head_mut()
                    .set_connection_type(actix_web::http::ConnectionType::Close);
            }
            let status = res.status().as_u16();
            if let Some(c) = metrics.http_responses.get(usize::from(status / 100) - 1) {
                c.inc();
            }
            if status == 400 {
                metrics.bad_requests.inc();
            }
        }
        Ok(res)
    }
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        ErrorCode::NotFound,
        format!("no route for {} {}", req.method(), req.path()),
    ))
}

async fn method_not_allowed(req: HttpRequest, allow: &'static str) -> HttpResponse {
    use actix_web::ResponseError;
    let error = ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "{} is not allowed on {}; use {allow}",
            req.method(),
            req.path()
        ),
    );
    let mut res = error.error_response();
    res.headers_mut().insert(
        actix_web::http::header::ALLOW,
        actix_web::http::header::HeaderValue::from_static(allow),
    );
    res
}

/// Reads a request body, refusing more than `limit` bytes with 413.
pub async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    if let Some(len) = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Err(ApiError::too_large(limit));
        }
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("cannot read body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
