//! `compare`'s ratio lines (herald/nats, herald/socketio per scenario), the
//! targets of issue 5, and the fan-out plot `bench/results/fanout.svg`.

use std::{fmt::Write as _, path::Path};

use anyhow::Result;

use crate::results::{ms, thousands, Comparison, Record};

/// Scenario prefixes this module owns.
fn is_compare(r: &Record) -> bool {
    [
        "fanout",
        "many-topics/",
        "latency/",
        "idle-memory/",
        "idle-memory-bare/",
    ]
    .iter()
    .any(|p| r.scenario.starts_with(p))
}

/// The WebSocket scenario a Herald SSE/long-poll record is compared with.
fn peer_scenario(scenario: &str) -> String {
    scenario
        .replacen("fanout-sse/", "fanout/", 1)
        .replacen("fanout-poll/", "fanout/", 1)
}

/// A short summary of one record for the progress output.
pub fn one_line(r: &Record) -> String {
    if let Some(per) = r.rss_per_conn_bytes {
        return format!(
            "{} conns, RSS {:.1} MiB, {:.2} KiB/conn",
            r.idle_connections.unwrap_or(0),
            r.server_rss_kib as f64 / 1024.0,
            per / 1024.0
        );
    }
    format!(
        "{} delivered/s, p50 {} p99 {} p99.9 {} ms, server CPU {:.0}%, gen CPU {:.0}%, errors {}",
        thousands(r.delivered_per_s),
        ms(r.p50_ms),
        ms(r.p99_ms),
        ms(r.p999_ms),
        r.server_cpu_pct.unwrap_or(f64::NAN),
        r.generator_cpu_pct.unwrap_or(f64::NAN),
        r.errors.unwrap_or(0)
    )
}

/// herald/nats and herald/socketio for every Herald record with a peer
/// record of the same scenario (SSE/long-poll against the peers' WebSocket).
pub fn comparisons(records: &[Record]) -> Vec<Comparison> {
    let mut out = Vec::new();
    for h in records
        .iter()
        .filter(|r| r.system == "herald" && is_compare(r) && r.rss_per_conn_bytes.is_none())
    {
        let want = peer_scenario(&h.scenario);
        for peer in ["nats", "socketio"] {
            if let Some(p) = records
                .iter()
                .find(|r| r.system == peer && r.scenario == want)
            {
                out.push(Comparison {
                    label: format!("herald/{peer} {}", h.scenario),
                    numerator: h.clone(),
                    denominator: p.clone(),
                    throughput: !h.scenario.starts_with("latency/"),
                });
            }
        }
    }
    out
}

fn find<'a>(records: &'a [Record], system: &str, scenario: &str) -> Option<&'a Record> {
    records
        .iter()
        .find(|r| r.system == system && r.scenario == scenario)
}

/// Idle memory per connection, and each issue-5 target met or missed.
pub fn details(records: &[Record]) -> Vec<String> {
    let mut out = Vec::new();
    for h in records
        .iter()
        .filter(|r| r.system == "herald" && r.rss_per_conn_bytes.is_some())
    {
        let what = if h.scenario.starts_with("idle-memory-bare/") {
            "with no subscription"
        } else {
            "with one subscription"
        };
        let mut line = format!("{}: RSS per idle WebSocket connection {what}", h.scenario);
        for sys in ["herald", "nats", "socketio"] {
            if let Some(per) = find(records, sys, &h.scenario).and_then(|r| r.rss_per_conn_bytes) {
                let _ = write!(line, " {sys} {:.2} KiB", per / 1024.0);
            }
        }
        out.push(line);
        // The target is for what a user's idle tab holds: a subscription.
        if h.scenario.starts_with("idle-memory/") {
            let per = h.rss_per_conn_bytes.unwrap_or(0.0) / 1024.0;
            out.push(target_line(
                "idle memory <= 6 KiB per subscribed connection",
                per <= 6.0,
                format!("{per:.2} KiB ({:.2}x the target)", per / 6.0),
            ));
        }
    }
    for h in records
        .iter()
        .filter(|r| r.system == "herald" && r.scenario.starts_with("fanout/"))
    {
        for (peer, want) in [("nats", 1.5), ("socketio", 10.0)] {
            if let Some(p) = find(records, peer, &h.scenario) {
                let x = h.delivered_per_s / p.delivered_per_s.max(1e-9);
                out.push(target_line(
                    &format!("{} throughput >= {want}x {peer}", h.scenario),
                    x >= want,
                    format!("{x:.2}x ({:.0}% of the target)", x / want * 100.0),
                ));
            }
        }
    }
    for h in records
        .iter()
        .filter(|r| r.system == "herald" && r.scenario.starts_with("latency/"))
    {
        if let Some(p) = find(records, "nats", &h.scenario) {
            out.push(target_line(
                &format!("{} p99 <= nats", h.scenario),
                h.p99_ms <= p.p99_ms,
                format!(
                    "herald {} ms vs nats {} ms ({:.2}x)",
                    ms(h.p99_ms),
                    ms(p.p99_ms),
                    h.p99_ms / p.p99_ms.max(1e-9)
                ),
            ));
        }
    }
    out
}

fn target_line(what: &str, met: bool, how: String) -> String {
    format!(
        "target {what}: {} — {how}",
        if met { "met" } else { "MISSED" }
    )
}

/// Reads the plotted value from a record.
type Metric = fn(&Record) -> f64;

const COLORS: [(&str, &str); 3] = [
    ("herald", "#d62728"),
    ("nats", "#1f77b4"),
    ("socketio", "#2ca02c"),
];

