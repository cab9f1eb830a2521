//! Issue 6 (auth part): the negative security suite. No credentials, bad
//! signatures, expired tokens, `alg: none`, topics outside the claims and
//! pattern escalation are all refused — and no message from a forbidden
//! topic ever reaches the client.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "test-secret-0123456789abcdef";
const API_KEY: &str = "svc-key-123";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token_with(secret: &str, exp: u64, subscribe: &[&str], publish: &[&str]) -> String {
    let claims = json!({"sub": "alice", "exp": exp, "subscribe": subscribe, "publish": publish});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn alice() -> String {
    token_with(SECRET, now() + 600, &["chat.*", "news.>"], &["chat.room1"])
}

fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn start() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, "[namespaces.public]\nanonymous_subscribe = true\n").unwrap();
    let node = Node::start(&[
        "--jwt-secret",
        SECRET,
        "--api-key",
        API_KEY,
        "--config",
        config.to_str().unwrap(),
    ]);
    std::mem::forget(dir);
    node
}

async fn status_of(req: reqwest::RequestBuilder) -> (u16, Value) {
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn ws_with(node: &Node, token: &str) -> Ws {
    Ws::connect(&node.ws_url(&format!("/v1/ws?token={token}"))).await
}

#[tokio::test]
async fn missing_or_bad_credentials_get_401_everywhere() {
    let node = start();
    let c = http();
    let expired = token_with(SECRET, now() - 120, &[">"], &[">"]);
    let forged = token_with("some-other-secret-0123456789", now() + 600, &[">"], &[">"]);
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&format!(
            r#"{{"sub":"eve","exp":{},"subscribe":[">"],"publish":[">"]}}"#,
            now() + 600
        ))
    );
    let rs_confusion = {
        // HS256 header claiming RS256 with the secret as "key": wrong algorithm.
        let claims = json!({"sub": "eve", "exp": now() + 600, "subscribe": [">"]});
        let mut h = Header::new(Algorithm::HS384);
        h.typ = Some("JWT".into());
        encode(&h, &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
    };
    for (label, token) in [
        ("none", None),
        ("expired", Some(expired)),
        ("forged", Some(forged)),
        ("alg none", Some(none)),
        ("wrong alg", Some(rs_confusion)),
        ("garbage", Some("abc.def.ghi".to_string())),
    ] {
        let auth = |r: reqwest::RequestBuilder| match &token {
            Some(t) => r.bearer_auth(t),
            None => r,
        };
        let (s, body) =
            status_of(auth(c.post(node.url("/v1/topics/chat.room1/messages"))).json(&json!(1)))
                .await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "{label}: publish {body}"
        );
        let (s, _) = status_of(auth(c.get(node.url("/v1/topics/chat.room1/messages")))).await;
        assert_eq!(s, 401, "{label}: history");
        let (s, _) = status_of(auth(
            c.get(node.url("/v1/poll?topic=chat.room1&timeout_ms=0")),
        ))
        .await;
        assert_eq!(s, 401, "{label}: poll");
        let (s, _) = status_of(auth(c.get(node.url("/v1/sse?topic=chat.room1")))).await;
        assert_eq!(s, 401, "{label}: sse");
        let mut url = node.ws_url("/v1/ws");
        if let Some(t) = &token {
            url.push_str(&format!("?token={t}"));
        }
        match (token.is_some(), tokio_tungstenite::connect_async(url).await) {
            (true, Err(tokio_tungstenite::tungstenite::Error::Http(res))) => {
                assert_eq!(res.status(), 401, "{label}: ws")
            }
            // Without credentials the connection is anonymous (this node lets
            // anyone read `public.*`), and everything else is refused.
            (false, Ok((stream, _))) => {
                let mut ws = Ws {
                    stream,
                    seen: Vec::new(),
                    backlog: Default::default(),
                };
                let (r, _) = ws
                    .request(json!({"op":"subscribe","topic":"chat.room1"}), "x")
                    .await;
                assert_eq!(r["code"], "unauthorized", "{r}");
            }
            (_, other) => panic!(
                "{label}: unexpected websocket outcome: {:?}",
                other.map(|_| ())
            ),
        }
    }
    // A refused origin is refused even before credentials are looked at.
    let (s, body) = status_of(
        c.get(node.url("/v1/topics/chat.room1/messages"))
            .header("Origin", "https://evil.example")
            .bearer_auth(alice()),
    )
    .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
}

