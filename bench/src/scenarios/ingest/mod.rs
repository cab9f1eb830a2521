//! `ingest` (issue 22): how many durable publishes per second a server
//! acknowledges across many topics, and how long an ack takes, Herald next
//! to nats-server with JetStream (and on request a previous Herald build,
//! core NATS). No subscribers: publishers only, each its own WebSocket
//! connection with a window of publishes in flight, round-robin over the
//! topics. Every measurement gets freshly started servers with empty
//! stores, one system at a time, the order rotating from point to point.
//!
//! Families (`--only`): `ws` (topics × publishers × payload, around the
//! issue's probe of 32 publishers, 10k topics, 256 B), `half-max` (the probe
//! open-loop at half the rate the same system just reached), `rest` and
//! `batch` (Herald's `POST /v1/topics/{t}/messages` and `POST /v1/publish`)
//! and `cluster` (a 3-node Herald cluster, replica acks on).

mod cluster;
mod measure;
mod plan;
mod prime;
mod report;
mod rest;

pub use plan::{Family, Point, PROBE};
pub use report::{comparisons, details};

use anyhow::{bail, Result};

use super::{
    servers::{ServerConfig, Servers},
    BenchEnv, Scenario, ScenarioOutput,
};
use crate::{fleet::System, results::Record};

/// Systems when `--systems` is not given (plus `herald-baseline`).
const DEFAULT_SYSTEMS: [System; 2] = [System::Herald, System::Jetstream];

/// `ingest` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Systems: herald, herald-baseline (needs --baseline-bin), jetstream,
    /// nats (core, no persistence), socketio [default: herald,jetstream,
    /// with herald-baseline after herald when --baseline-bin is given].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub systems: Option<Vec<System>>,
    /// Families: ws, half-max, rest, batch, cluster.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ws,half-max,rest,batch,cluster"
    )]
    pub only: Vec<String>,
    /// Topic counts of the `ws` sweep [default: 1,100,10000,100000; quick: 1,10000].
    #[arg(long, value_delimiter = ',')]
    pub topics: Option<Vec<usize>>,
    /// Publisher counts of the `ws` sweep [default: 1,8,32,128; quick: 32].
    #[arg(long, value_delimiter = ',')]
    pub publishers: Option<Vec<usize>>,
    /// Payload sizes of the `ws` sweep, bytes [default: 64,256,4096; quick: 256].
    #[arg(long, value_delimiter = ',')]
    pub payloads: Option<Vec<usize>>,
    /// Every topics × publishers × payload combination (48 points by
    /// default) instead of one axis at a time around the probe (9 points).
    #[arg(long)]
    pub matrix: bool,
    /// Publishes one WebSocket publisher may have awaiting their ack.
    #[arg(short, long, default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub window: u16,
    /// Keep-alive connections of the `rest` point (one request in flight each).
    #[arg(long, default_value_t = 64)]
    pub rest_conns: usize,
    /// Connections of the `batch` point (one batch in flight each).
    #[arg(long, default_value_t = 8)]
    pub batch_conns: usize,
    /// Items per `POST /v1/publish` batch.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Every publish carries a unique idempotency key, as the official
    /// clients send (Herald: `idempotency_key` / `Idempotency-Key`;
    /// JetStream: a `Nats-Msg-Id` header, deduplicated in its window).
    #[arg(long)]
    pub keyed: bool,
    /// Measure on topics that do not exist yet: skip the priming publish
    /// to every topic before each point's warm-up.
    #[arg(long)]
    pub no_prime: bool,
    /// Measured seconds per point [default: 10; quick: 3].
    #[arg(short, long)]
    pub duration: Option<f64>,
    /// Run the plan N times (interleaved); each record is its median round.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Herald's `--durability` (`always` or `relaxed`); JetStream gets
    /// `sync_interval: always` beside `always`, its default beside `relaxed`.
    #[arg(long, default_value = "always")]
    pub durability: String,
    /// The peer nats-server [default: bench/.venv/bin/nats-server].
    #[arg(long, env = "NATS_PEER_BIN", value_name = "PATH")]
    pub nats_peer_bin: Option<std::path::PathBuf>,
}

