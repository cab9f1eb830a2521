//! The worker subprocess (`herald-bench worker`): holds its share of the
//! subscriber connections on one thread and answers the control protocol
//! (see the module docs of [`crate::fleet`]).

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::Duration,
};

use anyhow::Result;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    sync::Semaphore,
    task::JoinSet,
};

use super::{
    conn::{Conn, Incoming},
    http_subs, Command, ConnectSpec, Event, SubTransport,
};
use crate::{stats::LatencyHistogram, wire::mono_nanos};

/// Handshakes in flight at once (the server's accept backlog is 4096).
const CONNECTING_AT_ONCE: usize = 256;
/// Time allowed for one connection's handshake and subscribe.
const CONNECT_LIMIT: Duration = Duration::from_secs(60);

/// Counters shared by every connection task of this process.
#[derive(Default)]
struct Shared {
    measuring: AtomicBool,
    delivered: AtomicU64,
    errors: AtomicU64,
    closed: AtomicU64,
    reconnects: AtomicU64,
    hist: Mutex<LatencyHistogram>,
    first_error: Mutex<Option<String>>,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(Shared::default)
}

/// Counts one delivery (while measuring) and its latency if stamped.
pub fn delivered(stamp: Option<u64>) {
    count_deliveries([stamp]);
}

/// Counts deliveries that arrived together (while measuring), with their
/// latencies: one clock read and one histogram lock for all of them, not
/// per delivery. Consumes `stamps` either way.
fn count_deliveries(stamps: impl IntoIterator<Item = Option<u64>>) {
    let s = shared();
    let measuring = s.measuring.load(Ordering::Relaxed);
    let now = mono_nanos();
    let mut hist = None;
    let mut count = 0;
    for stamp in stamps {
        if !measuring {
            continue;
        }
        count += 1;
        if let Some(t) = stamp {
            let lat = Duration::from_nanos(now.saturating_sub(t));
            hist.get_or_insert_with(|| s.hist.lock().unwrap())
                .record(lat);
        }
    }
    s.delivered.fetch_add(count, Ordering::Relaxed);
}

/// Counts what one read of a connection brought (deliveries and errors)
/// and empties `got`.
fn received(got: &mut Vec<Incoming>) {
    count_deliveries(got.drain(..).filter_map(|inc| match inc {
        Incoming::Delivery(stamp) => Some(stamp),
        Incoming::Error(_, e) => {
            error(e);
            None
        }
        Incoming::Ack(_) => None,
    }));
}

/// Counts one reconnect of a subscriber the server had closed (long-poll).
pub fn reconnected() {
    shared().reconnects.fetch_add(1, Ordering::Relaxed);
}

fn error(e: impl std::fmt::Display) {
    let s = shared();
    s.errors.fetch_add(1, Ordering::Relaxed);
    let mut first = s.first_error.lock().unwrap();
    if first.is_none() {
        *first = Some(e.to_string());
    }
}

/// Runs the worker on the current thread until `quit` or EOF on stdin.
pub fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve())
}

async fn serve() -> Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    let mut tasks = JoinSet::new();
    while let Some(line) = lines.next_line().await? {
        let ev = match serde_json::from_str::<Command>(&line)? {
            Command::Connect(spec) => Some(connect_all(spec, &mut tasks).await),
            Command::Start => {
                let s = shared();
                *s.hist.lock().unwrap() = LatencyHistogram::new();
                s.delivered.store(0, Ordering::Relaxed);
                s.errors.store(0, Ordering::Relaxed);
                s.reconnects.store(0, Ordering::Relaxed);
                s.measuring.store(true, Ordering::Relaxed);
                None
            }
            Command::Stop => {
                let s = shared();
                s.measuring.store(false, Ordering::Relaxed);
                Some(Event::Report {
                    delivered: s.delivered.load(Ordering::Relaxed),
                    hist: s.hist.lock().unwrap().to_pairs(),
                    errors: s.errors.load(Ordering::Relaxed),
                    closed: s.closed.load(Ordering::Relaxed),
                    reconnects: s.reconnects.load(Ordering::Relaxed),
                    first_error: s.first_error.lock().unwrap().clone(),
                })
            }
            Command::Quit => break,
        };
        if let Some(ev) = ev {
            let mut text = serde_json::to_string(&ev)?;
            text.push('\n');
            out.write_all(text.as_bytes()).await?;
            out.flush().await?;
        }
    }
    tasks.abort_all();
    Ok(())
}

/// Opens `spec.count` connections, at most [`CONNECTING_AT_ONCE`] at a time;
/// each that succeeds goes on receiving in `tasks`.
async fn connect_all(spec: ConnectSpec, tasks: &mut JoinSet<()>) -> Event {
    let gate = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
    let mut opening = JoinSet::new();
    for i in 0..spec.count {
        let spec = spec.clone();
        let gate = gate.clone();
        opening.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("never closed");
            open_one(&spec, i).await
        });
    }
    let (mut ok, mut failed, mut first_error) = (0, 0, None);
    while let Some(res) = opening.join_next().await {
        match res.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(run) => {
                ok += 1;
                tasks.spawn(async move {
                    if let Err(e) = run.await {
                        error(format!("{e:#}"));
                    }
                    shared().closed.fetch_add(1, Ordering::Relaxed);
                });
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    Event::Connected {
        ok,
        failed,
        first_error,
    }
}

type Running = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// Opens (and subscribes) connection `i`; returns its receive loop.
async fn open_one(spec: &ConnectSpec, i: usize) -> Result<Running> {
    let topic = spec.topics.name(i);
    match spec.transport {
        SubTransport::Ws => {
            let mut conn = Conn::open(spec.system, spec.addr, spec.source, CONNECT_LIMIT).await?;
            if spec.subscribe {
                tokio::time::timeout(CONNECT_LIMIT, conn.subscribe(&topic)).await??;
            }
            Ok(Box::pin(async move {
                let mut got = Vec::new();
                while conn.recv(&mut got).await? {
                    received(&mut got);
                }
                Ok(())
            }))
        }
        SubTransport::Sse => Ok(Box::pin(
            http_subs::sse(spec.addr, spec.source, &topic, CONNECT_LIMIT).await?,
        )),
        SubTransport::Poll => Ok(Box::pin(
            http_subs::poll(spec.addr, spec.source, &topic, CONNECT_LIMIT).await?,
        )),
    }
}
