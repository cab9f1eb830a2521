//! Subscription index: a token trie from patterns to subscribers.
//!
//! Matching a topic walks at most `2 × tokens` trie nodes (the literal branch
//! and the `*` branch at each level, plus `>` leaves), so the cost of a publish
//! depends on the topic's shape and the number of *matching* subscribers, not
//! on how many subscriptions exist in total.

use std::collections::{HashMap, HashSet};

use super::topic::{Pattern, PatternToken, Topic};

/// Identifies one subscriber (a connection) in the index.
pub type SubscriberId = u64;

#[derive(Debug)]
struct Node<V> {
    literal: HashMap<Box<str>, Node<V>>,
    one: Option<Box<Node<V>>>,
    /// Subscribers whose pattern ends with `>` right below this node.
    rest: HashMap<SubscriberId, V>,
    /// Subscribers whose pattern ends exactly at this node.
    exact: HashMap<SubscriberId, V>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Node {
            literal: HashMap::new(),
            one: None,
            rest: HashMap::new(),
            exact: HashMap::new(),
        }
    }
}

impl<V> Node<V> {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.one.is_none()
            && self.rest.is_empty()
            && self.exact.is_empty()
    }
}

/// Pattern → subscriber index. `V` is what fan-out needs per subscriber
/// (the hub stores the subscriber's mailbox handle).
#[derive(Debug)]
pub struct SubscriptionIndex<V> {
    root: Node<V>,
    len: usize,
}

