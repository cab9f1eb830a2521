//! `herald pub TOPIC DATA`, and `herald pub TOPIC --file F | --stdin` for
//! raw bytes.

use std::{io::Read, path::PathBuf};

use clap::Args;

use super::ConnectArgs;

/// Flags of `herald pub`.
#[derive(Debug, Clone, Args)]
pub struct PubArgs {
    /// Concrete topic to publish to.
    pub topic: String,
    /// The payload: parsed as JSON if it is valid JSON, else sent as a string.
    #[arg(required_unless_present_any = ["file", "stdin"], conflicts_with_all = ["file", "stdin"])]
    pub data: Option<String>,
    /// Publish this file's bytes, byte for byte, as a binary message
    /// (`application/octet-stream`).
    #[arg(long, value_name = "FILE", conflicts_with = "stdin")]
    pub file: Option<PathBuf>,
    /// Publish standard input's bytes (read to its end), byte for byte, as a
    /// binary message.
    #[arg(long)]
    pub stdin: bool,
    /// Idempotency key (default: a fresh one, so retries are safe).
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// The raw bytes to publish, if `--file` or `--stdin` asked for them.
fn raw_payload(args: &PubArgs) -> anyhow::Result<Option<Vec<u8>>> {
    if let Some(path) = &args.file {
        return std::fs::read(path)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()));
    }
    if args.stdin {
        let mut bytes = Vec::new();
        std::io::stdin().lock().read_to_end(&mut bytes)?;
        return Ok(Some(bytes));
    }
    Ok(None)
}

/// Publishes one message and prints its seq.
pub async fn run(args: PubArgs) -> anyhow::Result<()> {
    let raw = raw_payload(&args)?;
    let client = args.connect.client()?.build()?;
    let ack = match (raw, &args.key) {
        (Some(bytes), Some(key)) => {
            client
                .publish_bytes_with_key(&args.topic, bytes, key)
                .await?
        }
        (Some(bytes), None) => client.publish_bytes(&args.topic, bytes).await?,
        (None, key) => {
            let text = args.data.as_deref().unwrap_or_default();
            let data = serde_json::from_str::<serde_json::Value>(text)
                .unwrap_or_else(|_| serde_json::Value::String(text.to_string()));
            match key {
                Some(key) => client.publish_with_key(&args.topic, &data, key).await?,
                None => client.publish(&args.topic, &data).await?,
            }
        }
    };
    if args.connect.json {
        println!("{}", serde_json::to_string(&ack)?);
    } else {
        println!("published {} #{}", ack.topic, ack.seq);
    }
    Ok(())
}
