//! `/healthz`, `/readyz` and `/metrics`.

use actix_web::{web, HttpResponse};

use crate::error::{ApiError, ErrorCode};
use crate::{
    engine::Engine,
    hub::{presence::PollSessions, presence::Presence, Hub},
    log::MessageLog,
    metrics::Metrics,
    state::{Lifecycle, NodeId},
};

/// 200 while the process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// 200 when publishes can be accepted; 503 `unavailable` with the reason
/// otherwise (storage failed, shutting down, cluster not connected).
pub async fn readyz(
    lifecycle: web::Data<Lifecycle>,
    engine: web::Data<dyn Engine>,
    node: web::Data<NodeId>,
) -> Result<HttpResponse, ApiError> {
    if lifecycle.leaving() {
        return Err(ApiError::new(ErrorCode::Unavailable, "shutting down"));
    }
    engine
        .readiness()
        .map_err(|reason| ApiError::new(ErrorCode::Unavailable, reason))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready", "node": node.0})))
}

/// Prometheus text exposition.
pub async fn metrics(
    metrics: web::Data<Metrics>,
    lifecycle: web::Data<Lifecycle>,
    engine: web::Data<dyn Engine>,
    hub: web::Data<Hub>,
    log: web::Data<dyn MessageLog>,
    presence: web::Data<Presence>,
    poll_sessions: web::Data<PollSessions>,
) -> HttpResponse {
    let cluster = engine.cluster_status();
    let ready = if !lifecycle.leaving() && engine.readiness().is_ok() {
        1.0
    } else {
        0.0
    };
    let body = metrics.render(&[
        (
            "herald_topics",
            "Topics with at least one message.",
            hub.topic_count() as f64,
        ),
        (
            "herald_log_disk_bytes",
            "Bytes the log occupies on disk.",
            log.disk_bytes() as f64,
        ),
        (
            "herald_log_staged_bytes",
            "Acknowledged message bytes held in memory until compaction writes them as runs.",
            log.staged_bytes() as f64,
        ),
        ("herald_ready", "1 when the node accepts publishes.", ready),
        (
            "herald_presence_clients",
            "Distinct clients in presence, cluster-wide as this node sees it.",
            presence.client_count() as f64,
        ),
        (
            "herald_poll_sessions",
            "Long-poll sessions held between requests.",
            poll_sessions.len() as f64,
        ),
        (
            "herald_cluster_members",
            "Live cluster members seen by this node (1 on a single node).",
            cluster.as_ref().map_or(1, |c| c.members.len()) as f64,
        ),
        (
            "herald_nats_connected",
            "1 while connected to NATS (always 0 on a single node).",
            cluster
                .as_ref()
                .map_or(0.0, |c| f64::from(u8::from(c.nats_connected))),
        ),
        (
            "herald_uptime_seconds",
            "Seconds since the node started.",
            lifecycle.started.elapsed().as_secs_f64(),
        ),
    ]);
    let mut body = body;
    crate::metrics::process::render(&mut body);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body)
}