impl<V> Default for SubscriptionIndex<V> {
    fn default() -> Self {
        SubscriptionIndex {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<V: Clone> SubscriptionIndex<V> {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of (pattern, subscriber) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index holds no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `id` under `pattern`; returns false if it was already there.
    pub fn insert(&mut self, pattern: &Pattern, id: SubscriberId, value: V) -> bool {
        let mut node = &mut self.root;
        let tokens = pattern.tokens();
        for token in tokens {
            node = match token {
                PatternToken::Literal(l) => node.literal.entry(l.clone()).or_default(),
                PatternToken::One => node.one.get_or_insert_with(Default::default),
                PatternToken::Rest => break,
            };
        }
        let set = if matches!(tokens.last(), Some(PatternToken::Rest)) {
            &mut node.rest
        } else {
            &mut node.exact
        };
        let added = set.insert(id, value).is_none();
        if added {
            self.len += 1;
        }
        added
    }

    /// Removes `id` from `pattern`; returns false if it was not there.
    pub fn remove(&mut self, pattern: &Pattern, id: SubscriberId) -> bool {
        let removed = Self::remove_at(&mut self.root, pattern.tokens(), id);
        if removed {
            self.len -= 1;
        }
        removed
    }

    fn remove_at(node: &mut Node<V>, tokens: &[PatternToken], id: SubscriberId) -> bool {
        match tokens.split_first() {
            None => node.exact.remove(&id).is_some(),
            Some((PatternToken::Rest, _)) => node.rest.remove(&id).is_some(),
            Some((PatternToken::One, rest)) => {
                let Some(child) = node.one.as_deref_mut() else {
                    return false;
                };
                let removed = Self::remove_at(child, rest, id);
                if child.is_empty() {
                    node.one = None;
                }
                removed
            }
            Some((PatternToken::Literal(l), rest)) => {
                let Some(child) = node.literal.get_mut(l) else {
                    return false;
                };
                let removed = Self::remove_at(child, rest, id);
                if child.is_empty() {
                    node.literal.remove(l);
                }
                removed
            }
        }
    }

    /// Calls `f` once per subscriber with at least one pattern matching
    /// `topic` — a subscriber with overlapping patterns is reported once.
    pub fn for_each_match(&self, topic: &Topic, mut f: impl FnMut(SubscriberId, &V)) {
        let tokens: Vec<&str> = topic.tokens().collect();
        let mut hits: Vec<&HashMap<SubscriberId, V>> = Vec::new();
        Self::collect(&self.root, &tokens, &mut hits);
        match hits.as_slice() {
            [] => {}
            [only] => only.iter().for_each(|(id, v)| f(*id, v)),
            many => {
                let mut seen = HashSet::new();
                for set in many {
                    for (id, v) in set.iter() {
                        if seen.insert(*id) {
                            f(*id, v);
                        }
                    }
                }
            }
        }
    }

    fn collect<'a>(
        node: &'a Node<V>,
        tokens: &[&str],
        hits: &mut Vec<&'a HashMap<SubscriberId, V>>,
    ) {
        let Some((first, rest)) = tokens.split_first() else {
            if !node.exact.is_empty() {
                hits.push(&node.exact);
            }
            return;
        };
        if !node.rest.is_empty() {
            hits.push(&node.rest);
        }
        if let Some(child) = node.literal.get(*first) {
            Self::collect(child, rest, hits);
        }
        if let Some(child) = node.one.as_deref() {
            Self::collect(child, rest, hits);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }
    fn t(s: &str) -> Topic {
        Topic::parse(s).unwrap()
    }
    fn matches(index: &SubscriptionIndex<()>, topic: &str) -> Vec<SubscriberId> {
        let mut ids = Vec::new();
        index.for_each_match(&t(topic), |id, _| ids.push(id));
        ids.sort();
        ids
    }

    #[test]
    fn overlapping_patterns_report_once() {
        let mut index = SubscriptionIndex::new();
        for pattern in ["orders.*", "orders.>", "orders.eu", ">"] {
            assert!(index.insert(&p(pattern), 1, ()));
        }
        assert!(!index.insert(&p("orders.*"), 1, ()));
        index.insert(&p("payments.eu"), 2, ());
        assert_eq!(matches(&index, "orders.eu"), vec![1]);
        assert_eq!(matches(&index, "payments.eu"), vec![1, 2]);
        assert_eq!(index.len(), 5);
    }

    #[test]
    fn removal_prunes() {
        let mut index = SubscriptionIndex::new();
        index.insert(&p("a.*.c"), 7, ());
        index.insert(&p("a.>"), 8, ());
        assert!(index.remove(&p("a.*.c"), 7));
        assert!(!index.remove(&p("a.*.c"), 7));
        assert!(index.remove(&p("a.>"), 8));
        assert!(index.root.is_empty());
        assert!(index.is_empty());
    }

    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("c".to_string())
        ]
    }
    fn pattern_token() -> impl Strategy<Value = String> {
        prop_oneof![4 => token(), 1 => Just("*".to_string())]
    }
    fn topic_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(token(), 1..5).prop_map(|v| v.join("."))
    }
    fn pattern_strategy() -> impl Strategy<Value = String> {
        (prop::collection::vec(pattern_token(), 1..5), any::<bool>()).prop_map(|(mut v, rest)| {
            if rest {
                *v.last_mut().unwrap() = ">".to_string();
            }
            v.join(".")
        })
    }

    proptest! {
        /// The trie reports exactly the subscribers a naive scan would, each once.
        #[test]
        fn trie_agrees_with_naive_matcher(
            subs in prop::collection::vec((0u64..8, pattern_strategy()), 0..40),
            removals in prop::collection::vec(0usize..40, 0..10),
            topics in prop::collection::vec(topic_strategy(), 1..20),
        ) {
            let mut index = SubscriptionIndex::new();
            let mut naive: Vec<(u64, Pattern)> = Vec::new();
            for (id, pattern) in &subs {
                let pattern = p(pattern);
                let fresh = !naive.iter().any(|(i, q)| i == id && *q == pattern);
                prop_assert_eq!(index.insert(&pattern, *id, ()), fresh);
                if fresh {
                    naive.push((*id, pattern));
                }
            }
            for r in removals {
                if r < naive.len() {
                    let (id, pattern) = naive.remove(r);
                    prop_assert!(index.remove(&pattern, id));
                }
            }
            prop_assert_eq!(index.len(), naive.len());
            for topic in topics {
                let topic_t = t(&topic);
                let mut expected: Vec<u64> = naive
                    .iter()
                    .filter(|(_, q)| q.matches(&topic_t))
                    .map(|(id, _)| *id)
                    .collect();
                expected.sort();
                expected.dedup();
                prop_assert_eq!(matches(&index, &topic), expected);
            }
        }
    }
}
