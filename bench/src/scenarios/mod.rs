//! Scenarios: one module each, each a [`Scenario`] with its own clap
//! arguments. A scenario starts the systems it compares, drives them, and
//! returns records plus the ratio lines worth printing.
//!
//! To add one (fan-out, many topics, fixed-rate latency, idle memory,
//! SSE/long-poll — see issue 5): a module here with an `Args` struct and a
//! `Scenario` impl, a variant in `main.rs`'s `Command`, and its comparisons
//! in [`comparisons`] so `herald-bench show` prints them too.

pub mod compare;
pub mod cross_node_latency;
pub mod durable_publish;
pub mod ingest;
pub mod servers;

use std::{future::Future, path::PathBuf};

use anyhow::{bail, Result};

use crate::{
    fleet::System,
    results::{Comparison, Record},
    system::herald,
};

/// Settings shared by every scenario (the global flags).
#[derive(Clone, Debug)]
pub struct BenchEnv {
    /// `--herald-bin` / `HERALD_BIN`, if given.
    pub herald_bin: Option<PathBuf>,
    /// `--baseline-bin` / `HERALD_BASELINE_BIN`: a previous Herald build,
    /// measured as the system `herald-baseline`.
    pub baseline_bin: Option<PathBuf>,
    /// Parent directory for the servers' fresh data dirs.
    pub data_root: Option<PathBuf>,
    /// `--quick`: short runs.
    pub quick: bool,
    /// Show progress bars.
    pub progress: bool,
    /// Worker threads of this load generator's runtime.
    pub gen_threads: usize,
    /// Extra `herald serve` flags (`--herald-arg`).
    pub herald_args: Vec<String>,
}

impl BenchEnv {
    /// The binary of a Herald system: this build or the baseline.
    pub fn herald_binary(&self, system: System) -> Result<PathBuf> {
        match system {
            System::HeraldBaseline => match &self.baseline_bin {
                Some(p) if p.is_file() => Ok(p.clone()),
                Some(p) => bail!("--baseline-bin {} is not a file", p.display()),
                None => bail!(
                    "herald-baseline needs --baseline-bin PATH (or HERALD_BASELINE_BIN): \
                     a previous build of herald, see bench/README.md"
                ),
            },
            _ => herald::locate_binary(self.herald_bin.as_deref()),
        }
    }

    /// The systems to run: `explicit` if given, else `default` with
    /// `herald-baseline` right after `herald` when a baseline binary is set.
    pub fn systems(&self, explicit: Option<&[System]>, default: &[System]) -> Vec<System> {
        if let Some(s) = explicit {
            return s.to_vec();
        }
        let mut out = Vec::new();
        for &s in default {
            out.push(s);
            if s == System::Herald && self.baseline_bin.is_some() {
                out.push(System::HeraldBaseline);
            }
        }
        out
    }
}

/// What a scenario run produced.
pub struct ScenarioOutput {
    /// One record per (system, scenario).
    pub records: Vec<Record>,
    /// Ratio lines printed under the table.
    pub comparisons: Vec<Comparison>,
    /// Scenario-specific lines printed after the table (e.g. a breakdown).
    pub details: Vec<String>,
}

/// A benchmark scenario.
pub trait Scenario {
    /// Name prefix of the records it writes, e.g. `durable-publish`.
    fn name(&self) -> &'static str;
    /// One line saying what will run, printed before it starts.
    fn describe(&self, env: &BenchEnv) -> String;
    fn run(&self, env: &BenchEnv) -> impl Future<Output = Result<ScenarioOutput>>;
}

/// Ratio lines for whatever records are present (used by `show`).
pub fn comparisons(records: &[Record]) -> Vec<Comparison> {
    let mut out = durable_publish::comparisons(records);
    out.extend(cross_node_latency::comparisons(records));
    out.extend(compare::comparisons(records));
    out.extend(ingest::comparisons(records));
    out
}

/// Scenario-specific lines for whatever records are present (used by `show`).
pub fn details(records: &[Record]) -> Vec<String> {
    let mut out = cross_node_latency::breakdown(records);
    out.extend(compare::details(records));
    out.extend(ingest::details(records));
    out
}
