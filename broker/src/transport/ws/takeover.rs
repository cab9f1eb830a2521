//! The takeover: where a WebSocket leaves actix's HTTP dispatcher.
//!
//! actix-http calls this service with every HTTP/1 request that asks for a
//! protocol upgrade, together with the connection itself. It runs the
//! request through the same actix-web app as every other request (so
//! routing, CORS, auth and refusals are shared), with a [`TakeoverSlot`]
//! in its extensions. When the route accepted a WebSocket (a `101` and a
//! filled slot), the `101` is written and the socket goes to a new
//! [`Link`] task; the dispatcher and its buffers are gone from then on.
//! Any other answer is written as a normal response and the connection is
//! closed (an upgrade request that is not a WebSocket, e.g. `h2c`, gets
//! its ordinary HTTP/1.1 answer).

use std::{convert::Infallible, future::poll_fn, rc::Rc};

use actix_codec::{AsyncRead, AsyncWrite, Framed};
use actix_http::{
    body::{BodySize, BoxBody, MessageBody},
    h1, HttpMessage, Request, Response, StatusCode,
};
use actix_service::{boxed::BoxServiceFactory, Service, ServiceFactory};
use actix_web::dev::AppConfig;
use futures_util::{future::LocalBoxFuture, SinkExt};

use super::{link::Link, TakeoverSlot};

/// The app as the takeover runs it: requests in, HTTP responses out.
pub type AppFactory =
    BoxServiceFactory<AppConfig, Request, Response<BoxBody>, actix_web::Error, ()>;
type AppService = actix_service::boxed::BoxService<Request, Response<BoxBody>, actix_web::Error>;

/// Factory of the takeover service (one per worker).
pub struct Takeover {
    app: AppFactory,
}

impl Takeover {
    /// A takeover that answers upgrade requests with `app`.
    pub fn new(app: AppFactory) -> Self {
        Takeover { app }
    }
}

impl<T> ServiceFactory<(Request, Framed<T, h1::Codec>)> for Takeover
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
{
    type Response = ();
    type Error = Infallible;
    type Config = ();
    type Service = TakeoverService;
    type InitError = ();
    type Future = LocalBoxFuture<'static, Result<TakeoverService, ()>>;

    fn new_service(&self, _: ()) -> Self::Future {
        let app = self.app.new_service(AppConfig::default());
        Box::pin(async move {
            Ok(TakeoverService {
                app: Rc::new(app.await?),
            })
        })
    }
}

/// Serves one upgrade request; see the module docs.
pub struct TakeoverService {
    app: Rc<AppService>,
}

impl<T> Service<(Request, Framed<T, h1::Codec>)> for TakeoverService
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
{
    type Response = ();
    type Error = Infallible;
    type Future = LocalBoxFuture<'static, Result<(), Infallible>>;

    actix_service::always_ready!();

    fn call(&self, (req, framed): (Request, Framed<T, h1::Codec>)) -> Self::Future {
        let app = self.app.clone();
        Box::pin(async move {
            let slot = TakeoverSlot::default();
            req.extensions_mut().insert(slot.clone());
            let response = match app.call(req).await {
                Ok(response) => response,
                Err(e) => Response::from(e),
            };
            match slot.take() {
                Some(setup) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                    if let Some((io, read)) = switch(framed, response).await {
                        let links = setup.state.ws_links.clone();
                        actix_web::rt::spawn(links.track_future(Link::new(io, read, setup).run()));
                    }
                }
                _ => answer(framed, response).await,
            }
            Ok(())
        })
    }
}

/// Writes the `101` and takes the socket, with whatever the client sent
/// after its request.
async fn switch<T: AsyncRead + AsyncWrite + Unpin>(
    mut framed: Framed<T, h1::Codec>,
    response: Response<BoxBody>,
) -> Option<(T, bytes::BytesMut)> {
    let (head, _) = response.into_parts();
    let sent = framed.send(h1::Message::Item((head, BodySize::None))).await;
    if let Err(e) = sent {
        tracing::debug!(error = %e, "websocket handshake not sent");
        return None;
    }
    let parts = framed.into_parts();
    Some((parts.io, parts.read_buf))
}

/// Writes a whole ordinary response; the connection closes after it. A
/// sized body leaves in the same write as the head (clients that read one
/// segment after the head, as WebSocket libraries do for refusals, get it).
async fn answer<T: AsyncRead + AsyncWrite + Unpin>(
    mut framed: Framed<T, h1::Codec>,
    response: Response<BoxBody>,
) {
    let (head, body) = response.into_parts();
    let size = body.size();
    let streaming = matches!(size, BodySize::Stream);
    if framed.feed(h1::Message::Item((head, size))).await.is_err() {
        return;
    }
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = poll_fn(|cx| body.as_mut().poll_next(cx)).await {
        let Ok(chunk) = chunk else { return };
        if framed.feed(h1::Message::Chunk(Some(chunk))).await.is_err() {
            return;
        }
        if streaming && framed.flush().await.is_err() {
            return;
        }
    }
    let _ = framed.send(h1::Message::Chunk(None)).await;
}
