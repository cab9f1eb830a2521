//! Subscribers on every transport, each resuming the way the protocol says
//! (§9.3): a WebSocket pattern subscription with its `cursor`, WebSocket
//! concrete topics with `since`, SSE with `Last-Event-ID` and long-poll
//! with `cursor`, on a pattern and on a concrete topic. Each connection
//! goes to a random entry point, ready or not; a refusal sends it
//! elsewhere after a short wait. Every subscriber starts at the beginning
//! (`since=0`, or the cursor `1~0`), so what it must end with is exactly
//! `1..=head` of each of its topics.

use std::{
    collections::BTreeMap,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::time::{timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::{backoff, judge, End, Entry, Event, Front, Seen, Shared};

/// The transport and resume method of one subscriber.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// One WebSocket subscription to a pattern, resumed with its cursor.
    WsCursor,
    /// One WebSocket subscription per concrete topic, resumed with `since`.
    WsSince,
    /// An SSE stream, resumed with `Last-Event-ID`.
    Sse,
    /// Long-polls, each passing back the last cursor.
    Poll,
}

/// One subscriber: `topic` is what it subscribes to (a pattern, or a
/// concrete topic; `WsSince` subscribes to each of `topics`), `topics`
/// what that covers.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: &'static str,
    pub kind: Kind,
    pub topic: &'static str,
    pub topics: Vec<&'static str>,
}

/// Where a subscriber resumes from.
#[derive(Default)]
struct Position {
    /// SSE: the last `id:`; long-poll: the last `cursor`.
    cursor: Option<String>,
    /// WebSocket pattern: the floor of its `subscribed` cursor.
    floor: u64,
}

fn done(seen: &Seen, shared: &Shared) -> bool {
    shared
        .heads
        .lock()
        .unwrap()
        .as_ref()
        .is_some_and(|h| seen.reached(h))
}

/// Runs `spec` until it has reached the heads (once known) or is told to
/// give up; returns everything it received.
pub fn subscriber(
    spec: Spec,
    seed: u64,
    front: Arc<Front>,
    shared: Arc<Shared>,
) -> tokio::task::JoinHandle<Seen> {
    tokio::spawn(async move {
        let mut rng = StdRng::seed_from_u64(seed ^ fnv(spec.name));
        let mut seen = Seen::new(spec.name, &spec.topics);
        let mut at = Position::default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        while !done(&seen, &shared)
            && !shared.give_up.load(Ordering::SeqCst)
            && !shared.abort.load(Ordering::SeqCst)
        {
            let entry = front.pick(&mut rng);
            let stay = Duration::from_millis(rng.gen_range(300..3000));
            let until = Instant::now() + stay;
            let end = match spec.kind {
                Kind::WsCursor | Kind::WsSince => {
                    ws_session(&spec, &entry, &mut seen, &mut at, until, &shared).await
                }
                Kind::Sse => {
                    sse_session(&client, &spec, &entry, &mut seen, &mut at, until, &shared).await
                }
                Kind::Poll => {
                    let polls = rng.gen_range(1..=3);
                    let wait = rng.gen_range(200..1500);
                    poll_session(
                        &client,
                        &spec,
                        &entry,
                        &mut seen,
                        &mut at,
                        (polls, wait),
                        &shared,
                    )
                    .await
                }
            };
            match end {
                End::Served => seen.sessions += 1,
                End::Refused | End::Failed => backoff(&mut rng).await,
            }
        }
        seen
    })
}

