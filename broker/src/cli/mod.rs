//! Client commands of the `herald` binary (`pub`, `sub`, `history`,
//! `presence`), built on the `herald-client` crate; the admin commands
//! (`topics`, `kick`), over REST; and `verify`, which checks a data dir
//! offline.

pub mod admin;
pub mod history;
pub mod presence;
pub mod publish;
pub mod subscribe;
pub mod verify;

use std::{future::Future, time::Duration};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use clap::Args;
use herald_client::{Client, Event, Message};

pub use self::{
    admin::{KickArgs, TopicsArgs},
    history::HistoryArgs,
    presence::PresenceArgs,
    publish::PubArgs,
    subscribe::SubArgs,
    verify::VerifyArgs,
};

/// Flags shared by every client command.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Node to talk to. Several nodes of a cluster (comma-separated, or
    /// the flag repeated) are tried in turn: `sub` moves to the next when
    /// one fails or cannot serve yet, and resumes there.
    #[arg(
        long,
        env = "HERALD_URL",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub url: Vec<String>,
    /// Bearer token (JWT or API key).
    #[arg(
        long,
        env = "HERALD_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Print one JSON object per line (envelopes as the server sends them).
    #[arg(long)]
    pub json: bool,
}

impl ConnectArgs {
    /// A client configured from the flags.
    fn client(&self) -> anyhow::Result<herald_client::ClientBuilder> {
        let mut builder = Client::builder()
            .urls(&self.url)
            .connect_timeout(Duration::from_secs(5))
            .publish_timeout(Duration::from_secs(5));
        if let Some(token) = &self.token {
            builder = builder.token(token);
        }
        Ok(builder)
    }
}

/// Runs a command's future on a small runtime.
pub fn block_on<F: Future<Output = anyhow::Result<()>>>(future: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future)
}

/// One line for a message: JSON envelope or human-readable.
fn message_line(message: &Message, json: bool) -> String {
    if json {
        serde_json::to_string(message).expect("messages serialize")
    } else {
        format!(
            "{} #{} {} {}",
            message.topic,
            message.seq,
            format_ts(message.ts),
            message.data
        )
    }
}

/// One line for a subscription event.
fn event_line(event: Event, json: bool) -> String {
    match event {
        Event::Message {
            topic,
            seq,
            ts,
            data,
        } => message_line(
            &Message {
                topic,
                seq,
                ts,
                data,
            },
            json,
        ),
        Event::Binary {
            topic,
            seq,
            ts,
            data,
        } => binary_line(&topic, seq, ts, &data, json),
        Event::Gap { topic, from, to } => {
            if json {
                serde_json::json!({"type": "gap", "topic": topic, "from": from, "to": to})
                    .to_string()
            } else {
                format!("{topic} #{from}..#{to} lost (removed by retention)")
            }
        }
        other => format!("{other:?}"),
    }
}

/// A binary message as the server's JSON envelope (base64 `data`,
/// `"encoding":"base64"`), fields in the server's order.
#[derive(serde::Serialize)]
struct BinaryEnvelope<'a> {
    topic: &'a str,
    seq: u64,
    ts: u64,
    data: String,
    encoding: &'static str,
}

/// One line for a binary message: its JSON envelope, or
/// `TOPIC #SEQ TS base64:DATA (N bytes)`.
fn binary_line(topic: &str, seq: u64, ts: u64, data: &[u8], json: bool) -> String {
    let encoded = STANDARD.encode(data);
    if json {
        serde_json::to_string(&BinaryEnvelope {
            topic,
            seq,
            ts,
            data: encoded,
            encoding: "base64",
        })
        .expect("envelopes serialize")
    } else {
        format!(
            "{topic} #{seq} {} base64:{encoded} ({} bytes)",
            format_ts(ts),
            data.len()
        )
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn format_ts(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_lines() {
        assert_eq!(
            binary_line("a.b", 7, 0, &[0, 0xff, 0xc3, 0x28], true),
            r#"{"topic":"a.b","seq":7,"ts":0,"data":"AP/DKA==","encoding":"base64"}"#
        );
        assert_eq!(
            binary_line("a.b", 7, 0, &[0, 0xff, 0xc3, 0x28], false),
            "a.b #7 1970-01-01T00:00:00.000Z base64:AP/DKA== (4 bytes)"
        );
    }

    #[test]
    fn formats_timestamps() {
        assert_eq!(format_ts(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ts(1_764_000_000_123), "2025-11-24T16:00:00.123Z");
        assert_eq!(format_ts(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn lines() {
        let m = Message {
            topic: "a.b".into(),
            seq: 3,
            ts: 0,
            data: serde_json::json!({"x": 1}),
        };
        assert_eq!(
            message_line(&m, true),
            r#"{"topic":"a.b","seq":3,"ts":0,"data":{"x":1}}"#
        );
        assert_eq!(
            message_line(&m, false),
            r#"a.b #3 1970-01-01T00:00:00.000Z {"x":1}"#
        );
        let gap = Event::Gap {
            topic: "a.b".into(),
            from: 1,
            to: 2,
        };
        assert_eq!(
            event_line(gap, true),
            r#"{"from":1,"to":2,"topic":"a.b","type":"gap"}"#
        );
    }
}
