//! The NATS cluster engine: any node accepts publishes, every node stores
//! and delivers every message, with the same seq everywhere.
//!
//! * **Membership** (`membership.rs`): heartbeats; a node is live while they
//!   arrive.
//! * **Ownership**: one owner per topic by rendezvous hashing over the live
//!   members. Only the owner assigns seqs; other nodes forward publishes to
//!   it (`forward.rs`, coalesced per owner under load; `service.rs` answers).
//! * **Claims and terms** (`owner.rs`, `replica.rs`): before sequencing a
//!   topic a new owner *claims* it with a higher term. Every live node,
//!   itself included, fences off lower terms and answers with how far its
//!   log goes; the owner continues after the highest seq anyone holds,
//!   fetching what it lacks first.
//! * **Replication** (`owner.rs`, `replica.rs`): the owner publishes each
//!   sequenced batch; every node appends it in seq order (filling gaps from
//!   peers first) and acknowledges. The owner appends the batch itself and
//!   acknowledges the client only once `min_replica_acks` other nodes have it
//!   on disk — so an owner never holds a message no other node could have,
//!   and an acknowledged message survives the loss of any node.
//! * **Catch-up** (`catchup.rs`): a starting or reconnecting node copies
//!   what it missed from its peers before it reports ready.
//! * **Admin orders** (`control.rs`): disconnect and unsubscribe orders are
//!   broadcast, and every node carries them out on its own clients.
//! * **Stats** (`stats.rs`): each node sends its dashboard sample every
//!   second and keeps its peers' latest, for cluster-wide totals.
//!
//! See `protocol-spec/cluster.md` for the failure behaviour.

mod catchup;
mod claim;
mod connect;
mod control;
mod forward;
mod membership;
mod owner;
mod presence;
mod replica;
mod service;
mod shared;
mod stats;
pub mod wire;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::task::AbortOnDropHandle;

use self::{
    membership::Membership,
    owner::OwnerCommand,
    shared::{Shared, META_MAX_MEMBERS, META_TERM},
    wire::{Heartbeat, Term},
};
use crate::{
    config::ClusterConfig,
    engine::{Engine, PeerOutcome, PublishError, PublishItem, Published, Sequencer},
    hub::{
        control::{Order, Registry},
        presence::Presence,
        Hub, Topic,
    },
    log::{LogError, MessageLog},
};

