//! One measurement: one point on one system.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Result};
use tokio::time::{sleep, sleep_until};

use super::{Args, Kind, Pace, Point};
use crate::{
    fleet::{
        conn::Conn,
        pool::Fleet,
        publisher::{self, PublishPlan},
        ConnectSpec, Topics,
    },
    load::Timing,
    procstat::{self, CpuWindow, Proc, RssPeak},
    results::Record,
    scenarios::{servers::ServerRef, BenchEnv},
    stats::round3,
};

/// Time allowed to open all subscriber connections.
const CONNECT_LIMIT: Duration = Duration::from_secs(180);

/// A fresh topic prefix per measurement, so Herald has no history to replay.
fn fresh_prefix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("bench.c{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Runs `point` on `server`; `durability` is what its record says about
/// its writes (Herald's mode, JetStream's sync).
pub async fn run(
    server: &ServerRef,
    point: &Point,
    args: &Args,
    env: &BenchEnv,
    durability: Option<String>,
) -> Result<Record> {
    let prefix = fresh_prefix();
    let topics = if point.topics <= 1 {
        Topics::single(&prefix)
    } else {
        Topics {
            prefix: prefix.clone(),
            count: point.topics,
            first: 0,
        }
    };
    let spec = ConnectSpec {
        system: server.system,
        transport: point.transport,
        addr: server.addr,
        source: None,
        count: point.conns,
        topics: topics.clone(),
        subscribe: point.kind != Kind::IdleBare,
    };
    let mut record = Record {
        system: server.system.name().into(),
        scenario: point.scenario(),
        subscribers: point.conns as u64,
        payload_bytes: point.payload as u64,
        transport: Some(point.transport.name().into()),
        topics: Some(point.topics as u64),
        host_cores: Some(procstat::host_cores() as u64),
        measured_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs()),
        durability,
        ..Record::default()
    };
    let rss_before = procstat::rss_kib(Proc::Pid(server.pid)).unwrap_or(0);
    record.server_rss_idle_kib = Some(rss_before);

    if point.kind.is_idle() {
        let (fleet, ok, _) = Fleet::connect(&spec, point.conns, CONNECT_LIMIT).await?;
        record.subscribers_failed = Some((point.conns - ok) as u64);
        record.generator_processes = Some(fleet.len() as u64);
        // let the server settle (buffers allocated on first use, GC)
        sleep(Duration::from_secs(3)).await;
        let cpu = CpuWindow::start(&[Proc::Pid(server.pid)]);
        sleep(Duration::from_secs(1)).await;
        let usage = cpu.finish();
        let rss = procstat::rss_kib(Proc::Pid(server.pid)).unwrap_or(0);
        fleet.quit().await;
        record.idle_connections = Some(ok as u64);
        record.server_rss_kib = rss;
        record.server_cpu_pct = usage.per_proc_pct.first().copied().map(round3);
        if ok > 0 {
            let per = (rss.saturating_sub(rss_before) as f64 * 1024.0) / ok as f64;
            record.rss_per_conn_bytes = Some(per.round());
        }
        return Ok(record);
    }

    let publisher = Conn::open(server.system, server.addr, None, Duration::from_secs(10)).await?;
    // fan-out as fast as delivered: a probe subscriber paces the publisher
    let probe = if point.rate.is_none() && point.topics <= 1 && args.pace == Pace::Probe {
        let mut p = Conn::open(server.system, server.addr, None, Duration::from_secs(10)).await?;
        p.subscribe(&topics.name(0)).await?;
        record.pacing = Some("probe".into());
        Some(p)
    } else {
        record.pacing = Some(if point.rate.is_some() { "rate" } else { "ack" }.into());
        None
    };
    let (mut fleet, ok, first_error) = Fleet::connect(&spec, point.conns, CONNECT_LIMIT).await?;
    record.subscribers_failed = Some((point.conns - ok) as u64);
    record.generator_processes = Some(fleet.len() as u64 + 1);
    record.generator_threads = Some(env.gen_threads as u64);
    if ok == 0 {
        fleet.quit().await;
        bail!(
            "no subscriber connected: {}",
            first_error.unwrap_or_default()
        );
    }
    sleep(Duration::from_millis(300)).await;

    let window = match (point.rate, args.inflight_deliveries) {
        (Some(_), _) => 1024,
        (None, Some(d)) if probe.is_some() => (d / point.conns.max(1)).max(1),
        (None, None) if probe.is_some() => args.inflight.max(1),
        _ => args.window,
    };
    let plan = PublishPlan {
        topics,
        payload_bytes: point.payload,
        window,
        rate: point.rate,
        offset: Duration::ZERO,
    };
    let (warmup, duration) = args.timing(env.quick);
    let timing = Timing::starting_now(warmup, duration, Duration::from_secs(2));
    let pub_task =
        tokio::spawn(async move { publisher::run(publisher, probe, &plan, timing).await });
    let rss = RssPeak::default();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (rss, sampling, pid) = (rss.clone(), sampling.clone(), server.pid);
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                rss.sample(Proc::Pid(pid));
                sleep(procstat::SAMPLE_EVERY).await;
            }
        })
    };
    sleep_until(timing.measure_from).await;
    fleet.start().await?;
    let mut procs = vec![Proc::Pid(server.pid), Proc::SelfProc];
    procs.extend(fleet.pids().into_iter().map(Proc::Pid));
    let cpu = CpuWindow::start(&procs).with_threads_of(server.pid);
    sleep_until(timing.stop_at).await;
    let report = fleet.stop().await?;
    let usage = cpu.finish();
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    let outcome = pub_task.await?;
    fleet.quit().await;

    let secs = duration.as_secs_f64();
    let s = report.hist.summary();
    record.publishers = Some(1);
    record.window = Some(window as u64);
    record.publish_rate = point.rate.unwrap_or(round3(outcome.sent as f64 / secs));
    record.acked = Some(outcome.acked);
    record.acked_per_s = Some(round3(outcome.acked as f64 / secs));
    let acks = outcome.ack_hist.summary();
    if acks.count > 0 {
        record.ack_p50_ms = Some(round3(acks.p50_ms));
        record.ack_p99_ms = Some(round3(acks.p99_ms));
    }
    record.delivered_per_s = round3(report.delivered as f64 / secs);
    record.latency = Some("publish->deliver".into());
    record.p50_ms = s.p50_ms;
    record.p99_ms = s.p99_ms;
    record.p999_ms = s.p999_ms;
    if point.kind == Kind::Latency {
        record.percentiles_ms = report.hist.curve();
    }
    record.max_ms = Some(s.max_ms);
    record.mean_ms = Some(round3(s.mean_ms));
    record.duration_s = Some(secs);
    record.server_rss_kib = rss.peak_kib();
    record.server_cpu_pct = usage.per_proc_pct.first().copied().map(round3);
    let gen: f64 = usage.per_proc_pct[1..]
        .iter()
        .filter(|v| v.is_finite())
        .sum();
    record.generator_cpu_pct = Some(round3(gen));
    let busiest = usage.per_proc_pct[1..]
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    record.generator_busiest_proc_cpu_pct = Some(round3(busiest));
    record.host_cpu_busy_pct = usage.host_busy_pct.map(round3);
    record.server_threads_cpu_pct = usage
        .threads_pct
        .into_iter()
        .map(|(k, v)| (k, round3(v)))
        .collect();
    record.errors = Some(outcome.errors + report.errors);
    record.subscribers_closed = Some(report.closed);
    if report.reconnects > 0 {
        record.subscriber_reconnects = Some(report.reconnects);
        record.notes.push(format!(
            "{} times the server closed a long-poll connection; the poller reconnected and resumed from its cursor",
            report.reconnects
        ));
    }
    if let Some(e) = outcome.first_error {
        record.notes.push(format!("publisher: {e}"));
    }
    if let Some(e) = report.first_error {
        record.notes.push(format!("subscribers: {e}"));
    }
    if outcome.late > 0 {
        record.notes.push(format!(
            "{} publishes went out > 1 ms after their scheduled time, the window full (stamped with the scheduled time)",
            outcome.late
        ));
    }
    if outcome.late_generator > 0 {
        record.notes.push(format!(
            "{} publishes went out > 1 ms after their scheduled time with a window slot free: the generator was behind (busy machine; stamped when they went out)",
            outcome.late_generator
        ));
    }
    if report.closed > 0 {
        record
            .notes
            .push(format!("{} subscriber connections closed", report.closed));
    }
    Ok(record)
}
