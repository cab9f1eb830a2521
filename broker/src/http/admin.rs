//! The admin API (protocol-spec §4.9): list topics, disconnect clients,
//! end their subscriptions. Every route needs the `admin` scope (while auth
//! is off everyone has it); credentials (401) and the scope (403) are
//! checked before anything in the request is read.
//!
//! Topic listings read this node's log, which holds every topic of the
//! cluster. Orders reach clients on any node: this node carries them out on
//! its own clients and the engine broadcasts them to the others.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::{
    auth::Authenticator,
    engine::Engine,
    error::{ApiError, ErrorCode},
    hub::{control::Registry, Hub},
    hub::{
        control::{Order, Target},
        Pattern, Topic, TopicHead,
    },
    log::LogError,
    log::MessageLog,
    state::{handler_parts, identify, NodeId},
};

/// Topics per page when `limit` is not given.
pub const DEFAULT_TOPICS_PAGE: usize = 100;
/// Most topics per page.
pub const MAX_TOPICS_PAGE: usize = 1000;
/// Longest client id a path may name (ids are `<node>-<32 hex digits>`).
const MAX_CLIENT_ID: usize = 128;
/// Longest `sub` a path may name.
const MAX_SUB: usize = 1024;
/// Largest body of an unsubscribe request.
const MAX_ORDER_BODY: usize = 4096;

/// Refuses a request without the `admin` scope (401 without credentials).
fn require_admin(auth: &Authenticator, req: &HttpRequest) -> Result<(), ApiError> {
    Ok(identify(auth, req)?.check_admin()?)
}

/// Query of `GET /v1/topics`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicsQuery {
    /// Only topics whose name starts with this.
    #[serde(default)]
    prefix: String,
    /// Only topics whose name sorts after this (the previous page's last).
    after: Option<String>,
    /// Page size.
    limit: Option<usize>,
    /// Credentials for clients that cannot set headers (read by auth).
    #[serde(default, rename = "token")]
    _token: Option<String>,
}

/// One topic of a listing.
#[derive(Debug, Serialize)]
struct TopicRow {
    topic: String,
    first_seq: u64,
    last_seq: u64,
    messages: u64,
    bytes: u64,
    subscribers: usize,
}

/// `GET /v1/topics?prefix=&after=&limit=`: every topic this node's log
/// holds, sorted by name, one page at a time.
pub async fn topics(
    req: HttpRequest,
    auth: web::Data<Authenticator>,
    hub: web::Data<Hub>,
    log: web::Data<dyn MessageLog>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&auth, &req)?;
    let query: TopicsQuery = serde_urlencoded::from_str(req.query_string())
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
    let limit = query
        .limit
        .unwrap_or(DEFAULT_TOPICS_PAGE)
        .clamp(1, MAX_TOPICS_PAGE);
    let mut heads: Vec<(Topic, TopicHead)> = hub
        .all_heads()
        .into_iter()
        .filter(|(t, _)| t.as_str().starts_with(&query.prefix))
        .filter(|(t, _)| query.after.as_deref().is_none_or(|a| t.as_str() > a))
        .collect();
    heads.sort_unstable_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    let more = heads.len() > limit;
    heads.truncate(limit);
    // A topic's size may need a scan of its records the first time.
    let log = log.into_inner();
    let sized = web::block(move || {
        heads
            .into_iter()
            .map(|(topic, head)| log.stats(&topic).map(|stats| (topic, head, stats)))
            .collect::<Result<Vec<_>, LogError>>()
    })
    .await
    .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))??;
    let rows: Vec<TopicRow> = sized
        .into_iter()
        .map(|(topic, head, stats)| TopicRow {
            subscribers: hub.subscribers_of(&topic),
            topic: topic.as_str().to_string(),
            // As history: where retained history begins, last + 1 when
            // nothing is retained.
            first_seq: stats
                .first_seq
                .filter(|f| *f <= head.last_seq)
                .unwrap_or(head.last_seq + 1),
            last_seq: head.last_seq,
            messages: stats.count,
            bytes: stats.bytes,
        })
        .collect();
    let next_after = more.then(|| rows.last().map(|r| r.topic.clone())).flatten();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "topics": rows,
        "next_after": next_after,
    })))
}

/// A client id from a path.
fn client_target(id: String) -> Result<Target, ApiError> {
    if id.len() > MAX_CLIENT_ID {
        return Err(ApiError::bad_request(format!(
            "client_id is longer than {MAX_CLIENT_ID} bytes"
        )));
    }
    Ok(Target::Client(id))
}

