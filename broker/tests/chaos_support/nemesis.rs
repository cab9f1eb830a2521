//! The fault schedule: kill -9 and restart, SIGTERM (drain) and restart,
//! SIGSTOP for 1–8 s then SIGCONT, a NATS server killed and restarted —
//! one at a time or two overlapping (never two on the same node, never two
//! NATS servers). Every fault is healed before the next round and before
//! the schedule ends. Runs on its own thread: the process calls block.

use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::common::{signal, NatsCluster, Node};

/// The processes the faults hit.
pub struct Cluster {
    pub nodes: Vec<Mutex<Node>>,
    pub nats: Mutex<NatsCluster>,
    /// Each node's log lines from its earlier processes (a restart starts
    /// a new log), for the report of a failed run.
    pub archive: Vec<Mutex<Vec<String>>>,
}

impl Cluster {
    /// Restarts node `i` (on its port), keeping its log so far.
    fn restart(&self, i: usize, node: &mut Node) {
        let old = std::mem::take(&mut *node.log.lock().unwrap());
        self.archive[i].lock().unwrap().extend(old);
        node.kill9_and_restart();
    }
}

/// Milliseconds since the Unix epoch (the unit of message `ts` and what
/// the node logs' timestamps show), to line faults up with both.
pub fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// One fault, on node or NATS server `i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Kill9(usize),
    Term(usize),
    Stop(usize),
    Nats(usize),
}

impl Fault {
    fn node(self) -> Option<usize> {
        match self {
            Fault::Kill9(i) | Fault::Term(i) | Fault::Stop(i) => Some(i),
            Fault::Nats(_) => None,
        }
    }

    /// Whether two faults may overlap: different nodes, one NATS server.
    fn compatible(self, other: Fault) -> bool {
        match (self.node(), other.node()) {
            (Some(a), Some(b)) => a != b,
            (None, None) => false,
            _ => true,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill9(i) => write!(f, "kill -9 n{}", i + 1),
            Fault::Term(i) => write!(f, "SIGTERM n{}", i + 1),
            Fault::Stop(i) => write!(f, "SIGSTOP n{}", i + 1),
            Fault::Nats(i) => write!(f, "kill NATS server {}", i + 1),
        }
    }
}

/// How many faults of each kind were injected.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub kill9: u64,
    pub term: u64,
    pub stop: u64,
    pub nats: u64,
    /// Rounds with two faults at once.
    pub overlapping: u64,
}

impl Counts {
    fn add(&mut self, fault: Fault) {
        match fault {
            Fault::Kill9(_) => self.kill9 += 1,
            Fault::Term(_) => self.term += 1,
            Fault::Stop(_) => self.stop += 1,
            Fault::Nats(_) => self.nats += 1,
        }
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kill -9 {}, SIGTERM {}, SIGSTOP {}, NATS server {}; {} rounds overlapping",
            self.kill9, self.term, self.stop, self.nats, self.overlapping
        )
    }
}

/// Sleeps `d`, or less once `abort` is set.
fn nap(d: Duration, abort: &AtomicBool) {
    let until = Instant::now() + d;
    while Instant::now() < until && !abort.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
    }
}

fn random_fault(rng: &mut StdRng, nodes: usize, servers: usize) -> Fault {
    match rng.gen_range(0..4) {
        0 => Fault::Kill9(rng.gen_range(0..nodes)),
        1 => Fault::Term(rng.gen_range(0..nodes)),
        2 => Fault::Stop(rng.gen_range(0..nodes)),
        _ => Fault::Nats(rng.gen_range(0..servers)),
    }
}

/// Injects faults for `length`, then returns with every process back up.
pub fn run(cluster: &Cluster, seed: u64, length: Duration, abort: &AtomicBool) -> Counts {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x3000);
    let started = Instant::now();
    let mut counts = Counts::default();
    let servers = cluster.nats.lock().unwrap().ports.len();
    while started.elapsed() < length && !abort.load(Ordering::SeqCst) {
        nap(Duration::from_millis(rng.gen_range(300..2000)), abort);
        let first = random_fault(&mut rng, cluster.nodes.len(), servers);
        let mut round = vec![(first, Duration::ZERO)];
        if rng.gen_bool(0.35) {
            let second = loop {
                let f = random_fault(&mut rng, cluster.nodes.len(), servers);
                if f.compatible(first) {
                    break f;
                }
            };
            round.push((second, Duration::from_millis(rng.gen_range(0..1500))));
            counts.overlapping += 1;
        }
        let plans: Vec<(Fault, Duration, Duration)> = round
            .into_iter()
            .map(|(fault, delay)| {
                let outage = match fault {
                    Fault::Kill9(_) => rng.gen_range(500..4000),
                    Fault::Term(_) => rng.gen_range(300..3000),
                    Fault::Stop(_) => rng.gen_range(1000..8000),
                    Fault::Nats(_) => rng.gen_range(1000..5000),
                };
                (fault, delay, Duration::from_millis(outage))
            })
            .collect();
        for (fault, delay, outage) in &plans {
            counts.add(*fault);
            eprintln!(
                "chaos {:>6.1}s (unix ms {}): {fault} for {outage:?} (after {delay:?})",
                started.elapsed().as_secs_f64(),
                unix_ms()
            );
        }
        std::thread::scope(|s| {
            for (fault, delay, outage) in plans {
                s.spawn(move || apply(cluster, fault, delay, outage, abort));
            }
        });
    }
    eprintln!(
        "chaos {:>6.1}s: faults over: {counts}",
        started.elapsed().as_secs_f64()
    );
    counts
}

/// Waits `delay`, injects `fault`, waits `outage` and heals it.
fn apply(cluster: &Cluster, fault: Fault, delay: Duration, outage: Duration, abort: &AtomicBool) {
    nap(delay, abort);
    match fault {
        Fault::Kill9(i) => {
            let mut node = cluster.nodes[i].lock().unwrap();
            node.kill9();
            nap(outage, abort);
            cluster.restart(i, &mut node);
        }
        Fault::Term(i) => {
            let mut node = cluster.nodes[i].lock().unwrap();
            signal(node.pid(), "TERM");
            let drain = Instant::now();
            let status = node.sigterm_wait();
            assert!(status.success(), "n{} after SIGTERM: {status:?}", i + 1);
            eprintln!(
                "chaos: n{} drained and exited in {:?}",
                i + 1,
                drain.elapsed()
            );
            nap(outage, abort);
            node.kill9_and_restart();
        }
        Fault::Stop(i) => {
            let node = cluster.nodes[i].lock().unwrap();
            signal(node.pid(), "STOP");
            nap(outage, abort);
            signal(node.pid(), "CONT");
        }
        Fault::Nats(i) => {
            cluster.nats.lock().unwrap().kill(i);
            nap(outage, abort);
            cluster.nats.lock().unwrap().restart(i);
        }
    }
}
