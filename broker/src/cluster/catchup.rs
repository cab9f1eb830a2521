//! Copying what this node missed from its peers: at start-up, after every
//! NATS reconnection, when a claim finds a peer ahead, and to fill a gap in
//! replication; and repairing what its log lost (`log::integrity` marks
//! those ranges pending) before it reports ready.

use std::sync::{atomic::Ordering, Arc};

use super::{
    membership::View,
    service::FETCH_PAGE,
    wire::{self, Fetch, FetchReply, HeadsQuery, HeadsReply},
    Shared,
};
use crate::{
    engine::sequencer::Applied,
    hub::{Topic, TopicHead},
    log::{LogEntry, LostRange},
};

/// Repairs every range the log has pending from the live peers; returns
/// whether none is left. A lost tail comes back through the catch-up
/// itself (it is above the head), so it is done once the head reaches it.
/// With `--accept-damage`, ranges no peer holds are accepted as lost after
/// one attempt at every peer (a tail is not: its seqs must not be reused).
async fn repair(shared: &Arc<Shared>, view: &View) -> bool {
    let mut left = false;
    for (range, tail) in shared.log.damage().pending_ranges() {
        if tail {
            if shared.hub.head(&range.topic).last_seq >= range.to {
                tracing::info!(%range, "repaired the damaged log: lost tail copied back from the peers");
                shared
                    .log
                    .damage()
                    .resolve(&range.topic, range.from, range.to);
            } else {
                tracing::warn!(%range, "lost tail not yet back from any peer");
                left = true;
            }
            continue;
        }
        let mut repaired = false;
        for peer in view.peers() {
            match repair_from(shared, peer, &range).await {
                Ok(n) => {
                    tracing::info!(%range, peer, messages = n, "repaired the damaged log from a peer");
                    repaired = true;
                    break;
                }
                Err(e) => tracing::warn!(%range, peer, error = %e, "repair from this peer failed"),
            }
        }
        if repaired {
            continue;
        }
        if shared.accept_damage {
            match shared.log.accept_lost(std::slice::from_ref(&range)) {
                Ok(()) => {
                    tracing::warn!(%range, "no peer holds it: accepted as lost (--accept-damage)");
                    shared
                        .log
                        .damage()
                        .resolve(&range.topic, range.from, range.to);
                    continue;
                }
                Err(e) => tracing::error!(%range, error = %e, "cannot record the range as lost"),
            }
        }
        left = true;
    }
    !left
}

/// Copies `range` from `peer` into the log's pending range; returns how
/// many messages were written.
async fn repair_from(shared: &Arc<Shared>, peer: &str, range: &LostRange) -> Result<usize, String> {
    let mut next = range.from;
    let mut written = 0;
    while next <= range.to {
        let fetch = Fetch {
            topic: range.topic.as_str().to_string(),
            from: next,
            to: range.to,
            max: FETCH_PAGE,
        };
        let reply = shared
            .client
            .request(shared.node_subject(peer, "fetch"), wire::encode(&fetch))
            .await
            .map_err(|e| e.to_string())?;
        let page: FetchReply = wire::decode(&reply.payload).ok_or("malformed fetch reply")?;
        // Seqs the peer's retention removed: the damaged ones among them are
        // removed here too (with what is stored below them, as retention
        // would), which settles them.
        if let Some(removed) = page.removed.filter(|r| r.seq >= next) {
            let through = TopicHead {
                last_seq: removed.seq.min(range.to),
                last_ts: removed.ts,
            };
            let (log, topic) = (shared.log.clone(), range.topic.clone());
            tokio::task::spawn_blocking(move || log.remove_through(&topic, through))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            tracing::info!(%range, peer, to = through.last_seq, "the peer's retention removed these seqs; removed here too");
            next = through.last_seq + 1;
        }
        let entries: Vec<LogEntry> = page
            .entries
            .into_iter()
            .filter_map(|e| e.into_entry())
            .filter(|e| {
                e.message.topic == range.topic && (next..=range.to).contains(&e.message.seq)
            })
            .collect();
        let Some(last) = entries.last().map(|e| e.message.seq) else {
            if next > range.to {
                break;
            }
            return Err(format!("{peer} does not hold {range} from {next}"));
        };
        let log = shared.log.clone();
        written += tokio::task::spawn_blocking(move || log.repair(&entries))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        next = last + 1;
    }
    shared
        .log
        .damage()
        .check_read(&range.topic, range.from, range.to)
        .map_err(|_| format!("{peer} does not hold all of {range}"))?;
    Ok(written)
}

/// Learns the peers, copies every topic where a peer is ahead, then marks
/// the node caught up (ready).
pub(crate) async fn run(shared: Arc<Shared>) {
    shared.caught_up.store(false, Ordering::Release);
    shared.settled.store(false, Ordering::Release);
    // Let a few heartbeats arrive so the view holds the live peers.
    tokio::time::sleep(shared.settings.heartbeat_interval * 3).await;
    if shared.connected.load(Ordering::Acquire) {
        shared.settled.store(true, Ordering::Release);
    }
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
        if complete && !repair(&shared, &view).await {
            complete = false;
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
        for (topic, term) in &page.terms {
            if let Ok(topic) = Topic::parse(topic) {
                shared.learn_term(&topic, term);
            }
        }
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
        // What the peer's retention removed is gone from the cluster's
        // copies too (it removes the oldest first): account for it here as
        // retention would, so what follows continues the topic.
        if let Some(removed) = page.removed.filter(|r| r.seq >= next) {
            let removed = TopicHead {
                last_seq: removed.seq.min(to),
                last_ts: removed.ts,
            };
            tracing::info!(%topic, peer, from = next, to = removed.last_seq, "the peer's retention removed these seqs; recorded as removed here");
            shared
                .sequencer
                .skip(topic.clone(), removed)
                .await
                .map_err(|e| e.to_string())?;
        } else if page.entries.is_empty() {
            return Err(format!("{peer} does not hold {topic} {next}..={to}"));
        }
        // Copies carry their term: learning it before they are applied means
        // this node then refuses the older owners those messages outlived.
        if let Some(term) = &page.term {
            shared.learn_term(topic, term);
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
