//! `compare` (issue 5): Herald next to nats-server (WebSocket listener) and a
//! socket.io 4 broadcast server — and on request a previous Herald build
//! (`herald-baseline`) and nats-server with JetStream — all started by the
//! bench, measured side by side and interleaved: every measurement point
//! runs on each system in turn (the order rotating from point to point)
//! before the next point.
//!
//! Points: fan-out (1 topic, N WebSocket subscribers, 64 B and 1 KiB,
//! publishing as fast as acked), many topics (one subscriber each, publish
//! round-robin), latency (N subscribers at a fixed rate), idle memory (RSS
//! per idle WebSocket connection), and Herald's fan-out over SSE and
//! long-poll. Subscribers live in worker subprocesses ([`crate::fleet`]).

mod measure;
mod report;

pub use report::{comparisons, details};

use std::time::Duration;

use anyhow::Result;

use super::{
    servers::{ServerConfig, Servers},
    BenchEnv, Scenario, ScenarioOutput,
};
use crate::fleet::{SubTransport, System};

/// The systems when `--systems` is not given (plus `herald-baseline` after
/// `herald` when `--baseline-bin` is).
const DEFAULT_SYSTEMS: [System; 3] = [System::Herald, System::Nats, System::Socketio];

/// `compare` flags. Defaults are the full run; `--quick` shrinks them
/// (see [`Args::plan`]).
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Systems to measure: herald, herald-baseline (needs --baseline-bin),
    /// nats, jetstream, socketio [default: herald,nats,socketio, with
    /// herald-baseline after herald when --baseline-bin is given].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub systems: Option<Vec<System>>,
    /// Which scenarios: fanout, many-topics, latency, idle, sse, poll.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "idle,fanout,many-topics,latency,sse,poll"
    )]
    pub only: Vec<String>,
    /// Fan-out subscriber counts [default: 1000,5000,10000; quick: 1000].
    #[arg(long, value_delimiter = ',')]
    pub subs: Option<Vec<usize>>,
    /// Fan-out payload sizes, bytes.
    #[arg(long, value_delimiter = ',', default_value = "64,1024")]
    pub payloads: Vec<usize>,
    /// Topics (one subscriber each) for many-topics [default: 10000; quick: 2000].
    #[arg(long)]
    pub topics: Option<usize>,
    /// Subscribers for the latency scenario [default: 10000; quick: 1000].
    #[arg(long)]
    pub latency_subs: Option<usize>,
    /// Publish rate of the latency scenario, msg/s [default: 1000; quick: 100].
    #[arg(long)]
    pub latency_rate: Option<f64>,
    /// Idle WebSocket connections [default: 15000; quick: 5000].
    #[arg(long)]
    pub idle: Option<usize>,
    /// SSE / long-poll subscriber counts [default: 1000,5000; quick: 1000].
    #[arg(long, value_delimiter = ',')]
    pub http_subs: Option<Vec<usize>>,
    /// Measured seconds per point [default: 10; quick: 3].
    #[arg(short, long)]
    pub duration: Option<f64>,
    /// Publishes awaiting their ack at most (as-fast-as-acked scenarios:
    /// many-topics, and fan-out with `--pace ack`).
    #[arg(short, long, default_value_t = 64)]
    pub window: usize,
    /// What paces the single-topic as-fast-as-possible publisher: `probe`
    /// (publishes not yet delivered to a probe subscriber, at most
    /// `--inflight`) or `ack` (publishes not yet acked, at most `--window`).
    #[arg(long, value_enum, default_value = "probe")]
    pub pace: Pace,
    /// With `--pace probe`: publishes not yet delivered to the probe, at
    /// most; the same at every subscriber count, as a publisher's window is.
    #[arg(long, default_value_t = 16)]
    pub inflight: usize,
    /// With `--pace probe`: bound deliveries (publishes × subscribers) in
    /// flight instead of publishes, i.e. `--inflight` = this / subscribers
    /// (16000 means 16 publishes in flight at 1k subscribers, 1 at 10k).
    #[arg(long)]
    pub inflight_deliveries: Option<usize>,
    /// Run the whole plan N times (interleaved) and keep each (system,
    /// scenario)'s median round by throughput.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Herald's `--durability`.
    #[arg(long, default_value = "always")]
    pub durability: String,
    /// The peer nats-server [default: bench/.venv/bin/nats-server].
    #[arg(long, env = "NATS_PEER_BIN", value_name = "PATH")]
    pub nats_peer_bin: Option<std::path::PathBuf>,
}

/// What limits the publisher's publishes in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Pace {
    /// Not yet delivered to the bench's probe subscriber.
    Probe,
    /// Not yet acknowledged.
    Ack,
}

