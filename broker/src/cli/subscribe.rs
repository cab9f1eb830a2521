//! `herald sub PATTERN`

use std::io::Write;

use clap::Args;
use futures_util::StreamExt;
use herald_client::{ConnectionEvent, Event, Start, Transport};

use super::{event_line, ConnectArgs};

/// Flags of `herald sub`.
#[derive(Debug, Clone, Args)]
pub struct SubArgs {
    /// Topic or pattern (`orders.*`, `orders.>`).
    pub pattern: String,
    /// Start after this seq; on a pattern, after this seq on each matching topic (`0`: everything retained).
    #[arg(long, value_name = "N")]
    pub since: Option<u64>,
    /// Transports to use, in order of preference (default: ws,sse,poll).
    #[arg(long, value_name = "ws|sse|poll", value_delimiter = ',')]
    pub transport: Vec<Transport>,
    /// Exit after this many messages.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Write each message's payload to stdout and nothing else: a binary
    /// message's bytes as they are, a JSON message's `data` as JSON text,
    /// with no separator between messages (binary payloads may hold any
    /// byte). Meant for `--count 1` or payloads that frame themselves;
    /// gaps go to stderr.
    #[arg(long, conflicts_with = "json")]
    pub raw: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Prints every event of a subscription until interrupted (or `--count`).
/// Connection changes go to stderr.
pub async fn run(args: SubArgs) -> anyhow::Result<()> {
    let mut builder = args.connect.client()?;
    if !args.transport.is_empty() {
        builder = builder.transports(args.transport.iter().copied());
    }
    let client = builder.build()?;
    // Reported from the start: a node that is not ready yet (catching up
    // with its cluster, draining) makes the subscribe wait, not fail.
    let mut events = client.connection_events();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok(event) = events.recv().await {
            match event {
                // The first one is the subscription itself, reported below.
                ConnectionEvent::Connected { .. } if first => first = false,
                ConnectionEvent::Connected { url, transport, .. } => {
                    eprintln!("reconnected to {url} via {transport}")
                }
                ConnectionEvent::Disconnected { url, reason, .. } => {
                    eprintln!("disconnected from {url}: {reason}; reconnecting")
                }
                ConnectionEvent::Refused {
                    url,
                    reason,
                    retry_after,
                    ..
                } => eprintln!(
                    "{url} cannot serve yet ({reason}); trying again, elsewhere first, \
                     not before {retry_after:?}"
                ),
                _ => {}
            }
        }
    });
    let start = args.since.map_or(Start::Live, Start::Since);
    let mut sub = client.subscribe(&args.pattern, start).await?;
    if let Some((url, transport)) = sub.connection() {
        eprintln!("subscribed to {} at {url} via {transport}", args.pattern);
    }
    let mut received = 0u64;
    let stdout = std::io::stdout();
    while args.count.is_none_or(|n| received < n) {
        let Some(event) = sub.next().await else {
            break;
        };
        let event = event?;
        if matches!(event, Event::Message { .. } | Event::Binary { .. }) {
            received += 1;
        }
        let mut out = stdout.lock();
        if args.raw {
            match event {
                Event::Binary { data, .. } => out.write_all(&data)?,
                Event::Message { data, .. } => serde_json::to_writer(&mut out, &data)?,
                other => eprintln!("{}", event_line(other, false)),
            }
        } else {
            writeln!(out, "{}", event_line(event, args.connect.json))?;
        }
        out.flush()?;
    }
    Ok(())
}
