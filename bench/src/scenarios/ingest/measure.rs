//! One `ingest` measurement: the point's publishers against one server (or
//! the nodes of a cluster), CPU over the measured window and peak RSS
//! sampled from `/proc` outside the server processes.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use futures_util::future::try_join_all;
use tokio::time::{sleep, sleep_until};

use super::{prime::prime, rest, Args, Family, Point};
use crate::{
    fleet::{
        conn::Conn,
        publisher::{self, PublishOutcome, PublishPlan},
        System, Topics,
    },
    http::HttpConn,
    load::{json_payload, Timing},
    procstat::{self, CpuWindow, Proc, RssPeak},
    results::Record,
    scenarios::{servers::ServerRef, BenchEnv},
    stats::round3,
};

/// How long unanswered publishes are awaited after the window.
const DRAIN: Duration = Duration::from_secs(5);

/// What one measurement drives: where publishers connect (spread
/// round-robin) and which processes make up the server.
pub struct Target {
    /// Client addresses (one per node).
    pub addrs: Vec<SocketAddr>,
    /// (label, pid) of every server process (nodes and their NATS bus).
    pub procs: Vec<(String, u32)>,
    /// What the record says in `durability`.
    pub durability: Option<String>,
}

/// A fresh topic prefix per measurement.
fn fresh_prefix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("bench.i{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Runs `point` on one server; `rate` (msg/s in total) makes it open-loop.
pub async fn run(
    server: &ServerRef,
    point: &Point,
    rate: Option<f64>,
    args: &Args,
    env: &BenchEnv,
    durability: Option<String>,
) -> Result<Record> {
    let target = Target {
        addrs: vec![server.addr],
        procs: vec![(server.system.name().to_string(), server.pid)],
        durability,
    };
    run_on(server.system, &target, point, rate, args, env).await
}

/// Runs `point` against `target`.
pub async fn run_on(
    system: System,
    target: &Target,
    point: &Point,
    rate: Option<f64>,
    args: &Args,
    env: &BenchEnv,
) -> Result<Record> {
    let prefix = fresh_prefix();
    let topics_of = |c: usize| Topics {
        prefix: prefix.clone(),
        count: point.topics,
        // each connection starts elsewhere, so together they cover every
        // topic evenly
        first: c * point.topics / point.conns.max(1),
    };
    let (warmup, duration) = args.timing(env.quick);
    let limit = Duration::from_secs(10);
    let pids: Vec<u32> = target.procs.iter().map(|(_, p)| *p).collect();
    let rss_idle: u64 = pids
        .iter()
        .map(|p| procstat::rss_kib(Proc::Pid(*p)).unwrap_or(0))
        .sum();

    // every topic exists before the measurement (see `prime`): Herald's
    // REST points prime over WebSocket too, the topics are the same
    let primed = if args.no_prime || point.topics == 0 {
        None
    } else {
        let all = Topics {
            first: 0,
            ..topics_of(0)
        };
        Some(prime(system, &target.addrs, &all, point.payload).await?)
    };

    let mut tasks = tokio::task::JoinSet::new();
    let timing;
    if matches!(point.family, Family::Rest | Family::Batch) {
        let conns = try_join_all(
            (0..point.conns).map(|c| HttpConn::connect(target.addrs[c % target.addrs.len()])),
        )
        .await
        .context("connecting HTTP publishers")?;
        timing = Timing::starting_now(warmup, duration, DRAIN);
        let payload = json_payload(point.payload);
        let run_id = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for (c, conn) in conns.into_iter().enumerate() {
            let (topics, payload) = (topics_of(c), payload.clone());
            let keys = args.keyed.then(|| format!("k{run_id}x{c}"));
            tasks.spawn(rest::run(conn, topics, payload, point.batch, keys, timing));
        }
    } else {
        let conns = try_join_all(
            (0..point.conns)
                .map(|c| Conn::open(system, target.addrs[c % target.addrs.len()], None, limit)),
        )
        .await
        .context("connecting WebSocket publishers")?;
        let conns: Vec<Conn> = if args.keyed {
            conns.into_iter().map(Conn::with_keys).collect()
        } else {
            conns
        };
        timing = Timing::starting_now(warmup, duration, DRAIN);
        let per_conn = rate.map(|r| r / point.conns.max(1) as f64);
        for (c, conn) in conns.into_iter().enumerate() {
            // publishers sharing a rate take turns: evenly staggered
            let offset = per_conn.map_or(Duration::ZERO, |r| {
                Duration::from_secs_f64(c as f64 / point.conns as f64 / r.max(1e-3))
            });
            let plan = PublishPlan {
                topics: topics_of(c),
                payload_bytes: point.payload,
                window: point.window,
                rate: per_conn,
                offset,
            };
            tasks.spawn(async move { publisher::run(conn, None, &plan, timing).await });
        }
    }

    let peaks: Vec<RssPeak> = pids.iter().map(|_| RssPeak::default()).collect();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peaks, sampling, pids) = (peaks.clone(), sampling.clone(), pids.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                for (peak, pid) in peaks.iter().zip(&pids) {
                    peak.sample(Proc::Pid(*pid));
                }
                sleep(procstat::SAMPLE_EVERY).await;
            }
        })
    };
    sleep_until(timing.measure_from).await;
    let mut procs: Vec<Proc> = pids.iter().map(|p| Proc::Pid(*p)).collect();
    procs.push(Proc::SelfProc);
    let cpu = CpuWindow::start(&procs).with_threads_of(pids[0]);
    sleep_until(timing.stop_at).await;
    let usage = cpu.finish();
    let mut total = PublishOutcome::default();
    while let Some(done) = tasks.join_next().await {
        merge(&mut total, done.context("publisher task panicked")?);
    }
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    if total.acked == 0 {
        bail!(
            "no publish was acknowledged in the window{}",
            total
                .first_error
                .map(|e| format!(" (first error: {e})"))
                .unwrap_or_default()
        );
    }

    let secs = duration.as_secs_f64();
    let lat = total.ack_hist.summary();
    let server_cpu: Vec<f64> = usage.per_proc_pct[..pids.len()].to_vec();
    let mut record = Record {
        system: system.name().into(),
        scenario: point.scenario(),
        subscribers: 0,
        publish_rate: rate.map_or(round3(total.sent as f64 / secs), round3),
        payload_bytes: point.payload as u64,
        delivered_per_s: round3(total.acked as f64 / secs),
        p50_ms: round3(lat.p50_ms),
        p99_ms: round3(lat.p99_ms),
        p999_ms: round3(lat.p999_ms),
        server_rss_kib: peaks.iter().map(RssPeak::peak_kib).sum(),
        latency: Some(
            if point.batch > 1 {
                "request->response"
            } else {
                "publish->ack"
            }
            .into(),
        ),
        max_ms: Some(round3(lat.max_ms)),
        mean_ms: Some(round3(lat.mean_ms)),
        acked_per_s: Some(round3(total.acked as f64 / secs)),
        acked: Some(total.acked),
        errors: Some(total.errors),
        publishers: Some(point.conns as u64),
        window: Some(point.window as u64),
        transport: Some(
            match point.family {
                Family::Rest | Family::Batch => "rest",
                _ => "ws",
            }
            .into(),
        ),
        durability: target.durability.clone(),
        topics: Some(point.topics as u64),
        duration_s: Some(round3(secs)),
        server_rss_idle_kib: Some(rss_idle),
        server_cpu_pct: Some(round3(server_cpu.iter().filter(|v| v.is_finite()).sum())),
        server_threads_cpu_pct: usage
            .threads_pct
            .into_iter()
            .map(|(k, v)| (k, round3(v)))
            .collect(),
        generator_cpu_pct: usage.per_proc_pct.last().copied().map(round3),
        generator_threads: Some(env.gen_threads as u64),
        generator_processes: Some(1),
        host_cpu_busy_pct: usage.host_busy_pct.map(round3),
        host_cores: Some(procstat::host_cores() as u64),
        measured_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs()),
        pacing: Some(if rate.is_some() { "rate" } else { "ack" }.into()),
        percentiles_ms: total.ack_hist.curve(),
        family: Some(point.family.name().into()),
        batch: (point.batch > 1).then_some(point.batch as u64),
        ..Record::default()
    };
    if target.procs.len() > 1 {
        record.nodes = Some(
            target
                .procs
                .iter()
                .filter(|(l, _)| l != "nats-server")
                .count() as u64,
        );
        record.server_procs_cpu_pct = target
            .procs
            .iter()
            .zip(&server_cpu)
            .map(|((l, _), c)| (l.clone(), round3(*c)))
            .collect::<BTreeMap<_, _>>();
        record.server_procs_rss_kib = target
            .procs
            .iter()
            .zip(&peaks)
            .map(|((l, _), p)| (l.clone(), p.peak_kib()))
            .collect();
    }
    if args.keyed {
        record.notes.push(
            "keyed: every publish carries a unique idempotency key (JetStream: Nats-Msg-Id)".into(),
        );
    }
    if let Some(took) = primed {
        record.notes.push(format!(
            "primed: one publish to each of the {} topics before the warm-up, {:.1} s",
            point.topics,
            took.as_secs_f64()
        ));
    }
    if let Some(e) = &total.first_error {
        record.notes.push(format!("publishers: {e}"));
    }
    if total.unanswered > 0 {
        record.notes.push(format!(
            "{} publishes unanswered {DRAIN:?} after the window",
            total.unanswered
        ));
    }
    if total.late > 0 {
        record.notes.push(format!(
            "{} publishes went out > 1 ms after their scheduled time, the window full (timed from the schedule)",
            total.late
        ));
    }
    if total.late_generator > 0 {
        record.notes.push(format!(
            "{} publishes went out > 1 ms after their scheduled time with a window slot free: the generator was behind (busy machine; timed from when they went out)",
            total.late_generator
        ));
    }
    if system == System::Jetstream {
        record.notes.push(format!(
            "JetStream file store, R1, one stream over bench.>, {}; ack = PubAck",
            target.durability.as_deref().unwrap_or("?")
        ));
    }
    Ok(record)
}

fn merge(total: &mut PublishOutcome, o: PublishOutcome) {
    total.sent += o.sent;
    total.acked += o.acked;
    total.late += o.late;
    total.late_generator += o.late_generator;
    total.errors += o.errors;
    total.unanswered += o.unanswered;
    if total.first_error.is_none() {
        total.first_error = o.first_error;
    }
    total.ack_hist.merge(&o.ack_hist);
}
