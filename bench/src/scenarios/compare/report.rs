//! `compare`'s ratio lines (herald/herald-baseline, herald/jetstream,
//! herald/nats, herald/socketio per scenario) and the targets of issue 5.

use std::fmt::Write as _;

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

/// The systems Herald's records are divided by, in this order.
pub const PEERS: [&str; 4] = ["herald-baseline", "jetstream", "nats", "socketio"];

/// herald/<peer> for every Herald record with a peer record of the same
/// scenario (SSE/long-poll against the peers' WebSocket; a baseline's
/// SSE/long-poll against its own).
pub fn comparisons(records: &[Record]) -> Vec<Comparison> {
    let mut out = Vec::new();
    for h in records
        .iter()
        .filter(|r| r.system == "herald" && is_compare(r) && r.rss_per_conn_bytes.is_none())
    {
        for peer in PEERS {
            let want = if peer == "herald-baseline" {
                h.scenario.clone()
            } else {
                peer_scenario(&h.scenario)
            };
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
        for sys in ["herald", "herald-baseline", "nats", "socketio"] {
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
    }
}
