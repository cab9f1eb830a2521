//! `ingest.svg`: acked publishes/s and p99 publish→ack of `ingest`'s
//! WebSocket points against topics, publishers and payload.

use super::{figures::per_system, render, Chart, Lines, Scale};
use crate::{results::Record, scenarios::ingest::PROBE};

/// The value most records have (the sweep's centre when the probe's is
/// missing).
fn centre(records: &[&Record], f: fn(&Record) -> u64, want: u64) -> u64 {
    if records.iter().any(|r| f(r) == want) {
        return want;
    }
    let mut vals: Vec<u64> = records.iter().map(|r| f(r)).collect();
    vals.sort_unstable();
    vals.chunk_by(|a, b| a == b)
        .max_by_key(|c| c.len())
        .map_or(want, |c| c[0])
}

/// Reads a plotted value from a record.
type Metric = fn(&Record) -> f64;

/// One axis of the ingest sweep, at fixed values of the other two.
struct SweepAxis<'a> {
    /// Axis label, with its unit.
    name: &'static str,
    /// The record's value on this axis.
    key: fn(&Record) -> u64,
    /// What the other axes are fixed at.
    fixed: String,
    /// The records on this axis.
    records: Vec<&'a Record>,
}

/// Ingest over WebSocket: throughput and p99 against topics, publishers
/// and payload, each axis at the probe's values of the other two.
pub fn ingest(records: &[Record]) -> Option<String> {
    let ws: Vec<&Record> = records
        .iter()
        .filter(|r| r.scenario.starts_with("ingest/"))
        .collect();
    if ws.is_empty() {
        return None;
    }
    let topics: fn(&Record) -> u64 = |r| r.topics.unwrap_or(1);
    let pubs: fn(&Record) -> u64 = |r| r.publishers.unwrap_or(1);
    let bytes: fn(&Record) -> u64 = |r| r.payload_bytes;
    let (p, t, b) = (
        centre(&ws, pubs, PROBE.0 as u64),
        centre(&ws, topics, PROBE.1 as u64),
        centre(&ws, bytes, PROBE.2 as u64),
    );
    let no_split: fn(&Record) -> (u64, String) = |_| (0, String::new());
    let mut charts = Vec::new();
    let axes = [
        SweepAxis {
            name: "topics",
            key: topics,
            fixed: format!("{p} publishers, {b} B"),
            records: ws
                .iter()
                .copied()
                .filter(|r| pubs(r) == p && bytes(r) == b)
                .collect(),
        },
        SweepAxis {
            name: "publishers (WebSocket connections, 16 in flight each)",
            key: pubs,
            fixed: format!("{t} topics, {b} B"),
            records: ws
                .iter()
                .copied()
                .filter(|r| topics(r) == t && bytes(r) == b)
                .collect(),
        },
        SweepAxis {
            name: "payload (bytes)",
            key: bytes,
            fixed: format!("{p} publishers, {t} topics"),
            records: ws
                .iter()
                .copied()
                .filter(|r| pubs(r) == p && topics(r) == t)
                .collect(),
        },
    ];
    for axis in axes {
        let mut xs: Vec<u64> = axis.records.iter().map(|r| (axis.key)(r)).collect();
        xs.sort_unstable();
        xs.dedup();
        if xs.len() < 2 {
            continue;
        }
        let short = axis.name.split(' ').next().unwrap_or(axis.name);
        let metrics: [(&str, &str, Metric); 2] = [
            ("acked publishes/s", "acked publishes/s", |r| {
                r.delivered_per_s
            }),
            ("p99 publish→ack", "p99 publish→ack (ms)", |r| r.p99_ms),
        ];
        for (what, y_label, value) in metrics {
            charts.push(Chart::Lines(Lines {
                title: format!("{what} by {short} ({})", axis.fixed),
                x_label: format!("{}, log scale", axis.name),
                y_label: y_label.into(),
                x_scale: Scale::Log,
                y_scale: Scale::Linear,
                x_ticks: None,
                series: per_system(&axis.records, |r| (axis.key)(r) as f64, value, no_split),
            }));
        }
    }
    if charts.is_empty() {
        return None;
    }
    let durability = ws
        .iter()
        .find(|r| r.system == "herald")
        .and_then(|r| r.durability.clone())
        .unwrap_or_default();
    Some(render(
        &format!("Ingest: durable publishes over WebSocket, no subscribers (Herald --durability {durability})"),
        &charts,
    ))
}
