//! `herald history TOPIC`

use clap::Args;

use super::{message_line, ConnectArgs};

/// Flags of `herald history`.
#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// Concrete topic.
    pub topic: String,
    /// Only messages with a seq above this one.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub since: u64,
    /// At most this many messages (default: every retained one).
    #[arg(long, value_name = "M", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Largest page the server hands out.
const PAGE: u64 = 1000;

/// Prints retained messages, paging through the topic's history.
pub async fn run(args: HistoryArgs) -> anyhow::Result<()> {
    let client = args.connect.client()?.build()?;
    let mut since = args.since;
    let mut left = args.limit.unwrap_or(u64::MAX);
    let mut printed = 0u64;
    let (first, last) = loop {
        let want = left.min(PAGE);
        let page = client.history(&args.topic, since, want as u32).await?;
        for m in &page.messages {
            println!("{}", message_line(m, args.connect.json));
        }
        printed += page.messages.len() as u64;
        left -= (page.messages.len() as u64).min(left);
        match page.messages.last() {
            Some(m) if left > 0 && m.seq < page.last_seq => since = m.seq,
            _ => break (page.first_seq, page.last_seq),
        }
    };
    if !args.connect.json {
        eprintln!(
            "{printed} message(s) of {}; retained seqs {first}..={last}",
            args.topic
        );
    }
    Ok(())
}
