//! `durable-publish`: how many publishes per second Herald acknowledges as
//! durable, and how long an ack takes, with `--durability always` (fsync
//! before the ack, group commit) next to `--durability relaxed` (ack before
//! the fsync). No subscribers: this isolates the write path (parse →
//! sequencer → log → ack).
//!
//! Each mode gets a fresh server and data dir. `C` publishers (one
//! connection each) publish to `bench.t` as fast as their window of
//! unacknowledged publishes allows, for a warm-up and then the measured
//! window; server RSS, server CPU and this generator's own CPU are sampled
//! meanwhile. Afterwards the topic's history must account for every ack.
//!
//! With `--baseline-bin` every mode also runs on the previous build
//! (`herald-baseline`), the two interleaved (this build first in odd
//! rounds, the baseline first in even ones).

use std::{sync::Arc, time::Duration};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures_util::future::try_join_all;
use tokio::{task::JoinSet, time::Instant};

use super::{BenchEnv, Scenario, ScenarioOutput};
use crate::{
    fleet::System,
    load::{
        json_payload, LiveCounters, PublishLoad, Publisher, PublisherReport, Timing, Transport,
    },
    procstat::{self, CpuWindow, Proc, RssPeak},
    progress::Progress,
    results::{median_round, thousands, Comparison, Record},
    stats::round3,
    system::{
        herald::{HeraldOptions, HeraldServer},
        ServerUnderTest,
    },
};

/// How long outstanding acks are awaited after the measured window.
const DRAIN: Duration = Duration::from_secs(10);
/// A graceful stop slower than this is worth a note.
const SLOW_SHUTDOWN: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    Always,
    Relaxed,
}

impl Durability {
    fn as_str(self) -> &'static str {
        match self {
            Durability::Always => "always",
            Durability::Relaxed => "relaxed",
        }
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Concurrent publishers, one connection each.
    #[arg(short = 'c', long, default_value_t = 32)]
    pub publishers: usize,
    /// Measured seconds per durability mode [default: 10, or 3 with --quick].
    #[arg(short = 'd', long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Warm-up seconds before measuring, not counted [default: 1, or 0.5 with --quick].
    #[arg(long, value_name = "SECS")]
    pub warmup: Option<f64>,
    /// Size of each message's `data` (a JSON string of this many bytes, quotes included).
    #[arg(short = 'b', long, default_value_t = 256)]
    pub payload_bytes: usize,
    /// How publishers publish.
    #[arg(short = 't', long, value_enum, default_value_t = Transport::Ws)]
    pub transport: Transport,
    /// WebSocket only: publishes one connection may have awaiting their ack
    /// (the server stops reading a connection at 256).
    #[arg(short = 'w', long, default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub window: u16,
    /// Publish at this fixed total rate (msg/s, spread over the publishers)
    /// instead of as fast as acks allow; latency is then timed from each
    /// publish's scheduled time. Records get an `@RATE` scenario suffix.
    #[arg(short = 'r', long, value_name = "MSG_PER_S")]
    pub rate: Option<f64>,
    /// Modes to run, in this order, each on a fresh server.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Durability::Always, Durability::Relaxed])]
    pub durability: Vec<Durability>,
    /// Repeat the modes this many times, interleaved (always, relaxed,
    /// always, …); each mode reports its median round. Helps on a noisy machine.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,
    /// Spread publishers over this many topics (bench.t, or bench.t0 … bench.tN-1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub topics: u32,
}

pub struct DurablePublish {
    pub args: Args,
}

impl DurablePublish {
    fn duration(&self, env: &BenchEnv) -> Duration {
        let secs = self
            .args
            .duration
            .unwrap_or(if env.quick { 3.0 } else { 10.0 });
        Duration::from_secs_f64(secs.max(0.1))
    }

    fn warmup(&self, env: &BenchEnv) -> Duration {
        let secs = self
            .args
            .warmup
            .unwrap_or(if env.quick { 0.5 } else { 1.0 });
        Duration::from_secs_f64(secs.max(0.0))
    }

    fn window(&self) -> usize {
        match self.args.transport {
            Transport::Ws => self.args.window as usize,
            Transport::Rest => 1,
        }
    }