/// What one measurement point is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One topic, every subscriber on it, as fast as acked.
    Fanout,
    /// A topic per subscriber, publishes round-robin, as fast as acked.
    ManyTopics,
    /// One topic at a fixed rate.
    Latency,
    /// Idle connections, each subscribed to a topic of its own (what an
    /// idle dashboard tab holds); server RSS per connection.
    Idle,
    /// Idle connections with no subscription (handshake only), reported
    /// beside [`Kind::Idle`].
    IdleBare,
}

impl Kind {
    /// Whether the point measures idle connections' memory.
    pub fn is_idle(self) -> bool {
        matches!(self, Kind::Idle | Kind::IdleBare)
    }
}

/// One measurement point (run on every system that supports it).
#[derive(Clone, Debug)]
pub struct Point {
    /// What is measured.
    pub kind: Kind,
    /// Subscribers' transport.
    pub transport: SubTransport,
    /// Subscriber (or idle) connections.
    pub conns: usize,
    /// Distinct topics.
    pub topics: usize,
    /// `data` bytes.
    pub payload: usize,
    /// Fixed publish rate, if any.
    pub rate: Option<f64>,
}

impl Point {
    /// The record's `scenario`: unique per point, e.g. `fanout/1000/64B`.
    pub fn scenario(&self) -> String {
        let t = match self.transport {
            SubTransport::Ws => String::new(),
            other => format!("-{}", other.name()),
        };
        match self.kind {
            Kind::Fanout => format!("fanout{t}/{}/{}B", self.conns, self.payload),
            Kind::ManyTopics => format!("many-topics/{}/{}B", self.topics, self.payload),
            Kind::Latency => format!(
                "latency/{}@{}/{}B",
                self.conns,
                self.rate.unwrap_or(0.0),
                self.payload
            ),
            Kind::Idle => format!("idle-memory/{}", self.conns),
            Kind::IdleBare => format!("idle-memory-bare/{}", self.conns),
        }
    }

    /// Whether `system` can run it: SSE and long-poll are Herald's; idle
    /// connections to JetStream are the core nats-server's (no stream is
    /// involved), so that row would repeat `nats`.
    pub fn supports(&self, system: System) -> bool {
        if self.kind.is_idle() && system == System::Jetstream {
            return false;
        }
        self.transport == SubTransport::Ws || system.is_herald()
    }
}

impl Args {
    /// The systems this run measures.
    pub fn systems(&self, env: &BenchEnv) -> Vec<System> {
        env.systems(self.systems.as_deref(), &DEFAULT_SYSTEMS)
    }

    /// How the servers start.
    pub fn server_config(&self) -> ServerConfig {
        ServerConfig {
            durability: self.durability.clone(),
            nats_peer_bin: self.nats_peer_bin.clone(),
        }
    }

    /// The points to run, in order.
    pub fn plan(&self, quick: bool) -> Vec<Point> {
        let want = |s: &str| self.only.iter().any(|o| o == s);
        let subs = self.subs.clone().unwrap_or_else(|| {
            if quick {
                vec![1000]
            } else {
                vec![1000, 5000, 10_000]
            }
        });
        let mut out = Vec::new();
        let p = |kind, transport, conns, topics, payload, rate| Point {
            kind,
            transport,
            conns,
            topics,
            payload,
            rate,
        };
        if want("idle") {
            let n = self.idle.unwrap_or(if quick { 5000 } else { 15_000 });
            out.push(p(Kind::Idle, SubTransport::Ws, n, n, 0, None));
            out.push(p(Kind::IdleBare, SubTransport::Ws, n, 1, 0, None));
        }
        if want("fanout") {
            for &n in &subs {
                for &b in &self.payloads {
                    out.push(p(Kind::Fanout, SubTransport::Ws, n, 1, b, None));
                }
            }
        }
        if want("many-topics") {
            let n = self.topics.unwrap_or(if quick { 2000 } else { 10_000 });
            out.push(p(Kind::ManyTopics, SubTransport::Ws, n, n, 64, None));
        }
        if want("latency") {
            let n = self
                .latency_subs
                .unwrap_or(if quick { 1000 } else { 10_000 });
            let rate = self
                .latency_rate
                .unwrap_or(if quick { 100.0 } else { 1000.0 });
            out.push(p(Kind::Latency, SubTransport::Ws, n, 1, 64, Some(rate)));
        }
        let http = self.http_subs.clone().unwrap_or_else(|| {
            if quick {
                vec![1000]
            } else {
                vec![1000, 5000]
            }
        });
        for (name, t) in [("sse", SubTransport::Sse), ("poll", SubTransport::Poll)] {
            if want(name) {
                for &n in &http {
                    out.push(p(Kind::Fanout, t, n, 1, 64, None));
                }
            }
        }
        out
    }

