//! The plots of the scenarios without a figure of their own in
//! `figures.rs`: `transports.svg` (fan-out over WebSocket, SSE and
//! long-poll against subscribers), `topics.svg` (`many-topics`: a
//! subscriber per topic) and `durable.svg` (`durable-publish`: acked
//! publishes with the log fsyncing).

use super::{figures::color, figures::systems, render, Bars, Chart, Lines, Scale, Series};
use crate::results::Record;

/// A transport's dash and name: WebSocket solid, the others dashed.
const TRANSPORTS: [(&str, &str); 3] = [
    ("fanout/", "WebSocket"),
    ("fanout-sse/", "SSE"),
    ("fanout-poll/", "long-poll"),
];

/// Fan-out per transport: delivered msg/s and p99 against subscribers, a
/// line per (system, transport), at the smallest payload the SSE and
/// long-poll records have.
pub fn transports(records: &[Record]) -> Option<String> {
    let other: Vec<&Record> = records
        .iter()
        .filter(|r| r.scenario.starts_with("fanout-sse/") || r.scenario.starts_with("fanout-poll/"))
        .collect();
    let payload = other.iter().map(|r| r.payload_bytes).min()?;
    let mut with_ws: Vec<&Record> = records
        .iter()
        .filter(|r| {
            r.payload_bytes == payload && TRANSPORTS.iter().any(|(p, _)| r.scenario.starts_with(p))
        })
        .collect();
    // Only the systems that have another transport than WebSocket.
    let shown = systems(&other);
    with_ws.retain(|r| shown.contains(&r.system));
    let series = |value: fn(&Record) -> f64| -> Vec<Series> {
        let mut out = Vec::new();
        for sys in &shown {
            for (i, (prefix, name)) in TRANSPORTS.iter().enumerate() {
                let mut points: Vec<(f64, f64)> = with_ws
                    .iter()
                    .filter(|r| &r.system == sys && r.scenario.starts_with(prefix))
                    .map(|r| (r.subscribers as f64, value(r)))
                    .collect();
                if points.is_empty() {
                    continue;
                }
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                out.push(Series {
                    label: format!("{sys} {name}"),
                    color: transport_color(sys, i),
                    dashed: i > 0,
                    points,
                });
            }
        }
        out
    };
    let panel = |title: &str, y_label: &str, y_scale, value: fn(&Record) -> f64| {
        Chart::Lines(Lines {
            title: title.into(),
            x_label: "subscribers (one topic)".into(),
            y_label: y_label.into(),
            x_scale: Scale::Linear,
            y_scale,
            x_ticks: None,
            series: series(value),
        })
    };
    Some(render(
        &format!("Fan-out by transport: one topic, N subscribers, {payload} B messages"),
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

/// The system's colour for WebSocket, darker for SSE and long-poll, so the
/// three lines of one system stay apart in print too.
fn transport_color(system: &str, transport: usize) -> String {
    match (system, transport) {
        (_, 0) => color(system).into(),
        ("herald", 1) => "#8c1a1b".into(),
        ("herald", _) => "#f08080".into(),
        (_, 1) => "#555555".into(),
        _ => "#aaaaaa".into(),
    }
}

/// Grouped bars of `value` per scenario (a group) and system (a bar).
fn bars_per_scenario(
    records: &[&Record],
    title: &str,
    y_label: &str,
    group_name: impl Fn(&str) -> String,
    value: fn(&Record) -> Option<f64>,
) -> Chart {
    let mut groups: Vec<String> = records.iter().map(|r| r.scenario.clone()).collect();
    groups.sort();
    groups.dedup();
    let series = systems(records)
        .into_iter()
        .map(|sys| {
            let vals = groups
                .iter()
                .map(|g| {
                    records
                        .iter()
                        .find(|r| r.system == sys && &r.scenario == g)
                        .and_then(|r| value(r))
                })
                .collect();
            (sys.clone(), color(&sys).to_string(), vals)
        })
        .collect();
    Chart::Bars(Bars {
        title: title.into(),
        y_label: y_label.into(),
        groups: groups.iter().map(|g| group_name(g)).collect(),
        series,
    })
}

/// `many-topics/<topics>/<payload>`: a subscriber on each of many topics,
/// publishes spread over them; delivered msg/s and p99 per system.
pub fn topics(records: &[Record]) -> Option<String> {
    let many: Vec<&Record> = records
        .iter()
        .filter(|r| r.scenario.starts_with("many-topics/"))
        .collect();
    if many.is_empty() {
        return None;
    }
    let name = |scenario: &str| {
        let mut parts = scenario.split('/').skip(1);
        let topics = parts.next().unwrap_or("?");
        let payload = parts.next().unwrap_or("?");
        format!("{topics} topics × 1 subscriber, {payload}")
    };
    Some(render(
        "Many topics: one WebSocket subscriber per topic, publishes spread over the topics",
        &[
            bars_per_scenario(&many, "Delivery rate", "delivered messages/s", name, |r| {
                Some(r.delivered_per_s)
            }),
            bars_per_scenario(
                &many,
                "p99 publish→deliver",
                "p99 latency (ms)",
                name,
                |r| Some(r.p99_ms),
            ),
        ],
    ))
}

/// `durable-publish/<durability>[/rest][@rate]`: publishes acknowledged
/// once on disk; acked publishes/s and p99 publish→ack per system.
pub fn durable(records: &[Record]) -> Option<String> {
    let durable: Vec<&Record> = records
        .iter()
        .filter(|r| r.scenario.starts_with("durable-publish/"))
        .collect();
    if durable.is_empty() {
        return None;
    }
    let name = |scenario: &str| {
        let rest = scenario.trim_start_matches("durable-publish/");
        let (mode, rate) = rest.split_once('@').unwrap_or((rest, ""));
        let (mode, via) = mode.split_once('/').unwrap_or((mode, "ws"));
        let via = if via == "rest" { "REST" } else { "WebSocket" };
        if rate.is_empty() {
            format!("{mode}, {via}")
        } else {
            format!("{mode}, {via}, {rate}/s")
        }
    };
    Some(render(
        "Durable publish: acknowledged once the log has it on disk",
        &[
            bars_per_scenario(
                &durable,
                "Acked publishes",
                "acked publishes/s",
                name,
                |r| Some(r.acked_per_s.unwrap_or(r.delivered_per_s)),
            ),
            bars_per_scenario(
                &durable,
                "p99 publish→ack",
                "p99 latency (ms)",
                name,
                |r| Some(r.p99_ms),
            ),
        ],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(system: &str, scenario: &str, subscribers: u64, payload: u64) -> Record {
        Record {
            system: system.into(),
            scenario: scenario.into(),
            subscribers,
            payload_bytes: payload,
            delivered_per_s: 1e5,
            p99_ms: 5.0,
            ..Record::default()
        }
    }

    fn series(svg: &str) -> usize {
        let doc = roxmltree::Document::parse(svg).expect("valid XML");
        doc.descendants()
            .filter(|n| n.attribute("class") == Some("series"))
            .count()
    }

    #[test]
    fn each_family_draws_from_its_records() {
        let mut rs = Vec::new();
        for subs in [1000, 5000] {
            rs.push(rec("herald", &format!("fanout/{subs}/64B"), subs, 64));
            rs.push(rec("herald", &format!("fanout/{subs}/1024B"), subs, 1024));
            rs.push(rec("nats", &format!("fanout/{subs}/64B"), subs, 64));
            rs.push(rec("herald", &format!("fanout-sse/{subs}/64B"), subs, 64));
            rs.push(rec("herald", &format!("fanout-poll/{subs}/64B"), subs, 64));
        }
        // herald over 3 transports (not nats, not 1024 B) × 2 panels
        let svg = transports(&rs).unwrap();
        assert_eq!(series(&svg), 6);
        assert!(svg.contains("herald SSE") && !svg.contains("nats WebSocket"));
        assert!(topics(&rs).is_none() && durable(&rs).is_none());

        for sys in ["herald", "nats", "socketio"] {
            rs.push(rec(sys, "many-topics/10000/64B", 10000, 64));
        }
        assert!(topics(&rs)
            .unwrap()
            .contains("10000 topics × 1 subscriber, 64B"));
        let mut d = rec("herald", "durable-publish/always/rest", 0, 64);
        d.acked_per_s = Some(15000.0);
        rs.push(d);
        rs.push(rec("herald-baseline", "durable-publish/always", 0, 64));
        let svg = durable(&rs).unwrap();
        assert!(svg.contains("always, REST") && svg.contains("always, WebSocket"));
    }
}
