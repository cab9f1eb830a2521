//! `ingest`'s cluster point: a 3-node Herald cluster over a plain
//! nats-server, default replication (`min_replica_acks = 1`: an ack waits
//! for one other node's fsync), publishers spread round-robin over the
//! three nodes, so about two thirds of the publishes are forwarded to their
//! topic's owner. Server CPU and RSS are the sums over the nodes and the
//! NATS bus (per process in the record).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::future::try_join_all;
use tokio::time::Instant;

use super::{
    measure::{run_on, Target},
    Args, Point,
};
use crate::{
    fleet::System,
    results::Record,
    scenarios::{cross_node_latency::view, BenchEnv},
    system::{
        herald::{HeraldOptions, HeraldServer},
        nats::{self, NatsServer},
        ServerUnderTest,
    },
};

/// Node ids.
const NODES: [&str; 3] = ["n1", "n2", "n3"];

/// Starts the cluster of `system`'s build, measures `point`, stops it.
pub async fn run(system: System, point: &Point, args: &Args, env: &BenchEnv) -> Result<Record> {
    let binary = env.herald_binary(system)?;
    // the bus: the peer nats-server 2.15 if set up, else the system's
    let nats_bin = nats::locate_peer_binary(args.nats_peer_bin.as_deref())
        .or_else(|_| nats::locate_binary(None))?;
    let bus = tokio::task::spawn_blocking(move || NatsServer::start(&nats_bin)).await??;
    let url = bus.url();
    let starts = NODES.map(|id| {
        let o = HeraldOptions {
            binary: binary.clone(),
            durability: args.durability.clone(),
            data_root: env.data_root.clone(),
            extra_args: env.herald_args.clone(),
            nats: Some(url.clone()),
            node_id: Some(id.to_string()),
        };
        tokio::task::spawn_blocking(move || HeraldServer::start(&o))
    });
    let mut nodes = Vec::new();
    for s in starts {
        nodes.push(s.await.context("node start task")??);
    }
    let limit = Duration::from_secs(30);
    try_join_all(nodes.iter_mut().map(|n| n.wait_ready(limit)))
        .await
        .with_context(|| format!("nats-server's last output:\n{}", bus.log_tail()))?;
    wait_for_view(&nodes).await?;
    eprintln!(
        "{} cluster: {} over nats-server {url}",
        system.name(),
        nodes
            .iter()
            .zip(NODES)
            .map(|(n, id)| format!("{id} {} (pid {})", n.addr(), n.pid()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let target = Target {
        addrs: nodes.iter().map(|n| n.addr()).collect(),
        procs: NODES
            .iter()
            .zip(&nodes)
            .map(|(id, n)| (id.to_string(), n.pid()))
            .chain([("nats-server".to_string(), bus.pid())])
            .collect(),
        durability: Some(format!("{}, min_replica_acks=1", args.durability)),
    };
    let result = run_on(system, &target, point, None, args, env).await;
    for n in nodes {
        n.stop(Duration::from_secs(10));
    }
    bus.stop(Duration::from_secs(5));
    result
}

/// Waits until every node's `/v1/stats` shows all three in its view.
async fn wait_for_view(nodes: &[HeraldServer]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut views: Vec<Option<Vec<String>>> = Vec::new();
        for n in nodes {
            views.push(view(n).await);
        }
        let settled = views.iter().all(|v| {
            v.as_ref()
                .is_some_and(|m| NODES.iter().all(|id| m.iter().any(|x| x == id)))
        });
        if settled {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the cluster view did not settle on {NODES:?}: the nodes' last views are {views:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
