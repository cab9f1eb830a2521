//! The servers of a side-by-side run (`compare`, `ingest`): one per system,
//! started by the bench on free loopback ports with fresh state; one that
//! exited mid-run, or failed a measurement, is started again before its next
//! one. `compare` keeps them for the whole run (fresh topics per point);
//! `ingest` starts them afresh for every measurement.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Result;

use crate::{
    fleet::System,
    procstat::{self, Proc},
    scenarios::BenchEnv,
    system::{
        herald::{HeraldOptions, HeraldServer},
        jetstream::{JetStreamServer, Sync},
        nats::{self, NatsWsServer},
        socketio::{self, SocketIoServer},
        ManagedProcess, ServerUnderTest,
    },
};

/// A server using less than this share of a core counts as idle.
const IDLE_CPU: f64 = 0.10;
/// The longest [`Servers::settle`] waits.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);

/// How the servers are started (beside the global [`BenchEnv`]).
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Herald's `--durability` (both builds); JetStream's sync follows it.
    pub durability: String,
    /// The peer nats-server [default: bench/.venv/bin/nats-server].
    pub nats_peer_bin: Option<PathBuf>,
}

impl ServerConfig {
    /// What `system`'s records say in `durability`.
    pub fn durability_label(&self, system: System) -> Option<String> {
        match system {
            System::Herald | System::HeraldBaseline => Some(self.durability.clone()),
            System::Jetstream => Some(Sync::for_herald(&self.durability).label().into()),
            System::Nats | System::Socketio => None,
        }
    }
}

/// Where a system listens and which process to measure.
#[derive(Clone, Copy, Debug)]
pub struct ServerRef {
    /// The system.
    pub system: System,
    /// Its WebSocket (and for Herald, HTTP) address.
    pub addr: SocketAddr,
    /// The server process.
    pub pid: u32,
}

/// One running server.
enum Running {
    Herald(HeraldServer),
    Nats(NatsWsServer),
    Jetstream(JetStreamServer),
    Socketio(SocketIoServer),
}

impl Running {
    fn proc(&mut self) -> &mut ManagedProcess {
        match self {
            Running::Herald(s) => &mut s.proc,
            Running::Nats(s) => &mut s.proc,
            Running::Jetstream(s) => &mut s.inner.proc,
            Running::Socketio(s) => &mut s.proc,
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Running::Herald(s) => s.addr(),
            Running::Nats(s) => s.ws_addr(),
            Running::Jetstream(s) => s.ws_addr(),
            Running::Socketio(s) => s.addr(),
        }
    }

    fn stop(self, grace: Duration) {
        match self {
            Running::Herald(s) => {
                s.stop(grace);
            }
            Running::Nats(s) => {
                s.stop(grace);
            }
            Running::Jetstream(s) => {
                s.stop(grace);
            }
            Running::Socketio(s) => {
                s.stop(grace);
            }
        }
    }
}

/// The running servers.
pub struct Servers {
    config: ServerConfig,
    env: BenchEnv,
    running: BTreeMap<System, Running>,
}

impl Servers {
    /// Starts `systems`.
    pub async fn start(systems: &[System], config: &ServerConfig, env: &BenchEnv) -> Result<Self> {
        let mut s = Servers {
            config: config.clone(),
            env: env.clone(),
            running: BTreeMap::new(),
        };
        for system in systems {
            s.start_one(*system).await?;
        }
        Ok(s)
    }

    /// If `system`'s server has exited (socket.io has run out of heap under
    /// a backlog), starts a new one and says what happened.
    pub async fn revive(&mut self, system: System) -> Result<Option<String>> {
        let Some(why) = self
            .running
            .get_mut(&system)
            .and_then(|r| r.proc().exited())
        else {
            return Ok(None);
        };
        let note = format!("{} had exited ({why}); restarted", system.name());
        eprintln!("   {note}");
        self.start_one(system).await?;
        Ok(Some(note))
    }

    /// Replaces `system`'s server with a fresh one: after a failed
    /// measurement it may be alive but hung (socket.io stopped answering
    /// handshakes after a backlog of ~10^8 frames), so the next measurement
    /// would fail too; `ingest` also uses it for fresh state per point.
    pub async fn restart(&mut self, system: System, why: &str) -> Result<()> {
        if let Some(r) = self.running.remove(&system) {
            r.stop(Duration::from_secs(5));
        }
        if !why.is_empty() {
            eprintln!("   restarting {} ({why})", system.name());
        }
        self.start_one(system).await
    }

