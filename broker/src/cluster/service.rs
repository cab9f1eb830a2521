//! Requests addressed to this node (`P.n.<node>.*`): forwarded publishes
//! (sent by `forward.rs`), log fetches, head listings and replica acks.

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
    engine::{PublishItem, Published},
    hub::Topic,
};

/// Most messages per fetch reply (also bounded to ~512 KiB).
pub const FETCH_PAGE: usize = 500;
const FETCH_BYTES: usize = 512 * 1024;

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
    let Some(forward) = wire::decode::<Forward>(payload) else {
        return refused("unavailable", "malformed forward".into());
    };
    let mut items = Vec::with_capacity(forward.items.len());
    for mut item in forward.items {
        let Ok(topic) = Topic::parse(&item.topic) else {
            return refused("unavailable", "invalid topic in forward".into());
        };
        let Some(data) = item.payload() else {
            return refused("unavailable", "malformed forward item".into());
        };
        items.push(PublishItem {
            topic,
            data,
            idempotency_key: item.key,
            traceparent: item.tp,
        });
    }
    let Some(counts) = forward.requests else {
        return owner_answer(owner_publish(shared, items).await);
    };
    let total = counts.iter().try_fold(0usize, |sum, &n| sum.checked_add(n));
    if total != Some(items.len()) || counts.contains(&0) {
        return refused("unavailable", "malformed forward requests".into());
    }
    // Every request goes to the owner task before any answer is awaited,
    // so it takes them together (one replication message), yet answers
    // each on its own.
    let mut rest = items.into_iter();
    let pending: Vec<_> = counts
        .iter()
        .map(|&n| owner_publish(shared, rest.by_ref().take(n).collect()))
        .collect();
    // The reply goes when every request is answered, or at the deadline,
    // well before the sender gives up on the whole forward: a request still
    // waiting then (its topic being claimed) is refused alone, and the
    // others keep their acks.
    let deadline = tokio::time::Instant::now() + shared.settings.replication_timeout;
    let mut each = Vec::with_capacity(pending.len());
    for answer in pending {
        each.push(match tokio::time::timeout_at(deadline, answer).await {
            Ok(answer) => owner_answer(answer),
            Err(_) => refused(
                "unavailable",
                "the topic's owner did not answer in time".into(),
            ),
        });
    }
    ForwardReply {
        ok: None,
        err: None,
        each: Some(each),
    }
}

/// Hands `items` to the owner task now; the future is its answer.
fn owner_publish(
    shared: &Shared,
    items: Vec<PublishItem>,
) -> oneshot::Receiver<Result<Vec<Published>, OwnerError>> {
    let (reply, rx) = oneshot::channel();
    let _ = shared.owner_tx.send(OwnerCommand::Publish { items, reply });
    rx
}

fn refused(code: &str, message: String) -> ForwardReply {
    ForwardReply {
        ok: None,
        err: Some((code.to_string(), message)),
        each: None,
    }
}

fn owner_answer(
    answer: Result<Result<Vec<Published>, OwnerError>, oneshot::error::RecvError>,
) -> ForwardReply {
    match answer {
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
            each: None,
        },
        Ok(Err(OwnerError::NotOwner)) => refused("not_owner", "not the owner".into()),
        // The sender routes again until this node is ready (or its deadline).
        Ok(Err(OwnerError::CatchingUp)) => refused("not_owner", "catching up".into()),
        Ok(Err(OwnerError::Unavailable(m))) => refused("unavailable", m),
        Err(_) => refused("unavailable", "owner stopped".into()),
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
