//! The README's quick start: subscribe, publish, print what arrives.
//! Needs a node on 127.0.0.1:8080 (`herald serve`).

use futures_util::StreamExt;
use herald_client::{Client, Start};

#[tokio::main]
async fn main() -> Result<(), herald_client::Error> {
    let client = Client::builder().urls(["http://127.0.0.1:8080"]).build()?;
    let mut sub = client.subscribe("orders.*", Start::Live).await?;
    client
        .publish("orders.eu", serde_json::json!({"item": "pen"}))
        .await?;
    while let Some(event) = sub.next().await {
        println!("{:?}", event?); // Message { topic: "orders.eu", seq: 1, .. }
    }
    Ok(())
}