/// Why the cluster engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// NATS could not be reached or refused us.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The URLs (passwords masked).
        url: String,
        /// What failed.
        reason: String,
    },
    /// A NATS credential or TLS file is missing or malformed.
    #[error("NATS credential file {}: {reason}", path.display())]
    Credentials {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading cluster state from the log failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// The node-local parts the cluster engine drives.
pub struct LocalParts {
    /// Subscriptions and fan-out.
    pub hub: Arc<Hub>,
    /// This node's log.
    pub log: Arc<dyn MessageLog>,
    /// Sequences and persists what this node owns or replicates.
    pub sequencer: Sequencer,
    /// The presence table, shared with peers.
    pub presence: Arc<Presence>,
    /// This node's clients, for admin orders from peers.
    pub control: Arc<Registry>,
    /// Accept as lost what no peer can give back (`--accept-damage`).
    pub accept_damage: bool,
    /// This node's stats samples, sent to the peers for their dashboards.
    pub stats: crate::stats::Latest,
}

/// The cluster engine.
pub struct ClusterEngine {
    shared: Arc<Shared>,
    /// Publishes on their way to other nodes' topics.
    forwarder: forward::Forwarder,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Stops a running catch-up and waits until it has.
async fn end_catch_up(task: &mut Option<AbortOnDropHandle<()>>) {
    if let Some(task) = task.take() {
        task.abort();
        let _ = task.await;
    }
}

impl ClusterEngine {
    /// Connects to NATS (any of the comma-separated URLs in `url`, failing
    /// over between them) and joins the cluster as `node`.
    pub async fn start(
        url: &str,
        node: String,
        settings: ClusterConfig,
        idempotency_window: Duration,
        parts: LocalParts,
    ) -> Result<Self, ClusterError> {
        let LocalParts {
            hub,
            log,
            sequencer,
            presence,
            control,
            accept_damage,
            stats: local_stats,
        } = parts;
        // Nothing is guaranteed about the cluster until this node has
        // caught up with it (subscriptions wait for readiness anyway).
        hub.hold_floor(0);
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let servers = connect::server_addrs(url)?;
        let shown = connect::describe(url);
        let client = connect::options(&node, &settings)
            .await?
            .event_callback(move |event| {
                let tx = events_tx.clone();
                async move {
                    let _ = tx.send(event);
                }
            })
            .connect(servers)
            .await
            .map_err(|e| ClusterError::Connect {
                url: shown.clone(),
                reason: e.to_string(),
            })?;

        let mut terms = HashMap::new();
        for (key, value) in log.scan_meta(META_TERM)? {
            if let (Ok(topic), Ok(term)) = (
                Topic::parse(&key[META_TERM.len()..]),
                serde_json::from_slice::<Term>(&value),
            ) {
                terms.insert(topic, term);
            }
        }
        let max_members = log
            .scan_meta(META_MAX_MEMBERS)?
            .first()
            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
            .unwrap_or(1);
        let (owner_tx, owner_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            membership: Membership::new(node.clone(), settings.member_timeout),
            node,
            incarnation: hub.clock().now_ms(),
            client,
            settings,
            idempotency_window,
            hub,
            presence,
            control,
            log,
            sequencer,
            connected: AtomicBool::new(false),
            caught_up: AtomicBool::new(false),
            settled: AtomicBool::new(false),
            terms: Mutex::new(terms),
            max_members: AtomicUsize::new(max_members),
            owner_tx,
            accept_damage,
            peer_stats: stats::PeerStats::default(),
        });
        if shared.client.connection_state() == async_nats::connection::State::Connected {
            shared.connected.store(true, Ordering::Release);
        }

        let mut tasks = Vec::new();
        let subscribe = |subject: String| {
            let (client, shown) = (shared.client.clone(), shown.clone());
            async move {
                client
                    .subscribe(subject)
                    .await
                    .map_err(|e| ClusterError::Connect {
                        url: shown,
                        reason: e.to_string(),
                    })
            }
        };
        let inbox = subscribe(shared.subject("c.>")).await?;
        let requests = subscribe(shared.node_subject(&shared.node, "*")).await?;
        let presence_updates = subscribe(shared.subject("p.*")).await?;
        let admin_orders = subscribe(shared.subject("admin.*")).await?;
        let peer_samples = subscribe(shared.subject("s.*")).await?;
        let (presence_tx, presence_rx) = mpsc::unbounded_channel();
        shared.presence.set_outbox(presence_tx);
        let (connections_tx, connections_rx) = tokio::sync::watch::channel(0u64);
        tasks.push(tokio::spawn(presence::run(
            shared.clone(),
            presence_rx,
            presence_updates,
            connections_rx,
        )));
        tasks.push(tokio::spawn(control::run(shared.clone(), admin_orders)));
        tasks.push(tokio::spawn(stats::run(
            shared.clone(),
            local_stats,
            peer_samples,
        )));
        tasks.push(tokio::spawn(replica::run(shared.clone(), inbox)));
        tasks.push(tokio::spawn(service::run(shared.clone(), requests)));
        tasks.push(tokio::spawn(owner::run(shared.clone(), owner_rx)));
        tasks.push(tokio::spawn(heartbeats(shared.clone())));
        let catchup = shared.clone();
        tasks.push(tokio::spawn(async move {
            // NATS connection events (the first connection included): catch
            // up after every (re)connection. The catch-up runs beside this
            // loop (a catch-up that cannot finish must not keep a lost
            // connection unnoticed) and a new event ends it.
            let mut catching_up: Option<AbortOnDropHandle<()>> = None;
            while let Some(event) = events.recv().await {
                match event {
                    async_nats::Event::Disconnected => {
                        // Ended before the flags go down, so it cannot
                        // report ready after them.
                        end_catch_up(&mut catching_up).await;
                        tracing::warn!("lost NATS; publishes fail until it is back");
                        catchup.connected.store(false, Ordering::Release);
                        catchup.caught_up.store(false, Ordering::Release);
                        catchup.settled.store(false, Ordering::Release);
                        // Before the view goes: its floors are what this
                        // node last guaranteed.
                        catchup.hub.hold_floor(u64::MAX);
                        catchup.membership.clear();
                        let _ = catchup.owner_tx.send(OwnerCommand::Disconnected);
                    }
                    async_nats::Event::Connected => {
                        tracing::info!("NATS connection (re)established");
                        catchup.connected.store(true, Ordering::Release);
                        connections_tx.send_modify(|n| *n += 1);
                        end_catch_up(&mut catching_up).await;
                        catchup.caught_up.store(false, Ordering::Release);
                        catchup.settled.store(false, Ordering::Release);
                        catching_up = Some(AbortOnDropHandle::new(tokio::spawn(catchup::run(
                            catchup.clone(),
                        ))));
                    }
                    // Refused credentials or permissions: the node stays
                    // unready and retries, so say why loudly.
                    async_nats::Event::ServerError(e) => {
                        tracing::error!(error = %e, "NATS server error");
                    }
                    async_nats::Event::ClientError(e) => {
                        tracing::warn!(error = %e, "NATS client error");
                    }
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            }
        }));
        Ok(ClusterEngine {
            shared,
            forwarder: forward::Forwarder::default(),
            tasks: Mutex::new(tasks),
        })
    }

    /// Sends `items` (all owned by `owner` per the caller's view) there.
    async fn publish_group(
        &self,
        owner: &str,
        items: Vec<PublishItem>,
    ) -> Result<Vec<Published>, forward::RouteError> {
        if owner == self.shared.node {
            let (reply, rx) = tokio::sync::oneshot::channel();
            let _ = self
                .shared
                .owner_tx
                .send(OwnerCommand::Publish { items, reply });
            return rx
                .await
                .map_err(|_| {
                    forward::RouteError::Failed(PublishError::Unavailable(
                        "node is shutting down".into(),
                    ))
                })?
                .map_err(forward::RouteError::from_owner);
        }
        let span = if crate::telemetry::otel_enabled() {
            tracing::info_span!(target: "herald::cluster", "cluster.forward", herald.owner = owner, herald.items = items.len())
        } else {
            tracing::Span::none()
        };
        tracing::Instrument::instrument(self.forwarder.forward(&self.shared, owner, items), span)
            .await
    }
}

#[async_trait]
impl Engine for ClusterEngine {
    async fn publish(&self, items: Vec<PublishItem>) -> Result<Vec<Published>, PublishError> {
        let deadline = tokio::time::Instant::now()
            + self.shared.settings.replication_timeout
            + self.shared.settings.member_timeout;
        let mut results: Vec<Option<Published>> = vec![None; items.len()];
        let mut todo: Vec<usize> = (0..items.len()).collect();
        loop {
            self.shared.check_connected()?;
            let view = self.shared.membership.view();
            let mut groups: HashMap<String, Vec<usize>> = HashMap::new();
            for &i in &todo {
                groups
                    .entry(view.owner(items[i].topic.as_str()).to_string())
                    .or_default()
                    .push(i);
            }
            let calls = groups.into_iter().map(|(owner, idx)| {
                let group: Vec<PublishItem> = idx.iter().map(|&i| items[i].clone()).collect();
                async move { (idx, self.publish_group(&owner, group).await) }
            });
            let mut retry = Vec::new();
            for (idx, outcome) in futures_util::future::join_all(calls).await {
                match outcome {
                    Ok(published) => {
                        for (i, p) in idx.into_iter().zip(published) {
                            results[i] = Some(p);
                        }
                    }
                    // The owner moved or is gone: route again once the view settles.
                    Err(forward::RouteError::Moved(reason)) => {
                        tracing::debug!(%reason, "re-routing publish");
                        retry.extend(idx);
                    }
                    Err(forward::RouteError::Failed(e)) => return Err(e),
                }
            }
            if retry.is_empty() {
                return Ok(results
                    .into_iter()
                    .map(|p| p.expect("every item answered"))
                    .collect());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(PublishError::Unavailable(
                    "the topic's owner is unreachable; retry".into(),
                ));
            }
            todo = retry;
            tokio::time::sleep(self.shared.settings.heartbeat_interval / 2).await;
        }
    }

    fn readiness(&self) -> Result<(), String> {
        self.shared.sequencer.readiness()?;
        if !self.shared.connected.load(Ordering::Acquire) {
            return Err("not connected to NATS".into());
        }
        if !self.shared.caught_up.load(Ordering::Acquire) {
            return Err("catching up with the cluster".into());
        }
        Ok(())
    }

    fn peer_stats(&self) -> Vec<(crate::stats::NodeStats, u64)> {
        let view = self.shared.membership.view();
        self.shared.peer_stats.fresh(
            &view.members,
            stats::max_age(self.shared.settings.member_timeout),
        )
    }

    async fn broadcast_order(&self, order: &Order) -> Result<PeerOutcome, PublishError> {
        control::broadcast(&self.shared, order).await
    }

    fn cluster_status(&self) -> Option<crate::engine::ClusterStatus> {
        let mut members = self.shared.membership.view().members.clone();
        members.sort();
        Some(crate::engine::ClusterStatus {
            members,
            nats_connected: self.shared.connected.load(Ordering::Acquire),
            caught_up: self.shared.caught_up.load(Ordering::Acquire),
        })
    }

    async fn shutdown(&self) {
        let leaving = Heartbeat {
            node: self.shared.node.clone(),
            incarnation: self.shared.incarnation,
            watermark: self.shared.hub.local_watermark(),
            leaving: true,
        };
        let subject = self.shared.subject(&format!("c.hb.{}", self.shared.node));
        let _ = self
            .shared
            .client
            .publish(subject, wire::encode(&leaving))
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.shared.client.flush()).await;
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
        self.shared.sequencer.shutdown().await;
    }
}

/// Publishes heartbeats and expires silent peers.
async fn heartbeats(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.settings.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let subject = shared.subject(&format!("c.hb.{}", shared.node));
    loop {
        tick.tick().await;
        if shared.connected.load(Ordering::Acquire) {
            let hb = Heartbeat {
                node: shared.node.clone(),
                incarnation: shared.incarnation,
                watermark: shared.hub.local_watermark(),
                leaving: false,
            };
            if let Err(e) = shared
                .client
                .publish(subject.clone(), wire::encode(&hb))
                .await
            {
                tracing::debug!(error = %e, "heartbeat not sent");
            }
        }
        if shared.membership.expire() {
            shared
                .hub
                .set_remote_floor(shared.membership.remote_floor());
        }
    }
}
