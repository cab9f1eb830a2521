//! Copying what this node missed from its peers: at start-up, after every
//! NATS reconnection, when a claim finds a peer ahead, and to fill a gap in
//! replication.

use std::sync::{atomic::Ordering, Arc};

use super::{
    service::FETCH_PAGE,
    wire::{self, Fetch, FetchReply, HeadsQuery, HeadsReply},
    Shared,
};
use crate::{engine::sequencer::Applied, hub::Topic};

/// Learns the peers, copies every topic where a peer is ahead, then marks
/// the node caught up (ready).
pub(crate) async fn run(shared: Arc<Shared>) {
    shared.caught_up.store(false, Ordering::Release);
    // Let a few heartbeats arrive so the view holds the live peers.
    tokio::time::sleep(shared.settings.heartbeat_interval * 3).await;
    loop {
        let view = shared.membership.view();
        shared.note_members(view.members.len());
        let mut complete = true;
        for peer in view.peers() {
            if let Err(e) = catch_up_with(&shared, peer).await {
                tracing::warn!(peer, error = %e, "catch-up incomplete");
                complete = false;
            }
        }
        if complete || !shared.connected.load(Ordering::Acquire) {
            break;
        }
        tokio::time::sleep(shared.settings.heartbeat_interval).await;
    }
    if shared.connected.load(Ordering::Acquire) {
        tracing::info!("caught up with the cluster");
        shared
            .hub
            .set_remote_floor(shared.membership.remote_floor());
        shared.hub.release_floor();
        shared.caught_up.store(true, Ordering::Release);
    }
}

async fn catch_up_with(shared: &Arc<Shared>, peer: &str) -> Result<(), String> {
    let mut after = None;
    loop {
        let query = HeadsQuery {
            after: after.clone(),
            limit: 2000,
        };
        let reply = shared
            .client
            .request(shared.node_subject(peer, "heads"), wire::encode(&query))
            .await
            .map_err(|e| e.to_string())?;
        let page: HeadsReply = wire::decode(&reply.payload).ok_or("malformed heads reply")?;
        for (topic, seq) in &page.heads {
            let Ok(topic) = Topic::parse(topic) else {
                continue;
            };
            let have = shared.hub.head(&topic).last_seq;
            if *seq > have {
                fetch_into(shared, peer, &topic, have + 1, *seq).await?;
            }
        }
        if !page.more {
            return Ok(());
        }
        after = page.heads.last().map(|(t, _)| t.clone());
    }
}

/// Copies `from..=to` of `topic` from `peer` into the local log.
pub(crate) async fn fetch_into(
    shared: &Arc<Shared>,
    peer: &str,
    topic: &Topic,
    from: u64,
    to: u64,
) -> Result<(), String> {
    let mut next = from;
    while next <= to {
        let fetch = Fetch {
            topic: topic.as_str().to_string(),
            from: next,
            to,
            max: FETCH_PAGE,
        };
        let reply = shared
            .client
            .request(shared.node_subject(peer, "fetch"), wire::encode(&fetch))
            .await
            .map_err(|e| e.to_string())?;
        let page: FetchReply = wire::decode(&reply.payload).ok_or("malformed fetch reply")?;
        if page.entries.is_empty() {
            return Err(format!("{peer} does not hold {topic} {next}..={to}"));
        }
        let entries: Vec<_> = page
            .entries
            .into_iter()
            .filter_map(|e| e.into_entry())
            .collect();
        match shared
            .sequencer
            .apply(entries)
            .await
            .map_err(|e| e.to_string())?
        {
            Applied::Done => {}
            Applied::Gap { head, .. } => {
                return Err(format!("{peer} sent {topic} after {head} out of order"))
            }
        }
        let head = shared.hub.head(topic).last_seq;
        if head < next {
            return Err(format!("no progress copying {topic} from {peer}"));
        }
        next = head + 1;
    }
    Ok(())
}

/// Fills `from..=to` of `topic` from `preferred`, else from any live peer.
pub(crate) async fn fetch_from_any(
    shared: &Arc<Shared>,
    preferred: &str,
    topic: &Topic,
    from: u64,
    to: u64,
) -> Result<(), String> {
    let mut last = match fetch_into(shared, preferred, topic, from, to).await {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let view = shared.membership.view();
    for peer in view.peers().filter(|p| *p != preferred) {
        let have = shared.hub.head(topic).last_seq;
        if have >= to {
            return Ok(());
        }
        match fetch_into(shared, peer, topic, have + 1, to).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}
