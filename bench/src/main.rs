//! `herald-bench`: load generator and side-by-side benchmarks for Herald.
//!
//! ```text
//! cargo build --release -p herald -p herald-bench
//! cargo run --release -p herald-bench -- durable-publish          # always vs relaxed, ws
//! cargo run --release -p herald-bench -- durable-publish -t rest  # same over REST
//! cargo run --release -p herald-bench -- cross-node-latency       # cluster vs single node
//! cargo run --release -p herald-bench -- compare --quick          # vs nats-server, socket.io
//! cargo run --release -p herald-bench -- ingest --quick           # durable ingest vs JetStream
//! cargo run --release -p herald-bench -- show --svg               # table + plots of latest.json
//! ```

mod fleet;
mod http;
mod load;
mod plot;
mod procstat;
mod progress;
mod results;
mod scenarios;
mod stats;
mod system;
mod wire;

use std::{
    io::IsTerminal,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use results::Record;
use scenarios::{BenchEnv, Scenario, ScenarioOutput};

#[derive(Parser, Debug)]
#[command(name = "herald-bench", version, about = "Benchmarks for the Herald broker", long_about = None)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug)]
struct GlobalArgs {
    /// The herald server binary [default: next to herald-bench, i.e. target/release/herald].
    #[arg(long, env = "HERALD_BIN", global = true, value_name = "PATH")]
    herald_bin: Option<PathBuf>,
    /// A previous herald build to measure beside this one, as the system
    /// `herald-baseline` (compare, ingest, durable-publish).
    #[arg(long, env = "HERALD_BASELINE_BIN", global = true, value_name = "PATH")]
    baseline_bin: Option<PathBuf>,
    /// Results file [default: bench/results/latest.json].
    #[arg(long, global = true, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Replace the results file instead of merging into it (records with the
    /// same system, scenario, subscribers and payload are always replaced).
    #[arg(long, global = true)]
    replace: bool,
    /// Short runs (3 s per measurement) for a quick look.
    #[arg(long, global = true)]
    quick: bool,
    /// Where the servers' fresh data dirs go [default: the system temp dir].
    /// Must be a real disk for `always` to mean anything (not tmpfs).
    #[arg(long, global = true, value_name = "DIR")]
    data_root: Option<PathBuf>,
    /// Worker threads of the load generator.
    #[arg(long, global = true, default_value_t = 1, value_name = "N")]
    gen_threads: usize,
    /// No progress bar.
    #[arg(long, global = true)]
    no_progress: bool,
    /// Extra flag for `herald serve` (repeatable), e.g.
    /// `--herald-arg=--config=/tmp/no-retention.toml`.
    #[arg(long, global = true, value_name = "ARG", allow_hyphen_values = true)]
    herald_arg: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Acked publishes per second and publish→ack latency, `--durability
    /// always` next to `relaxed`, each on a fresh server.
    DurablePublish(scenarios::durable_publish::Args),
    /// publish→deliver latency through a 3-node cluster (nats-server)
    /// next to a single node: subscribers on the publisher's node and on
    /// the other nodes.
    CrossNodeLatency(scenarios::cross_node_latency::Args),
    /// Herald next to nats-server and socket.io: fan-out, many topics,
    /// latency at a fixed rate, idle memory, SSE/long-poll (all servers
    /// started by the bench; run bench/peers/setup.sh once first).
    Compare(scenarios::compare::Args),
    /// Durable ingest: acked publishes/s and publish→ack latency across
    /// many topics, Herald next to nats-server with JetStream (fresh
    /// servers per measurement; run bench/peers/setup.sh once first).
    Ingest(scenarios::ingest::Args),
    /// A subscriber worker process (started by the bench itself; speaks
    /// JSON lines on stdin/stdout).
    #[command(hide = true)]
    Worker,
    /// Print the table of a results file (default bench/results/latest.json).
    Show {
        /// Also print the table as markdown (for bench/README.md).
        #[arg(long)]
        markdown: bool,
        /// Also redraw the plots (fanout.svg, idle.svg, ingest.svg,
        /// latency.svg, transports.svg, topics.svg, durable.svg beside the
        /// results file) from its records.
        #[arg(long)]
        svg: bool,
        /// More results files whose records the plots also draw (not the
        /// table), e.g. a durable-publish run kept in a file of its own.
        #[arg(long, value_name = "PATH", requires = "svg")]
        also: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> Result<()> {
    if let Command::Worker = cli.command {
        return fleet::worker::main();
    }
    let g = cli.global;
    let path = g.json.clone().unwrap_or_else(results::default_path);
    let env = BenchEnv {
        herald_bin: g.herald_bin.clone(),
        baseline_bin: g.baseline_bin.clone(),
        data_root: g.data_root.clone(),
        quick: g.quick,
        progress: !g.no_progress && std::io::stderr().is_terminal(),
        gen_threads: g.gen_threads.max(1),
        herald_args: g.herald_arg.clone(),
    };
    match cli.command {
        Command::Show {
            markdown,
            svg,
            also,
        } => {
            let records = results::load(&path)?;
            if svg {
                let mut drawn = records.clone();
                for more in &also {
                    drawn.extend(results::load(more)?);
                }
                for p in plot::figures::write_all(&drawn, results_dir(&path))? {
                    eprintln!("plot: {}", p.display());
                }
            }
            let comparisons = scenarios::comparisons(&records);
            println!("{}", path.display());
            print!("{}", results::render_table(&records, &comparisons));
            let details = scenarios::details(&records);
            if !details.is_empty() {
                println!();
                for line in &details {
                    println!("{line}");
                }
            }
            if markdown {
                println!();
                print!("{}", results::render_markdown(&records, &comparisons));
            }
            Ok(())
        }
        Command::DurablePublish(args) => {
            let scenario = scenarios::durable_publish::DurablePublish { args };
            execute(&scenario, &env, &path, g.replace)
        }
        Command::CrossNodeLatency(args) => {
            let scenario = scenarios::cross_node_latency::CrossNodeLatency { args };
            execute(&scenario, &env, &path, g.replace)
        }
        Command::Compare(args) => {
            let scenario = scenarios::compare::Compare { args };
            execute(&scenario, &env, &path, g.replace)
        }
        Command::Ingest(args) => {
            let scenario = scenarios::ingest::Ingest { args };
            execute(&scenario, &env, &path, g.replace)
        }
        Command::Worker => unreachable!("handled above"),
    }
}

/// Runs a scenario on a runtime with `gen_threads` workers, saves and prints.
fn execute(scenario: &impl Scenario, env: &BenchEnv, path: &Path, replace: bool) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(env.gen_threads)
        .thread_name("bench-gen")
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    eprintln!("== {} ==", scenario.name());
    eprintln!("{}", scenario.describe(env));
    eprintln!(
        "machine: {} cores; the server and this generator share them",
        procstat::host_cores()
    );
    let ScenarioOutput {
        records,
        comparisons,
        details,
    } = runtime.block_on(scenario.run(env))?;
    let all = results::save(path, &records, replace)?;
    // the plots show the whole results file, this run merged in
    match plot::figures::write_all(&all, results_dir(path)) {
        Ok(written) => {
            for p in written {
                eprintln!("plot: {}", p.display());
            }
        }
        Err(e) => eprintln!("warning: plots: {e:#}"),
    }
    println!();
    print!("{}", results::render_table(&records, &comparisons));
    println!();
    if !details.is_empty() {
        for line in &details {
            println!("{line}");
        }
        println!();
    }
    for line in generator_verdict(&records, env.gen_threads) {
        println!("{line}");
    }
    println!("results: {}", path.display());
    Ok(())
}

/// The directory of the results file (where the plots go).
fn results_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Says, per record, whether the generator or the server was saturated.
fn generator_verdict(records: &[Record], gen_threads: usize) -> Vec<String> {
    let cap = 100.0 * gen_threads as f64;
    records
        .iter()
        .filter_map(|r| {
            let g = r.generator_cpu_pct?;
            let s = r.server_cpu_pct.unwrap_or(f64::NAN);
            if let (Some(busiest), Some(n)) = (r.generator_busiest_proc_cpu_pct, r.generator_processes) {
                let verdict = if busiest >= 85.0 {
                    format!("busiest generator process at {busiest:.0}% of its one thread: may be the bottleneck")
                } else {
                    format!("generator not saturated ({g:.0}% over {n} processes, busiest {busiest:.0}% of its thread)")
                };
                return Some(format!("{} {}: server CPU {s:.0}%, {verdict}", r.system, r.scenario));
            }
            let verdict = if g >= 0.85 * cap {
                format!(
                    "generator near its limit ({g:.0}% of {cap:.0}%): may be the bottleneck; try --gen-threads {}",
                    gen_threads + 1
                )
            } else {
                format!("generator not saturated ({g:.0}% of {cap:.0}% available)")
            };
            let host = r
                .host_cpu_busy_pct
                .map(|h| format!(", machine {h:.0}% busy"))
                .unwrap_or_default();
            Some(format!(
                "{} {}: server CPU {s:.0}%, {verdict}{host}",
                r.system, r.scenario
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_parse_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "herald-bench",
            "durable-publish",
            "--quick",
            "-t",
            "rest",
            "--durability",
            "relaxed,always",
            "--json",
            "/tmp/x.json",
            "--herald-arg=--queue-bytes=1000",
            "--herald-arg",
            "--log=debug",
        ])
        .unwrap();
        assert!(cli.global.quick);
        assert_eq!(
            cli.global.herald_arg,
            vec!["--queue-bytes=1000".to_string(), "--log=debug".to_string()]
        );
        let Command::DurablePublish(a) = cli.command else {
            panic!("wrong subcommand")
        };
        assert_eq!(a.transport, load::Transport::Rest);
        assert_eq!(a.durability.len(), 2);
        assert_eq!(a.publishers, 32);
        assert!(Cli::try_parse_from(["herald-bench", "durable-publish", "-w", "257"]).is_err());
    }

    #[test]
    fn cross_node_latency_flags() {
        let cli = Cli::try_parse_from([
            "herald-bench",
            "cross-node-latency",
            "--quick",
            "--rounds",
            "3",
            "-r",
            "500",
            "-s",
            "4",
        ])
        .unwrap();
        assert!(cli.global.quick);
        let Command::CrossNodeLatency(a) = cli.command else {
            panic!("wrong subcommand")
        };
        assert_eq!((a.rate, a.subscribers, a.rounds), (500.0, 4, 3));
        assert_eq!((a.topic.as_str(), a.payload_bytes), ("bench.lat", 256));
        // the payload must fit the send-time stamp
        assert!(Cli::try_parse_from(["herald-bench", "cross-node-latency", "-b", "10"]).is_err());
    }

    #[test]
    fn baseline_and_ingest_flags() {
        let cli = Cli::try_parse_from([
            "herald-bench",
            "ingest",
            "--baseline-bin",
            "/tmp/prev/herald",
            "--systems",
            "herald,herald-baseline,jetstream",
            "--only",
            "ws,half-max",
            "--quick",
        ])
        .unwrap();
        assert_eq!(
            cli.global.baseline_bin.as_deref(),
            Some(Path::new("/tmp/prev/herald"))
        );
        let Command::Ingest(a) = cli.command else {
            panic!("wrong subcommand")
        };
        assert_eq!(a.systems.as_ref().map(Vec::len), Some(3));
        assert_eq!(a.window, 16);
        let cli = Cli::try_parse_from([
            "herald-bench",
            "compare",
            "--systems",
            "herald,herald-baseline,jetstream,nats,socketio",
        ])
        .unwrap();
        let Command::Compare(a) = cli.command else {
            panic!("wrong subcommand")
        };
        assert_eq!(a.systems.map(|s| s.len()), Some(5));
    }

    #[test]
    fn verdict_flags_a_saturated_generator() {
        let r = Record {
            system: "herald".into(),
            scenario: "durable-publish/relaxed".into(),
            generator_cpu_pct: Some(97.0),
            server_cpu_pct: Some(100.0),
            ..Record::default()
        };
        let v = generator_verdict(&[r], 1);
        assert!(v[0].contains("may be the bottleneck"), "{}", v[0]);
        let v = generator_verdict(
            &[Record {
                generator_cpu_pct: Some(30.0),
                ..Record::default()
            }],
            1,
        );
        assert!(v[0].contains("not saturated"), "{}", v[0]);
    }
}
