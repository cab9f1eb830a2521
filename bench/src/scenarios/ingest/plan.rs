//! What `ingest` measures: its points, their families and scenario names,
//! and the plan built from the flags.

use std::time::Duration;

use super::Args;
use crate::fleet::System;

/// The probe: publishers, topics, payload bytes.
pub const PROBE: (usize, usize, usize) = (32, 10_000, 256);

/// Which family a point belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// WebSocket publishers as fast as their windows allow.
    Ws,
    /// The probe open-loop at half the system's `ws` maximum.
    HalfMax,
    /// `POST /v1/topics/{t}/messages`, keep-alive.
    Rest,
    /// `POST /v1/publish` batches.
    Batch,
    /// WebSocket publishers spread over a 3-node cluster.
    Cluster,
}

impl Family {
    /// `--only` name and the record's `family`.
    pub fn name(self) -> &'static str {
        match self {
            Family::Ws => "ws",
            Family::HalfMax => "half-max",
            Family::Rest => "rest",
            Family::Batch => "batch",
            Family::Cluster => "cluster",
        }
    }
}

/// One measurement point.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Its family.
    pub family: Family,
    /// Publisher connections.
    pub conns: usize,
    /// Publishes (WebSocket) in flight per connection; 1 over HTTP.
    pub window: usize,
    /// Distinct topics.
    pub topics: usize,
    /// `data` bytes.
    pub payload: usize,
    /// Items per request (batch), else 1.
    pub batch: usize,
}

impl Point {
    /// The record's `scenario`, e.g. `ingest/32x16/10000t/256B`.
    pub fn scenario(&self) -> String {
        let (c, w, t, b) = (self.conns, self.window, self.topics, self.payload);
        match self.family {
            Family::Ws => format!("ingest/{c}x{w}/{t}t/{b}B"),
            Family::HalfMax => format!("ingest-half-max/{c}x{w}/{t}t/{b}B"),
            Family::Rest => format!("ingest-rest/{c}c/{t}t/{b}B"),
            Family::Batch => format!("ingest-batch/{c}cx{}/{t}t/{b}B", self.batch),
            Family::Cluster => format!("ingest-cluster3/{c}x{w}/{t}t/{b}B"),
        }
    }

    /// Whether `system` can run it (REST and the cluster are Herald's).
    pub fn supports(&self, system: System) -> bool {
        match self.family {
            Family::Ws | Family::HalfMax => true,
            Family::Rest | Family::Batch | Family::Cluster => system.is_herald(),
        }
    }

    /// The `ws` point a `half-max` point takes its rate from.
    pub fn max_point(&self) -> Point {
        Point {
            family: Family::Ws,
            ..self.clone()
        }
    }
}

impl Args {
    /// The points to run, in order (a `half-max` point's `ws` point first).
    pub fn plan(&self, quick: bool) -> Vec<Point> {
        let want = |f: Family| self.only.iter().any(|o| o == f.name());
        let (pp, pt, pb) = PROBE;
        let w = self.window as usize;
        let topics = self.topics.clone().unwrap_or_else(|| {
            if quick {
                vec![1, pt]
            } else {
                vec![1, 100, 10_000, 100_000]
            }
        });
        let pubs = self.publishers.clone().unwrap_or_else(|| {
            if quick {
                vec![pp]
            } else {
                vec![1, 8, 32, 128]
            }
        });
        let payloads = self.payloads.clone().unwrap_or_else(|| {
            if quick {
                vec![pb]
            } else {
                vec![64, 256, 4096]
            }
        });
        let ws = |conns, topics, payload| Point {
            family: Family::Ws,
            conns,
            window: w,
            topics,
            payload,
            batch: 1,
        };
        let mut out: Vec<Point> = Vec::new();
        let mut push = |p: Point| {
            if !out.contains(&p) {
                out.push(p);
            }
        };
        if want(Family::Ws) {
            if self.matrix {
                for &t in &topics {
                    for &c in &pubs {
                        for &b in &payloads {
                            push(ws(c, t, b));
                        }
                    }
                }
            } else {
                topics.iter().for_each(|&t| push(ws(pp, t, pb)));
                pubs.iter().for_each(|&c| push(ws(c, pt, pb)));
                payloads.iter().for_each(|&b| push(ws(pp, pt, b)));
            }
        }
        if want(Family::HalfMax) {
            let max = ws(pp, pt, pb);
            push(max.clone());
            push(Point {
                family: Family::HalfMax,
                ..max
            });
        }
        if want(Family::Rest) {
            push(Point {
                family: Family::Rest,
                conns: self.rest_conns,
                window: 1,
                topics: pt,
                payload: pb,
                batch: 1,
            });
        }
        if want(Family::Batch) {
            push(Point {
                family: Family::Batch,
                conns: self.batch_conns,
                window: 1,
                topics: pt,
                payload: pb,
                batch: self.batch.max(1),
            });
        }
        if want(Family::Cluster) {
            push(Point {
                family: Family::Cluster,
                ..ws(pp, pt, pb)
            });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::ingest::Args;

    fn args(extra: &[&str]) -> Args {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            a: Args,
        }
        T::parse_from(std::iter::once("t").chain(extra.iter().copied())).a
    }

    #[test]
    fn plans() {
        let names = |p: Vec<Point>| p.iter().map(Point::scenario).collect::<Vec<_>>();
        assert_eq!(
            names(args(&[]).plan(true)),
            [
                "ingest/32x16/1t/256B",
                "ingest/32x16/10000t/256B",
                "ingest-half-max/32x16/10000t/256B",
                "ingest-rest/64c/10000t/256B",
                "ingest-batch/8cx100/10000t/256B",
                "ingest-cluster3/32x16/10000t/256B"
            ]
        );
        let full = args(&[]).plan(false);
        // 4 topic counts + 3 more publisher counts + 2 more payloads, then
        // half-max, rest, batch, cluster
        assert_eq!(full.len(), 9 + 4);
        assert_eq!(args(&["--matrix", "--only", "ws"]).plan(false).len(), 48);
        let half = args(&["--only", "half-max"]).plan(false);
        assert_eq!(half[0].family, Family::Ws);
        assert_eq!(half[1].max_point(), half[0]);
        let rest = &full[10];
        assert_eq!(rest.family, Family::Rest);
        assert!(rest.supports(System::HeraldBaseline) && !rest.supports(System::Jetstream));
        assert!(full[0].supports(System::Jetstream));
    }
}
