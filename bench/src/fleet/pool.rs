//! The bench's side of the fleet: spawns `herald-bench worker` processes,
//! splits the connections over them (≤ [`PER_WORKER`] each, each worker on
//! its own loopback source address) and gathers their reports.

use std::{
    net::IpAddr,
    process::Stdio,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout},
    time::timeout,
};

use super::{Command, ConnectSpec, Event};
use crate::stats::LatencyHistogram;

/// A fresh loopback source address per worker, cycling 127.0.0.2–.251, so
/// one measurement's TIME_WAIT ports do not starve the next.
fn next_source() -> IpAddr {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 250;
    IpAddr::from([127, 0, 0, 2 + n as u8])
}

/// Connections per worker process (the open-file limit is 20,000 per process).
pub const PER_WORKER: usize = 5_000;

struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    async fn send(&mut self, cmd: &Command) -> Result<()> {
        let mut line = serde_json::to_string(cmd)?;
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    async fn recv(&mut self, limit: Duration) -> Result<Event> {
        let line = timeout(limit, self.lines.next_line())
            .await
            .context("worker did not answer in time")??
            .context("worker exited")?;
        Ok(serde_json::from_str(&line)?)
    }
}

/// Totals over every worker of one measurement.
#[derive(Default)]
pub struct FleetReport {
    /// Deliveries received while counting.
    pub delivered: u64,
    /// Their publish→deliver latency.
    pub hist: LatencyHistogram,
    /// Error frames and failed connections' reads.
    pub errors: u64,
    /// Connections that closed.
    pub closed: u64,
    /// Reconnects (long-poll) in the window.
    pub reconnects: u64,
    /// One error message, if any.
    pub first_error: Option<String>,
}

/// A set of worker processes holding subscriber connections.
pub struct Fleet {
    workers: Vec<Worker>,
}

impl Fleet {
    /// Starts enough workers for `connections` and has them open them:
    /// each worker takes its share, connecting from its own 127.0.0.x. Returns
    /// the fleet and (connections opened, failed, first error).
    pub async fn connect(
        spec: &ConnectSpec,
        connections: usize,
        limit: Duration,
    ) -> Result<(Self, usize, Option<String>)> {
        // two workers from 1,000 connections on, so one thread's receive
        // path is never what limits a fan-out run
        let n = connections
            .div_ceil(PER_WORKER)
            .max(if connections >= 1000 { 2 } else { 1 });
        let exe = std::env::current_exe().context("locating herald-bench")?;
        let mut workers = Vec::with_capacity(n);
        for _ in 0..n {
            let mut child = tokio::process::Command::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("spawning a worker")?;
            let stdin = child.stdin.take().expect("piped");
            let lines = BufReader::new(child.stdout.take().expect("piped")).lines();
            workers.push(Worker {
                child,
                stdin,
                lines,
            });
        }
        let mut first = 0;
        for (i, w) in workers.iter_mut().enumerate() {
            let count = connections / n + usize::from(i < connections % n);
            let mut s = spec.clone();
            s.count = count;
            s.topics.first = first;
            s.source = Some(next_source());
            first += count;
            w.send(&Command::Connect(s)).await?;
        }
        let (mut ok, mut failed, mut first_error) = (0, 0, None);
        for w in &mut workers {
            match w.recv(limit).await? {
                Event::Connected {
                    ok: o,
                    failed: f,
                    first_error: e,
                } => {
                    ok += o;
                    failed += f;
                    if first_error.is_none() {
                        first_error = e;
                    }
                }
                other => bail!("unexpected worker answer {other:?}"),
            }
        }
        if failed > 0 {
            eprintln!(
                "  {failed} of {connections} connections failed: {}",
                first_error.as_deref().unwrap_or("?")
            );
        }
        Ok((Fleet { workers }, ok, first_error))
    }

    /// The workers' pids (for CPU readings).
    pub fn pids(&self) -> Vec<u32> {
        self.workers.iter().filter_map(|w| w.child.id()).collect()
    }

    /// How many worker processes.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Every worker starts counting.
    pub async fn start(&mut self) -> Result<()> {
        for w in &mut self.workers {
            w.send(&Command::Start).await?;
        }
        Ok(())
    }

    /// Every worker stops counting; their reports summed.
    pub async fn stop(&mut self) -> Result<FleetReport> {
        for w in &mut self.workers {
            w.send(&Command::Stop).await?;
        }
        let mut total = FleetReport::default();
        for w in &mut self.workers {
            match w.recv(Duration::from_secs(30)).await? {
                Event::Report {
                    delivered,
                    hist,
                    errors,
                    closed,
                    reconnects,
                    first_error,
                } => {
                    total.reconnects += reconnects;
                    total.delivered += delivered;
                    total.hist.merge(&LatencyHistogram::from_pairs(&hist));
                    total.errors += errors;
                    total.closed += closed;
                    if total.first_error.is_none() {
                        total.first_error = first_error;
                    }
                }
                other => bail!("unexpected worker answer {other:?}"),
            }
        }
        Ok(total)
    }

    /// Tells every worker to quit and waits (killing stragglers).
    pub async fn quit(mut self) {
        for w in &mut self.workers {
            let _ = w.send(&Command::Quit).await;
        }
        for w in &mut self.workers {
            if timeout(Duration::from_secs(10), w.child.wait())
                .await
                .is_err()
            {
                let _ = w.child.kill().await;
            }
        }
    }
}