impl Args {
    /// The systems this run measures.
    pub fn systems(&self, env: &BenchEnv) -> Vec<System> {
        env.systems(self.systems.as_deref(), &DEFAULT_SYSTEMS)
    }

    /// How servers start.
    pub fn server_config(&self) -> ServerConfig {
        ServerConfig {
            durability: self.durability.clone(),
            nats_peer_bin: self.nats_peer_bin.clone(),
        }
    }
}

/// The `ingest` scenario.
pub struct Ingest {
    /// Its flags.
    pub args: Args,
}

impl Scenario for Ingest {
    fn name(&self) -> &'static str {
        "ingest"
    }

    fn describe(&self, env: &BenchEnv) -> String {
        let plan = self.args.plan(env.quick);
        let (warmup, d) = self.args.timing(env.quick);
        format!(
            "{} points x {:?}, {warmup:?} warm-up + {d:?} each, fresh servers per measurement, Herald --durability {}: {}",
            plan.len(),
            self.args
                .systems(env)
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>(),
            self.args.durability,
            plan.iter()
                .map(Point::scenario)
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    async fn run(&self, env: &BenchEnv) -> Result<ScenarioOutput> {
        let plan = self.args.plan(env.quick);
        if plan.is_empty() {
            bail!("nothing to run: --only takes ws, half-max, rest, batch, cluster");
        }
        let systems = self.args.systems(env);
        for s in systems.iter().filter(|s| s.is_herald()) {
            env.herald_binary(*s)?;
        }
        let config = self.args.server_config();
        let rounds = self.args.rounds.max(1);
        let mut by_key: Vec<(String, String, Vec<Record>)> = Vec::new();
        for round in 0..rounds {
            let mut this_round: Vec<(System, Point, f64)> = Vec::new();
            for (i, point) in plan.iter().enumerate() {
                let runs: Vec<System> = systems
                    .iter()
                    .copied()
                    .filter(|s| point.supports(*s))
                    .collect();
                let n = runs.len().max(1);
                for k in 0..runs.len() {
                    let system = runs[(i + k + round) % n];
                    eprintln!(
                        "-- {} on {} (round {}/{rounds})",
                        point.scenario(),
                        system.name(),
                        round + 1
                    );
                    let rate = match point.family {
                        Family::HalfMax => {
                            let max = point.max_point();
                            match this_round
                                .iter()
                                .find(|(s, p, _)| *s == system && *p == max)
                            {
                                Some((_, _, r)) => Some(r / 2.0),
                                None => {
                                    eprintln!("   skipped: no maximum measured for it this round");
                                    continue;
                                }
                            }
                        }
                        _ => None,
                    };
                    let result = if point.family == Family::Cluster {
                        cluster::run(system, point, &self.args, env).await
                    } else {
                        let mut servers = Servers::start(&[system], &config, env).await?;
                        let server = servers.get(system);
                        let label = servers.durability_label(system);
                        let r = measure::run(&server, point, rate, &self.args, env, label).await;
                        servers.stop();
                        r
                    };
                    match result {
                        Ok(r) => {
                            eprintln!("   {}", report::one_line(&r));
                            this_round.push((system, point.clone(), r.delivered_per_s));
                            match by_key
                                .iter_mut()
                                .find(|(s, c, _)| *s == r.system && *c == r.scenario)
                            {
                                Some((_, _, v)) => v.push(r),
                                None => {
                                    by_key.push((r.system.clone(), r.scenario.clone(), vec![r]))
                                }
                            }
                        }
                        Err(e) => eprintln!("   failed: {e:#}"),
                    }
                }
            }
        }
        let records: Vec<Record> = by_key
            .into_iter()
            .filter_map(|(_, _, v)| crate::results::median_round(v))
            .collect();
        Ok(ScenarioOutput {
            comparisons: comparisons(&records),
            details: details(&records),
            records,
        })
    }
}
