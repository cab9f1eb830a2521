//! `cross-node-latency`: publish→deliver latency through a 3-node Herald
//! cluster (over a real `nats-server`) next to a single node, in one run.
//!
//! The bench starts a lone `herald serve` and, beside it, `nats-server` plus
//! three `herald serve --nats … --node-id nN`, waits until every node is
//! ready and the cluster view has settled, then measures each system in
//! turn (interleaved over `--rounds`): one WebSocket publisher at a fixed
//! rate on the single node / on `n1`, and `-s` subscribers per node (on the
//! single node; on each of `n1`, `n2`, `n3`). Every message carries its send
//! time on a monotonic clock this process shares with its subscribers, so
//! latency is receive time − send time with no clock skew. Each subscriber
//! must receive every acknowledged seq exactly once, in order.
//!
//! Records: `cross-node-latency/single` (publisher and subscribers on one
//! node, no NATS), `…/cluster-local` (subscribers on `n1`, the publisher's
//! node) and `…/cluster-remote` (on `n2` and `n3`), with the latency by node
//! in `by_node` — the topic's owner (which sequences it) is one of them.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{bail, Context, Result};
use futures_util::future::try_join_all;
use tokio::{sync::watch, task::JoinSet, time::Instant};

use super::{BenchEnv, Scenario, ScenarioOutput};
use crate::{
    load::{
        latency::{self, PublisherReport, SubscriberReport},
        ws, Timing,
    },
    procstat::{self, CpuWindow, Proc},
    progress::Progress,
    results::{ms, thousands, Comparison, NodeLatency, Record},
    stats::{round3, LatencyHistogram},
    system::{
        herald::{self, HeraldOptions, HeraldServer},
        nats::{self, NatsServer},
        ServerUnderTest, StopOutcome,
    },
};

/// How long deliveries and acks are awaited after the measured window.
const DRAIN: Duration = Duration::from_secs(5);
/// A graceful stop slower than this is worth a note.
const SLOW_SHUTDOWN: Duration = Duration::from_secs(3);
/// Cluster node ids; `n1` gets the publisher.
const NODES: [&str; 3] = ["n1", "n2", "n3"];
/// Scenario name prefix.
const NAME: &str = "cross-node-latency";

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Subscribers per node (single node: on it; cluster: on each of n1, n2, n3).
    #[arg(short = 's', long, default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub subscribers: u32,
    /// Publishes per second (one publisher, one WebSocket connection).
    #[arg(short = 'r', long, default_value_t = 1000.0, value_name = "MSG_PER_S")]
    pub rate: f64,
    /// Measured seconds per system and round [default: 10, or 3 with --quick].
    #[arg(short = 'd', long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Warm-up seconds before measuring, not counted [default: 1, or 0.5 with --quick].
    #[arg(long, value_name = "SECS")]
    pub warmup: Option<f64>,
    /// Size of each message's `data` (a JSON object with the send time, padded).
    #[arg(short = 'b', long, default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(40..=1_000_000))]
    pub payload_bytes: u64,
    /// Measure single, cluster, cluster, single, … this many rounds in total
    /// per system; the records merge every round's samples.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,
    /// The topic (its owner in the cluster follows from the name).
    #[arg(long, default_value = "bench.lat")]
    pub topic: String,
    /// Seconds to wait after every node reports ready, for the view to settle.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub settle: f64,
    /// The nats-server binary [default: /usr/sbin/nats-server, else on PATH].
    #[arg(long, env = "NATS_SERVER_BIN", value_name = "PATH")]
    pub nats_server_bin: Option<PathBuf>,
}

pub struct CrossNodeLatency {
    pub args: Args,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum System {
    Single,
    Cluster,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Single => "single",
            System::Cluster => "cluster",
        }
    }
}

/// Where subscribers sit relative to the publisher.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Placement {
    /// Single node: publisher and subscribers on it, no NATS.
    Single,
    /// Cluster, subscribers on the publisher's node.
    ClusterLocal,
    /// Cluster, subscribers on the other nodes.
    ClusterRemote,
}

impl Placement {
    const ALL: [Placement; 3] = [
        Placement::Single,
        Placement::ClusterLocal,
        Placement::ClusterRemote,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Placement::Single => "single",
            Placement::ClusterLocal => "cluster-local",
            Placement::ClusterRemote => "cluster-remote",
        }
    }

    fn system(self) -> System {
        match self {
            Placement::Single => System::Single,
            _ => System::Cluster,
        }
    }
}

/// The member that owns (sequences) `topic`: the highest score.
pub fn rendezvous_owner<'a>(members: &[&'a str], topic: &str) -> Option<&'a str> {
    herald_core::owner::owner(members.iter().copied(), topic)
}

