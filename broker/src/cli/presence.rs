//! `herald presence TOPIC`

use clap::Args;

use super::ConnectArgs;

/// Flags of `herald presence`.
#[derive(Debug, Clone, Args)]
pub struct PresenceArgs {
    /// Concrete topic.
    pub topic: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Prints every client subscribed to the topic, on any node.
pub async fn run(args: PresenceArgs) -> anyhow::Result<()> {
    let client = args.connect.client()?.build()?;
    let presence = client.presence(&args.topic).await?;
    for c in &presence.clients {
        if args.connect.json {
            println!("{}", serde_json::to_string(c)?);
        } else {
            println!(
                "{}\t{}\t{}\t{}",
                c.client_id,
                c.transport,
                c.node,
                c.sub.as_deref().unwrap_or("-")
            );
        }
    }
    if !args.connect.json {
        eprintln!(
            "{} client(s) subscribed to {}",
            presence.clients.len(),
            presence.topic
        );
    }
    Ok(())
}
