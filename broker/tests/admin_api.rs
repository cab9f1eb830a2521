//! The admin API on one node (protocol-spec §4.9), against a real `herald`:
//! topic listings (paging, prefix, sizes, local subscribers), presence
//! counts, the `admin` scope on every route, disconnecting and
//! unsubscribing long-poll sessions, and the `herald topics` / `herald kick`
//! commands. Across a cluster: `admin_cluster.rs`.

mod admin_support;
mod common;

use std::{
    process::{Command, Output, Stdio},
    time::Duration,
};

use admin_support::*;
use common::*;
use serde_json::{json, Value};

/// Topic names of a listing, in order.
fn names(listing: &Value) -> Vec<String> {
    listing["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .map(|t| t["topic"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn topics_are_listed_sorted_paged_and_filtered() {
    let node = Node::start(&[]);
    for (topic, n) in [
        ("orders.eu", 3),
        ("zz.top", 1),
        ("orders.us", 1),
        ("payments.x", 2),
        ("a.b", 1),
    ] {
        for i in 0..n {
            let (status, _) =
                publish(&node, topic, &json!({"n": i, "pad": "x".repeat(i * 10)})).await;
            assert_eq!(status, 200);
        }
    }
    let (mut wide, _) = ws_client(&node, None, &["orders.*"]).await;
    let (_narrow, _) = ws_client(&node, None, &["orders.eu", "orders.>"]).await;

    let all = admin(&node, "GET", "/v1/topics", None).await;
    assert_eq!(
        names(&all),
        ["a.b", "orders.eu", "orders.us", "payments.x", "zz.top"]
    );
    assert_eq!(all["next_after"], Value::Null);
    let row = |name: &str| {
        all["topics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["topic"] == name)
            .unwrap()
            .clone()
    };
    // Sizes are the retained envelopes, as history returns them.
    let (history, first, last) = full_history(&node, "orders.eu").await;
    let bytes: usize = history.iter().map(|m| m.to_string().len()).sum();
    assert_eq!(
        row("orders.eu"),
        json!({"topic":"orders.eu","first_seq":first,"last_seq":last,"messages":3,
               "bytes":bytes,"subscribers":2})
    );
    assert_eq!((first, last), (1, 3));
    // `narrow` matches orders.eu twice and counts once.
    assert_eq!(row("orders.us")["subscribers"], 2);
    assert_eq!(row("payments.x")["subscribers"], 0);
    assert_eq!(row("payments.x")["last_seq"], 2);

    // Prefix: a plain string prefix of the name.
    for prefix in ["orders.", "ord", "orders"] {
        let page = admin(&node, "GET", &format!("/v1/topics?prefix={prefix}"), None).await;
        assert_eq!(names(&page), ["orders.eu", "orders.us"], "prefix {prefix}");
    }
    let none = admin(&node, "GET", "/v1/topics?prefix=nothing", None).await;
    assert_eq!(names(&none), Vec::<String>::new());

    // Pages of two, each continuing after the previous page's last name.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/topics?limit=2&after={a}"),
            None => "/v1/topics?limit=2".to_string(),
        };
        let page = admin(&node, "GET", &path, None).await;
        pages += 1;
        let got = names(&page);
        assert!(got.len() <= 2);
        seen.extend(got.clone());
        match page["next_after"].as_str() {
            Some(next) => {
                assert_eq!(Some(next), got.last().map(String::as_str));
                after = Some(next.to_string());
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, names(&all));
    let page = admin(
        &node,
        "GET",
        "/v1/topics?prefix=orders.&after=orders.eu",
        None,
    )
    .await;
    assert_eq!(names(&page), ["orders.us"]);
    // limit is clamped to 1..=1000.
    let one = admin(&node, "GET", "/v1/topics?limit=0", None).await;
    assert_eq!(names(&one), ["a.b"]);
    let many = admin(&node, "GET", "/v1/topics?limit=5000", None).await;
    assert_eq!(names(&many).len(), 5);
    for bad in [
        "/v1/topics?limit=x",
        "/v1/topics?limit=-1",
        "/v1/topics?colour=red",
    ] {
        let (status, body) = call(&node, "GET", bad, None, None).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "bad_request");
    }

    // Subscribers are live: gone with the connection's subscription.
    wide.request(json!({"op":"unsubscribe","topic":"orders.*"}), "u")
        .await;
    let page = admin(&node, "GET", "/v1/topics?prefix=orders.us", None).await;
    assert_eq!(page["topics"][0]["subscribers"], 1);
}

#[tokio::test]
async fn every_admin_route_needs_the_admin_scope() {
    let node = Node::start(&auth_flags());
    let routes: [(&str, &str, Option<Value>); 6] = [
        ("GET", "/v1/topics", None),
        ("GET", "/v1/topics/chat.room1/presence?count=true", None),
        ("POST", "/v1/clients/n-1/disconnect", None),
        (
            "POST",
            "/v1/clients/n-1/unsubscribe",
            Some(json!({"topic":"chat.*"})),
        ),
        ("POST", "/v1/users/alice/disconnect", None),
        (
            "POST",
            "/v1/users/alice/unsubscribe",
            Some(json!({"topic":"chat.*"})),
        ),
    ];
    let refused: [(Option<String>, u16, &str); 5] = [
        (None, 401, "unauthorized"),
        (Some("not-a-key-or-token".into()), 401, "unauthorized"),
        (Some(PLAIN_KEY.into()), 403, "forbidden"),
        (Some(token("alice", None)), 403, "forbidden"),
        (
            Some(token("alice", Some(json!("openid administrator")))),
            403,
            "forbidden",
        ),
    ];
    let admitted = [
        ADMIN_KEY.to_string(),
        token("ops", Some(json!("openid admin"))),
        token("ops", Some(json!(["admin"]))),
    ];
    for (method, path, body) in &routes {
        for (credential, status, code) in &refused {
            let (got, answer) =
                call(&node, method, path, credential.as_deref(), body.clone()).await;
            assert_eq!(
                (got, answer["error"]["code"].as_str()),
                (*status, Some(*code)),
                "{method} {path} with {credential:?}: {answer}"
            );
        }
        for credential in &admitted {
            let (got, answer) = call(&node, method, path, Some(credential), body.clone()).await;
            assert_eq!(got, 200, "{method} {path}: {answer}");
        }
    }
    // Credentials and scope come first: a malformed request from a
    // stranger learns nothing about what is wrong with it.
    let (status, _) = call(
        &node,
        "POST",
        "/v1/clients/x/unsubscribe",
        None,
        Some(json!(7)),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = call(&node, "GET", "/v1/topics?limit=x", Some(PLAIN_KEY), None).await;
    assert_eq!(status, 403);
    // The X-API-Key header works too.
    let res = http()
        .get(node.url("/v1/topics"))
        .header("X-API-Key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The presence list is not admin-only: a read grant suffices.
    let (status, answer) = call(
        &node,
        "GET",
        "/v1/topics/chat.room1/presence",
        Some(&token("alice", None)),
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    // The admin key from the flag may also publish.
    assert_eq!(publish_as_admin(&node, "chat.room1", json!(1)).await, 1);
}

#[tokio::test]
async fn presence_counts_clients_and_their_subjects() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, "[namespaces.quiet]\npresence = false\n").unwrap();
    let mut flags = auth_flags();
    flags.extend(["--config", config.to_str().unwrap()]);
    let node = Node::start(&flags);
    let alice = token("alice", None);
    let (_a1, _) = ws_client(&node, Some(&alice), &["chat.room1"]).await;
    let (_a2, _) = ws_client(&node, Some(&alice), &["chat.*", "chat.room1"]).await;
    let (_b, _) = sse_client(&node, &token("bob", None), "chat.room1").await;
    let (_d, _) = ws_client(&node, Some(&token("dave", None)), &["news.x"]).await;
    // A long-poll session of carol on chat.> (present while it waits).
    let carol = token("carol", None);
    let poll_node = node.url("");
    let waiting = tokio::spawn(async move {
        http()
            .get(format!(
                "{poll_node}/v1/poll?topic=chat.%3E&timeout_ms=8000&token={carol}"
            ))
            .send()
            .await
            .unwrap()
            .status()
    });
    let counted = eventually("carol's poll is present", || async {
        let count = admin(
            &node,
            "GET",
            "/v1/topics/chat.room1/presence?count=true",
            None,
        )
        .await;
        (count["clients"] == 4).then_some(count)
    })
    .await;
    assert_eq!(counted, json!({"topic":"chat.room1","clients":4,"users":3}));
    let (_, list) = call(
        &node,
        "GET",
        "/v1/topics/chat.room1/presence",
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(list["clients"].as_array().unwrap().len(), 4);
    let news = admin(&node, "GET", "/v1/topics/news.x/presence?count=true", None).await;
    assert_eq!(news, json!({"topic":"news.x","clients":1,"users":1}));
    let empty = admin(&node, "GET", "/v1/topics/none.x/presence?count=true", None).await;
    assert_eq!(empty, json!({"topic":"none.x","clients":0,"users":0}));
    let (status, body) = call(
        &node,
        "GET",
        "/v1/topics/quiet.x/presence?count=true",
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")));
    let (status, _) = call(
        &node,
        "GET",
        "/v1/topics/chat.room1/presence?count=maybe",
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(waiting.await.unwrap(), 200);
}

/// One long-poll of `query` (plus `token`), as (status, body).
async fn poll(node: &Node, query: &str) -> (u16, Value) {
    let res = http()
        .get(node.url(&format!("/v1/poll?{query}")))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

#[tokio::test]
async fn long_poll_sessions_are_unsubscribed_and_disconnected() {
    let node = Node::start(&[]);
    // A session on two patterns, learning its id and cursor.
    let (status, first) = poll(
        &node,
        "topic=chat.*&topic=news.*&timeout_ms=0&presence=true",
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let id = first["client_id"].as_str().unwrap().to_string();
    let cursor = first["cursor"].as_str().unwrap().to_string();

    // Unsubscribed between polls: the next poll leaves chat.* out and says so.
    let answer = admin(
        &node,
        "POST",
        &format!("/v1/clients/{id}/unsubscribe"),
        Some(json!({"topic":"chat.*"})),
    )
    .await;
    assert_eq!(answer["unsubscribed"], 1, "{answer}");
    let again = admin(
        &node,
        "POST",
        &format!("/v1/clients/{id}/unsubscribe"),
        Some(json!({"topic":"chat.*"})),
    )
    .await;
    assert_eq!(again["unsubscribed"], 0, "no longer subscribed: {again}");
    publish(&node, "chat.a", &json!("dropped")).await;
    publish(&node, "news.a", &json!("kept")).await;
    let (status, next) = poll(
        &node,
        &format!("topic=chat.*&topic=news.*&cursor={cursor}&client_id={id}&timeout_ms=5000"),
    )
    .await;
    assert_eq!(status, 200, "{next}");
    assert_eq!(next["client_id"], id.as_str(), "same session");
    assert_eq!(next["unsubscribed"], json!(["chat.*"]));
    let topics: Vec<&str> = next["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["topic"].as_str().unwrap())
        .collect();
    assert_eq!(topics, ["news.a"]);
    let cursor = next["cursor"].as_str().unwrap().to_string();

    // Unsubscribed while a poll waits: it answers at once with the news.
    let url = node.url(&format!(
        "/v1/poll?topic=news.*&cursor={cursor}&client_id={id}&timeout_ms=20000"
    ));
    let waiting = tokio::spawn(async move {
        let res = http().get(url).send().await.unwrap();
        (res.status().as_u16(), res.json::<Value>().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let answer = admin(
        &node,
        "POST",
        &format!("/v1/clients/{id}/unsubscribe"),
        Some(json!({"topic":"news.*"})),
    )
    .await;
    assert_eq!(answer["unsubscribed"], 1);
    let (status, body) = waiting.await.unwrap();
    assert_eq!(
        (status, &body["unsubscribed"]),
        (200, &json!(["news.*"])),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // Disconnected while a poll waits: 410 kicked, now and for later polls.
    let url = node.url(&format!(
        "/v1/poll?topic=news.*&client_id={id}&timeout_ms=20000"
    ));
    let waiting = tokio::spawn(async move {
        let res = http().get(url).send().await.unwrap();
        (res.status().as_u16(), res.json::<Value>().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = admin(&node, "POST", &format!("/v1/clients/{id}/disconnect"), None).await;
    assert_eq!(
        answer,
        json!({"disconnected":1,"nodes":[answer["nodes"][0]],"missing":[]})
    );
    let (status, body) = waiting.await.unwrap();
    assert_eq!(
        (status, &body["error"]["code"]),
        (410, &json!("kicked")),
        "{body}"
    );
    let (status, body) = poll(&node, &format!("topic=news.*&client_id={id}&timeout_ms=0")).await;
    assert_eq!((status, &body["error"]["code"]), (410, &json!("kicked")));
    // A fresh session is the client's own decision, and works.
    let (status, _) = poll(&node, "topic=news.*&timeout_ms=0").await;
    assert_eq!(status, 200);
    let answer = admin(&node, "POST", &format!("/v1/clients/{id}/disconnect"), None).await;
    assert_eq!(answer["disconnected"], 0, "already gone");
}

// ---------------------------------------------------------------------------
// The CLI
// ---------------------------------------------------------------------------

/// Runs `herald ARGS` with `--url` pointing at `node` and `env`.
fn herald(node: &Node, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .env("HERALD_URL", node.url(""))
        .env_remove("HERALD_API_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run herald")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn herald_topics_and_herald_kick() {
    let node = Node::start(&auth_flags());
    publish_as_admin(&node, "orders.eu", json!({"id": 1})).await;
    publish_as_admin(&node, "orders.eu", json!({"id": 2})).await;
    publish_as_admin(&node, "orders.us", json!("x")).await;
    publish_as_admin(&node, "payments.a", json!(null)).await;
    let alice = token("alice", None);
    let (mut a1, id1) = ws_client(&node, Some(&alice), &["orders.*"]).await;

    let out = herald(&node, &["topics", "--api-key", ADMIN_KEY], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = admin(&node, "GET", "/v1/topics", None).await;
    let bytes = |i: usize| listing["topics"][i]["bytes"].as_u64().unwrap();
    let (b0, b1, b2) = (bytes(0), bytes(1), bytes(2));
    let rows = [
        ["TOPIC", "FIRST", "LAST", "MESSAGES", "BYTES", "SUBSCRIBERS"].map(String::from),
        ["orders.eu", "1", "2", "2", &b0.to_string(), "1"].map(String::from),
        ["orders.us", "1", "1", "1", &b1.to_string(), "1"].map(String::from),
        ["payments.a", "1", "1", "1", &b2.to_string(), "0"].map(String::from),
    ];
    let table = text(&out.stdout);
    let parsed: Vec<Vec<String>> = table
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect();
    assert_eq!(parsed, rows.map(|r| r.to_vec()).to_vec(), "{table}");
    assert_eq!(text(&out.stderr), "3 topic(s)\n");

    // --json, --prefix and --limit; the key from HERALD_API_KEY.
    let out = herald(
        &node,
        &["topics", "--json", "--prefix", "orders.", "--limit", "1"],
        &[("HERALD_API_KEY", ADMIN_KEY)],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, [listing["topics"][0].clone()]);

    // Refusals: exit 1 with the server's code.
    let out = herald(&node, &["topics"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("unauthorized"),
        "{}",
        text(&out.stderr)
    );
    let out = herald(&node, &["topics", "--api-key", PLAIN_KEY], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("forbidden"),
        "{}",
        text(&out.stderr)
    );

    // kick --client: that connection is closed 4004.
    let out = herald(
        &node,
        &["kick", "--client", &id1, "--api-key", ADMIN_KEY],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("disconnected 1 client(s); nodes that answered: "),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(a1.closed().await, Some(4004));

    // kick --sub --json: every connection of that subject, nobody else's.
    let (mut a2, _) = ws_client(&node, Some(&alice), &["orders.*"]).await;
    let (mut a3, _) = ws_client(&node, Some(&alice), &["payments.*"]).await;
    let (mut bob, _) = ws_client(&node, Some(&token("bob", None)), &["orders.*"]).await;
    let out = herald(
        &node,
        &["kick", "--sub", "alice", "--json"],
        &[("HERALD_API_KEY", ADMIN_KEY)],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let answer: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(answer["disconnected"], 2, "{answer}");
    assert_eq!(a2.closed().await, Some(4004));
    assert_eq!(a3.closed().await, Some(4004));
    publish_as_admin(&node, "orders.eu", json!(3)).await;
    assert_eq!(
        next_message_topic(&mut bob, TIMEOUT).await.as_deref(),
        Some("orders.eu")
    );

    // A subject with `/` and non-ASCII: percent-encoded in the path, by
    // the CLI and by hand.
    let odd = token("team/ops ü", None);
    let (mut by_cli, _) = ws_client(&node, Some(&odd), &["orders.*"]).await;
    let out = herald(
        &node,
        &["kick", "--sub", "team/ops ü", "--api-key", ADMIN_KEY],
        &[],
    );
    assert!(
        text(&out.stdout).starts_with("disconnected 1 client(s)"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(by_cli.closed().await, Some(4004));
    let (mut by_hand, _) = ws_client(&node, Some(&odd), &["orders.*"]).await;
    let answer = admin(
        &node,
        "POST",
        "/v1/users/team%2Fops%20%C3%BC/disconnect",
        None,
    )
    .await;
    assert_eq!(answer["disconnected"], 1, "{answer}");
    assert_eq!(by_hand.closed().await, Some(4004));

    // Neither --client nor --sub: a usage error.
    let out = herald(&node, &["kick", "--api-key", ADMIN_KEY], &[]);
    assert_eq!(out.status.code(), Some(2));
}
