//! `herald pub TOPIC DATA`

use clap::Args;

use super::ConnectArgs;

/// Flags of `herald pub`.
#[derive(Debug, Clone, Args)]
pub struct PubArgs {
    /// Concrete topic to publish to.
    pub topic: String,
    /// The payload: parsed as JSON if it is valid JSON, else sent as a string.
    pub data: String,
    /// Idempotency key (default: a fresh one, so retries are safe).
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Publishes one message and prints its seq.
pub async fn run(args: PubArgs) -> anyhow::Result<()> {
    let client = args.connect.client()?.build()?;
    let data = serde_json::from_str::<serde_json::Value>(&args.data)
        .unwrap_or_else(|_| serde_json::Value::String(args.data.clone()));
    let ack = match &args.key {
        Some(key) => client.publish_with_key(&args.topic, &data, key).await?,
        None => client.publish(&args.topic, &data).await?,
    };
    if args.connect.json {
        println!("{}", serde_json::to_string(&ack)?);
    } else {
        println!("published {} #{}", ack.topic, ack.seq);
    }
    Ok(())
}
