//! Sending publishes to their topics' owner (`P.n.<owner>.fwd`), coalesced.
//!
//! Each owner has a lane on each thread that forwards to it (the HTTP
//! workers, each its own runtime: a lane runs where its publishes come
//! from, so the workers share the encoding): a task that keeps at most
//! [`LANE_REQUESTS`] forwards to the owner unanswered (a forward stops
//! counting after [`SLOT_HOLD`]). A publish that finds a slot free goes out
//! at once; publishes that arrive while every slot is taken wait and go out
//! together in the next forward, each still sequenced and answered on its
//! own by the owner ([`Forward::requests`]). Under load one NATS request
//! and its reply then carry many publishes instead of one each.

use std::{collections::HashMap, sync::Arc, thread::ThreadId, time::Duration};

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{
    owner::OwnerError,
    wire::{self, Forward, ForwardItem, ForwardReply},
    Shared,
};
use crate::{
    engine::{PublishError, PublishItem, Published},
    hub::Payload,
};

/// Forwards to one owner that may be unanswered at once.
const LANE_REQUESTS: usize = 8;
/// Most items in one coalesced forward.
const FORWARD_ITEMS: usize = 4096;
/// Most bytes in one coalesced forward, as [`Waiting::wire_bytes`] counts
/// them (well under NATS's default 1 MiB message limit). A single publish
/// request larger than this still goes, alone.
const FORWARD_BYTES: usize = 256 * 1024;
/// Longest a forward keeps its lane slot; past it the lane sends the next
/// one anyway.
const SLOT_HOLD: Duration = Duration::from_millis(100);

/// Outcome of routing a publish to an owner.
#[derive(Debug, Clone)]
pub(crate) enum RouteError {
    /// The owner is not (or no longer) the owner, or is gone before
    /// processing anything: route again.
    Moved(String),
    /// Failed; tell the client.
    Failed(PublishError),
}

impl RouteError {
    /// The owner task's refusal, as the router acts on it.
    pub(crate) fn from_owner(e: OwnerError) -> Self {
        match e {
            OwnerError::NotOwner => RouteError::Moved("not the owner".into()),
            OwnerError::CatchingUp => RouteError::Moved("the owner is catching up".into()),
            OwnerError::Unavailable(m) => RouteError::Failed(PublishError::Unavailable(m)),
        }
    }
}

type Answer = Result<Vec<Published>, RouteError>;

/// One publish request waiting in a lane.
struct Waiting {
    items: Vec<PublishItem>,
    reply: oneshot::Sender<Answer>,
}

impl Waiting {
    /// About what its items take in a forward: topic, data (base64 when
    /// binary), key, trace context and the JSON around them.
    fn wire_bytes(&self) -> usize {
        self.items
            .iter()
            .map(|i| {
                let data = match &i.data {
                    Payload::Json(text) => text.len(),
                    Payload::Binary(raw) => raw.len().div_ceil(3) * 4,
                };
                i.topic.as_str().len()
                    + data
                    + i.idempotency_key.as_ref().map_or(0, String::len)
                    + i.traceparent.as_ref().map_or(0, String::len)
                    + 64
            })
            .sum()
    }
}

/// The lanes, one per owner forwarded to and thread forwarding. Dropping it
/// ends them once their forwards are answered.
#[derive(Default)]
pub(crate) struct Forwarder {
    lanes: Mutex<HashMap<ThreadId, HashMap<String, mpsc::UnboundedSender<Waiting>>>>,
}

impl Forwarder {
    /// Sends `items` (all owned by `owner`, per the caller's view) to
    /// `owner` and waits for its answer.
    pub(crate) async fn forward(
        &self,
        shared: &Arc<Shared>,
        owner: &str,
        items: Vec<PublishItem>,
    ) -> Answer {
        let (reply, answer) = oneshot::channel();
        let lane = self.lane(shared, owner);
        if lane.send(Waiting { items, reply }).is_err() {
            return Err(RouteError::Moved(format!("no lane to {owner}")));
        }
        answer.await.unwrap_or_else(|_| {
            Err(RouteError::Failed(PublishError::Unavailable(
                "node is shutting down".into(),
            )))
        })
    }

    fn lane(&self, shared: &Arc<Shared>, owner: &str) -> mpsc::UnboundedSender<Waiting> {
        let mut lanes = self.lanes.lock();
        let lanes = lanes.entry(std::thread::current().id()).or_default();
        // A closed lane's runtime stopped (a worker restarted): start anew.
        if let Some(lane) = lanes.get(owner).filter(|l| !l.is_closed()) {
            return lane.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_lane(shared.clone(), owner.to_string(), rx));
        lanes.insert(owner.to_string(), tx.clone());
        tx
    }
}