    /// Warm-up and measured window.
    pub fn timing(&self, quick: bool) -> (Duration, Duration) {
        let d = self.duration.unwrap_or(if quick { 3.0 } else { 10.0 });
        let warmup = if quick { 0.5 } else { 1.0 };
        (Duration::from_secs_f64(warmup), Duration::from_secs_f64(d))
    }
}

/// The `compare` scenario.
pub struct Compare {
    /// Its flags.
    pub args: Args,
}

impl Scenario for Compare {
    fn name(&self) -> &'static str {
        "compare"
    }

    fn describe(&self, env: &BenchEnv) -> String {
        let plan = self.args.plan(env.quick);
        let (warmup, d) = self.args.timing(env.quick);
        format!(
            "{} points x {:?}, {warmup:?} warm-up + {d:?} each, interleaved: {}",
            plan.len(),
            self.args
                .systems(env)
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>(),
            plan.iter()
                .map(Point::scenario)
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    async fn run(&self, env: &BenchEnv) -> Result<ScenarioOutput> {
        let plan = self.args.plan(env.quick);
        let all_systems = self.args.systems(env);
        let mut servers = Servers::start(&all_systems, &self.args.server_config(), env).await?;
        let mut by_key: Vec<(String, String, Vec<crate::results::Record>)> = Vec::new();
        let rounds = self.args.rounds.max(1);
        for round in 0..rounds {
            for (i, point) in plan.iter().enumerate() {
                // RSS per idle connection only means something on servers
                // that have not grown yet: the first round only
                if point.kind.is_idle() && round > 0 {
                    continue;
                }
                let systems: Vec<System> = all_systems
                    .iter()
                    .copied()
                    .filter(|s| point.supports(*s))
                    .collect();
                let n = systems.len().max(1);
                for k in 0..systems.len() {
                    let system = systems[(i + k + round) % n];
                    eprintln!(
                        "-- {} on {} (round {}/{rounds})",
                        point.scenario(),
                        system.name(),
                        round + 1
                    );
                    let revived = servers.revive(system).await?;
                    // Each idle point on a server that has never held
                    // connections: memory an allocator kept from an earlier
                    // point would be counted as free.
                    if point.kind.is_idle() && i > 0 {
                        servers
                            .restart(system, "a fresh server per idle point")
                            .await?;
                    }
                    let (settled, still_busy) = servers.settle().await;
                    if let Some(note) = &settled {
                        eprintln!("   {note}");
                    }
                    for busy in still_busy {
                        servers.restart(busy, "busy with clients long gone").await?;
                    }
                    let server = servers.get(system);
                    let durability = servers.durability_label(system);
                    match measure::run(&server, point, &self.args, env, durability).await {
                        Ok(mut r) => {
                            r.notes.extend(revived);
                            r.notes.extend(settled);
                            eprintln!("   {}", report::one_line(&r));
                            let key = (r.system.clone(), r.scenario.clone());
                            match by_key
                                .iter_mut()
                                .find(|(s, c, _)| (s, c) == (&key.0, &key.1))
                            {
                                Some((_, _, v)) => v.push(r),
                                None => by_key.push((key.0, key.1, vec![r])),
                            }
                        }
                        Err(e) => {
                            eprintln!("   failed: {e:#}");
                            servers.restart(system, "after the failure").await?;
                        }
                    }
                }
            }
        }
        let records: Vec<crate::results::Record> = by_key
            .into_iter()
            .filter_map(|(_, _, v)| crate::results::median_round(v))
            .collect();
        servers.stop();
        let comparisons = comparisons(&records);
        let details = details(&records);
        Ok(ScenarioOutput {
            records,
            comparisons,
            details,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> Args {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            a: Args,
        }
        T::parse_from(["t"]).a
    }

    #[test]
    fn plans() {
        let a = args();
        let quick = a.plan(true);
        let names: Vec<String> = quick.iter().map(Point::scenario).collect();
        assert_eq!(
            names,
            [
                "idle-memory/5000",
                "idle-memory-bare/5000",
                "fanout/1000/64B",
                "fanout/1000/1024B",
                "many-topics/2000/64B",
                "latency/1000@100/64B",
                "fanout-sse/1000/64B",
                "fanout-poll/1000/64B"
            ]
        );
        assert!(!quick[6].supports(System::Nats));
        assert!(quick[6].supports(System::Herald));
        assert!(quick[6].supports(System::HeraldBaseline));
        assert!(!quick[0].supports(System::Jetstream));
        assert!(quick[2].supports(System::Jetstream));
        let full = a.plan(false);
        assert_eq!(full.len(), 2 + 6 + 1 + 1 + 4);
    }
}
