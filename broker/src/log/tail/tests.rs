//! The staged tail: each message read once while it moves to runs; shares of whole topics.

use super::*;

fn entry(topic: &Topic, seq: u64, key: Option<&str>) -> LogEntry {
    LogEntry {
        message: Message::new(topic.clone(), seq, seq * 10, "1"),
        idempotency: key.map(|k| (k.to_string(), 1_000)),
    }
}

#[test]
fn readers_see_frozen_and_current_parts_in_order_once() {
    let t = Topic::parse("t").unwrap();
    let tail = Tail::default();
    tail.push(3, &[entry(&t, 1, Some("a")), entry(&t, 2, None)]);
    let (frozen, retried) = tail.freeze(Take::Share(usize::MAX)).unwrap();
    assert!(!retried);
    assert_eq!((frozen.passes, frozen.first_segment), (1, Some(3)));
    tail.push(4, &[entry(&t, 4, None), entry(&t, 3, Some("b"))]);
    let seqs = |from| -> Vec<u64> { tail.messages(&t, from).iter().map(|m| m.seq).collect() };
    assert_eq!(seqs(1), vec![1, 2, 3, 4]);
    assert_eq!(seqs(3), vec![3, 4]);
    assert_eq!(tail.idempotency(&t, "a").unwrap().seq, 1);
    assert_eq!(tail.idempotency(&t, "b").unwrap().seq, 3);
    assert_eq!(tail.idempotency_in(&t, 2, 9).len(), 1);
    // A failed compaction is retried with the same part.
    let (again, retried) = tail.freeze(Take::Share(usize::MAX)).unwrap();
    assert!(retried && Arc::ptr_eq(&again, &frozen));
    assert_eq!(tail.release(), Some(4));
    assert_eq!(seqs(1), vec![3, 4]);
    assert_eq!(tail.heads()[0].1.last_seq, 4);
    assert!(tail.idempotency(&t, "a").is_none());
}

#[test]
fn a_share_takes_whole_topics_staged_longest_first() {
    let topics: Vec<Topic> = ["a", "b", "c"]
        .iter()
        .map(|n| Topic::parse(n).unwrap())
        .collect();
    let tail = Tail::default();
    let entry = |t: &Topic, seq: u64| LogEntry {
        message: Message::new(t.clone(), seq, seq, "\"0123456789\""),
        idempotency: None,
    };
    // c first (segment 1), then a (2), then b (3), and more of c (4).
    tail.push(1, &[entry(&topics[2], 1)]);
    tail.push(2, &[entry(&topics[0], 1)]);
    tail.push(3, &[entry(&topics[1], 1)]);
    tail.push(4, &[entry(&topics[2], 2)]);
    let (one, _) = tail.freeze(Take::Share(1)).unwrap();
    let names: Vec<&str> = one.topics.keys().map(|t| t.as_str()).collect();
    assert_eq!(names, vec!["c"], "the topic staged longest, whole");
    assert_eq!(one.topics[&topics[2]].messages.len(), 2);
    assert_eq!(one.first_segment, Some(1));
    assert_eq!(
        tail.first_segment(),
        Some(1),
        "the frozen part still counts"
    );
    tail.release();
    assert_eq!(tail.first_segment(), Some(2), "a's segment is next");
    let (rest, _) = tail.freeze(Take::Share(usize::MAX)).unwrap();
    assert_eq!(rest.topics.len(), 2);
    tail.release();
    assert!(tail.freeze(Take::Share(1)).is_none());
}

#[test]
fn what_waits_is_counted_apart_from_what_a_compaction_writes() {
    let tail = Tail::default();
    let entry = |t: &str, seq: u64| LogEntry {
        message: Message::new(Topic::parse(t).unwrap(), seq, seq, "\"0123456789\""),
        idempotency: None,
    };
    let one = tail.push(1, &[entry("a", 1), entry("b", 1)]);
    assert_eq!((one.topics, one.compacting), (2, 0));
    let bytes = one.waiting;
    assert!(bytes > 0);
    let (frozen, _) = tail.freeze(Take::Share(usize::MAX)).unwrap();
    assert_eq!(frozen.bytes, bytes);
    // Staged while the compaction runs: only this waits for the next.
    let two = tail.push(2, &[entry("a", 2)]);
    assert_eq!(two.topics, 1);
    assert_eq!(two.compacting, bytes);
    assert!(two.waiting < bytes);
    assert_eq!(tail.waiting(), (two.waiting, 1));
    assert_eq!(tail.staged(), bytes + two.waiting, "in memory: both");
    tail.release();
    assert_eq!(tail.waiting(), (two.waiting, 1));
    assert_eq!(tail.staged(), two.waiting);
}

#[test]
fn maintenance_takes_only_the_topics_it_names() {
    let [a, b, c] = ["a", "b", "c"].map(|n| Topic::parse(n).unwrap());
    let tail = Tail::default();
    let entry = |t: &Topic, seq: u64| LogEntry {
        message: Message::new(t.clone(), seq, seq, "1"),
        idempotency: None,
    };
    tail.push(1, &[entry(&a, 1)]);
    tail.push(2, &[entry(&b, 1), entry(&b, 2)]);
    assert!(
        tail.freeze(Take::Topics(std::slice::from_ref(&c)))
            .is_none(),
        "c: none staged"
    );
    let (taken, retried) = tail.freeze(Take::Topics(&[b.clone(), c.clone()])).unwrap();
    assert!(!retried);
    assert_eq!(taken.topics.keys().collect::<Vec<_>>(), vec![&b]);
    assert_eq!(taken.topics[&b].messages.len(), 2);
    assert_eq!(taken.first_segment, Some(2));
    tail.release();
    assert!(tail.holds(&a) && !tail.holds(&b));
    assert_eq!(tail.first_segment(), Some(1), "a's segment still counts");
    assert_eq!(tail.waiting().1, 1);
}
