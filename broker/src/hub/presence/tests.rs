//! Presence table: listing, events, peers, namespace switches.

use super::*;

fn client(id: &str, node: &str) -> Arc<ClientInfo> {
    Arc::new(ClientInfo {
        client_id: id.into(),
        sub: None,
        transport: "ws".into(),
        node: node.into(),
    })
}

fn pat(s: &str) -> Pattern {
    Pattern::parse(s).unwrap()
}

#[test]
fn lists_matching_clients_once_and_emits_events() {
    let p = Presence::new("a".into(), true, HashMap::new());
    let feed = Arc::new(PresenceFeed::default());
    p.listen(pat("chat.room1"), feed.clone());
    let c1 = client("a-1", "a");
    p.join(&pat("chat.room1"), &c1);
    p.join(&pat("chat.*"), &c1);
    p.join(&pat("chat.>"), &client("a-2", "a"));
    p.join(&pat("news.x"), &client("a-3", "a"));
    let topic = Topic::parse("chat.room1").unwrap();
    let ids: Vec<_> = p
        .list(&topic)
        .into_iter()
        .map(|c| c.client_id.to_string())
        .collect();
    assert_eq!(ids, ["a-1", "a-2"]);
    // Only the concrete join on chat.room1 reaches the listener.
    let events = feed.drain();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].starts_with(r#"{"type":"join","topic":"chat.room1""#));
    p.leave(&pat("chat.room1"), &c1);
    assert!(feed.drain()[0].contains(r#""type":"leave""#));
    assert_eq!(p.list(&topic).len(), 2, "still there through chat.*");
}

#[test]
fn peers_snapshots_and_dead_nodes() {
    let p = Presence::new("a".into(), true, HashMap::new());
    let feed = Arc::new(PresenceFeed::default());
    p.listen(pat("t.x"), feed.clone());
    p.apply(Delta::Join {
        topic: "t.x".into(),
        client: ClientInfo::clone(&client("b-1", "b")),
    });
    p.apply(Delta::Snapshot {
        node: "c".into(),
        entries: vec![("t.x".into(), ClientInfo::clone(&client("c-1", "c")))],
    });
    let topic = Topic::parse("t.x").unwrap();
    assert_eq!(p.list(&topic).len(), 2);
    assert_eq!(feed.drain().len(), 2);
    p.drop_node("b");
    assert_eq!(p.list(&topic).len(), 1);
    let events = feed.drain();
    assert!(events[0].contains(r#""leave""#) && events[0].contains("b-1"));
    // A snapshot replaces: c-1 gone, c-2 new.
    p.apply(Delta::Snapshot {
        node: "c".into(),
        entries: vec![("t.x".into(), ClientInfo::clone(&client("c-2", "c")))],
    });
    assert_eq!(&*p.list(&topic)[0].client_id, "c-2");
    assert_eq!(feed.drain().len(), 2);
}

#[test]
fn namespace_toggles() {
    let mut o = HashMap::new();
    o.insert("quiet".to_string(), false);
    let p = Presence::new("a".into(), true, o.clone());
    assert!(p.enabled_for(&pat("chat.x")));
    assert!(!p.enabled_for(&pat("quiet.x")));
    assert!(p.enabled_for(&pat(">")));
    o.insert("loud".to_string(), true);
    let p = Presence::new("a".into(), false, o);
    assert!(!p.enabled_for(&pat("chat.x")));
    assert!(p.enabled_for(&pat("loud.x")));
    assert!(!p.enabled_for(&pat("quiet.x")));
}

#[test]
fn counts_clients_and_distinct_subs() {
    let p = Presence::new("a".into(), true, HashMap::new());
    let with_sub = |id: &str, sub: Option<&str>| {
        Arc::new(ClientInfo {
            client_id: id.into(),
            sub: sub.map(str::to_string),
            transport: "ws".into(),
            node: "a".into(),
        })
    };
    let alice1 = with_sub("a-1", Some("alice"));
    p.join(&pat("chat.room1"), &alice1);
    p.join(&pat("chat.*"), &alice1);
    p.join(&pat("chat.>"), &with_sub("a-2", Some("alice")));
    p.join(&pat("chat.*"), &with_sub("a-3", Some("bob")));
    p.join(&pat("chat.room1"), &with_sub("a-4", None));
    p.join(&pat("news.x"), &with_sub("a-5", Some("carol")));
    p.apply(Delta::Join {
        topic: "chat.room1".into(),
        client: ClientInfo {
            client_id: "b-1".into(),
            sub: Some("dave".into()),
            transport: "sse".into(),
            node: "b".into(),
        },
    });
    let topic = Topic::parse("chat.room1").unwrap();
    assert_eq!(p.count(&topic), (5, 3));
    assert_eq!(p.count(&topic).0, p.list(&topic).len());
    assert_eq!(p.count(&Topic::parse("other.x").unwrap()), (0, 0));
}