#[tokio::test]
async fn claims_bound_every_operation_and_nothing_forbidden_leaks() {
    let node = start();
    let mut ws = ws_with(&node, &alice()).await;
    // Allowed.
    let (r, _) = ws
        .request(json!({"op":"subscribe","topic":"chat.*"}), "ok1")
        .await;
    assert_eq!(r["type"], "subscribed");
    let (r, _) = ws
        .request(json!({"op":"subscribe","topic":"news.a.b"}), "ok2")
        .await;
    assert_eq!(r["type"], "subscribed");
    // Escalation and foreign topics: forbidden, connection stays open.
    for topic in ["chat.>", ">", "*.room1", "secret.x", "secret.>", "chat.a.b"] {
        let (r, _) = ws
            .request(json!({"op":"subscribe","topic":topic}), topic)
            .await;
        assert_eq!(
            (r["type"].as_str(), r["code"].as_str()),
            (Some("error"), Some("forbidden")),
            "{topic}: {r}"
        );
    }
    let (r, _) = ws
        .request(json!({"op":"publish","topic":"chat.room2","data":1}), "p2")
        .await;
    assert_eq!(r["code"], "forbidden");
    let (r, _) = ws
        .request(
            json!({"op":"subscribe","topic":"chat.room9","cursor":"1~0~secret.x~0"}),
            "c",
        )
        .await;
    assert_eq!(
        r["code"], "forbidden",
        "a cursor may not name foreign topics"
    );
    // Meanwhile a service publishes everywhere with its API key.
    let c = http();
    for topic in ["secret.x", "chat.room1", "secret.y", "chat.a.b", "news.a.b"] {
        let (s, _) = status_of(
            c.post(node.url(&format!("/v1/topics/{topic}/messages")))
                .header("X-API-Key", API_KEY)
                .json(&json!({"t": topic})),
        )
        .await;
        assert_eq!(s, 200);
    }
    let got = ws.messages(2).await;
    let topics: Vec<&str> = got.iter().map(|m| m["topic"].as_str().unwrap()).collect();
    assert_eq!(topics, vec!["chat.room1", "news.a.b"]);
    ws.assert_silent(Duration::from_millis(400)).await;
    for frame in ws.seen.iter().filter(|f| f["type"] == "message") {
        assert!(
            !frame.to_string().contains("secret"),
            "forbidden data leaked: {frame}"
        );
    }
    assert_eq!(ws.publish("chat.room1", json!("mine")).await, 2);

    // HTTP reads follow the same claims.
    let t = alice();
    let (s, _) = status_of(
        c.get(node.url("/v1/topics/secret.x/messages"))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(s, 403);
    let (s, body) = status_of(
        c.get(node.url("/v1/topics/chat.room1/messages"))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!((s, body["last_seq"].as_u64()), (200, Some(2)));
    let (s, _) = status_of(c.get(node.url("/v1/sse?topic=secret.x")).bearer_auth(&t)).await;
    assert_eq!(s, 403);
    let (s, _) = status_of(c.get(node.url("/v1/sse?topic=chat.%3E")).bearer_auth(&t)).await;
    assert_eq!(s, 403, "chat.* does not grant chat.>");
    let (s, _) = status_of(
        c.get(node.url("/v1/poll?topic=chat.room1&cursor=1~0~secret.x~0"))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(s, 403, "cursor naming a foreign topic");
    let (s, body) = status_of(
        c.get(node.url("/v1/poll?topic=chat.room1&timeout_ms=0&cursor=1~0~chat.room1~0"))
            .header("Cookie", format!("herald_token={t}")),
    )
    .await;
    assert_eq!(
        (s, body["messages"].as_array().map(Vec::len)),
        (200, Some(2)),
        "cookie token works"
    );
    // The API key from --api-key may publish but not subscribe.
    let mut svc = Ws::connect(&node.ws_url(&format!("/v1/ws?token={API_KEY}"))).await;
    let (r, _) = svc
        .request(json!({"op":"subscribe","topic":"chat.room1"}), "s")
        .await;
    assert_eq!(r["code"], "forbidden");
    // Anonymous clients get only what namespace policy grants.
    let mut anon = Ws::connect(&node.ws_url("/v1/ws")).await;
    let (r, _) = anon
        .request(json!({"op":"subscribe","topic":"public.>"}), "a")
        .await;
    assert_eq!(r["type"], "subscribed");
    let (r, _) = anon
        .request(json!({"op":"subscribe","topic":"chat.room1"}), "b")
        .await;
    assert_eq!(r["code"], "unauthorized", "anonymous: bring credentials");
    let (r, _) = anon
        .request(json!({"op":"publish","topic":"public.x","data":1}), "c")
        .await;
    assert_eq!(r["code"], "unauthorized");
}

#[tokio::test]
async fn expiring_tokens_close_the_connection_unless_refreshed() {
    let node = start();
    let short = token_with(SECRET, now() + 2, &["chat.*"], &[]);
    let mut closing = ws_with(&node, &short).await;
    closing.subscribe("chat.x").await;
    let mut refreshed = ws_with(&node, &short).await;
    refreshed.subscribe("chat.x").await;
    // A replacement token must still cover the subscriptions.
    let narrow = token_with(SECRET, now() + 600, &["news.>"], &[]);
    let (r, _) = refreshed
        .request(json!({"op":"refresh","token":narrow}), "r0")
        .await;
    assert_eq!(r["code"], "forbidden");
    let (r, _) = refreshed
        .request(json!({"op":"refresh","token":"not-a-token"}), "r1")
        .await;
    assert_eq!(r["code"], "unauthorized");
    let fresh = token_with(SECRET, now() + 600, &["chat.*"], &[]);
    let (r, _) = refreshed
        .request(json!({"op":"refresh","token":fresh}), "r2")
        .await;
    assert_eq!(r["type"], "refreshed", "{r}");
    let started = std::time::Instant::now();
    assert_eq!(closing.closed().await, Some(4003));
    assert!(started.elapsed() < Duration::from_secs(6));
    refreshed.assert_silent(Duration::from_millis(1500)).await;
    let (s, _) = status_of(
        http()
            .post(node.url("/v1/topics/chat.x/messages"))
            .header("X-API-Key", API_KEY)
            .json(&json!(1)),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(refreshed.messages(1).await[0]["topic"], "chat.x");
}

#[tokio::test]
async fn an_aud_claim_is_accepted_unless_an_audience_is_configured() {
    let node = start();
    let claims =
        json!({"sub": "idp-user", "exp": now() + 600, "aud": "some-api", "publish": ["chat.>"]});
    let token = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let (s, _) = status_of(
        http()
            .post(node.url("/v1/topics/chat.x/messages"))
            .bearer_auth(&token)
            .json(&json!(1)),
    )
    .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn presence_shows_the_sub_claim_and_is_read_protected() {
    let node = Node::start(&["--jwt-secret", SECRET]);
    let mut ws = Ws::connect(&node.ws_url(&format!("/v1/ws?token={}", alice()))).await;
    ws.subscribe("chat.room1").await;
    // Listing needs credentials, and read permission on the topic.
    let res = http()
        .get(node.url("/v1/topics/chat.room1/presence"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = http()
        .get(node.url("/v1/topics/chat.room1/presence"))
        .bearer_auth(alice())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let clients = body["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 1, "{body}");
    assert_eq!(clients[0]["sub"], "alice");
    assert_eq!(clients[0]["transport"], "ws");
    let res = http()
        .get(node.url("/v1/topics/secret.x/presence"))
        .bearer_auth(alice())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
}
