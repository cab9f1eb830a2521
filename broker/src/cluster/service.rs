//! Requests addressed to this node (`P.n.<node>.*`): forwarded publishes,
//! log fetches, head listings and replica acks.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::sync::oneshot;

use super::{
    owner::{OwnerCommand, OwnerError},
    wire::{
        self, Ack, Fetch, FetchReply, Forward, ForwardAck, ForwardReply, HeadsQuery, HeadsReply,
        Removed, Term, WireEntry,
    },
    Shared,
};
use crate::{
    engine::{PublishError, PublishItem, Published},
    hub::Topic,
};

/// Most messages per fetch reply (also bounded to ~512 KiB).
pub const FETCH_PAGE: usize = 500;
const FETCH_BYTES: usize = 512 * 1024;

/// Outcome of routing a publish to an owner.
#[derive(Debug)]
pub(crate) enum RouteError {
    /// The owner is not (or no longer) the owner, or is gone before
    /// processing anything: route again.
    Moved(String),
    /// Failed; tell the client.
    Failed(PublishError),
}

impl RouteError {
    pub(crate) fn from_owner(e: OwnerError) -> Self {
        match e {
            OwnerError::NotOwner => RouteError::Moved("not the owner".into()),
            OwnerError::CatchingUp => RouteError::Moved("the owner is catching up".into()),
            OwnerError::Unavailable(m) => RouteError::Failed(PublishError::Unavailable(m)),
        }
    }
}

/// Serves requests until the subscription ends.
pub(crate) async fn run(shared: Arc<Shared>, mut subscriber: async_nats::Subscriber) {
    while let Some(msg) = subscriber.next().await {
        let kind = msg
            .subject
            .as_str()
            .rsplit('.')
            .next()
            .unwrap_or("")
            .to_string();
        let shared = shared.clone();
        tokio::spawn(async move {
            let answer = match kind.as_str() {
                "ack" => {
                    if let Some(ack) = wire::decode::<Ack>(&msg.payload) {
                        let _ = shared.owner_tx.send(OwnerCommand::Acks(ack));
                    }
                    None
                }
                "fwd" => Some(wire::encode(&serve_forward(&shared, &msg.payload).await)),
                "fetch" => wire::decode::<Fetch>(&msg.payload)
                    .map(|f| wire::encode(&serve_fetch(&shared, f))),
                "heads" => wire::decode::<HeadsQuery>(&msg.payload)
                    .map(|q| wire::encode(&serve_heads(&shared, q))),
                _ => None,
            };
            if let (Some(answer), Some(reply)) = (answer, msg.reply) {
                let _ = shared.client.publish(reply, answer).await;
            }
        });
    }
}

async fn serve_forward(shared: &Shared, payload: &[u8]) -> ForwardReply {
    let error = |code: &str, message: String| ForwardReply {
        ok: None,
        err: Some((code.to_string(), message)),
    };
    let Some(forward) = wire::decode::<Forward>(payload) else {
        return error("unavailable", "malformed forward".into());
    };
    let mut items = Vec::with_capacity(forward.items.len());
    for mut item in forward.items {
        let Ok(topic) = Topic::parse(&item.topic) else {
            return error("unavailable", "invalid topic in forward".into());
        };
        let Some(data) = item.payload() else {
            return error("unavailable", "malformed forward item".into());
        };
        items.push(PublishItem {
            topic,
            data,
            idempotency_key: item.key,
            traceparent: item.tp,
        });
    }
    let (reply, rx) = oneshot::channel();
    let _ = shared.owner_tx.send(OwnerCommand::Publish { items, reply });
    match rx.await {
        Ok(Ok(published)) => ForwardReply {
            ok: Some(
                published
                    .into_iter()
                    .map(|p| ForwardAck {
                        seq: p.seq,
                        ts: p.ts,
                        dup: p.duplicate,
                    })
                    .collect(),
            ),
            err: None,
        },
        Ok(Err(OwnerError::NotOwner)) => error("not_owner", "not the owner".into()),
        // The sender routes again until this node is ready (or its deadline).
        Ok(Err(OwnerError::CatchingUp)) => error("not_owner", "catching up".into()),
        Ok(Err(OwnerError::Unavailable(m))) => error("unavailable", m),
        Err(_) => error("unavailable", "owner stopped".into()),
    }
}