/// Writes `fanout.svg` into `dir` (beside the results file) when there are
/// WebSocket fan-out records.
pub fn write_svg(records: &[Record], dir: &Path) -> Result<()> {
    let fan: Vec<&Record> = records
        .iter()
        .filter(|r| r.scenario.starts_with("fanout/"))
        .collect();
    if fan.is_empty() {
        return Ok(());
    }
    let path = dir.join("fanout.svg");
    std::fs::write(&path, render_svg(&fan))?;
    eprintln!("plot: {}", path.display());
    Ok(())
}

/// Two panels, delivered/s and p99 (ms) against subscribers; a line per
/// system and payload (solid 64 B, dashed otherwise). Hand-written SVG: no
/// font or image libraries needed.
pub fn render_svg(fan: &[&Record]) -> String {
    let (w, h, pad) = (460.0, 320.0, 60.0);
    let max_subs = fan.iter().map(|r| r.subscribers).max().unwrap_or(1) as f64;
    let mut payloads: Vec<u64> = fan.iter().map(|r| r.payload_bytes).collect();
    payloads.sort_unstable();
    payloads.dedup();
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
"#,
        2.0 * w,
        h + 40.0
    );
    let panels: [(&str, Metric); 2] = [
        ("delivered msg/s (all subscribers)", |r| r.delivered_per_s),
        ("p99 publish->deliver, ms", |r| r.p99_ms),
    ];
    for (pi, (title, value)) in panels.iter().enumerate() {
        let x0 = pi as f64 * w;
        let ymax = fan.iter().map(|r| value(r)).fold(0.0, f64::max).max(1e-9) * 1.1;
        let sx = |s: f64| x0 + pad + s / max_subs * (w - 1.5 * pad);
        let sy = |v: f64| h - pad + 20.0 - v / ymax * (h - 1.5 * pad);
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="16" text-anchor="middle" font-size="13">{title}</text>"#,
            x0 + w / 2.0
        );
        let _ = writeln!(
            svg,
            r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
            sx(0.0),
            sy(0.0),
            sx(max_subs),
            sy(0.0),
            sx(0.0),
            sy(0.0),
            sx(0.0),
            sy(ymax)
        );
        for k in 0..=4 {
            let v = ymax * k as f64 / 4.0;
            let label = if pi == 0 { thousands(v) } else { ms(v) };
            let _ = writeln!(
                svg,
                r##"<text x="{}" y="{}" text-anchor="end">{label}</text><line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#ddd"/>"##,
                sx(0.0) - 4.0,
                sy(v) + 4.0,
                sx(0.0),
                sy(v),
                sx(max_subs),
                sy(v)
            );
        }
        let mut subs: Vec<u64> = fan.iter().map(|r| r.subscribers).collect();
        subs.sort_unstable();
        subs.dedup();
        for s in &subs {
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="middle">{s}</text>"#,
                sx(*s as f64),
                sy(0.0) + 14.0
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">subscribers</text>"#,
            x0 + w / 2.0,
            sy(0.0) + 30.0
        );
        let mut legend = 0;
        for (sys, color) in COLORS {
            for (bi, b) in payloads.iter().enumerate() {
                let mut pts: Vec<&&Record> = fan
                    .iter()
                    .filter(|r| r.system == sys && r.payload_bytes == *b)
                    .collect();
                if pts.is_empty() {
                    continue;
                }
                pts.sort_by_key(|r| r.subscribers);
                let d: Vec<String> = pts
                    .iter()
                    .map(|r| format!("{:.1},{:.1}", sx(r.subscribers as f64), sy(value(r))))
                    .collect();
                let dash = if bi == 0 {
                    ""
                } else {
                    r#" stroke-dasharray="6,3""#
                };
                let _ = writeln!(
                    svg,
                    r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
                    d.join(" ")
                );
                for p in &d {
                    let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                    let _ = writeln!(svg, r#"<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>"#);
                }
                let ly = 34.0 + 14.0 * legend as f64;
                let _ = writeln!(
                    svg,
                    r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}">{sys} {b} B</text>"#,
                    x0 + w - 150.0,
                    x0 + w - 125.0,
                    x0 + w - 120.0,
                    ly + 4.0
                );
                legend += 1;
            }
        }
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(system: &str, scenario: &str, subs: u64, b: u64, x: f64, p99: f64) -> Record {
        Record {
            system: system.into(),
            scenario: scenario.into(),
            subscribers: subs,
            payload_bytes: b,
            delivered_per_s: x,
            p99_ms: p99,
            ..Record::default()
        }
    }

    #[test]
    fn ratios_and_targets() {
        let rs = vec![
            rec("herald", "fanout/1000/64B", 1000, 64, 300.0, 2.0),
            rec("nats", "fanout/1000/64B", 1000, 64, 100.0, 1.0),
            rec("socketio", "fanout/1000/64B", 1000, 64, 50.0, 9.0),
            rec("herald", "fanout-sse/1000/64B", 1000, 64, 80.0, 3.0),
        ];
        let c = comparisons(&rs);
        let labels: Vec<&str> = c.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "herald/nats fanout/1000/64B",
                "herald/socketio fanout/1000/64B",
                "herald/nats fanout-sse/1000/64B",
                "herald/socketio fanout-sse/1000/64B"
            ]
        );
        let d = details(&rs);
        assert!(d[0].contains("met — 3.00x"), "{}", d[0]);
        assert!(d[1].contains("MISSED — 6.00x"), "{}", d[1]);
        let svg = render_svg(&rs.iter().take(3).collect::<Vec<_>>());
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 6);
    }
}
