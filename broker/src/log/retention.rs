//! Retention: how much history each namespace keeps, and the background
//! pass that trims the oldest messages.
//!
//! Trimming only ever removes a topic's oldest messages and never touches its
//! head, so seqs keep counting up after everything was trimmed. It runs on a
//! blocking thread, apart from the sequencer, so publishes never wait for it.

use std::{collections::HashMap, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};

use super::{LogError, MessageLog, Trimmed};
use herald_core::{Topic, TopicHead};

/// Limits on one topic's retained history; `0`/absent means unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Keep at most this many messages per topic.
    pub max_messages: u64,
    /// Drop messages older than this (e.g. `"24h"`).
    #[serde(with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// Keep at most this many envelope bytes per topic.
    pub max_bytes: u64,
}

impl Default for RetentionPolicy {
    /// 10,000 messages, 24 hours, 64 MiB per topic, whichever is hit first.
    fn default() -> Self {
        RetentionPolicy {
            max_messages: 10_000,
            max_age: Some(Duration::from_secs(24 * 3600)),
            max_bytes: 64 << 20,
        }
    }
}

impl RetentionPolicy {
    fn is_unlimited(&self) -> bool {
        self.max_messages == 0 && self.max_age.is_none() && self.max_bytes == 0
    }
}

/// The default policy and per-namespace overrides.
#[derive(Debug, Clone, Default)]
pub struct RetentionRules {
    /// Applies to namespaces without an override.
    pub default: RetentionPolicy,
    /// Namespace (first topic token) → policy.
    pub namespaces: HashMap<String, RetentionPolicy>,
}

impl RetentionRules {
    /// The policy for topics in `namespace`.
    pub fn for_namespace(&self, namespace: &str) -> &RetentionPolicy {
        self.namespaces.get(namespace).unwrap_or(&self.default)
    }
}

/// Runs one retention pass over every topic of `heads` (the committed
/// heads).
pub fn trim_all(
    heads: Vec<(Topic, TopicHead)>,
    log: &dyn MessageLog,
    rules: &RetentionRules,
    now_ms: u64,
) -> Result<Trimmed, LogError> {
    let mut total = Trimmed::default();
    for (topic, head) in heads {
        let policy = rules.for_namespace(topic.namespace());
        if policy.is_unlimited() {
            continue;
        }
        let stats = log.stats(&topic)?;
        if stats.count == 0 {
            continue;
        }
        let keep_from_seq = if policy.max_messages > 0 {
            head.last_seq.saturating_sub(policy.max_messages) + 1
        } else {
            0
        };
        let min_ts = policy
            .max_age
            .map_or(0, |age| now_ms.saturating_sub(age.as_millis() as u64));
        let over_count = policy.max_messages > 0 && stats.count > policy.max_messages;
        let over_bytes = policy.max_bytes > 0 && stats.bytes > policy.max_bytes;
        if !over_count && !over_bytes && min_ts == 0 {
            continue;
        }
        let mut remaining = stats.bytes;
        let trimmed = log.trim_front(&topic, &mut |seq, ts, bytes| {
            let drop = seq < keep_from_seq
                || ts < min_ts
                || (policy.max_bytes > 0 && remaining > policy.max_bytes);
            if drop {
                remaining -= bytes.min(remaining);
            }
            drop
        })?;
        total.messages += trimmed.messages;
        total.bytes += trimmed.bytes;
    }
    log.expire_idempotency(now_ms)?;
    Ok(total)
}

/// What a retention pass reads of the node: its committed heads and its
/// clock (the hub's, which never runs backwards).
pub trait HeadsSource: Send + Sync + 'static {
    /// Every topic's committed head.
    fn heads(&self) -> Vec<(Topic, TopicHead)>;
    /// Now, in ms since the epoch.
    fn now_ms(&self) -> u64;
}

/// Trims every `interval` until `shutdown` resolves.
pub async fn run_trimmer(
    hub: Arc<dyn HeadsSource>,
    log: Arc<dyn MessageLog>,
    rules: Arc<RetentionRules>,
    interval: Duration,
    metrics: Arc<crate::metrics::Metrics>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let (hub, log, rules) = (hub.clone(), log.clone(), rules.clone());
        let result =
            tokio::task::spawn_blocking(move || trim_all(hub.heads(), &*log, &rules, hub.now_ms()))
                .await;
        match result {
            Ok(Ok(t)) if t.messages > 0 => {
                metrics.retention_trimmed.inc_by(t.messages);
                tracing::debug!(messages = t.messages, bytes = t.bytes, "retention trimmed");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "retention pass failed"),
            Err(e) => tracing::warn!(error = %e, "retention task panicked"),
        }
    }
}