/// The members a node sees live (`nodes[].id` of its `/v1/stats`), or
/// `None` while it cannot say.
pub(crate) async fn view(node: &HeraldServer) -> Option<Vec<String>> {
    let (status, body) = crate::http::get(node.addr(), "/v1/stats", Duration::from_secs(5))
        .await
        .ok()?;
    if !status.is_success() {
        return None;
    }
    members(&serde_json::from_slice(&body).ok()?)
}

/// The member ids listed in a `/v1/stats` answer.
fn members(stats: &serde_json::Value) -> Option<Vec<String>> {
    stats["nodes"]
        .as_array()?
        .iter()
        .map(|n| n["id"].as_str().map(str::to_string))
        .collect()
}

/// How many messages a node sequenced (`herald_messages_published_total`
/// on its `/metrics`): in a cluster only a topic's owner counts them, so
/// with one topic published the node with a count is its owner.
async fn sequenced(node: &HeraldServer) -> Result<u64> {
    let (status, body) = crate::http::get(node.addr(), "/metrics", Duration::from_secs(5)).await?;
    if !status.is_success() {
        bail!("GET /metrics: {status}");
    }
    published_total(&String::from_utf8_lossy(&body)).context("no herald_messages_published_total")
}

/// The value of `herald_messages_published_total` in a metrics text.
fn published_total(metrics: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("herald_messages_published_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Everything started for the run.
struct Servers {
    single: HeraldServer,
    nats: NatsServer,
    /// n1, n2, n3.
    nodes: Vec<HeraldServer>,
}

impl Servers {
    /// (label, pid) of the processes serving `system`.
    fn procs(&self, system: System) -> Vec<(String, u32)> {
        match system {
            System::Single => vec![("herald".into(), self.single.pid())],
            System::Cluster => NODES
                .iter()
                .zip(&self.nodes)
                .map(|(id, n)| (id.to_string(), n.pid()))
                .chain([("nats-server".to_string(), self.nats.pid())])
                .collect(),
        }
    }
}

/// One node's subscribers in one round.
struct NodeRound {
    node: String,
    placement: Placement,
    role: String,
    subscribers: u64,
    report: SubscriberReport,
    /// Messages missing, duplicated or out of order, summed over subscribers.
    delivery_errors: u64,
    notes: Vec<String>,
}

/// One system measured once.
struct Round {
    system: System,
    nodes: Vec<NodeRound>,
    publisher: PublisherReport,
    secs: f64,
    /// (label, CPU %, peak RSS KiB) per server process.
    procs: Vec<(String, f64, u64)>,
    threads: BTreeMap<String, f64>,
    gen_cpu: f64,
    host_busy: Option<f64>,
    notes: Vec<String>,
}

impl CrossNodeLatency {
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

    fn owner(&self) -> &'static str {
        rendezvous_owner(&NODES, &self.args.topic).expect("three nodes")
    }

    /// What node `i` of the cluster is to this measurement.
    fn role(&self, i: usize, owner: &str) -> String {
        let mut role = if i == 0 { "publisher's node" } else { "remote" }.to_string();
        if NODES[i] == owner {
            role.push_str(", topic owner");
        }
        role
    }

    async fn start(&self, env: &BenchEnv) -> Result<Servers> {
        let binary = herald::locate_binary(env.herald_bin.as_deref())?;
        let nats_bin = nats::locate_binary(self.args.nats_server_bin.as_deref())?;
        eprintln!(
            "herald binary: {}\nnats-server binary: {}",
            binary.display(),
            nats_bin.display()
        );
        let opts = |nats: Option<String>, node_id: Option<&str>| HeraldOptions {
            binary: binary.clone(),
            durability: "always".into(),
            data_root: env.data_root.clone(),
            extra_args: env.herald_args.clone(),
            nats,
            node_id: node_id.map(str::to_string),
        };
        let nats = tokio::task::spawn_blocking(move || NatsServer::start(&nats_bin))
            .await
            .context("nats-server start task")??;
        let url = nats.url();
        let single = {
            let o = opts(None, None);
            tokio::task::spawn_blocking(move || HeraldServer::start(&o))
        };
        let nodes = NODES.map(|id| {
            let o = opts(Some(url.clone()), Some(id));
            tokio::task::spawn_blocking(move || HeraldServer::start(&o))
        });
        let mut single = single.await.context("server start task")??;
        let mut started = Vec::new();
        for node in nodes {
            started.push(node.await.context("server start task")??);
        }
        let mut nodes = started;
        let limit = Duration::from_secs(30);
        single.wait_ready(limit).await?;
        try_join_all(nodes.iter_mut().map(|n| n.wait_ready(limit)))
            .await
            .with_context(|| format!("nats-server's last output:\n{}", nats.log_tail()))?;
        eprintln!(
            "single node on {}; cluster: nats-server {} (pid {}), {}; all ready, settling {:.1} s",
            single.addr(),
            url,
            nats.pid(),
            NODES
                .iter()
                .zip(&nodes)
                .map(|(id, n)| format!("{id} on {} (pid {})", n.addr(), n.pid()))
                .collect::<Vec<_>>()
                .join(", "),
            self.args.settle
        );
        tokio::time::sleep(Duration::from_secs_f64(self.args.settle.max(0.0))).await;
        // Every node must see all three before anything is measured.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut views: Vec<Option<Vec<String>>> = Vec::new();
            for n in &nodes {
                views.push(view(n).await);
            }
            let settled = views.iter().all(|v| {
                v.as_ref()
                    .is_some_and(|m| NODES.iter().all(|id| m.iter().any(|x| x == id)))
            });
            if settled {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "the cluster view did not settle on {NODES:?}: the nodes' last views are {views:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(Servers {
            single,
            nats,
            nodes,
        })
    }

    async fn measure(
        &self,
        env: &BenchEnv,
        servers: &Servers,
        system: System,
        round: u32,
    ) -> Result<Round> {
        let a = &self.args;
        let label = format!("{} r{round}", system.name());
        let owner = self.owner();
        // (node, placement, role, address) of each subscriber group; the
        // first one also gets the publisher.
        let targets: Vec<(String, Placement, String, SocketAddr)> = match system {
            System::Single => vec![(
                "single".into(),
                Placement::Single,
                "publisher's node".into(),
                servers.single.addr(),
            )],
            System::Cluster => NODES
                .iter()
                .zip(&servers.nodes)
                .enumerate()
                .map(|(i, (id, n))| {
                    let placement = if i == 0 {
                        Placement::ClusterLocal
                    } else {
                        Placement::ClusterRemote
                    };
                    (id.to_string(), placement, self.role(i, owner), n.addr())
                })
                .collect(),
        };
        let procs = servers.procs(system);
        let per_node = a.subscribers as usize;
        let subscribers = try_join_all(targets.iter().enumerate().flat_map(|(g, t)| {
            let (addr, topic) = (t.3, a.topic.as_str());
            (0..per_node).map(move |_| async move {
                latency::subscribe(addr, topic).await.map(|ws| (g, ws))
            })
        }))
        .await
        .context("connecting subscribers")?;
        let publisher = ws::connect(targets[0].3)
            .await
            .context("connecting the publisher")?;
        eprintln!(
            "[{label}] {} subscribers subscribed to {} ({} per node); publishing {} msg/s on {}",
            subscribers.len(),
            a.topic,
            per_node,
            a.rate,
            targets[0].0,
        );

        let warmup = self.warmup(env);
        let duration = self.duration(env);
        let timing = Timing::starting_now(warmup, duration, DRAIN);
        let (done_tx, done_rx) = watch::channel(None);
        let delivered = Arc::new(AtomicU64::new(0));
        let pub_task = {
            let topic = a.topic.clone();
            let (rate, bytes) = (a.rate, a.payload_bytes as usize);
            tokio::spawn(async move {
                latency::run_publisher(publisher, &topic, rate, bytes, timing, done_tx).await
            })
        };
        let mut sub_tasks = JoinSet::new();
        for (g, ws) in subscribers {
            let (done, delivered) = (done_rx.clone(), delivered.clone());
            sub_tasks.spawn(async move {
                (
                    g,
                    latency::run_subscriber(ws, timing, done, &delivered).await,
                )
            });
        }

        // Monitor: RSS peaks, CPU over the measured window, progress.
        let pids: Vec<Proc> = procs.iter().map(|(_, pid)| Proc::Pid(*pid)).collect();
        let mut cpu_procs = vec![Proc::SelfProc];
        cpu_procs.extend(&pids);
        let mut rss = vec![0u64; pids.len()];
        let progress = Progress::new(env.progress, &label, warmup + duration);
        let mut tick = tokio::time::interval(procstat::SAMPLE_EVERY);
        let mut cpu: Option<CpuWindow> = None;
        let mut thread_windows: Vec<(String, CpuWindow)> = Vec::new();
        let mut rate_mark = (Instant::now(), 0u64);
        let mut rate = 0.0;
        loop {
            tick.tick().await;
            let now = Instant::now();
            for (peak, p) in rss.iter_mut().zip(&pids) {
                if let Ok(kib) = procstat::rss_kib(*p) {
                    *peak = (*peak).max(kib);
                }
            }
            if cpu.is_none() && now >= timing.measure_from {
                cpu = Some(CpuWindow::start(&cpu_procs));
                // per-thread breakdown of every herald process
                thread_windows = procs
                    .iter()
                    .filter(|(name, _)| name != "nats-server")
                    .map(|(name, pid)| {
                        let w = CpuWindow::start(&[Proc::Pid(*pid)]).with_threads_of(*pid);
                        (name.clone(), w)
                    })
                    .collect();
            }
            if now >= timing.stop_at {
                break;
            }
            let got = delivered.load(Ordering::Relaxed);
            let since = now - rate_mark.0;
            if since >= Duration::from_millis(500) {
                rate = (got - rate_mark.1) as f64 / since.as_secs_f64();
                rate_mark = (now, got);
            }
            let phase = if now < timing.measure_from {
                "warm-up"
            } else {
                "measuring"
            };
            progress.update(
                now - timing.origin,
                format!("{phase} {} deliveries/s", thousands(rate)),
            );
        }
        let cpu = cpu.unwrap_or_else(|| CpuWindow::start(&cpu_procs)).finish();
        // `thread` alone for the single node, `n1/thread` for cluster nodes
        let mut threads = BTreeMap::new();
        for (name, w) in &thread_windows {
            for (thread, pct) in w.finish().threads_pct {
                let key = match system {
                    System::Single => thread,
                    System::Cluster => format!("{name}/{thread}"),
                };
                threads.insert(key, pct);
            }
        }
        progress.finish();

        let publisher = pub_task.await.context("publisher task panicked")?;
        let mut groups: Vec<Vec<SubscriberReport>> = vec![Vec::new(); targets.len()];
        while let Some(done) = sub_tasks.join_next().await {
            let (g, rep) = done.context("subscriber task panicked")?;
            groups[g].push(rep);
        }

        let mut notes = Vec::new();
        if let Some(f) = &publisher.failure {
            notes.push(format!("publisher connection failure: {f}"));
        }
        if publisher.errors > 0 {
            notes.push(format!(
                "{} publishes refused, first: {}",
                publisher.errors,
                publisher.first_error.as_deref().unwrap_or("?")
            ));
        }
        if publisher.unanswered > 0 {
            notes.push(format!(
                "{} publishes unanswered {DRAIN:?} after the window",
                publisher.unanswered
            ));
        }
        if publisher.window_waits > 0 {
            notes.push(format!(
                "{} publishes waited for one of the {} window slots (acks slower than {} ms)",
                publisher.window_waits,
                latency::PUBLISH_WINDOW,
                (latency::PUBLISH_WINDOW as f64 / a.rate * 1000.0).round()
            ));
        }
        // Every subscriber must get exactly the acknowledged seqs.
        let (first, last) = match publisher.first_seq {
            Some(f) => (f, publisher.last_seq),
            None => (1, 0),
        };
        if last >= first && last - first + 1 != publisher.acked_total {
            notes.push(format!(
                "{} acks for seqs {first}..={last}: not one ack per seq",
                publisher.acked_total
            ));
        }
        let mut nodes = Vec::new();
        for ((node, placement, role, _), reps) in targets.into_iter().zip(groups) {
            let mut merged = SubscriberReport::default();
            let mut delivery_errors = 0;
            let mut bad = 0;
            let mut first_problem = None;
            for rep in &reps {
                merged.merge(rep);
                let mut problems = rep.seqs.problems(first, last);
                if let Some(f) = &rep.failure {
                    problems.push(f.clone());
                }
                if let Some(e) = &rep.first_error {
                    problems.push(format!("{} error frames, first: {e}", rep.errors));
                }
                delivery_errors += rep.seqs.error_count(first, last) + rep.errors;
                if !problems.is_empty() {
                    bad += 1;
                    first_problem.get_or_insert(problems.join("; "));
                }
            }
            let mut node_notes = Vec::new();
            if bad > 0 {
                node_notes.push(format!(
                    "{node}: {bad} of {} subscribers did not get seqs {first}..={last} exactly once in order, e.g. {}",
                    reps.len(),
                    first_problem.unwrap_or_default()
                ));
            }
            nodes.push(NodeRound {
                node,
                placement,
                role,
                subscribers: reps.len() as u64,
                report: merged,
                delivery_errors,
                notes: node_notes,
            });
        }

        let secs = timing.measured().as_secs_f64();
        let ack = publisher.ack_latency.summary();
        eprintln!(
            "[{label}] {} publishes acked (seqs {first}..={last}), publish->ack p50 {} ms, p99 {} ms; server CPU {:.0}%, generator CPU {:.0}%",
            thousands(publisher.acked_total as f64),
            ms(ack.p50_ms),
            ms(ack.p99_ms),
            cpu.per_proc_pct[1..].iter().filter(|v| v.is_finite()).sum::<f64>(),
            cpu.per_proc_pct[0],
        );
        for n in &nodes {
            let s = n.report.latency.summary();
            eprintln!(
                "[{label}] {} ({}): {} subscribers, publish->deliver p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms; {} delivery errors",
                n.node,
                n.role,
                n.subscribers,
                ms(s.p50_ms),
                ms(s.p99_ms),
                ms(s.p999_ms),
                ms(s.max_ms),
                n.delivery_errors
            );
        }
        for note in notes.iter().chain(nodes.iter().flat_map(|n| &n.notes)) {
            eprintln!("[{label}] note: {note}");
        }
        if nodes.iter().all(|n| n.report.received_in_window == 0) {
            bail!(
                "[{label}] no delivery of a message sent in the measured window{}",
                notes
                    .iter()
                    .chain(nodes.iter().flat_map(|n| &n.notes))
                    .map(|n| format!("\n  {n}"))
                    .collect::<String>()
            );
        }
        Ok(Round {
            system,
            nodes,
            publisher,
            secs,
            procs: procs
                .iter()
                .zip(&cpu.per_proc_pct[1..])
                .zip(&rss)
                .map(|(((name, _), c), r)| (name.clone(), *c, *r))
                .collect(),
            threads,
            gen_cpu: cpu.per_proc_pct[0],
            host_busy: cpu.host_busy_pct,
            notes,
        })
    }

    /// One record per placement, merging every round's samples.
    fn records(
        &self,
        env: &BenchEnv,
        rounds: &[Round],
        idle_rss: &BTreeMap<String, u64>,
        owner: &str,
    ) -> Vec<Record> {
        let a = &self.args;
        let mut out = Vec::new();
        for placement in Placement::ALL {
            let system = placement.system();
            let rounds: Vec<&Round> = rounds.iter().filter(|r| r.system == system).collect();
            if rounds.is_empty() {
                continue;
            }
            let mut hist = LatencyHistogram::new();
            let mut ack = LatencyHistogram::new();
            let mut by_node: BTreeMap<String, (String, u64, LatencyHistogram)> = BTreeMap::new();
            let (mut rounds_p50, mut rounds_p99, mut rounds_rate) =
                (Vec::new(), Vec::new(), Vec::new());
            let (mut delivered, mut secs, mut errors, mut acked) = (0u64, 0.0, 0u64, 0u64);
            let mut subscribers = 0;
            let mut slowest: Option<(Duration, Duration)> = None;
            let mut notes = Vec::new();
            let mut procs_cpu: BTreeMap<String, f64> = BTreeMap::new();
            let mut procs_rss: BTreeMap<String, u64> = BTreeMap::new();
            let mut threads: BTreeMap<String, f64> = BTreeMap::new();
            let (mut gen_cpu, mut host, mut host_n) = (0.0, 0.0, 0);
            for r in &rounds {
                let mut round_hist = LatencyHistogram::new();
                let mut round_delivered = 0;
                subscribers = 0;
                for n in r.nodes.iter().filter(|n| n.placement == placement) {
                    round_hist.merge(&n.report.latency);
                    round_delivered += n.report.received_in_window;
                    subscribers += n.subscribers;
                    errors += n.delivery_errors;
                    if let Some((l, at)) = n.report.slowest {
                        if slowest.is_none_or(|(m, _)| l > m) {
                            slowest = Some((l, at));
                        }
                    }
                    let e = by_node.entry(n.node.clone()).or_insert_with(|| {
                        (n.role.clone(), n.subscribers, LatencyHistogram::new())
                    });
                    e.2.merge(&n.report.latency);
                    notes.extend(n.notes.iter().cloned());
                }
                let s = round_hist.summary();
                rounds_p50.push(round3(s.p50_ms));
                rounds_p99.push(round3(s.p99_ms));
                rounds_rate.push((round_delivered as f64 / r.secs).round());
                hist.merge(&round_hist);
                delivered += round_delivered;
                secs += r.secs;
                ack.merge(&r.publisher.ack_latency);
                acked += r.publisher.acked_in_window;
                errors += r.publisher.errors;
                notes.extend(r.notes.iter().cloned());
                for (name, c, rss) in &r.procs {
                    *procs_cpu.entry(name.clone()).or_default() += c / rounds.len() as f64;
                    let peak = procs_rss.entry(name.clone()).or_default();
                    *peak = (*peak).max(*rss);
                }
                for (name, c) in &r.threads {
                    *threads.entry(name.clone()).or_default() += c / rounds.len() as f64;
                }
                gen_cpu += r.gen_cpu / rounds.len() as f64;
                if let Some(h) = r.host_busy {
                    host += h;
                    host_n += 1;
                }
            }
            let lat = hist.summary();
            let acks = ack.summary();
            let several = rounds.len() > 1;
            let cluster = system == System::Cluster;
            out.push(Record {
                system: "herald".into(),
                scenario: format!("{NAME}/{}", placement.name()),
                subscribers,
                publish_rate: a.rate,
                payload_bytes: a.payload_bytes,
                delivered_per_s: (delivered as f64 / secs).round(),
                p50_ms: round3(lat.p50_ms),
                p99_ms: round3(lat.p99_ms),
                p999_ms: round3(lat.p999_ms),
                server_rss_kib: procs_rss.values().sum(),
                latency: Some("publish->deliver".into()),
                max_ms: Some(round3(lat.max_ms)),
                max_at_s: slowest.map(|(_, at)| round3(at.as_secs_f64())),
                mean_ms: Some(round3(lat.mean_ms)),
                acked_per_s: Some((acked as f64 / secs).round()),
                acked: Some(acked),
                errors: Some(errors),
                publishers: Some(1),
                window: Some(latency::PUBLISH_WINDOW as u64),
                transport: Some("ws".into()),
                durability: Some("always".into()),
                topics: Some(1),
                duration_s: Some(round3(secs / rounds.len() as f64)),
                server_rss_idle_kib: Some(
                    procs_rss
                        .keys()
                        .filter_map(|k| idle_rss.get(&format!("{}/{k}", system.name())))
                        .sum(),
                ),
                server_cpu_pct: Some(round1(procs_cpu.values().filter(|v| v.is_finite()).sum())),
                server_threads_cpu_pct: threads.into_iter().map(|(k, v)| (k, round1(v))).collect(),
                generator_cpu_pct: Some(round1(gen_cpu)),
                generator_threads: Some(env.gen_threads as u64),
                generator_processes: Some(1),
                host_cpu_busy_pct: (host_n > 0).then(|| round1(host / host_n as f64)),
                host_cores: Some(procstat::host_cores() as u64),
                measured_at: Some(unix_now()),
                rounds_delivered_per_s: if several { rounds_rate } else { Vec::new() },
                notes,
                nodes: Some(if cluster { 3 } else { 1 }),
                topic_owner: cluster.then(|| owner.to_string()),
                ack_p50_ms: Some(round3(acks.p50_ms)),
                ack_p99_ms: Some(round3(acks.p99_ms)),
                rounds_p50_ms: if several { rounds_p50 } else { Vec::new() },
                rounds_p99_ms: if several { rounds_p99 } else { Vec::new() },
                server_procs_cpu_pct: if cluster {
                    procs_cpu.into_iter().map(|(k, v)| (k, round1(v))).collect()
                } else {
                    BTreeMap::new()
                },
                server_procs_rss_kib: if cluster { procs_rss } else { BTreeMap::new() },
                idle_connections: None,
                pacing: None,
                subscriber_reconnects: None,
                generator_busiest_proc_cpu_pct: None,
                rss_per_conn_bytes: None,
                subscribers_failed: None,
                subscribers_closed: None,
                by_node: by_node
                    .into_iter()
                    .map(|(node, (role, subs, h))| {
                        let s = h.summary();
                        (
                            node,
                            NodeLatency {
                                role,
                                subscribers: subs,
                                p50_ms: round3(s.p50_ms),
                                p99_ms: round3(s.p99_ms),
                                p999_ms: round3(s.p999_ms),
                                max_ms: round3(s.max_ms),
                            },
                        )
                    })
                    .collect(),
                ..Record::default()
            });
        }
        out
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

/// Stops a server off the runtime and says what was odd about it
/// (`check_status`: also a non-zero exit; nats-server exits with 1 on
/// SIGTERM, which means nothing).
async fn stop_note(
    name: &str,
    check_status: bool,
    stop: impl FnOnce() -> StopOutcome + Send + 'static,
) -> Option<String> {
    let outcome = tokio::task::spawn_blocking(stop).await.ok()?;
    if outcome.killed {
        Some(format!(
            "{name} ignored SIGTERM for {:?} and was killed",
            outcome.took
        ))
    } else if outcome.took > SLOW_SHUTDOWN {
        Some(format!("{name}: graceful shutdown took {:?}", outcome.took))
    } else {
        outcome
            .status
            .filter(|s| check_status && !s.success())
            .map(|s| format!("{name} exited with {s}"))
    }
}

/// The per-node breakdown printed under the table.
pub fn breakdown(records: &[Record]) -> Vec<String> {
    let mine: Vec<&Record> = records
        .iter()
        .filter(|r| r.scenario.starts_with(&format!("{NAME}/")))
        .collect();
    if mine.is_empty() {
        return Vec::new();
    }
    let mut rows = vec![[
        "record".to_string(),
        "node".into(),
        "role".into(),
        "subs".into(),
        "p50 ms".into(),
        "p99 ms".into(),
        "p99.9 ms".into(),
        "max ms".into(),
    ]];
    for r in &mine {
        for (node, n) in &r.by_node {
            rows.push([
                r.scenario.trim_start_matches(&format!("{NAME}/")).into(),
                node.clone(),
                n.role.clone(),
                n.subscribers.to_string(),
                ms(n.p50_ms),
                ms(n.p99_ms),
                ms(n.p999_ms),
                ms(n.max_ms),
            ]);
        }
    }
    let mut widths = [0usize; 8];
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = vec!["publish->deliver by the subscribers' node:".to_string()];
    for row in &rows {
        let mut line = String::from("  ");
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            if i < 3 {
                line.push_str(&format!("{c:<w$}  "));
            } else {
                line.push_str(&format!("{c:>w$}  "));
            }
        }
        out.push(line.trim_end().to_string());
    }
    let acks: Vec<String> = mine
        .iter()
        .filter(|r| r.scenario.ends_with("/single") || r.scenario.ends_with("/cluster-local"))
        .filter_map(|r| {
            Some(format!(
                "{} p50 {} ms, p99 {} ms",
                if r.nodes == Some(3) {
                    "cluster (publisher on n1)"
                } else {
                    "single"
                },
                ms(r.ack_p50_ms?),
                ms(r.ack_p99_ms?)
            ))
        })
        .collect();
    if !acks.is_empty() {
        out.push(format!("publish->ack: {}", acks.join("; ")));
    }
    if let Some(owner) = mine.iter().find_map(|r| r.topic_owner.as_deref()) {
        out.push(format!(
            "topic owner (sequences it; the others forward to it): {owner}"
        ));
    }
    for r in mine.iter().filter(|r| !r.rounds_p50_ms.is_empty()) {
        out.push(format!(
            "rounds {} p50/p99 ms: {}",
            r.scenario.trim_start_matches(&format!("{NAME}/")),
            r.rounds_p50_ms
                .iter()
                .zip(&r.rounds_p99_ms)
                .map(|(a, b)| format!("{}/{}", ms(*a), ms(*b)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out
}

impl Scenario for CrossNodeLatency {
    fn name(&self) -> &'static str {
        NAME
    }

    fn describe(&self, env: &BenchEnv) -> String {
        let a = &self.args;
        format!(
            "{NAME}: 1 WebSocket publisher at {} msg/s, {} B payload, topic {} (cluster owner {}), {} subscribers per node; \
             single node vs 3-node cluster over nats-server (publisher on n1), {:?} warm-up + {:?} per system{}, generator threads {}",
            a.rate,
            a.payload_bytes,
            a.topic,
            self.owner(),
            a.subscribers,
            self.warmup(env),
            self.duration(env),
            match a.rounds {
                1 => String::new(),
                n => format!(" x {n} interleaved rounds (samples merged)"),
            },
            env.gen_threads,
        )
    }

    async fn run(&self, env: &BenchEnv) -> Result<ScenarioOutput> {
        if !(self.args.rate > 0.0 && self.args.rate <= 100_000.0) {
            bail!("--rate must be in (0, 100000] msg/s");
        }
        if self.args.topic.is_empty()
            || self.args.topic.contains(['*', '>', '"', '\\', ' '])
            || self.args.topic.split('.').any(str::is_empty)
        {
            bail!("--topic must be a concrete topic like bench.lat");
        }
        let servers = self.start(env).await?;
        let mut idle_rss = BTreeMap::new();
        for system in [System::Single, System::Cluster] {
            for (name, pid) in servers.procs(system) {
                if let Ok(kib) = procstat::rss_kib(Proc::Pid(pid)) {
                    idle_rss.insert(format!("{}/{name}", system.name()), kib);
                }
            }
        }
        let predicted = self.owner();
        let mut owner = predicted.to_string();
        let mut owner_note = None;
        let mut rounds = Vec::new();
        for round in 1..=self.args.rounds {
            if self.args.rounds > 1 {
                eprintln!("-- round {round}/{}", self.args.rounds);
            }
            // alternate the order so drift in the machine's load evens out
            let order = if round % 2 == 1 {
                [System::Single, System::Cluster]
            } else {
                [System::Cluster, System::Single]
            };
            for system in order {
                let r = self.measure(env, &servers, system, round).await?;
                if system == System::Cluster && owner_note.is_none() {
                    let mut claimers: Vec<&str> = Vec::new();
                    for (id, node) in NODES.iter().zip(&servers.nodes) {
                        if sequenced(node).await? > 0 {
                            claimers.push(id);
                        }
                    }
                    owner_note = Some(match claimers.as_slice() {
                        [one] if *one == predicted => None,
                        [one] => {
                            owner = one.to_string();
                            Some(format!(
                                "{one} claimed {} although rendezvous hashing names {predicted}",
                                self.args.topic
                            ))
                        }
                        [] => Some(format!("no node sequenced {}", self.args.topic)),
                        many => Some(format!(
                            "several nodes claimed {}: {many:?}",
                            self.args.topic
                        )),
                    });
                }
                rounds.push(r);
            }
        }

        let Servers {
            single,
            nats,
            nodes,
        } = servers;
        let mut stop_notes: BTreeMap<System, Vec<String>> = BTreeMap::new();
        if let Some(n) = stop_note("single node", true, move || {
            single.stop(Duration::from_secs(15))
        })
        .await
        {
            stop_notes.entry(System::Single).or_default().push(n);
        }
        for (id, node) in NODES.iter().zip(nodes) {
            if let Some(n) = stop_note(id, true, move || node.stop(Duration::from_secs(15))).await {
                stop_notes.entry(System::Cluster).or_default().push(n);
            }
        }
        if let Some(n) = stop_note("nats-server", false, move || {
            nats.stop(Duration::from_secs(5))
        })
        .await
        {
            stop_notes.entry(System::Cluster).or_default().push(n);
        }

        let mut records = self.records(env, &rounds, &idle_rss, &owner);
        for r in &mut records {
            let system = if r.nodes == Some(3) {
                System::Cluster
            } else {
                System::Single
            };
            if system == System::Cluster {
                r.notes.extend(owner_note.iter().flatten().cloned());
            }
            r.notes
                .extend(stop_notes.get(&system).into_iter().flatten().cloned());
            r.notes.dedup();
        }
        let comparisons = comparisons(&records);
        let details = breakdown(&records);
        Ok(ScenarioOutput {
            records,
            comparisons,
            details,
        })
    }
}

/// `cluster-remote/single` and `cluster-local/single` latency ratios for
/// records measured with the same rate and payload.
pub fn comparisons(records: &[Record]) -> Vec<Comparison> {
    let find = |p: Placement, like: &Record| {
        records.iter().find(|r| {
            r.scenario == format!("{NAME}/{}", p.name())
                && r.system == like.system
                && r.payload_bytes == like.payload_bytes
                && r.publish_rate == like.publish_rate
        })
    };
    let mut out = Vec::new();
    for single in records
        .iter()
        .filter(|r| r.scenario == format!("{NAME}/single"))
    {
        for p in [Placement::ClusterRemote, Placement::ClusterLocal] {
            if let Some(cluster) = find(p, single) {
                out.push(Comparison {
                    label: format!(
                        "{}/single ({}, publish->deliver, {} msg/s, {} B)",
                        p.name(),
                        single.system,
                        thousands(single.publish_rate),
                        single.payload_bytes
                    ),
                    numerator: cluster.clone(),
                    denominator: single.clone(),
                    throughput: false,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::render_table;

    #[test]
    fn owner_matches_the_brokers_rendezvous_hash() {
        // Values computed from broker/src/cluster/membership.rs's score().
        assert_eq!(rendezvous_owner(&NODES, "bench.lat"), Some("n3"));
        assert_eq!(rendezvous_owner(&NODES, "bench.lat0"), Some("n2"));
        assert_eq!(rendezvous_owner(&["n1"], "bench.lat"), Some("n1"));
        assert_eq!(rendezvous_owner(&[], "bench.lat"), None);
    }

    #[test]
    fn reads_views_and_sequenced_counts() {
        let stats = serde_json::json!({"nodes": [{"id": "n1", "self": true}, {"id": "n2"}]});
        assert_eq!(members(&stats), Some(vec!["n1".into(), "n2".into()]));
        assert_eq!(members(&serde_json::json!({})), None);
        let metrics = "# TYPE herald_messages_published_total counter\nherald_messages_published_total 42\nherald_x 1\n";
        assert_eq!(published_total(metrics), Some(42));
        assert_eq!(published_total("herald_x 1\n"), None);
    }

    fn rec(placement: &str, p50: f64, p99: f64) -> Record {
        Record {
            system: "herald".into(),
            scenario: format!("{NAME}/{placement}"),
            publish_rate: 1000.0,
            payload_bytes: 256,
            delivered_per_s: 10_000.0,
            p50_ms: p50,
            p99_ms: p99,
            p999_ms: p99,
            ..Record::default()
        }
    }

    #[test]
    fn ratio_lines_are_latency_only() {
        let mut remote = rec("cluster-remote", 3.0, 10.0);
        remote.by_node.insert(
            "n3".into(),
            NodeLatency {
                role: "remote, topic owner".into(),
                subscribers: 10,
                p50_ms: 3.0,
                ..NodeLatency::default()
            },
        );
        remote.topic_owner = Some("n3".into());
        let records = vec![
            rec("single", 1.0, 2.0),
            rec("cluster-local", 2.0, 4.0),
            remote,
            Record {
                publish_rate: 500.0,
                ..rec("cluster-remote", 9.0, 9.0)
            },
        ];
        let c = comparisons(&records);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].numerator.scenario, format!("{NAME}/cluster-remote"));
        assert_eq!(c[0].numerator.p50_ms, 3.0);
        let t = render_table(&records, &c);
        assert!(
            t.contains("cluster-remote/single (herald, publish->deliver, 1,000 msg/s, 256 B): p50 3.00x, p99 5.00x"),
            "{t}"
        );
        assert!(!t.contains("throughput"), "{t}");
        let b = breakdown(&records).join("\n");
        assert!(b.contains("remote, topic owner"), "{b}");
        assert!(b.contains("topic owner (sequences it; the others forward to it): n3"));
    }
}