    fn topics(&self) -> Vec<String> {
        match self.args.topics {
            1 => vec!["bench.t".to_string()],
            n => (0..n).map(|i| format!("bench.t{i}")).collect(),
        }
    }

    fn scenario_name(&self, d: Durability) -> String {
        let mut name = format!("durable-publish/{}", d.as_str());
        if self.args.transport != Transport::Ws {
            name.push_str(&format!("/{}", self.args.transport));
        }
        if let Some(rate) = self.rate() {
            name.push_str(&format!("@{rate}"));
        }
        name
    }

    fn rate(&self) -> Option<u64> {
        self.args
            .rate
            .filter(|r| *r > 0.0)
            .map(|r| r.round() as u64)
    }

    async fn run_mode(
        &self,
        env: &BenchEnv,
        opts: HeraldOptions,
        durability: Durability,
        system: System,
    ) -> Result<Record> {
        let a = &self.args;
        let label = format!("{} {} {}", system.name(), durability.as_str(), a.transport);
        let mut server = tokio::task::spawn_blocking(move || HeraldServer::start(&opts))
            .await
            .context("server start task")??;
        server.wait_ready(Duration::from_secs(20)).await?;
        let pid = server.pid();
        let addr = server.addr();
        let idle_rss = procstat::rss_kib(Proc::Pid(pid)).unwrap_or(0);
        eprintln!(
            "[{label}] server pid {pid} on {addr} (data {}), RSS idle {:.1} MiB; connecting {} publishers",
            server.data_dir().display(),
            idle_rss as f64 / 1024.0,
            a.publishers
        );

        let load = Arc::new(PublishLoad {
            topics: self.topics(),
            payload: Bytes::from(json_payload(a.payload_bytes)),
            window: self.window(),
            rate: self.rate().map(|r| r as f64),
            publishers: a.publishers,
        });
        let publishers =
            try_join_all((0..a.publishers).map(|_| Publisher::connect(a.transport, addr)))
                .await
                .with_context(|| {
                    format!("connecting publishers; server log:\n{}", server.log_tail())
                })?;

        let warmup = self.warmup(env);
        let duration = self.duration(env);
        let timing = Timing::starting_now(warmup, duration, DRAIN);
        let live = Arc::new(LiveCounters::default());
        let mut tasks = JoinSet::new();
        for (i, p) in publishers.into_iter().enumerate() {
            tasks.spawn(p.run(i, load.clone(), timing, live.clone()));
        }

        // Monitor: RSS peak, CPU over the measured window, progress.
        let rss = RssPeak::default();
        let progress = Progress::new(env.progress, &label, warmup + duration);
        let mut tick = tokio::time::interval(procstat::SAMPLE_EVERY);
        let mut cpu: Option<CpuWindow> = None;
        let mut rate_mark = (Instant::now(), 0u64);
        let mut rate = 0.0;
        loop {
            tick.tick().await;
            let now = Instant::now();
            rss.sample(Proc::Pid(pid));
            if cpu.is_none() && now >= timing.measure_from {
                cpu =
                    Some(CpuWindow::start(&[Proc::SelfProc, Proc::Pid(pid)]).with_threads_of(pid));
            }
            if now >= timing.stop_at {
                break;
            }
            let acked = live.acked();
            let since = now - rate_mark.0;
            if since >= Duration::from_millis(500) {
                rate = (acked - rate_mark.1) as f64 / since.as_secs_f64();
                rate_mark = (now, acked);
            }
            let phase = if now < timing.measure_from {
                "warm-up"
            } else {
                "measuring"
            };
            progress.update(
                now - timing.origin,
                format!("{phase} {} acked/s", thousands(rate)),
            );
        }
        let cpu = cpu
            .unwrap_or_else(|| CpuWindow::start(&[Proc::SelfProc, Proc::Pid(pid)]))
            .finish();
        progress.finish();

        let mut total = PublisherReport::default();
        while let Some(done) = tasks.join_next().await {
            total.merge(&done.context("publisher task panicked")?);
        }

        let mut notes = Vec::new();
        if let Some(f) = &total.failure {
            notes.push(format!("connection failure: {f}"));
        }
        if total.errors > 0 {
            notes.push(format!(
                "{} error replies, first: {}",
                total.errors,
                total.first_error.as_deref().unwrap_or("?")
            ));
        }
        if total.unanswered > 0 {
            notes.push(format!(
                "{} publishes unanswered {DRAIN:?} after the window",
                total.unanswered
            ));
        }
        match history_last_seq(addr, &load.topics).await {
            Ok(last) if last < total.acked_total => notes.push(format!(
                "LOST ACKS: {} acknowledged but history ends at seq total {last}",
                total.acked_total
            )),
            Ok(last) if last > total.acked_total + total.unanswered => notes.push(format!(
                "history holds {last} messages, more than the {} acked + {} unanswered",
                total.acked_total, total.unanswered
            )),
            Ok(_) => {}
            Err(e) => notes.push(format!("history check failed: {e:#}")),
        }

        let stop = tokio::task::spawn_blocking(move || server.stop(Duration::from_secs(15)))
            .await
            .context("server stop task")?;
        if stop.killed {
            notes.push(format!(
                "server ignored SIGTERM for {:?} and was killed",
                stop.took
            ));
        } else if stop.took > SLOW_SHUTDOWN {
            notes.push(format!("graceful shutdown took {:?}", stop.took));
        }
        if let Some(status) = stop.status.filter(|s| !s.success() && !stop.killed) {
            notes.push(format!("server exited with {status}"));
        }
        for n in &notes {
            eprintln!("[{label}] note: {n}");
        }
        if total.acked_in_window == 0 {
            bail!(
                "[{label}] no publish was acknowledged in the measured window{}",
                notes.iter().map(|n| format!("\n  {n}")).collect::<String>()
            );
        }

        let secs = timing.measured().as_secs_f64();
        let acked_per_s = total.acked_in_window as f64 / secs;
        let lat = total.latency.summary();
        eprintln!(
            "[{label}] {} acked/s, p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms (at {:.1} s); server CPU {:.0}%, generator CPU {:.0}%",
            thousands(acked_per_s),
            lat.p50_ms,
            lat.p99_ms,
            lat.max_ms,
            total.slowest.map_or(0.0, |(_, at)| at.as_secs_f64()),
            cpu.per_proc_pct[1],
            cpu.per_proc_pct[0],
        );
        let mut busiest: Vec<(&String, &f64)> = cpu.threads_pct.iter().collect();
        busiest.sort_by(|a, b| b.1.total_cmp(a.1));
        eprintln!(
            "[{label}] busiest server threads: {}",
            busiest
                .iter()
                .take(5)
                .map(|(n, p)| format!("{n} {p:.0}%"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(Record {
            system: system.name().into(),
            scenario: self.scenario_name(durability),
            subscribers: 0,
            publish_rate: match self.rate() {
                Some(rate) => rate as f64,
                None => (total.sent_in_window as f64 / secs).round(),
            },
            payload_bytes: a.payload_bytes as u64,
            delivered_per_s: acked_per_s.round(),
            p50_ms: round3(lat.p50_ms),
            p99_ms: round3(lat.p99_ms),
            p999_ms: round3(lat.p999_ms),
            server_rss_kib: rss.peak_kib(),
            latency: Some("publish->ack".into()),
            max_ms: Some(round3(lat.max_ms)),
            max_at_s: total.slowest.map(|(_, at)| round3(at.as_secs_f64())),
            mean_ms: Some(round3(lat.mean_ms)),
            acked_per_s: Some(acked_per_s.round()),
            acked: Some(total.acked_in_window),
            errors: Some(total.errors),
            publishers: Some(a.publishers as u64),
            window: Some(self.window() as u64),
            transport: Some(a.transport.to_string()),
            durability: Some(durability.as_str().into()),
            topics: Some(u64::from(a.topics)),
            duration_s: Some(round3(secs)),
            server_rss_idle_kib: Some(idle_rss),
            server_cpu_pct: Some(round1(cpu.per_proc_pct[1])),
            server_threads_cpu_pct: cpu
                .threads_pct
                .iter()
                .map(|(k, v)| (k.clone(), round1(*v)))
                .collect(),
            generator_cpu_pct: Some(round1(cpu.per_proc_pct[0])),
            generator_threads: Some(env.gen_threads as u64),
            generator_processes: Some(1),
            host_cpu_busy_pct: cpu.host_busy_pct.map(round1),
            host_cores: Some(procstat::host_cores() as u64),
            measured_at: Some(unix_now()),
            rounds_delivered_per_s: Vec::new(),
            notes,
            ..Record::default()
        })
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Sum of `last_seq` over the topics: on a fresh data dir, the number of
/// publishes the server committed.
async fn history_last_seq(addr: std::net::SocketAddr, topics: &[String]) -> Result<u64> {
    let mut sum = 0;
    for topic in topics {
        let path = format!("/v1/topics/{topic}/messages?since=0&limit=1");
        let (status, body) = crate::http::get(addr, &path, Duration::from_secs(10)).await?;
        if !status.is_success() {
            bail!("GET {path}: HTTP {status}");
        }
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        sum += v
            .get("last_seq")
            .and_then(|s| s.as_u64())
            .with_context(|| format!("GET {path}: no last_seq"))?;
    }
    Ok(sum)
}

impl Scenario for DurablePublish {
    fn name(&self) -> &'static str {
        "durable-publish"
    }

    fn describe(&self, env: &BenchEnv) -> String {
        let a = &self.args;
        format!(
            "durable-publish: {} {} publishers{}, {}, {} B payload, {} topic(s), {:?} warm-up + {:?} per mode ({}){}, generator threads {}",
            a.publishers,
            a.transport,
            match a.transport {
                Transport::Ws => format!(" (window {})", a.window),
                Transport::Rest => String::new(),
            },
            match self.rate() {
                Some(r) => format!("{r} msg/s in total"),
                None => "as fast as acked".into(),
            },
            a.payload_bytes,
            a.topics,
            self.warmup(env),
            self.duration(env),
            a.durability
                .iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            match a.rounds {
                1 => String::new(),
                n => format!(" x {n} interleaved rounds (median reported)"),
            },
            env.gen_threads,
        )
    }

    async fn run(&self, env: &BenchEnv) -> Result<ScenarioOutput> {
        if self.args.publishers == 0 {
            bail!("--publishers must be at least 1");
        }
        if self.args.durability.is_empty() {
            bail!("--durability needs at least one mode");
        }
        let systems = env.systems(None, &[System::Herald]);
        for s in &systems {
            eprintln!("{} binary: {}", s.name(), env.herald_binary(*s)?.display());
        }
        let modes = &self.args.durability;
        let mut rounds: Vec<Vec<Record>> = vec![Vec::new(); modes.len() * systems.len()];
        for round in 1..=self.args.rounds {
            if self.args.rounds > 1 {
                eprintln!("-- round {round}/{}", self.args.rounds);
            }
            for (i, &d) in modes.iter().enumerate() {
                for k in 0..systems.len() {
                    // rotate which build goes first, round to round
                    let j = (k + round as usize - 1) % systems.len();
                    let opts = HeraldOptions {
                        binary: env.herald_binary(systems[j])?,
                        durability: d.as_str().into(),
                        data_root: env.data_root.clone(),
                        extra_args: env.herald_args.clone(),
                        nats: None,
                        node_id: None,
                    };
                    let r = self.run_mode(env, opts, d, systems[j]).await?;
                    rounds[i * systems.len() + j].push(r);
                }
            }
        }
        let records: Vec<Record> = rounds.into_iter().filter_map(median_round).collect();
        let comparisons = comparisons(&records);
        Ok(ScenarioOutput {
            records,
            comparisons,
            details: Vec::new(),
        })
    }
}

/// `relaxed/always` for every (system, transport, payload, publishers) that
/// has both, then `herald/herald-baseline` for every scenario both ran.
pub fn comparisons(records: &[Record]) -> Vec<Comparison> {
    let mut out = relaxed_over_always(records);
    for h in records
        .iter()
        .filter(|r| r.system == "herald" && r.scenario.starts_with("durable-publish/"))
    {
        if let Some(b) = records.iter().find(|r| {
            r.system == "herald-baseline"
                && r.scenario == h.scenario
                && r.payload_bytes == h.payload_bytes
        }) {
            out.push(Comparison {
                label: format!("herald/herald-baseline {}", h.scenario),
                numerator: h.clone(),
                denominator: b.clone(),
                throughput: !h.scenario.contains('@'),
            });
        }
    }
    out
}

fn relaxed_over_always(records: &[Record]) -> Vec<Comparison> {
    let mut out = Vec::new();
    for always in records.iter().filter(|r| {
        r.scenario.starts_with("durable-publish/") && r.durability.as_deref() == Some("always")
    }) {
        let relaxed = records.iter().find(|r| {
            r.scenario.starts_with("durable-publish/")
                && r.durability.as_deref() == Some("relaxed")
                && r.system == always.system
                && r.transport == always.transport
                && r.payload_bytes == always.payload_bytes
                && r.publishers == always.publishers
                && r.scenario.replacen("/relaxed", "/always", 1) == always.scenario
        });
        if let Some(relaxed) = relaxed {
            out.push(Comparison {
                label: format!(
                    "relaxed/always ({}, {}, {} publishers, {} B{})",
                    always.system,
                    always.transport.as_deref().unwrap_or("?"),
                    always.publishers.unwrap_or(0),
                    always.payload_bytes,
                    match always.scenario.split_once('@') {
                        Some((_, rate)) => format!(", fixed {rate} msg/s"),
                        None => String::new(),
                    }
                ),
                numerator: relaxed.clone(),
                denominator: always.clone(),
                throughput: true,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(d: &str, transport: &str, rate: f64) -> Record {
        Record {
            system: "herald".into(),
            scenario: format!("durable-publish/{d}"),
            delivered_per_s: rate,
            payload_bytes: 256,
            durability: Some(d.into()),
            transport: Some(transport.into()),
            publishers: Some(32),
            ..Record::default()
        }
    }

    #[test]
    fn pairs_relaxed_with_always_of_the_same_transport() {
        let records = vec![
            rec("always", "ws", 10.0),
            rec("relaxed", "rest", 99.0),
            rec("relaxed", "ws", 30.0),
            Record {
                scenario: "durable-publish/relaxed@1000".into(),
                ..rec("relaxed", "ws", 1000.0)
            },
            rec("always", "rest", 5.0),
        ];
        let c = comparisons(&records);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].numerator.delivered_per_s, 30.0);
        assert_eq!(c[0].denominator.delivered_per_s, 10.0);
        assert!(c[0].label.contains("ws"));
        assert_eq!(c[1].numerator.delivered_per_s, 99.0);
        assert!(comparisons(&records[..1]).is_empty());
        let baseline = Record {
            system: "herald-baseline".into(),
            ..rec("always", "ws", 5.0)
        };
        let c = comparisons(&[rec("always", "ws", 10.0), baseline]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].label, "herald/herald-baseline durable-publish/always");
    }

    #[test]
    fn scenario_names() {
        let mut s = DurablePublish {
            args: Args {
                publishers: 1,
                duration: None,
                warmup: None,
                payload_bytes: 2,
                transport: Transport::Ws,
                window: 1,
                rate: None,
                rounds: 1,
                durability: vec![Durability::Always],
                topics: 1,
            },
        };
        assert_eq!(
            s.scenario_name(Durability::Always),
            "durable-publish/always"
        );
        assert_eq!(s.topics(), vec!["bench.t"]);
        s.args.transport = Transport::Rest;
        s.args.topics = 2;
        assert_eq!(
            s.scenario_name(Durability::Relaxed),
            "durable-publish/relaxed/rest"
        );
        assert_eq!(s.topics(), vec!["bench.t0", "bench.t1"]);
        assert_eq!(s.window(), 1);
        s.args.rate = Some(5000.0);
        assert_eq!(
            s.scenario_name(Durability::Always),
            "durable-publish/always/rest@5000"
        );
    }
}
