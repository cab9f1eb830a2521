//! Issue 21: credentials against hostile clients. Long-poll sessions cannot
//! be taken over (D3); SSE streams and long-polls end at their token's
//! `exp`; no credential reaches a log line, even at `trace` (D9).

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "credentials-secret-0123456789";
const API_KEY: &str = "svc-key-credentials-42";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn token(sub: &str, exp: u64, subscribe: &[&str]) -> String {
    let claims = json!({"sub": sub, "exp": exp, "subscribe": subscribe, "publish": [">"]});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// A token valid for ten minutes.
fn long_token(sub: &str, subscribe: &[&str]) -> String {
    token(sub, now_ms() / 1000 + 600, subscribe)
}

/// A token whose `exp` is the next whole second at least `min_ms` away;
/// returns it with `exp` in ms.
fn short_token(min_ms: u64, subscribe: &[&str]) -> (String, u64) {
    let exp = (now_ms() + min_ms) / 1000 + 1;
    (token("shorty", exp, subscribe), exp * 1000)
}

/// A node with auth on, `public` open to anonymous readers, and `extra`
/// flags.
fn start(extra: &[&str], env: &[(&str, &str)]) -> (Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, "[namespaces.public]\nanonymous_subscribe = true\n").unwrap();
    let mut args = vec![
        "--jwt-secret",
        SECRET,
        "--api-key",
        API_KEY,
        "--config",
        config.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    (Node::start_with_env(&args, env), dir)
}

async fn poll(node: &Node, query: &str, bearer: Option<&str>) -> (u16, Value) {
    let mut req = http().get(node.url(&format!("/v1/poll?{query}")));
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("poll");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn joins_of(answer: &Value) -> Vec<String> {
    answer["presence"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["type"] == "join")
                .map(|e| e["client"]["sub"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn long_poll_sessions_are_unguessable_and_bound_to_their_credentials() {
    let (node, _dir) = start(&[], &[]);
    let victim = long_token("victim", &["secret.>"]);
    // The victim's session listens for presence on secret.x.
    let (status, first) = poll(
        &node,
        "topic=secret.x&presence=true&timeout_ms=0",
        Some(&victim),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let id = first["client_id"].as_str().unwrap().to_string();
    let random = id.rsplit('-').next().unwrap();
    assert!(
        random.len() == 32 && random.bytes().all(|b| b.is_ascii_hexdigit()),
        "client ids carry 128 random bits: {id}"
    );
    // Someone joins secret.x: the join waits in the victim's session.
    let mut bob = Ws::connect(&node.ws_url(&format!(
        "/v1/ws?token={}",
        long_token("bob", &["secret.>"])
    )))
    .await;
    bob.subscribe("secret.x").await;

    // Anonymous, allowed only on public: the presence read is refused, and
    // naming the victim's id starts a fresh session with nothing of theirs.
    let (status, _) = get_json(&node, "/v1/topics/secret.x/presence").await;
    assert_eq!(status, 401);
    let takeovers = [
        (None, "anonymous"),
        (
            Some(long_token("mallory", &["secret.>", "public.>"])),
            "another subject",
        ),
        (
            Some(long_token("victim", &["public.>"])),
            "same subject, narrower grants",
        ),
    ];
    for (bearer, label) in &takeovers {
        let (status, answer) = poll(
            &node,
            &format!("topic=public.x&presence=true&timeout_ms=200&client_id={id}"),
            bearer.as_deref(),
        )
        .await;
        assert_eq!(status, 200, "{label}: {answer}");
        assert_ne!(
            answer["client_id"],
            id.as_str(),
            "{label}: took the session over"
        );
        assert!(joins_of(&answer).is_empty(), "{label}: saw {answer}");
    }
    // The victim still has its session, with the join it had not read yet.
    let (status, answer) = poll(
        &node,
        &format!("topic=secret.x&presence=true&timeout_ms=2000&client_id={id}"),
        Some(&victim),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["client_id"], id.as_str());
    assert_eq!(joins_of(&answer), vec!["bob".to_string()], "{answer}");
}

#[tokio::test]
async fn an_sse_stream_ends_at_its_tokens_exp_with_an_expired_event() {
    let (node, _dir) = start(&[], &[]);
    let (short, exp_ms) = short_token(1500, &["feed.>"]);
    let mut sse = Sse::open(&node, &format!("topic=feed.x&token={short}"), None).await;
    // Deliveries flow until then.
    let (status, _) = {
        let res = http()
            .post(node.url("/v1/topics/feed.x/messages"))
            .bearer_auth(long_token("pub", &[]))
            .json(&json!(1))
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), ())
    };
    assert_eq!(status, 200);
    let (event, _) = sse.next_event(TIMEOUT).await.expect("message");
    assert_eq!(event, "message");
    let (event, data) = sse
        .next_event(Duration::from_millis(exp_ms - now_ms() + 2000))
        .await
        .expect("an event at exp");
    let at = now_ms();
    assert_eq!(event, "expired");
    assert_eq!(data["error"]["code"], "unauthorized", "{data}");
    assert!(
        at + 5 >= exp_ms && at <= exp_ms + 100,
        "expired event {}ms after exp",
        at as i64 - exp_ms as i64
    );
    assert!(
        sse.next_block(Duration::from_secs(2)).await.is_none(),
        "the stream ends after the expired event"
    );
    // Reconnecting with the same token is refused (no leeway for streams).
    let res = http()
        .get(node.url(&format!("/v1/sse?topic=feed.x&token={short}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn a_long_poll_does_not_outlive_its_token() {
    let (node, _dir) = start(&[], &[]);
    let (short, exp_ms) = short_token(1000, &["feed.>"]);
    let (status, body) = poll(&node, "topic=feed.y&timeout_ms=20000", Some(&short)).await;
    let at = now_ms();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
    assert!(
        at + 5 >= exp_ms && at <= exp_ms + 100,
        "answered {}ms after exp",
        at as i64 - exp_ms as i64
    );
}

/// Every credential path, with the node logging everything it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_reaches_a_log_line_at_trace() {
    let (mut node, _dir) = start(&["--log", "trace"], &[("RUST_LOG", "trace")]);
    let jwt = long_token("alice", &[">"]);
    let refreshed = long_token("alice", &[">", "more.>"]);
    let forged = {
        let claims = json!({"sub": "eve", "exp": now_ms() / 1000 + 600});
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"not-the-secret-but-long-enough"),
        )
        .unwrap()
    };
    let c = http();
    let ok = |res: reqwest::Response, what: &str| {
        assert!(res.status().is_success(), "{what}: {}", res.status());
    };
    // Bearer JWT, cookie, API key (both headers), publish and history.
    ok(
        c.post(node.url("/v1/topics/log.a/messages"))
            .bearer_auth(&jwt)
            .json(&json!(1))
            .send()
            .await
            .unwrap(),
        "bearer",
    );
    ok(
        c.get(node.url("/v1/topics/log.a/messages"))
            .header("cookie", format!("theme=dark; herald_token={jwt}"))
            .send()
            .await
            .unwrap(),
        "cookie",
    );
    ok(
        c.post(node.url("/v1/topics/log.a/messages"))
            .header("x-api-key", API_KEY)
            .json(&json!(2))
            .send()
            .await
            .unwrap(),
        "x-api-key",
    );
    ok(
        c.post(node.url("/v1/topics/log.a/messages"))
            .bearer_auth(API_KEY)
            .json(&json!(3))
            .send()
            .await
            .unwrap(),
        "api key as bearer",
    );
    // ?token= on SSE, long-poll and the stats stream.
    // Open (200) is enough: the token was read.
    let sse = Sse::open(&node, &format!("topic=log.a&token={jwt}"), None).await;
    let (status, _) = get_json(
        &node,
        &format!("/v1/poll?topic=log.a&timeout_ms=0&token={jwt}"),
    )
    .await;
    assert_eq!(status, 200);
    let stats = c
        .get(node.url(&format!("/v1/stats/stream?token={jwt}")))
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), 200);
    drop(stats);
    // A WebSocket with ?token= that refreshes its token.
    let mut ws = Ws::connect(&node.ws_url(&format!("/v1/ws?token={jwt}"))).await;
    let (reply, _) = ws
        .request(json!({"op":"refresh","token":refreshed}), "r")
        .await;
    assert_eq!(reply["type"], "refreshed", "{reply}");
    drop(ws);
    // Failed credentials: a forged token and an unknown API key.
    let (status, _) = get_json(
        &node,
        &format!("/v1/poll?topic=log.a&timeout_ms=0&token={forged}"),
    )
    .await;
    assert_eq!(status, 401);
    let res = c
        .post(node.url("/v1/topics/log.a/messages"))
        .header("x-api-key", "unknown-key-abcdef")
        .json(&json!(4))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    drop(sse);
    assert!(node.sigterm().success());

    let logs = node.logs();
    assert!(
        logs.lines().count() > 200 && logs.contains("TRACE"),
        "the node did not log at trace ({} lines)",
        logs.lines().count()
    );
    let signature = |t: &str| t.rsplit('.').next().unwrap().to_string();
    for (label, secret) in [
        ("jwt", jwt.clone()),
        ("jwt signature", signature(&jwt)),
        ("refreshed jwt", refreshed.clone()),
        ("forged jwt", forged.clone()),
        ("forged signature", signature(&forged)),
        ("api key", API_KEY.to_string()),
        ("unknown api key", "unknown-key-abcdef".to_string()),
        ("jwt secret", SECRET.to_string()),
    ] {
        if let Some(line) = logs.lines().find(|l| l.contains(&secret)) {
            panic!("{label} in a log line: {line}");
        }
    }
}