    async fn start_one(&mut self, system: System) -> Result<()> {
        let running = match system {
            System::Herald | System::HeraldBaseline => {
                let opts = HeraldOptions {
                    binary: self.env.herald_binary(system)?,
                    durability: self.config.durability.clone(),
                    data_root: self.env.data_root.clone(),
                    extra_args: self.env.herald_args.clone(),
                    nats: None,
                    node_id: None,
                };
                let mut h =
                    tokio::task::spawn_blocking(move || HeraldServer::start(&opts)).await??;
                h.wait_ready(Duration::from_secs(20)).await?;
                eprintln!("{} at {} (pid {})", system.name(), h.addr(), h.pid());
                Running::Herald(h)
            }
            System::Nats => {
                let bin = nats::locate_peer_binary(self.config.nats_peer_bin.as_deref())?;
                let n = NatsWsServer::start(&bin)?;
                eprintln!(
                    "nats-server ({}) ws at {} (pid {})",
                    bin.display(),
                    n.ws_addr(),
                    n.pid()
                );
                Running::Nats(n)
            }
            System::Jetstream => {
                let bin = nats::locate_peer_binary(self.config.nats_peer_bin.as_deref())?;
                let sync = Sync::for_herald(&self.config.durability);
                let j = JetStreamServer::start(&bin, self.env.data_root.as_ref(), sync).await?;
                eprintln!(
                    "nats-server with JetStream ({}, {}) ws at {} (pid {})",
                    bin.display(),
                    sync.label(),
                    j.ws_addr(),
                    j.pid()
                );
                Running::Jetstream(j)
            }
            System::Socketio => {
                let n = SocketIoServer::start(&socketio::locate_script()?)?;
                eprintln!("socket.io at {} (pid {})", n.addr(), n.pid());
                Running::Socketio(n)
            }
        };
        self.running.insert(system, running);
        Ok(())
    }

    /// Waits until no server is still busy with an earlier measurement
    /// (each under [`IDLE_CPU`] of a core over half a second), at most
    /// [`SETTLE_LIMIT`]; says how long that took if it was more than a
    /// moment, and which servers are still busy after the limit (the caller
    /// replaces them). Without it the system measured next would share the
    /// cores with the previous one: socket.io keeps a core busy for seconds
    /// after its subscribers have gone (15k idle connections closing, a
    /// fan-out backlog; minutes after `latency/10000@1000`), which cost the
    /// next system up to 40 % of its rate.
    pub async fn settle(&mut self) -> (Option<String>, Vec<System>) {
        let pids: Vec<(System, u32)> = self
            .running
            .iter_mut()
            .map(|(s, r)| (*s, r.proc().pid()))
            .collect();
        let started = std::time::Instant::now();
        let window = Duration::from_millis(500);
        let ticks_per_window = procstat::clock_ticks_per_sec() as f64 * window.as_secs_f64();
        loop {
            let before: Vec<u64> = pids
                .iter()
                .map(|(_, pid)| procstat::cpu_ticks(Proc::Pid(*pid)).unwrap_or(0))
                .collect();
            tokio::time::sleep(window).await;
            let busy: Vec<(System, f64)> = pids
                .iter()
                .zip(before)
                .map(|((system, pid), b)| {
                    let after = procstat::cpu_ticks(Proc::Pid(*pid)).unwrap_or(b);
                    (*system, after.saturating_sub(b) as f64 / ticks_per_window)
                })
                .filter(|(_, cores)| *cores >= IDLE_CPU)
                .collect();
            let waited = started.elapsed();
            if busy.is_empty() {
                let note = (waited > Duration::from_secs(2)).then(|| {
                    format!(
                        "waited {:.1} s for the servers to go idle first",
                        waited.as_secs_f64()
                    )
                });
                return (note, Vec::new());
            }
            if waited >= SETTLE_LIMIT {
                let who: Vec<String> = busy
                    .iter()
                    .map(|(s, cores)| format!("{} {:.0} %", s.name(), cores * 100.0))
                    .collect();
                let note = format!(
                    "still busy {} s after the previous measurement, so restarted first: {}",
                    SETTLE_LIMIT.as_secs(),
                    who.join(", ")
                );
                return (Some(note), busy.into_iter().map(|(s, _)| s).collect());
            }
        }
    }

    /// The running `system` (it must have been started).
    pub fn get(&mut self, system: System) -> ServerRef {
        let r = self
            .running
            .get_mut(&system)
            .unwrap_or_else(|| panic!("{} started", system.name()));
        ServerRef {
            system,
            addr: r.addr(),
            pid: r.proc().pid(),
        }
    }

    /// What `system`'s records say in `durability`.
    pub fn durability_label(&self, system: System) -> Option<String> {
        self.config.durability_label(system)
    }

    /// Stops them all.
    pub fn stop(&mut self) {
        for (_, r) in std::mem::take(&mut self.running) {
            r.stop(Duration::from_secs(5));
        }
    }
}
