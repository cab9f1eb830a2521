//! The `herald` binary: flag parsing and the process edge.

mod cli;

use std::net::TcpListener;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use herald::config::ServeArgs;

// sled frees old versions of its tree nodes on its own threads; with glibc's
// allocator every such free contends for the writer thread's arena lock,
// which costs the log half its append rate across many topics.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Herald: real-time pub/sub over WebSocket, SSE and long-poll.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker node.
    Serve(Box<ServeArgs>),
    /// Publish one message: DATA is sent as JSON if it parses, else as a string;
    /// --file/--stdin send raw bytes as a binary message.
    Pub(cli::PubArgs),
    /// Subscribe to a topic or pattern and print what arrives.
    Sub(cli::SubArgs),
    /// Print a topic's retained messages.
    History(cli::HistoryArgs),
    /// List the clients subscribed to a topic, on every node.
    Presence(cli::PresenceArgs),
    /// Check a stopped node's data dir for damage; exits 0 when clean, 1 when damaged.
    Verify(cli::VerifyArgs),
    /// List the topics a node stores, with their seqs, size and local subscribers (admin API).
    Topics(cli::TopicsArgs),
    /// Disconnect a client, or every client of a subject, on any node (admin API).
    Kick(cli::KickArgs),
}

fn main() {
    let matches = Cli::command()
        .mut_subcommand("serve", ServeArgs::show_defaults)
        .get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Pub(args) => cli::block_on(cli::publish::run(args)),
        Command::Sub(args) => cli::block_on(cli::subscribe::run(args)),
        Command::History(args) => cli::block_on(cli::history::run(args)),
        Command::Presence(args) => cli::block_on(cli::presence::run(args)),
        Command::Topics(args) => cli::block_on(cli::admin::topics(args)),
        Command::Kick(args) => cli::block_on(cli::admin::kick(args)),
        Command::Verify(args) => match cli::verify::run(&args) {
            Ok(cli::verify::Outcome::Clean) => Ok(()),
            Ok(cli::verify::Outcome::Damaged) => std::process::exit(1),
            Err(e) => {
                eprintln!("herald: error: {e:#}");
                std::process::exit(2);
            }
        },
    };
    if let Err(e) = result {
        eprintln!("herald: error: {e:#}");
        std::process::exit(1);
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    // sled's panics on damaged files become errors naming the data dir.
    herald::log::contain::install_hook(Some(config.data_dir.clone()));
    // Held until exit: dropping it flushes the OpenTelemetry exporter.
    let _telemetry = herald::telemetry::init(
        &config.log_filter,
        herald::telemetry::redact::Redactor::new(config.secrets()),
    );
    let listener = TcpListener::bind(config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    listener.set_nonblocking(true)?;
    actix_web::rt::System::new().block_on(async {
        // The handlers are in place before the ready line goes out: a
        // supervisor may send SIGTERM as soon as it reads it.
        let shutdown = shutdown_signal().context("cannot install the signal handlers")?;
        herald::run_reporting(config, listener, shutdown, print_ready_line)
            .await
            .map_err(anyhow::Error::from)
    })?;
    Ok(())
}

/// Stdout carries only the ready line (logs go to stderr), so a program
/// that started the node reads its address there. A closed stdout is not
/// the node's problem: the write error is ignored.
fn print_ready_line(listening: &herald::Listening) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", listening.ready_line());
    let _ = out.flush();
}

/// SIGTERM or SIGINT, with both handlers installed now (a signal that
/// arrives before the future is first polled is still caught).
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
        }
    })
}