/// A `sub` from a path.
fn sub_target(sub: String) -> Result<Target, ApiError> {
    if sub.len() > MAX_SUB {
        return Err(ApiError::bad_request(format!(
            "sub is longer than {MAX_SUB} bytes"
        )));
    }
    Ok(Target::Sub(sub))
}

/// `POST /v1/clients/{client_id}/disconnect`.
pub async fn disconnect_client(
    req: HttpRequest,
    id: web::Path<String>,
    auth: web::Data<Authenticator>,
    orders: OrderParts,
) -> Result<HttpResponse, ApiError> {
    require_admin(&auth, &req)?;
    let target = client_target(id.into_inner())?;
    carry_out(&orders, Order::Disconnect { target }).await
}

/// `POST /v1/users/{sub}/disconnect`.
pub async fn disconnect_user(
    req: HttpRequest,
    sub: web::Path<String>,
    auth: web::Data<Authenticator>,
    orders: OrderParts,
) -> Result<HttpResponse, ApiError> {
    require_admin(&auth, &req)?;
    let target = sub_target(sub.into_inner())?;
    carry_out(&orders, Order::Disconnect { target }).await
}

/// `POST /v1/clients/{client_id}/unsubscribe` with `{"topic":"pattern"}`.
pub async fn unsubscribe_client(
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
    auth: web::Data<Authenticator>,
    orders: OrderParts,
) -> Result<HttpResponse, ApiError> {
    require_admin(&auth, &req)?;
    let target = client_target(id.into_inner())?;
    let pattern = read_pattern(&req, payload).await?;
    carry_out(&orders, Order::Unsubscribe { target, pattern }).await
}

/// `POST /v1/users/{sub}/unsubscribe` with `{"topic":"pattern"}`.
pub async fn unsubscribe_user(
    req: HttpRequest,
    sub: web::Path<String>,
    payload: web::Payload,
    auth: web::Data<Authenticator>,
    orders: OrderParts,
) -> Result<HttpResponse, ApiError> {
    require_admin(&auth, &req)?;
    let target = sub_target(sub.into_inner())?;
    let pattern = read_pattern(&req, payload).await?;
    carry_out(&orders, Order::Unsubscribe { target, pattern }).await
}

/// The body of an unsubscribe order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeBody {
    topic: String,
}

async fn read_pattern(req: &HttpRequest, payload: web::Payload) -> Result<Pattern, ApiError> {
    let body = super::read_body(req, payload, MAX_ORDER_BODY).await?;
    let body: UnsubscribeBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!("the body must be {{\"topic\":\"<pattern>\"}}: {e}"))
    })?;
    Ok(Pattern::parse(&body.topic)?)
}

/// Carries `order` out here and on every other node; answers
/// `{"disconnected"|"unsubscribed":N,"nodes":[..],"missing":[..]}`.
async fn carry_out(parts: &OrderParts, order: Order) -> Result<HttpResponse, ApiError> {
    // Refused before anything is done: a node cut off from the cluster
    // could reach only its own clients.
    if parts
        .engine
        .cluster_status()
        .is_some_and(|c| !c.nats_connected)
    {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "this node is not connected to the cluster; nothing was done: retry, on another node if possible",
        ));
    }
    let (local, peers) = futures_util::future::join(
        parts.control.apply(&order),
        parts.engine.broadcast_order(&order),
    )
    .await;
    let peers = peers.map_err(|e| {
        ApiError::new(
            ErrorCode::Unavailable,
            format!("carried out on this node only ({local}); {e}; retry"),
        )
    })?;
    let mut nodes = peers.answered;
    nodes.push(parts.node_id.0.clone());
    nodes.sort();
    let (field, what) = match &order {
        Order::Disconnect { .. } => ("disconnected", "disconnect"),
        Order::Unsubscribe { .. } => ("unsubscribed", "unsubscribe"),
    };
    let count = local + peers.count;
    tracing::info!(
        order = what,
        target = ?order.target(),
        count,
        missing = ?peers.missing,
        "admin order"
    );
    Ok(HttpResponse::Ok().json(serde_json::json!({
        field: count,
        "nodes": nodes,
        "missing": peers.missing,
    })))
}

handler_parts! {
    /// What carrying out an admin order needs: this node's clients, the
    /// other nodes (through the engine) and this node's name.
    pub struct OrderParts {
        engine: dyn Engine = "the engine",
        control: Registry = "the client registry",
        node_id: NodeId = "the node id",
    }
}
