//! The three servers of a `compare` run, started once for the whole run
//! (fresh topics per measurement) and stopped at its end; one that exited
//! mid-run, or failed a measurement, is started again before its next one.

use std::{net::SocketAddr, time::Duration};

use anyhow::Result;

use super::Args;
use crate::{
    fleet::System,
    procstat::{self, Proc},
    scenarios::BenchEnv,
    system::{
        herald::{self, HeraldOptions, HeraldServer},
        nats::{self, NatsWsServer},
        socketio::{self, SocketIoServer},
        ManagedProcess, ServerUnderTest,
    },
};

/// A server using less than this share of a core counts as idle.
const IDLE_CPU: f64 = 0.10;
/// The longest [`Servers::settle`] waits.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);

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

/// The running servers.
#[derive(Default)]
pub struct Servers {
    herald: Option<HeraldServer>,
    nats: Option<NatsWsServer>,
    socketio: Option<SocketIoServer>,
}

impl Servers {
    /// Starts the systems `args` asks for.
    pub async fn start(args: &Args, env: &BenchEnv) -> Result<Self> {
        let mut s = Servers::default();
        for system in &args.systems {
            s.start_one(*system, args, env).await?;
        }
        Ok(s)
    }

    /// If `system`'s server has exited (socket.io has run out of heap under
    /// a backlog), starts a new one and says what happened.
    pub async fn revive(
        &mut self,
        system: System,
        args: &Args,
        env: &BenchEnv,
    ) -> Result<Option<String>> {
        let Some(why) = self.process(system).and_then(|p| p.exited()) else {
            return Ok(None);
        };
        let note = format!("{} had exited ({why}); restarted", system.name());
        eprintln!("   {note}");
        self.start_one(system, args, env).await?;
        Ok(Some(note))
    }

    /// Replaces `system`'s server with a fresh one: after a failed
    /// measurement it may be alive but hung (socket.io stopped answering
    /// handshakes after a backlog of ~10^8 frames), so the next measurement
    /// would fail too.
    pub async fn restart(
        &mut self,
        system: System,
        why: &str,
        args: &Args,
        env: &BenchEnv,
    ) -> Result<()> {
        if let Some(p) = self.process(system) {
            p.stop(Duration::from_secs(5));
        }
        eprintln!("   restarting {} ({why})", system.name());
        self.start_one(system, args, env).await
    }

    fn process(&mut self, system: System) -> Option<&mut ManagedProcess> {
        match system {
            System::Herald => self.herald.as_mut().map(|s| &mut s.proc),
            System::Nats => self.nats.as_mut().map(|s| &mut s.proc),
            System::Socketio => self.socketio.as_mut().map(|s| &mut s.proc),
        }
    }

    async fn start_one(&mut self, system: System, args: &Args, env: &BenchEnv) -> Result<()> {
        match system {
            System::Herald => {
                let mut h = HeraldServer::start(&HeraldOptions {
                    binary: herald::locate_binary(env.herald_bin.as_deref())?,
                    durability: args.durability.clone(),
                    data_root: env.data_root.clone(),
                    extra_args: env.herald_args.clone(),
                    nats: None,
                    node_id: None,
                })?;
                h.wait_ready(Duration::from_secs(20)).await?;
                eprintln!("herald at {} (pid {})", h.addr(), h.pid());
                self.herald = Some(h);
            }
            System::Nats => {
                let bin = nats::locate_peer_binary(args.nats_peer_bin.as_deref())?;
                let n = NatsWsServer::start(&bin)?;
                eprintln!(
                    "nats-server ({}) ws at {} (pid {})",
                    bin.display(),
                    n.ws_addr(),
                    n.pid()
                );
                self.nats = Some(n);
            }
            System::Socketio => {
                let n = SocketIoServer::start(&socketio::locate_script()?)?;
                eprintln!("socket.io at {} (pid {})", n.addr(), n.pid());
                self.socketio = Some(n);
            }
        }
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
        let pids: Vec<(System, u32)> = [System::Herald, System::Nats, System::Socketio]
            .into_iter()
            .filter_map(|s| Some((s, self.process(s)?.pid())))
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
    pub fn get(&self, system: System) -> ServerRef {
        let (addr, pid) = match system {
            System::Herald => {
                let h = self.herald.as_ref().expect("herald started");
                (h.addr(), h.pid())
            }
            System::Nats => {
                let n = self.nats.as_ref().expect("nats started");
                (n.ws_addr(), n.pid())
            }
            System::Socketio => {
                let n = self.socketio.as_ref().expect("socketio started");
                (n.addr(), n.pid())
            }
        };
        ServerRef { system, addr, pid }
    }

    /// Stops them all.
    pub fn stop(&mut self) {
        let grace = Duration::from_secs(5);
        if let Some(h) = self.herald.take() {
            h.stop(grace);
        }
        if let Some(n) = self.nats.take() {
            n.stop(grace);
        }
        if let Some(n) = self.socketio.take() {
            n.stop(grace);
        }
    }
}
