//! Priming: one publish to every topic of a point before its warm-up, so
//! the measurement sees topics that exist (what "ingest across 10k topics"
//! means), not their creation: a Herald cluster claims a topic on its first
//! publish (a durable term record and NATS round trips), and a fresh window
//! over 10k–100k topics would mostly measure that.

use std::{net::SocketAddr, time::Duration};

use anyhow::{bail, Context, Result};
use futures_util::future::try_join_all;
use tokio::time::{timeout, Instant};

use crate::{
    fleet::{conn::Conn, conn::Incoming, System, Topics},
    load::json_payload,
};

/// Connections priming uses (spread over the nodes).
const CONNS: usize = 16;
/// Publishes in flight per priming connection.
const WINDOW: usize = 64;
/// The longest priming may take.
const LIMIT: Duration = Duration::from_secs(600);

/// Publishes once to each of `topics` (`count` of them), `payload` bytes
/// each, over WebSocket; returns how long it took.
pub async fn prime(
    system: System,
    addrs: &[SocketAddr],
    topics: &Topics,
    payload: usize,
) -> Result<Duration> {
    let started = Instant::now();
    let conns = CONNS.min(topics.count.max(1));
    let opened = try_join_all((0..conns).map(|c| {
        Conn::open(
            system,
            addrs[c % addrs.len()],
            None,
            Duration::from_secs(10),
        )
    }))
    .await
    .context("connecting priming publishers")?;
    let data = json_payload(payload);
    let slices = opened.into_iter().enumerate().map(|(c, conn)| {
        let (from, to) = (c * topics.count / conns, (c + 1) * topics.count / conns);
        one_slice(conn, topics, from..to, &data)
    });
    timeout(LIMIT, try_join_all(slices))
        .await
        .with_context(|| format!("priming {} topics took over {LIMIT:?}", topics.count))??;
    Ok(started.elapsed())
}

/// One connection's share: topics `range`, up to [`WINDOW`] in flight.
async fn one_slice(
    mut conn: Conn,
    topics: &Topics,
    range: std::ops::Range<usize>,
    data: &str,
) -> Result<()> {
    let (mut next, mut answered, mut inflight) = (range.start, 0, 0);
    let mut got = Vec::new();
    while answered < range.len() {
        while inflight < WINDOW && next < range.end {
            conn.feed_publish(&topics.name(next), data);
            next += 1;
            inflight += 1;
        }
        conn.flush().await?;
        if !conn.recv(&mut got).await? {
            bail!("the server closed a priming connection");
        }
        for inc in got.drain(..) {
            match inc {
                Incoming::Ack(_) => {}
                Incoming::Error(_, e) => bail!("priming publish refused: {e}"),
                Incoming::Delivery(_) => continue,
            }
            answered += 1;
            inflight -= 1;
        }
    }
    Ok(())
}
