//! `herald history TOPIC`. It reads the history over REST itself, so that
//! `--json` prints each envelope exactly as the node sent it — a binary
//! message with its `"encoding":"base64"` (the client library's history
//! type has no `encoding`).

use base64::{engine::general_purpose::STANDARD, Engine as _};
use clap::Args;
use reqwest::Method;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{admin, binary_line, message_line, ConnectArgs};

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

/// One page of `GET /v1/topics/{topic}/messages`, envelopes kept verbatim.
#[derive(Deserialize)]
struct Page {
    messages: Vec<Box<RawValue>>,
    first_seq: u64,
    last_seq: u64,
}

/// The fields of an envelope the human line shows.
#[derive(Deserialize)]
struct Envelope {
    topic: String,
    seq: u64,
    ts: u64,
    #[serde(default)]
    data: serde_json::Value,
    #[serde(default)]
    encoding: Option<String>,
}

/// An envelope as a line: verbatim with `--json`, else human-readable.
fn line(raw: &RawValue, json: bool) -> anyhow::Result<(String, u64)> {
    // Stored payloads may nest deeper than serde_json's default limit.
    let m: Envelope = herald_client::decode::from_str(raw.get())?;
    if json {
        return Ok((raw.get().to_string(), m.seq));
    }
    let text = match (m.encoding.as_deref(), m.data.as_str()) {
        (Some("base64"), Some(b64)) => {
            binary_line(&m.topic, m.seq, m.ts, &STANDARD.decode(b64)?, false)
        }
        _ => message_line(
            &herald_client::Message {
                topic: m.topic,
                seq: m.seq,
                ts: m.ts,
                data: m.data,
            },
            false,
        ),
    };
    Ok((text, m.seq))
}

/// Prints retained messages, paging through the topic's history.
pub async fn run(args: HistoryArgs) -> anyhow::Result<()> {
    let rest = admin::AdminArgs {
        url: args.connect.url.clone(),
        api_key: args.connect.token.clone(),
        json: args.connect.json,
    };
    let path = ["v1", "topics", args.topic.as_str(), "messages"];
    let mut since = args.since;
    let mut left = args.limit.unwrap_or(u64::MAX);
    let mut printed = 0u64;
    let (first, last) = loop {
        let (since_text, want) = (since.to_string(), left.min(PAGE).to_string());
        let query = [("since", since_text.as_str()), ("limit", want.as_str())];
        let body = admin::request(&rest, Method::GET, &path, &query, None).await?;
        let page: Page = herald_client::decode::from_str(&body)
            .map_err(|e| anyhow::anyhow!("undecodable history page: {e}"))?;
        let mut newest = None;
        for raw in &page.messages {
            let (text, seq) = line(raw, args.connect.json)?;
            println!("{text}");
            newest = Some(seq);
        }
        printed += page.messages.len() as u64;
        left -= (page.messages.len() as u64).min(left);
        match newest {
            Some(seq) if left > 0 && seq < page.last_seq => since = seq,
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
