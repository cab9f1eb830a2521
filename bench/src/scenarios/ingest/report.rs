//! `ingest`'s ratio lines (herald/<peer> per scenario) and the issue-22
//! target: 150k durable publishes per second across 10k topics.

use std::fmt::Write as _;

use super::PROBE;
use crate::results::{ms, thousands, Comparison, Record};

/// The ingest target, acked publishes per second.
const TARGET_PER_S: f64 = 150_000.0;
/// The systems Herald's records are divided by, in this order.
const PEERS: [&str; 4] = ["herald-baseline", "jetstream", "nats", "socketio"];

fn is_ingest(r: &Record) -> bool {
    r.scenario.starts_with("ingest")
}

/// A short summary of one record for the progress output.
pub fn one_line(r: &Record) -> String {
    format!(
        "{} acked/s, p50 {} p99 {} p99.9 {} ms, server CPU {:.0}%, RSS peak {:.1} MiB, gen CPU {:.0}%, errors {}",
        thousands(r.delivered_per_s),
        ms(r.p50_ms),
        ms(r.p99_ms),
        ms(r.p999_ms),
        r.server_cpu_pct.unwrap_or(f64::NAN),
        r.server_rss_kib as f64 / 1024.0,
        r.generator_cpu_pct.unwrap_or(f64::NAN),
        r.errors.unwrap_or(0)
    )
}

/// herald/<peer> for every Herald ingest record with a peer record of the
/// same scenario; throughput is left out where both ran at a fixed rate
/// (`half-max`, each at half its own maximum, so the latency is compared at
/// the same load factor, not the same rate).
pub fn comparisons(records: &[Record]) -> Vec<Comparison> {
    let mut out = Vec::new();
    for h in records
        .iter()
        .filter(|r| r.system == "herald" && is_ingest(r))
    {
        for peer in PEERS {
            if let Some(p) = records
                .iter()
                .find(|r| r.system == peer && r.scenario == h.scenario)
            {
                out.push(Comparison {
                    label: format!("herald/{peer} {}", h.scenario),
                    numerator: h.clone(),
                    denominator: p.clone(),
                    throughput: h.pacing.as_deref() != Some("rate"),
                });
            }
        }
    }
    out
}

/// The target line, the half-max rates, and the server CPU per 1k acks.
pub fn details(records: &[Record]) -> Vec<String> {
    let mut out = Vec::new();
    // the probe: 32 publishers x 16 in flight, 10k topics, 256 B
    let (p, t, b) = PROBE;
    let probe = format!("ingest/{p}x16/{t}t/{b}B");
    for r in records
        .iter()
        .filter(|r| r.system == "herald" && r.scenario == probe)
    {
        let x = r.delivered_per_s / TARGET_PER_S;
        out.push(format!(
            "target {} >= 150,000 durable publishes/s ({}): {} — {} acked/s ({:.0}% of the target)",
            r.scenario,
            r.durability.as_deref().unwrap_or("?"),
            if x >= 1.0 { "met" } else { "MISSED" },
            thousands(r.delivered_per_s),
            x * 100.0
        ));
    }
    for r in records
        .iter()
        .filter(|r| r.scenario.starts_with("ingest-half-max/"))
    {
        out.push(format!(
            "{} {}: p99 publish->ack {} ms at {} msg/s (half its own maximum)",
            r.system,
            r.scenario,
            ms(r.p99_ms),
            thousands(r.publish_rate)
        ));
    }
    let cpu: Vec<String> = records
        .iter()
        .filter(|r| is_ingest(r) && r.delivered_per_s > 0.0)
        .filter_map(|r| {
            let c = r.server_cpu_pct?;
            // % of a core per ack/s → core-µs per ack
            Some(format!(
                "{} {} {:.1}",
                r.system,
                r.scenario,
                c / 100.0 / r.delivered_per_s * 1e6
            ))
        })
        .collect();
    if !cpu.is_empty() {
        let mut line = String::from("server CPU per acked publish, core-µs:");
        for c in cpu {
            let _ = write!(line, "\n  {c}");
        }
        out.push(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(system: &str, scenario: &str, x: f64, pacing: &str) -> Record {
        Record {
            system: system.into(),
            scenario: scenario.into(),
            delivered_per_s: x,
            topics: Some(10_000),
            server_cpu_pct: Some(150.0),
            durability: Some("always".into()),
            pacing: Some(pacing.into()),
            ..Record::default()
        }
    }

    #[test]
    fn ratios_targets_and_cpu() {
        let rs = vec![
            rec("herald", "ingest/32x16/10000t/256B", 160_000.0, "ack"),
            rec("jetstream", "ingest/32x16/10000t/256B", 40_000.0, "ack"),
            rec(
                "herald-baseline",
                "ingest/32x16/10000t/256B",
                80_000.0,
                "ack",
            ),
            rec(
                "herald",
                "ingest-half-max/32x16/10000t/256B",
                80_000.0,
                "rate",
            ),
            rec(
                "jetstream",
                "ingest-half-max/32x16/10000t/256B",
                20_000.0,
                "rate",
            ),
        ];
        let c = comparisons(&rs);
        let labels: Vec<&str> = c.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "herald/herald-baseline ingest/32x16/10000t/256B",
                "herald/jetstream ingest/32x16/10000t/256B",
                "herald/jetstream ingest-half-max/32x16/10000t/256B"
            ]
        );
        assert!(c[0].throughput && !c[2].throughput);
        let d = details(&rs);
        assert!(
            d[0].contains(": met — 160,000 acked/s (107% of the target)"),
            "{}",
            d[0]
        );
        assert!(d.iter().any(|l| l.contains("half its own maximum")));
        assert!(
            d.last()
                .unwrap()
                .contains("herald ingest/32x16/10000t/256B 9.4"),
            "{d:?}"
        );
    }
}
