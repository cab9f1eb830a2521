//! The results plots, one SVG per scenario family, drawn from the whole
//! results file: `fanout.svg` (delivered msg/s and p99 against
//! subscribers), `idle.svg` (RSS per idle connection, subscribed and bare),
//! `ingest.svg` (acked publishes/s and p99 against topics, publishers and
//! payload), `latency.svg` (latency distributions), and from
//! `families.rs` `transports.svg`, `topics.svg` and `durable.svg`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{
    families::{durable, topics, transports},
    ingest::ingest,
    render, Bars, Chart, Lines, Scale, Series,
};
use crate::{fleet::System, results::Record};

/// A system's colour (the same in every plot).
pub fn color(system: &str) -> &'static str {
    match system {
        "herald" => "#d62728",
        "herald-baseline" => "#ff7f0e",
        "nats" => "#1f77b4",
        "jetstream" => "#9467bd",
        "socketio" => "#2ca02c",
        _ => "#7f7f7f",
    }
}

/// Systems in the order legends list them.
pub(super) fn systems(records: &[&Record]) -> Vec<String> {
    let mut out: Vec<String> = records.iter().map(|r| r.system.clone()).collect();
    let rank = |s: &str| {
        System::ALL
            .iter()
            .position(|x| x.name() == s)
            .unwrap_or(System::ALL.len())
    };
    out.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    out.dedup();
    out
}

/// Writes every plot the records have data for into `dir`; returns the
/// files written.
pub fn write_all(records: &[Record], dir: &Path) -> Result<Vec<PathBuf>> {
    let figures = [
        ("fanout.svg", fanout(records)),
        ("idle.svg", idle(records)),
        ("ingest.svg", ingest(records)),
        ("latency.svg", latency(records)),
        ("transports.svg", transports(records)),
        ("topics.svg", topics(records)),
        ("durable.svg", durable(records)),
    ];
    let mut out = Vec::new();
    for (name, svg) in figures {
        if let Some(svg) = svg {
            let path = dir.join(name);
            std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
            out.push(path);
        }
    }
    Ok(out)
}

/// Lines of `value` against `x` per system (and per `split` value, dashed
/// after the first), over `records`.
pub(super) fn per_system(
    records: &[&Record],
    x: impl Fn(&Record) -> f64,
    value: fn(&Record) -> f64,
    split: fn(&Record) -> (u64, String),
) -> Vec<Series> {
    let mut splits: Vec<(u64, String)> = records.iter().map(|r| split(r)).collect();
    splits.sort();
    splits.dedup();
    let mut out = Vec::new();
    for sys in systems(records) {
        for (i, sp) in splits.iter().enumerate() {
            let points: Vec<(f64, f64)> = records
                .iter()
                .filter(|r| r.system == sys && split(r) == *sp)
                .map(|r| (x(r), value(r)))
                .collect();
            if points.is_empty() {
                continue;
            }
            let label = if sp.1.is_empty() {
                sys.clone()
            } else {
                format!("{sys} {}", sp.1)
            };
            out.push(Series {
                label,
                color: color(&sys).into(),
                dashed: i > 0,
                points,
            });
        }
    }
    out
}

/// Fan-out over WebSocket: delivered msg/s and p99 against subscribers.
pub fn fanout(records: &[Record]) -> Option<String> {
    let fan: Vec<&Record> = records
        .iter()
        .filter(|r| r.scenario.starts_with("fanout/"))
        .collect();
    if fan.is_empty() {
        return None;
    }
    let split: fn(&Record) -> (u64, String) =
        |r| (r.payload_bytes, format!("{} B", r.payload_bytes));
    let subs: fn(&Record) -> f64 = |r| r.subscribers as f64;
    let panel = |title: &str, y_label: &str, y_scale, value: fn(&Record) -> f64| {
        Chart::Lines(Lines {
            title: title.into(),
            x_label: "subscribers (WebSocket connections on one topic)".into(),
            y_label: y_label.into(),
            x_scale: Scale::Linear,
            y_scale,
            x_ticks: None,
            series: per_system(&fan, subs, value, split),
        })
    };
    Some(render(
        "Fan-out: one topic, N subscribers (solid: smallest payload, dashed: larger)",
        &[
            panel(
                "Delivery rate",
                "delivered messages/s (all subscribers)",
                Scale::Linear,
                |r| r.delivered_per_s,
            ),
            panel(
                "p99 publish→deliver",
                "p99 latency (ms, log scale)",
                Scale::Log,
                |r| r.p99_ms,
            ),
        ],
    ))
}

/// RSS per idle WebSocket connection, with and without a subscription.
pub fn idle(records: &[Record]) -> Option<String> {
    let idle: Vec<&Record> = records
        .iter()
        .filter(|r| r.rss_per_conn_bytes.is_some())
        .collect();
    if idle.is_empty() {
        return None;
    }
    let mut groups: Vec<String> = idle.iter().map(|r| r.scenario.clone()).collect();
    groups.sort_by_key(|g| (g.starts_with("idle-memory-bare/"), g.clone()));
    groups.dedup();
    let series = systems(&idle)
        .into_iter()
        .map(|sys| {
            let vals = groups
                .iter()
                .map(|g| {
                    idle.iter()
                        .find(|r| r.system == sys && &r.scenario == g)
                        .and_then(|r| r.rss_per_conn_bytes)
                        .map(|b| b / 1024.0)
                })
                .collect();
            (sys.clone(), color(&sys).to_string(), vals)
        })
        .collect();
    let names = groups
        .iter()
        .map(|g| {
            let n = g.rsplit('/').next().unwrap_or("");
            if g.starts_with("idle-memory-bare/") {
                format!("{n} conns, no subscription")
            } else {
                format!("{n} conns, 1 topic each")
            }
        })
        .collect();
    Some(render(
        "Idle memory: server RSS growth per idle WebSocket connection",
        &[Chart::Bars(Bars {
            title: "RSS per connection".into(),
            y_label: "KiB per connection".into(),
            groups: names,
            series,
        })],
    ))
}