/// FNV-1a of a name, to give each subscriber its own random stream.
fn fnv(name: &str) -> u64 {
    name.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Records one delivered envelope or gap (WebSocket frame, SSE data or
/// long-poll entry).
fn record(seen: &mut Seen, kind: &str, v: &Value) {
    let topic = v["topic"].as_str().unwrap_or_default();
    match kind {
        "message" => seen.push(topic, Event::Message(v["seq"].as_u64().unwrap())),
        "gap" => seen.push(
            topic,
            Event::Gap {
                from: v["from"].as_u64().unwrap(),
                to: v["to"].as_u64().unwrap(),
            },
        ),
        _ => {}
    }
}

/// The WebSocket cursor of §9.3: the floor of the `subscribed` reply and
/// each topic's last received seq.
fn ws_cursor(seen: &Seen, floor: u64) -> String {
    let mut cursor = format!("1~{floor}");
    for topic in seen.events.keys() {
        cursor.push_str(&format!("~{topic}~{}", seen.last(topic)));
    }
    cursor
}

async fn ws_session(
    spec: &Spec,
    entry: &Entry,
    seen: &mut Seen,
    at: &mut Position,
    until: Instant,
    shared: &Shared,
) -> End {
    let url = format!("{}/v1/ws", entry.base.replace("http://", "ws://"));
    let mut ws = match timeout(
        Duration::from_secs(3),
        tokio_tungstenite::connect_async(&url),
    )
    .await
    {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(WsError::Http(res))) => {
            let body = String::from_utf8_lossy(res.body().as_deref().unwrap_or_default());
            let retry = res.headers().contains_key("retry-after");
            return judge(
                shared,
                entry,
                "ws upgrade",
                res.status().as_u16(),
                retry,
                &body,
            );
        }
        _ => {
            shared.failed();
            return End::Failed;
        }
    };
    let ops: Vec<Value> = match spec.kind {
        Kind::WsCursor => {
            let cursor = ws_cursor(seen, at.floor);
            vec![json!({"op":"subscribe","id":"c","topic":spec.topic,"cursor":cursor})]
        }
        _ => spec
            .topics
            .iter()
            .map(|t| json!({"op":"subscribe","id":t,"topic":t,"since":seen.last(t)}))
            .collect(),
    };
    for op in ops {
        if ws.send(Message::Text(op.to_string())).await.is_err() {
            shared.failed();
            return End::Failed;
        }
    }
    let mut subscribed = false;
    loop {
        if done(seen, shared) {
            return End::Served;
        }
        let frame = match timeout_at(until, ws.next()).await {
            Err(_) => return End::Served,
            Ok(Some(Ok(Message::Text(text)))) => text,
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => {
                return if subscribed { End::Served } else { End::Failed };
            }
            Ok(Some(Ok(_))) => continue,
        };
        let v: Value = serde_json::from_str(&frame).unwrap();
        match v["type"].as_str().unwrap_or_default() {
            "subscribed" => {
                subscribed = true;
                if let Some(floor) = v["cursor"]
                    .as_str()
                    .and_then(|c| c.split('~').nth(1))
                    .and_then(|f| f.parse().ok())
                {
                    at.floor = floor;
                }
            }
            "error" if v["code"] == "unavailable" => {
                shared.refused();
                return End::Refused;
            }
            "error" => {
                shared.problem(format!("{}: {} answered {v}", spec.name, entry.base));
                return End::Failed;
            }
            kind => record(seen, kind, &v),
        }
    }
}

async fn sse_session(
    client: &reqwest::Client,
    spec: &Spec,
    entry: &Entry,
    seen: &mut Seen,
    at: &mut Position,
    until: Instant,
    shared: &Shared,
) -> End {
    let mut req = client.get(format!(
        "{}/v1/sse?topic={}&since=0",
        entry.base, spec.topic
    ));
    if let Some(id) = &at.cursor {
        req = req.header("Last-Event-ID", id);
    }
    let res = match timeout(Duration::from_secs(3), req.send()).await {
        Ok(Ok(res)) => res,
        _ => {
            shared.failed();
            return End::Failed;
        }
    };
    if res.status() != 200 {
        let (status, retry) = (
            res.status().as_u16(),
            res.headers().contains_key("retry-after"),
        );
        let body = res.text().await.unwrap_or_default();
        return judge(shared, entry, "sse", status, retry, &body);
    }
    let mut stream = res.bytes_stream();
    let mut buf = String::new();
    let mut hello = false;
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (None, None, None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(v.to_string());
                }
            }
            match event.as_deref() {
                Some("unavailable") => {
                    shared.refused();
                    return End::Refused;
                }
                Some("hello") => hello = true,
                Some(kind @ ("message" | "gap")) => {
                    let v: Value = serde_json::from_str(data.as_deref().unwrap()).unwrap();
                    record(seen, kind, &v);
                }
                Some(other) => shared.problem(format!(
                    "{}: unexpected SSE event {other}: {block}",
                    spec.name
                )),
                None => {}
            }
            // The id moves only once its block is handled: a stream cut
            // inside a block resumes before it.
            if id.is_some() {
                at.cursor = id;
            }
        }
        if done(seen, shared) {
            return End::Served;
        }
        match timeout_at(until, stream.next()).await {
            Err(_) => return End::Served,
            Ok(Some(Ok(chunk))) => buf.push_str(std::str::from_utf8(&chunk).unwrap()),
            Ok(Some(Err(_))) | Ok(None) => {
                return if hello { End::Served } else { End::Failed };
            }
        }
    }
}

/// `polls` long-polls of `wait_ms` each on one entry point.
async fn poll_session(
    client: &reqwest::Client,
    spec: &Spec,
    entry: &Entry,
    seen: &mut Seen,
    at: &mut Position,
    (polls, wait_ms): (u32, u64),
    shared: &Shared,
) -> End {
    for _ in 0..polls {
        if done(seen, shared) {
            break;
        }
        let mut url = format!(
            "{}/v1/poll?topic={}&since=0&timeout_ms={wait_ms}",
            entry.base, spec.topic
        );
        if let Some(c) = &at.cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let res = client
            .get(&url)
            .timeout(Duration::from_millis(wait_ms + 3000))
            .send()
            .await;
        let res = match res {
            Ok(res) => res,
            Err(_) => {
                shared.failed();
                return End::Failed;
            }
        };
        let (status, retry) = (
            res.status().as_u16(),
            res.headers().contains_key("retry-after"),
        );
        let Ok(body) = res.text().await else {
            shared.failed();
            return End::Failed;
        };
        if status != 200 {
            return judge(shared, entry, "poll", status, retry, &body);
        }
        let page: Value = serde_json::from_str(&body).unwrap();
        // Messages in the order the page has them; a topic's gap goes
        // before its first message after the gap.
        let mut events: BTreeMap<String, Vec<(&str, &Value)>> = BTreeMap::new();
        for m in page["messages"].as_array().unwrap() {
            let topic = m["topic"].as_str().unwrap().to_string();
            events.entry(topic).or_default().push(("message", m));
        }
        for g in page["gaps"].as_array().into_iter().flatten() {
            let list = events
                .entry(g["topic"].as_str().unwrap().to_string())
                .or_default();
            let from = g["from"].as_u64().unwrap();
            let at = list
                .iter()
                .position(|(_, m)| m["seq"].as_u64() > Some(from))
                .unwrap_or(list.len());
            list.insert(at, ("gap", g));
        }
        for list in events.values() {
            for (kind, v) in list {
                record(seen, kind, v);
            }
        }
        at.cursor = Some(page["cursor"].as_str().unwrap().to_string());
    }
    End::Served
}
