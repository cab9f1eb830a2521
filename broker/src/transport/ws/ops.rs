//! Client ops on a broker connection: subscribe, unsubscribe, publish,
//! ping and refresh, and their replies.

use tracing::Instrument;

use super::{Connection, Exit, Handler};
use crate::{
    auth::Credentials,
    engine::{PublishError, PublishItem, Published},
    http::ApiError,
    hub::Resume,
    telemetry::trace,
    transport::protocol::{parse_op, ClientOp, OpError, OpId, Reply},
};

impl Connection {
    pub(super) async fn on_op(&mut self, text: &str) -> Result<(), Exit> {
        let op = match parse_op(text, self.state.config.limits.max_payload_bytes) {
            Ok(op) => op,
            Err(OpError { id, error }) => {
                self.state.metrics.bad_requests.inc();
                if error.code == crate::http::ErrorCode::PayloadTooLarge {
                    self.state.metrics.payload_too_large.inc();
                }
                return self.send_error(id.as_deref(), &error).await;
            }
        };
        let Handler::Broker(broker) = &mut self.handler else {
            unreachable!("ops only reach the broker handler")
        };
        match op {
            ClientOp::Subscribe {
                id,
                pattern,
                resume,
                presence,
            } => {
                let allowed =
                    broker
                        .identity
                        .check_subscribe(&pattern)
                        .and_then(|()| match &resume {
                            Resume::Cursor(c) => c
                                .positions
                                .keys()
                                .try_for_each(|t| broker.identity.check_read(t)),
                            _ => Ok(()),
                        });
                if let Err(e) = allowed {
                    return self.send_error(id.as_deref(), &e.into()).await;
                }
                let result = broker
                    .deliveries
                    .subscriber()
                    .subscribe(pattern.clone(), resume);
                match result {
                    Ok(cursor) => {
                        broker.presence.join(&pattern, presence);
                        let reply = Reply::Subscribed {
                            id: id.as_deref(),
                            topic: pattern.as_str(),
                            cursor: cursor.map(|c| c.encode()),
                        };
                        self.send(reply.encode()).await
                    }
                    Err(e) => {
                        if matches!(e, crate::hub::SubscribeError::TooMany(_)) {
                            self.state.metrics.subscription_limit.inc();
                        }
                        self.send_error(id.as_deref(), &e.into()).await
                    }
                }
            }
            ClientOp::Unsubscribe { id, pattern } => {
                broker.deliveries.subscriber().unsubscribe(&pattern);
                broker.presence.leave(&pattern);
                let reply = Reply::Unsubscribed {
                    id: id.as_deref(),
                    topic: pattern.as_str(),
                };
                self.send(reply.encode()).await
            }
            ClientOp::Publish {
                id,
                topic,
                data,
                idempotency_key,
                traceparent,
            } => {
                if let Err(e) = broker.identity.check_publish(&topic) {
                    return self.send_error(id.as_deref(), &e.into()).await;
                }
                if let Err(e) = crate::http::publish::check_payload(&self.state, &topic, &data) {
                    return self.send_error(id.as_deref(), &e).await;
                }
                if let Some(rate) = &mut broker.rate {
                    if !rate.try_take(1.0) {
                        self.state.metrics.rate_limited.inc();
                        let error = ApiError::new(
                            crate::http::ErrorCode::RateLimited,
                            "publish rate limit exceeded; slow down",
                        );
                        return self.send_error(id.as_deref(), &error).await;
                    }
                }
                let engine = self.state.engine.clone();
                let metrics = self.state.metrics.clone();
                let span = trace::publish_span("ws", topic.as_str(), traceparent.as_deref());
                let traceparent = trace::carried_traceparent(&span, traceparent);
                broker.acks.push(Box::pin(async move {
                    let started = std::time::Instant::now();
                    let result = engine
                        .publish(vec![PublishItem {
                            topic,
                            data,
                            idempotency_key,
                            traceparent,
                        }])
                        .instrument(span)
                        .await;
                    match &result {
                        Ok(_) => metrics
                            .publish_ack_seconds
                            .observe(started.elapsed().as_secs_f64()),
                        Err(_) => metrics.publish_errors.inc(),
                    }
                    (id, result)
                }));
                Ok(())
            }
            ClientOp::Ping { id } => {
                let floor = {
                    let mut subscriber = broker.deliveries.subscriber();
                    subscriber.settle();
                    // While a replay is still being sent, older messages are
                    // owed: promise nothing (0) until it is done.
                    if subscriber.has_work() {
                        0
                    } else {
                        subscriber.cursor().floor
                    }
                };
                let pong = Reply::Pong {
                    id: id.as_deref(),
                    floor,
                    client_id: broker.presence.client_id(),
                }
                .encode();
                self.send(pong).await
            }
            ClientOp::Refresh { id, token } => {
                // A fresh token must still cover every current subscription.
                let refreshed = self
                    .state
                    .auth
                    .authenticate(&Credentials::token(&token))
                    .and_then(|identity| {
                        broker
                            .deliveries
                            .subscriber()
                            .patterns()
                            .try_for_each(|p| identity.check_subscribe(p))?;
                        Ok(identity)
                    });
                match refreshed {
                    Ok(identity) => {
                        let expires_at = identity.expires_at;
                        broker.identity = identity;
                        self.send(
                            Reply::Refreshed {
                                id: id.as_deref(),
                                expires_at,
                            }
                            .encode(),
                        )
                        .await
                    }
                    Err(e) => self.send_error(id.as_deref(), &e.into()).await,
                }
            }
        }
    }

    pub(super) async fn on_ack(
        &mut self,
        id: Option<OpId>,
        result: Result<Vec<Published>, PublishError>,
    ) -> Result<(), Exit> {
        match result {
            Ok(published) => {
                let p = &published[0];
                let reply = Reply::Ack {
                    id: id.as_deref(),
                    topic: p.topic.as_str(),
                    seq: p.seq,
                };
                self.send(reply.encode()).await
            }
            Err(e) => self.send_error(id.as_deref(), &e.into()).await,
        }
    }

    pub(super) async fn send_error(
        &mut self,
        id: Option<&serde_json::value::RawValue>,
        error: &ApiError,
    ) -> Result<(), Exit> {
        let reply = Reply::Error {
            id,
            code: error.code,
            message: &error.message,
        };
        self.send(reply.encode()).await
    }
}