/// x position of a percentile: its "nines" (−log10 of what is above it),
/// so 90 → 1, 99 → 2, 99.9 → 3; the max goes one step right of 99.99.
fn nines(p: f64) -> f64 {
    if p >= 100.0 {
        5.0
    } else {
        -(1.0 - p / 100.0).log10()
    }
}

/// Latency distributions (percentile curves) of the fixed-rate records:
/// `compare`'s `latency/…` (publish→deliver) and `ingest-half-max/…`
/// (publish→ack), a panel per scenario.
pub fn latency(records: &[Record]) -> Option<String> {
    let lat: Vec<&Record> = records
        .iter()
        .filter(|r| {
            r.scenario.starts_with("latency/") || r.scenario.starts_with("ingest-half-max/")
        })
        .collect();
    if lat.is_empty() {
        return None;
    }
    let mut scenarios: Vec<&str> = lat.iter().map(|r| r.scenario.as_str()).collect();
    scenarios.sort_unstable();
    scenarios.dedup();
    let ticks: Vec<(f64, String)> = [50.0, 90.0, 99.0, 99.9, 99.99]
        .iter()
        .map(|p| (nines(*p), format!("{p}%")))
        .chain([(nines(100.0), "max".to_string())])
        .collect();
    let charts = scenarios
        .iter()
        .map(|sc| {
            let rs: Vec<&Record> = lat.iter().copied().filter(|r| r.scenario == *sc).collect();
            let series = systems(&rs)
                .into_iter()
                .filter_map(|sys| {
                    let r = rs.iter().find(|r| r.system == sys)?;
                    let curve: Vec<[f64; 2]> = if r.percentiles_ms.is_empty() {
                        let mut c = vec![[50.0, r.p50_ms], [99.0, r.p99_ms], [99.9, r.p999_ms]];
                        c.extend(r.max_ms.map(|m| [100.0, m]));
                        c
                    } else {
                        r.percentiles_ms.clone()
                    };
                    Some(Series {
                        label: sys.clone(),
                        color: color(&sys).into(),
                        dashed: false,
                        points: curve
                            .iter()
                            .map(|[p, v]| (nines(*p), v.max(0.001)))
                            .collect(),
                    })
                })
                .collect();
            let what = rs[0].latency.clone().unwrap_or_else(|| "latency".into());
            Chart::Lines(Lines {
                title: sc.to_string(),
                x_label: "percentile".into(),
                y_label: format!("{what} (ms, log scale)"),
                x_scale: Scale::Linear,
                y_scale: Scale::Log,
                x_ticks: Some(ticks.clone()),
                series,
            })
        })
        .collect::<Vec<_>>();
    Some(render(
        "Latency distribution at a fixed publish rate",
        &charts,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(system: &str, scenario: &str) -> Record {
        Record {
            system: system.into(),
            scenario: scenario.into(),
            ..Record::default()
        }
    }

    fn parse(svg: &str) -> usize {
        let doc = roxmltree::Document::parse(svg).expect("valid XML");
        doc.descendants()
            .filter(|n| n.attribute("class") == Some("series"))
            .count()
    }

    #[test]
    fn every_family_draws_from_its_records() {
        let mut rs = Vec::new();
        for sys in ["herald", "nats", "herald-baseline"] {
            for (subs, b) in [(1000, 64), (5000, 64), (1000, 1024)] {
                let mut r = rec(sys, &format!("fanout/{subs}/{b}B"));
                (r.subscribers, r.payload_bytes, r.delivered_per_s, r.p99_ms) = (subs, b, 1e5, 3.0);
                rs.push(r);
            }
            let mut idle = rec(sys, "idle-memory/5000");
            idle.rss_per_conn_bytes = Some(5000.0);
            rs.push(idle);
        }
        for sys in ["herald", "jetstream"] {
            for t in [1u64, 100, 10_000] {
                let mut r = rec(sys, &format!("ingest/32x16/{t}t/256B"));
                (r.topics, r.publishers, r.payload_bytes) = (Some(t), Some(32), 256);
                r.delivered_per_s = 1e5 / t as f64;
                rs.push(r);
            }
            let mut h = rec(sys, "ingest-half-max/32x16/10000t/256B");
            h.percentiles_ms = vec![[50.0, 1.0], [99.0, 4.0], [99.9, 9.0], [100.0, 20.0]];
            rs.push(h);
        }
        let mut old = rec("nats", "latency/1000@100/64B");
        (old.p50_ms, old.p99_ms, old.p999_ms, old.max_ms) = (0.5, 1.0, 2.0, Some(3.0));
        rs.push(old);
        // 3 systems × 2 payloads × 2 panels
        assert_eq!(parse(&fanout(&rs).unwrap()), 12);
        let idle_svg = idle(&rs).unwrap();
        assert!(idle_svg.contains("herald-baseline"));
        // topics axis only (publishers and payload have one value): 2 panels × 2 systems
        assert_eq!(parse(&ingest(&rs).unwrap()), 4);
        assert_eq!(parse(&latency(&rs).unwrap()), 3);
        let dir = tempfile::tempdir().unwrap();
        let written = write_all(&rs, dir.path()).unwrap();
        assert_eq!(written.len(), 4);
        assert!(write_all(&[], dir.path()).unwrap().is_empty());
        assert!((nines(99.0) - 2.0).abs() < 1e-9);
    }
}
