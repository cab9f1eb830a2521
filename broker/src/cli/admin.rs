//! `herald topics` and `herald kick`: the admin API (protocol-spec §4.9)
//! from the command line, with an API key holding the `admin` scope. The
//! client library has no admin calls, so these speak REST directly.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;

/// Flags shared by the admin commands.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Node to talk to; several comma-separated URLs are tried in turn.
    #[arg(
        long,
        env = "HERALD_URL",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub url: Vec<String>,
    /// API key with the admin scope (not needed while the node's auth is off).
    #[arg(
        long = "api-key",
        env = "HERALD_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,
    /// Print JSON: one topic per line (`topics`), the server's answer (`kick`).
    #[arg(long)]
    pub json: bool,
}

/// Flags of `herald topics`.
#[derive(Debug, Clone, Args)]
pub struct TopicsArgs {
    /// Only topics whose name starts with this.
    #[arg(long, value_name = "P")]
    pub prefix: Option<String>,
    /// At most this many topics (default: every one).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Flags of `herald kick`.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("whom").required(true).args(["client", "sub"])))]
pub struct KickArgs {
    /// The client id to disconnect (from presence, or a client's `hello`/`pong`).
    #[arg(long, value_name = "ID")]
    pub client: Option<String>,
    /// Disconnect every client whose credentials carry this `sub`.
    #[arg(long, value_name = "SUB")]
    pub sub: Option<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Largest page the server hands out.
const PAGE: u64 = 1000;

/// One topic as `GET /v1/topics` lists it.
#[derive(Debug, Deserialize)]
struct TopicRow {
    topic: String,
    first_seq: u64,
    last_seq: u64,
    messages: u64,
    bytes: u64,
    subscribers: u64,
}

#[derive(Debug, Deserialize)]
struct TopicsPage {
    topics: Vec<Value>,
    next_after: Option<String>,
}

/// Lists topics, paging through the node's answer.
pub async fn topics(args: TopicsArgs) -> anyhow::Result<()> {
    let mut left = args.limit.unwrap_or(u64::MAX);
    let mut after: Option<String> = None;
    let mut rows = Vec::new();
    loop {
        let want = left.min(PAGE).to_string();
        let mut query = vec![("limit", want.as_str())];
        if let Some(prefix) = &args.prefix {
            query.push(("prefix", prefix.as_str()));
        }
        if let Some(after) = &after {
            query.push(("after", after.as_str()));
        }
        let page: TopicsPage = serde_json::from_value(
            call(&args.admin, Method::GET, &["v1", "topics"], &query, None).await?,
        )
        .context("unexpected answer from the node")?;
        left -= (page.topics.len() as u64).min(left);
        for topic in page.topics {
            if args.admin.json {
                println!("{topic}");
            } else {
                rows.push(serde_json::from_value::<TopicRow>(topic)?);
            }
        }
        match page.next_after {
            Some(next) if left > 0 => after = Some(next),
            _ => break,
        }
    }
    if !args.admin.json {
        print!("{}", table(&rows));
        eprintln!("{} topic(s)", rows.len());
    }
    Ok(())
}

/// Aligned columns, a header first.
fn table(rows: &[TopicRow]) -> String {
    let header = ["TOPIC", "FIRST", "LAST", "MESSAGES", "BYTES", "SUBSCRIBERS"].map(String::from);
    let mut lines = vec![header];
    for r in rows {
        lines.push([
            r.topic.clone(),
            r.first_seq.to_string(),
            r.last_seq.to_string(),
            r.messages.to_string(),
            r.bytes.to_string(),
            r.subscribers.to_string(),
        ]);
    }
    let mut widths = [0; 6];
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, w))| match i {
                0 => format!("{cell:<w$}"),
                _ => format!("{cell:>w$}"),
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Disconnects a client, or every client of a `sub`, on any node.
pub async fn kick(args: KickArgs) -> anyhow::Result<()> {
    let path = match (&args.client, &args.sub) {
        (Some(id), _) => ["v1", "clients", id.as_str(), "disconnect"],
        (None, Some(sub)) => ["v1", "users", sub.as_str(), "disconnect"],
        (None, None) => bail!("give --client ID or --sub SUB"),
    };
    let answer = call(&args.admin, Method::POST, &path, &[], None).await?;
    if args.admin.json {
        println!("{answer}");
        return Ok(());
    }
    let count = answer["disconnected"]
        .as_u64()
        .ok_or_else(|| anyhow!("unexpected answer from the node: {answer}"))?;
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect()
    };
    println!(
        "disconnected {count} client(s); nodes that answered: {}",
        names(&answer["nodes"]).join(", ")
    );
    let missing = names(&answer["missing"]);
    if !missing.is_empty() {
        eprintln!(
            "no answer from {}: their clients may or may not have been disconnected",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Sends one admin request to the first URL that answers it: a node that
/// cannot be reached, or answers 503, is skipped for the next.
async fn call(
    args: &AdminArgs,
    method: Method,
    segments: &[&str],
    query: &[(&str, &str)],
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let text = request(args, method, segments, query, body).await?;
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// As [`call`], returning the `200` answer's body as the node sent it.
pub(super) async fn request(
    args: &AdminArgs,
    method: Method,
    segments: &[&str],
    query: &[(&str, &str)],
    body: Option<Value>,
) -> anyhow::Result<String> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut last = anyhow!("no --url given");
    for base in &args.url {
        let mut url = Url::parse(base.trim()).with_context(|| format!("invalid URL {base:?}"))?;
        url.path_segments_mut()
            .map_err(|()| anyhow!("{base} cannot be a base URL"))?
            .pop_if_empty()
            .extend(segments);
        let mut req = http.request(method.clone(), url.clone()).query(query);
        if let Some(key) = &args.api_key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = &body {
            req = req.json(body);
        }
        let res = match req.send().await {
            Ok(res) => res,
            Err(e) => {
                last = anyhow!("{url}: {e}");
                continue;
            }
        };
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        if status == StatusCode::OK {
            return Ok(text);
        }
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let refusal = match value["error"]["code"].as_str() {
            Some(code) => anyhow!(
                "{code}: {}",
                value["error"]["message"].as_str().unwrap_or_default()
            ),
            None => anyhow!("{url}: HTTP {status}"),
        };
        if status != StatusCode::SERVICE_UNAVAILABLE {
            return Err(refusal);
        }
        last = refusal;
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let row = |topic: &str, last: u64, bytes: u64| TopicRow {
            topic: topic.into(),
            first_seq: 1,
            last_seq: last,
            messages: last,
            bytes,
            subscribers: 0,
        };
        let text = table(&[row("a.b", 3, 120), row("orders.eu", 1200, 5)]);
        assert_eq!(
            text,
            "TOPIC      FIRST  LAST  MESSAGES  BYTES  SUBSCRIBERS\n\
             a.b            1     3         3    120            0\n\
             orders.eu      1  1200      1200      5            0\n"
        );
    }
}