/// Sends what waits for `owner`, at most [`LANE_REQUESTS`] forwards at a
/// time, until every sender is gone. A forward holds its slot for at most
/// [`SLOT_HOLD`]: one that waits longer (its owner claiming a topic, or its
/// NATS server gone with it) must not hold up publishes the owner would
/// answer at once.
async fn run_lane(shared: Arc<Shared>, owner: String, mut rx: mpsc::UnboundedReceiver<Waiting>) {
    let slots = Arc::new(Semaphore::new(LANE_REQUESTS));
    let mut carried: Option<Waiting> = None;
    loop {
        let first = match carried.take() {
            Some(w) => w,
            None => match rx.recv().await {
                Some(w) => w,
                None => return,
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // Whatever queued while every slot was taken goes in this forward
        // (but not a request whose caller is gone: nobody waits for it).
        let mut batch = Vec::new();
        let (mut items, mut bytes) = (0, 0);
        for next in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            if next.reply.is_closed() {
                continue;
            }
            let more = next.wire_bytes();
            if !batch.is_empty()
                && (items + next.items.len() > FORWARD_ITEMS || bytes + more > FORWARD_BYTES)
            {
                carried = Some(next);
                break;
            }
            items += next.items.len();
            bytes += more;
            batch.push(next);
        }
        if batch.is_empty() {
            continue;
        }
        let (shared, owner) = (shared.clone(), owner.clone());
        tokio::spawn(async move {
            let sending = send(&shared, &owner, batch);
            tokio::pin!(sending);
            tokio::select! {
                () = &mut sending => return,
                () = tokio::time::sleep(SLOT_HOLD) => {}
            }
            drop(slot);
            sending.await;
        });
    }
}

/// Sends `batch` as one forward and answers each request in it.
async fn send(shared: &Shared, owner: &str, batch: Vec<Waiting>) {
    let metrics = shared.hub.metrics();
    metrics.cluster_forwards.inc();
    metrics
        .cluster_forwarded_requests
        .inc_by(batch.len() as u64);
    let forward = Forward {
        items: batch
            .iter()
            .flat_map(|w| w.items.iter().map(ForwardItem::new))
            .collect(),
        requests: (batch.len() > 1).then(|| batch.iter().map(|w| w.items.len()).collect()),
    };
    let answers = match request(shared, owner, &forward).await {
        Ok(reply) => answers(reply, &batch),
        Err(e) => vec![Err(e); batch.len()],
    };
    for (w, answer) in batch.into_iter().zip(answers) {
        let _ = w.reply.send(answer);
    }
}

/// The answer to each request of `batch` in the owner's `reply`.
fn answers(reply: ForwardReply, batch: &[Waiting]) -> Vec<Answer> {
    match reply.each {
        Some(each) if each.len() == batch.len() => each
            .into_iter()
            .zip(batch)
            .map(|(reply, w)| answer(reply, w.items.iter()))
            .collect(),
        Some(_) => vec![Err(malformed()); batch.len()],
        // One answer for all: a single request, or an owner that predates
        // coalescing (it took them as one request).
        None => {
            let all: Vec<&PublishItem> = batch.iter().flat_map(|w| &w.items).collect();
            match answer(reply, all.into_iter()) {
                Ok(published) => {
                    let mut rest = published.into_iter();
                    batch
                        .iter()
                        .map(|w| Ok(rest.by_ref().take(w.items.len()).collect()))
                        .collect()
                }
                Err(e) => vec![Err(e); batch.len()],
            }
        }
    }
}

/// One forward request to `owner` and its raw answer.
async fn request(
    shared: &Shared,
    owner: &str,
    forward: &Forward,
) -> Result<ForwardReply, RouteError> {
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
    wire::decode::<ForwardReply>(&reply.payload).ok_or_else(malformed)
}

/// The owner's answer to one request of `items`.
fn answer<'a>(
    reply: ForwardReply,
    items: impl ExactSizeIterator<Item = &'a PublishItem>,
) -> Answer {
    match (reply.ok, reply.err) {
        (Some(acks), _) if acks.len() == items.len() => Ok(items
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
        _ => Err(malformed()),
    }
}

fn malformed() -> RouteError {
    RouteError::Failed(PublishError::Unavailable(
        "malformed answer from the owner".into(),
    ))
}

#[cfg(test)]
mod tests;