/// Sends `forward` to `owner` and maps the answer.
pub(crate) async fn forward(
    shared: &Shared,
    owner: &str,
    forward: &Forward,
    items: &[PublishItem],
) -> Result<Vec<Published>, RouteError> {
    let subject = shared.node_subject(owner, "fwd");
    let request = async_nats::Request::new()
        .payload(wire::encode(forward))
        .timeout(Some(
            shared.settings.replication_timeout + shared.settings.request_timeout,
        ));
    let reply = match shared.client.send_request(subject, request).await {
        Ok(msg) => msg,
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
            return Err(RouteError::Moved(format!("{owner} is not reachable")));
        }
        Err(e) => {
            // The owner may have sequenced it: do not retry blindly.
            return Err(RouteError::Failed(PublishError::Unavailable(format!(
                "no answer from the topic's owner {owner}: {e}"
            ))));
        }
    };
    let Some(answer) = wire::decode::<ForwardReply>(&reply.payload) else {
        return Err(RouteError::Failed(PublishError::Unavailable(
            "malformed answer from the owner".into(),
        )));
    };
    match (answer.ok, answer.err) {
        (Some(acks), _) if acks.len() == items.len() => Ok(items
            .iter()
            .zip(acks)
            .map(|(item, a)| Published {
                topic: item.topic.clone(),
                seq: a.seq,
                ts: a.ts,
                duplicate: a.dup,
            })
            .collect()),
        (_, Some((code, _))) if code == "not_owner" => {
            Err(RouteError::Moved("owner changed".into()))
        }
        (_, Some((_, message))) => Err(RouteError::Failed(PublishError::Unavailable(message))),
        _ => Err(RouteError::Failed(PublishError::Unavailable(
            "malformed answer from the owner".into(),
        ))),
    }
}

fn serve_fetch(shared: &Shared, fetch: Fetch) -> FetchReply {
    let Ok(topic) = Topic::parse(&fetch.topic) else {
        return FetchReply::default();
    };
    // Only committed messages: nothing a crash here could take back.
    let to = fetch.to.min(shared.hub.head(&topic).last_seq);
    if fetch.from > to {
        return FetchReply::default();
    }
    let max = fetch
        .max
        .clamp(1, FETCH_PAGE)
        .min((to - fetch.from + 1) as usize);
    let Ok(stored) = shared.stored(&topic, fetch.from, to, max) else {
        return FetchReply::default();
    };
    let mut entries = Vec::new();
    let mut bytes = 0;
    for entry in &stored {
        bytes += entry.message.envelope().len();
        entries.push(WireEntry::from_entry(entry));
        if bytes > FETCH_BYTES {
            break;
        }
    }
    // Seqs this node's retention removed are gone for good: say how far, or
    // a node that missed them could never catch up. (Only retention's: a
    // range accepted as lost here may still be held by another node.)
    let removed = match shared.log.removed_through(&topic) {
        Ok(Some(r)) if r.last_seq >= fetch.from => Some(Removed {
            seq: r.last_seq.min(to),
            ts: r.last_ts,
        }),
        Ok(_) => None,
        Err(_) => return FetchReply::default(),
    };
    FetchReply {
        entries,
        term: Some(shared.term(&topic)),
        removed,
    }
}

fn serve_heads(shared: &Shared, query: HeadsQuery) -> HeadsReply {
    let mut heads: Vec<(String, u64)> = shared
        .hub
        .all_heads()
        .into_iter()
        .map(|(t, h)| (t.as_str().to_string(), h.last_seq))
        .filter(|(t, _)| query.after.as_ref().is_none_or(|a| t > a))
        .collect();
    heads.sort();
    let limit = query.limit.clamp(1, 5000);
    let more = heads.len() > limit;
    heads.truncate(limit);
    let terms = heads
        .iter()
        .filter_map(|(name, _)| {
            let term = shared.term(&Topic::parse(name).ok()?);
            (term != Term::default()).then(|| (name.clone(), term))
        })
        .collect();
    HeadsReply { heads, more, terms }
}
