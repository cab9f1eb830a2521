//! `GET /v1/topics/{topic}/messages?since=N&limit=M` (or `since_ts=T`).

use actix_web::{web, HttpResponse};
use bytes::{BufMut, BytesMut};
use serde::Deserialize;

use crate::error::ApiError;
use crate::{
    auth::Authenticator,
    config::Config,
    hub::{Hub, Topic},
    log::MessageLog,
    state::identify,
};

/// Query of a history read.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Messages with a seq above this (default 0: from the oldest retained).
    pub since: Option<u64>,
    /// Messages from the first with `ts` at or after this (ms since the
    /// epoch), instead of `since`.
    pub since_ts: Option<u64>,
    /// Most messages to return (default 100, capped by `transport.max_page`).
    pub limit: Option<usize>,
    /// Credentials for browsers that cannot set headers (see auth).
    #[serde(default)]
    pub token: Option<String>,
}

/// `{"messages":[...],"first_seq":F,"last_seq":L}`: retained messages after
/// `since` (or from `since_ts`) in seq order. `first_seq` is the oldest
/// retained seq (`last_seq + 1` when nothing is retained); `last_seq` the
/// newest committed one. Seqs the page should start with but retention
/// removed, and ranges the operator accepted as lost (a damaged log started
/// with `--accept-damage`) within the page, are listed in
/// `"gaps":[{"topic","from","to"}]`.
pub async fn history(
    req: actix_web::HttpRequest,
    topic: web::Path<String>,
    query: web::Query<HistoryQuery>,
    auth: web::Data<Authenticator>,
    config: web::Data<Config>,
    hub: web::Data<Hub>,
    log: web::Data<dyn MessageLog>,
) -> Result<HttpResponse, ApiError> {
    let topic = Topic::parse(&topic)?;
    identify(&auth, &req)?.check_read(&topic)?;
    if !config.history_enabled(&topic) {
        return Err(ApiError::new(
            super::ErrorCode::NotFound,
            format!("history is off for namespace {:?}", topic.namespace()),
        ));
    }
    let limit = query
        .limit
        .unwrap_or(100)
        .clamp(1, config.transport.max_page);
    if query.since.is_some() && query.since_ts.is_some() {
        return Err(ApiError::bad_request("give since or since_ts, not both"));
    }
    let since_ts = query.since_ts;
    let head = hub.head(&topic);
    let log = log.into_inner();
    let t = topic.clone();
    let (first, messages, gaps) = web::block(move || -> Result<_, crate::log::LogError> {
        let oldest = log.read(&t, 0, 1)?.into_iter().next();
        let first = oldest.as_ref().map(|m| m.seq);
        // From a time: after the last message before it. Retention removed
        // what came before the oldest retained message; when that message
        // is already at or after the time, some removed ones may have been
        // too, so the page starts at seq 1 and reports them as a gap.
        let since = match (since_ts, &oldest) {
            (Some(ts), Some(m)) if m.ts >= ts => 0,
            (Some(ts), _) => log
                .first_seq_since_ts(&t, ts, head.last_seq)?
                .map_or(head.last_seq, |s| s - 1),
            (None, _) => query.since.unwrap_or(0),
        };
        let messages = if since < head.last_seq {
            log.read(&t, since + 1, limit)?
        } else {
            Vec::new()
        };
        let upto = match messages.last() {
            Some(m) if messages.len() == limit => m.seq,
            _ => head.last_seq,
        };
        let mut gaps =
            log.damage()
                .accepted_within(&t, since.saturating_add(1), upto.min(head.last_seq));
        // Asked for seqs retention has removed (`since=0` on a trimmed
        // topic, or a time before the retained data).
        if let Some(first) = first.filter(|f| since + 1 < *f && *f <= head.last_seq) {
            gaps.insert(0, (since + 1, first - 1));
        }
        Ok((first, messages, gaps))
    })
    .await
    .map_err(|e| ApiError::new(super::ErrorCode::Internal, e.to_string()))??;
    let mut body = BytesMut::with_capacity(
        64 + messages
            .iter()
            .map(|m| m.envelope().len() + 1)
            .sum::<usize>(),
    );
    body.put_slice(b"{\"messages\":[");
    let mut first_item = true;
    // Messages appended but not yet committed are not shown: they might not
    // survive a crash, and their seq must never be seen twice.
    for m in messages.iter().filter(|m| m.seq <= head.last_seq) {
        if !first_item {
            body.put_u8(b',');
        }
        first_item = false;
        body.put_slice(m.envelope());
    }
    let first_seq = first
        .filter(|f| *f <= head.last_seq)
        .unwrap_or(head.last_seq + 1);
    body.put_slice(
        format!("],\"first_seq\":{first_seq},\"last_seq\":{}", head.last_seq).as_bytes(),
    );
    if !gaps.is_empty() {
        let gaps: Vec<String> = gaps
            .iter()
            .map(|(from, to)| format!("{{\"topic\":\"{topic}\",\"from\":{from},\"to\":{to}}}"))
            .collect();
        body.put_slice(format!(",\"gaps\":[{}]", gaps.join(",")).as_bytes());
    }
    body.put_u8(b'}');
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body.freeze()))
}
