//! The results model: one JSON record per (system, scenario) run, the
//! `bench/results/latest.json` file, and the table printed after a run.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One measured (system, scenario). The first nine fields are the shape
/// every scenario and every system fills in; the rest are optional details.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// `herald`, later `nats`, `socketio`.
    pub system: String,
    /// `durable-publish/always`, `fanout/1k`, … (see the bench README).
    pub scenario: String,
    /// Subscriber connections the record measured (0 for publish-only scenarios).
    pub subscribers: u64,
    /// Messages offered per second: the target for fixed-rate scenarios,
    /// the achieved send rate for "as fast as acked" ones.
    pub publish_rate: f64,
    /// Size of one message's payload (`data` as sent on the wire), bytes.
    pub payload_bytes: u64,
    /// Primary throughput in messages per second: deliveries to subscribers
    /// in fan-out scenarios; durable acks in publish-only scenarios (there it
    /// equals `acked_per_s`).
    pub delivered_per_s: f64,
    /// Latency percentiles in ms; what is timed is in `latency`.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Peak server RSS during the measured window, KiB.
    pub server_rss_kib: u64,

    /// What the percentiles time: `publish->ack`, `publish->deliver`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<String>,
    /// Slowest sample, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<f64>,
    /// When the slowest answer arrived, seconds after the load started
    /// (warm-up included), to line stalls up with server activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_at_s: Option<f64>,
    /// Mean, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_ms: Option<f64>,
    /// Publisher acks received per second in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_per_s: Option<f64>,
    /// Publisher acks received in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked: Option<u64>,
    /// Errors seen (error frames, failed connections, mismatches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<u64>,
    /// Publisher connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publishers: Option<u64>,
    /// Publishes one publisher may have awaiting their ack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u64>,
    /// `ws`, `rest`, `sse`, `poll`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// `always` or `relaxed` for Herald.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durability: Option<String>,
    /// Distinct topics published to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<u64>,
    /// Length of the measured window, seconds (warm-up excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// Server RSS once ready, before any load, KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_rss_idle_kib: Option<u64>,
    /// CPU over the measured window; 100 = one core busy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu_pct: Option<f64>,
    /// Server CPU by thread (group) over the window, % of one core; shows
    /// which thread limits it (e.g. a single sequencer thread at 100 %).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub server_threads_cpu_pct: BTreeMap<String, f64>,
    /// CPU of the load generator (all its processes) over the window; 100 = one core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_cpu_pct: Option<f64>,
    /// Worker threads of the bench process runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_threads: Option<u64>,
    /// Load-generator processes (the bench plus its workers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_processes: Option<u64>,
    /// With several generator processes (`compare`'s workers): the CPU of
    /// the busiest one; each runs on one thread, so ~100 % means saturated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_busiest_proc_cpu_pct: Option<f64>,
    /// Busy share of the whole machine (all cores) over the window, %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_cpu_busy_pct: Option<f64>,
    /// Cores of the machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_cores: Option<u64>,
    /// Unix time (s) the record was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_at: Option<u64>,
    /// Throughput of every round when the scenario ran several interleaved
    /// rounds; the record itself is the median round.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rounds_delivered_per_s: Vec<f64>,
    /// Anything odd seen during the run (errors, mismatches, slow shutdown).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,

    /// Herald processes serving the system (3 for a cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u64>,
    /// Node that sequences the topic (its rendezvous owner) in a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_owner: Option<String>,
    /// publish→ack percentiles of the same publishes, when the main latency
    /// is something else (publish→deliver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_p50_ms: Option<f64>,
    /// publish→ack p99 of the same publishes, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_p99_ms: Option<f64>,
    /// p50/p99 of every round when the record merges several rounds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rounds_p50_ms: Vec<f64>,
    /// p99 of every round, ms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rounds_p99_ms: Vec<f64>,
    /// CPU % and peak RSS (KiB) per process when the server is several
    /// (`n1`, `n2`, `n3`, `nats-server`); `server_cpu_pct` and
    /// `server_rss_kib` are their sums.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub server_procs_cpu_pct: BTreeMap<String, f64>,
    /// Peak RSS per server process, KiB.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub server_procs_rss_kib: BTreeMap<String, u64>,
    /// What limited the publisher (`compare`): `probe` (publishes not yet
    /// delivered to a probe subscriber), `ack`, or `rate` (fixed rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pacing: Option<String>,
    /// Idle-memory scenario: connections held open while RSS was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_connections: Option<u64>,
    /// Idle-memory scenario: (RSS with them − RSS before) / connections, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_per_conn_bytes: Option<f64>,
    /// Subscriber connections that failed to open or subscribe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribers_failed: Option<u64>,
    /// Reconnects of subscribers the server had closed (long-poll), in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriber_reconnects: Option<u64>,
    /// Subscriber connections the server closed during the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribers_closed: Option<u64>,
    /// The latency split by the node the subscribers were connected to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_node: BTreeMap<String, NodeLatency>,
    /// The latency distribution as (percentile, ms) pairs, 50 → 100, for
    /// the distribution plot (`latency.svg`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percentiles_ms: Vec<[f64; 2]>,
    /// Topics × publishers × payload point of `ingest`, and which family
    /// (`ws`, `rest`, `batch`, `half-max`, `cluster`) it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// Items per request (`ingest`'s `POST /v1/publish` batches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u64>,
}

/// Latency of the subscribers on one node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeLatency {
    /// What the node was to this measurement: `publisher's node`, `owner`, ….
    pub role: String,
    /// Subscriber connections the record measured (0 for publish-only scenarios).
    pub subscribers: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Slowest sample, ms.
    pub max_ms: f64,
}

impl Record {
    /// Records with the same key replace each other in the results file.
    pub fn key(&self) -> (String, String, u64, u64) {
        (
            self.system.clone(),
            self.scenario.clone(),
            self.subscribers,
            self.payload_bytes,
        )
    }
}

/// A ratio line under the table: `numerator / denominator` for throughput
/// and latency (e.g. relaxed/always, herald/nats).
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// What is divided by what, e.g. `herald/nats fanout/1000/64B`.
    pub label: String,
    /// The record on top.
    pub numerator: Record,
    /// The record below.
    pub denominator: Record,
    /// Whether the throughput ratio means something (not when both sides
    /// ran at the same fixed rate).
    pub throughput: bool,
}

/// Of several rounds of one measurement, the median by throughput (the
/// lower middle one for an even count), with every round's throughput kept
/// in `rounds_delivered_per_s` and every round's notes.
pub fn median_round(mut rounds: Vec<Record>) -> Option<Record> {
    if rounds.len() <= 1 {
        return rounds.pop();
    }
    let all: Vec<f64> = rounds.iter().map(|r| r.delivered_per_s).collect();
    let notes: Vec<String> = rounds.iter().flat_map(|r| r.notes.clone()).collect();
    rounds.sort_by(|a, b| a.delivered_per_s.total_cmp(&b.delivered_per_s));
    let mut median = rounds.swap_remove((rounds.len() - 1) / 2);
    median.rounds_delivered_per_s = all;
    median.notes = notes;
    Some(median)
}

/// Where results go unless `--json` says otherwise.
pub fn default_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("results")
        .join("latest.json")
}

/// Reads a results file: a JSON array of records.
pub fn load(path: &Path) -> Result<Vec<Record>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Merges `new` into `old`: a new record replaces any old one with the same key.
pub fn merge(old: Vec<Record>, new: &[Record]) -> Vec<Record> {
    let mut out: Vec<Record> = old
        .into_iter()
        .filter(|r| !new.iter().any(|n| n.key() == r.key()))
        .collect();
    out.extend(new.iter().cloned());
    out
}

/// Writes `records` to `path`, merged with what is already there unless
/// `replace`; written to a temp file first, then renamed.
pub fn save(path: &Path, records: &[Record], replace: bool) -> Result<Vec<Record>> {
    let existing = if replace || !path.exists() {
        Vec::new()
    } else {
        match load(path) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("warning: {e:#}; overwriting it");
                Vec::new()
            }
        }
    };
    let all = merge(existing, records);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut text = serde_json::to_string_pretty(&all)?;
    text.push('\n');
    fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(all)
}

/// `1234567.8` → `1,234,568`.
pub fn thousands(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let n = v.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

/// Milliseconds with 2–3 significant decimals.
pub fn ms(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn pct(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.0}%"),
        _ => "-".into(),
    }
}

fn ratio(num: f64, den: f64) -> String {
    if den > 0.0 && num.is_finite() {
        format!("{:.2}x", num / den)
    } else {
        "-".into()
    }
}

/// Renders the records as an aligned text table, then the comparisons.
pub fn render_table(records: &[Record], comparisons: &[Comparison]) -> String {
    let header = [
        "system",
        "scenario",
        "transport",
        "pubs",
        "payload B",
        "msg/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "server RSS MiB",
        "server CPU",
        "gen CPU",
        "host busy",
    ];
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.system.clone(),
                r.scenario.clone(),
                r.transport.clone().unwrap_or_else(|| "-".into()),
                r.publishers.map_or("-".into(), |p| p.to_string()),
                r.payload_bytes.to_string(),
                thousands(r.delivered_per_s),
                ms(r.p50_ms),
                ms(r.p99_ms),
                ms(r.p999_ms),
                r.max_ms.map_or("-".into(), ms),
                format!("{:.1}", r.server_rss_kib as f64 / 1024.0),
                pct(r.server_cpu_pct),
                pct(r.generator_cpu_pct),
                pct(r.host_cpu_busy_pct),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            // text columns left, numbers right
            if i < 3 {
                let _ = write!(s, "{cell:<w$}  ");
            } else {
                let _ = write!(s, "{cell:>w$}  ");
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(
        &mut out,
        &header.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
    );
    line(
        &mut out,
        &widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>(),
    );
    for row in &rows {
        line(&mut out, row);
    }
    if !comparisons.is_empty() {
        out.push('\n');
        for c in comparisons {
            let (n, d) = (&c.numerator, &c.denominator);
            let throughput = if c.throughput {
                format!(
                    "throughput {}, ",
                    ratio(n.delivered_per_s, d.delivered_per_s)
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "{}: {throughput}p50 {}, p99 {}, p99.9 {}",
                c.label,
                ratio(n.p50_ms, d.p50_ms),
                ratio(n.p99_ms, d.p99_ms),
                ratio(n.p999_ms, d.p999_ms),
            );
        }
    }
    out
}

/// Renders the table as GitHub markdown (for the README).
pub fn render_markdown(records: &[Record], comparisons: &[Comparison]) -> String {
    let mut out = String::from(
        "| system | scenario | transport | pubs | payload B | msg/s | p50 ms | p99 ms | p99.9 ms | max ms | server RSS MiB | server CPU | gen CPU | host busy |\n\
         |---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for r in records {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {} | {} |",
            r.system,
            r.scenario,
            r.transport.as_deref().unwrap_or("-"),
            r.publishers.map_or("-".into(), |p| p.to_string()),
            r.payload_bytes,
            thousands(r.delivered_per_s),
            ms(r.p50_ms),
            ms(r.p99_ms),
            ms(r.p999_ms),
            r.max_ms.map_or("-".into(), ms),
            r.server_rss_kib as f64 / 1024.0,
            pct(r.server_cpu_pct),
            pct(r.generator_cpu_pct),
            pct(r.host_cpu_busy_pct),
        );
    }
    for c in comparisons {
        let (n, d) = (&c.numerator, &c.denominator);
        if c.throughput {
            let _ = writeln!(
                out,
                "\n{}: throughput **{}**, p50 {}, p99 {}",
                c.label,
                ratio(n.delivered_per_s, d.delivered_per_s),
                ratio(n.p50_ms, d.p50_ms),
                ratio(n.p99_ms, d.p99_ms),
            );
        } else {
            let _ = writeln!(
                out,
                "\n{}: p50 **{}**, p99 **{}**, p99.9 {}",
                c.label,
                ratio(n.p50_ms, d.p50_ms),
                ratio(n.p99_ms, d.p99_ms),
                ratio(n.p999_ms, d.p999_ms),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(scenario: &str, rate: f64, p99: f64) -> Record {
        Record {
            system: "herald".into(),
            scenario: scenario.into(),
            publish_rate: rate,
            payload_bytes: 256,
            delivered_per_s: rate,
            p50_ms: p99 / 4.0,
            p99_ms: p99,
            p999_ms: p99 * 2.0,
            server_rss_kib: 20480,
            transport: Some("ws".into()),
            publishers: Some(32),
            server_cpu_pct: Some(151.2),
            ..Record::default()
        }
    }

    #[test]
    fn json_has_the_issue_5_shape_and_skips_empty_extras() {
        let v: serde_json::Value =
            serde_json::to_value(rec("durable-publish/always", 1000.0, 8.0)).unwrap();
        for k in [
            "system",
            "scenario",
            "subscribers",
            "publish_rate",
            "payload_bytes",
            "delivered_per_s",
            "p50_ms",
            "p99_ms",
            "p999_ms",
            "server_rss_kib",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert!(v.get("notes").is_none());
        assert!(v.get("acked_per_s").is_none());
        // and it reads back, also from a minimal record written by another tool
        let back: Record = serde_json::from_value(v).unwrap();
        assert_eq!(back.scenario, "durable-publish/always");
        let minimal = r#"{"system":"nats","scenario":"fanout/1k","subscribers":1000,
            "publish_rate":1000,"payload_bytes":64,"delivered_per_s":1e6,
            "p50_ms":1,"p99_ms":2,"p999_ms":3,"server_rss_kib":1}"#;
        let m: Record = serde_json::from_str(minimal).unwrap();
        assert_eq!(m.subscribers, 1000);
    }

    #[test]
    fn merge_replaces_same_key_and_keeps_others() {
        let old = vec![
            rec("durable-publish/always", 1.0, 1.0),
            rec("fanout/1k", 2.0, 1.0),
        ];
        let merged = merge(old, &[rec("durable-publish/always", 3.0, 1.0)]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].scenario, "fanout/1k");
        assert_eq!(merged[1].delivered_per_s, 3.0);
    }

    #[test]
    fn save_merges_then_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("latest.json");
        save(&path, &[rec("a", 1.0, 1.0)], false).unwrap();
        let all = save(&path, &[rec("b", 1.0, 1.0)], false).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(load(&path).unwrap().len(), 2);
        let all = save(&path, &[rec("c", 1.0, 1.0)], true).unwrap();
        assert_eq!(all.len(), 1);
    }

    #[test]
    fn median_of_rounds() {
        assert!(median_round(vec![]).is_none());
        let one = median_round(vec![rec("a", 5.0, 1.0)]).unwrap();
        assert!(one.rounds_delivered_per_s.is_empty());
        let mut noisy = rec("a", 1.0, 9.0);
        noisy.notes.push("slow shutdown".into());
        let m = median_round(vec![rec("a", 3.0, 1.0), noisy, rec("a", 2.0, 5.0)]).unwrap();
        assert_eq!(m.delivered_per_s, 2.0);
        assert_eq!(m.p99_ms, 5.0);
        assert_eq!(m.rounds_delivered_per_s, vec![3.0, 1.0, 2.0]);
        assert_eq!(m.notes, vec!["slow shutdown".to_string()]);
        let even = median_round(vec![rec("a", 4.0, 1.0), rec("a", 1.0, 1.0)]).unwrap();
        assert_eq!(even.delivered_per_s, 1.0);
    }

    #[test]
    fn number_formatting() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1234567.8), "1,234,568");
        assert_eq!(thousands(-1000.0), "-1,000");
        assert_eq!(ms(0.1234), "0.12");
        assert_eq!(ms(12.34), "12.3");
        assert_eq!(ms(1234.6), "1235");
        assert_eq!(ratio(30.0, 10.0), "3.00x");
        assert_eq!(ratio(1.0, 0.0), "-");
    }

    #[test]
    fn table_has_rows_and_ratio_lines() {
        let a = rec("durable-publish/always", 10_000.0, 8.0);
        let r = rec("durable-publish/relaxed", 40_000.0, 2.0);
        let cmp = Comparison {
            label: "relaxed/always (herald, ws)".into(),
            numerator: r.clone(),
            denominator: a.clone(),
            throughput: true,
        };
        let t = render_table(&[a, r], std::slice::from_ref(&cmp));
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("system"));
        assert!(lines[2].contains("durable-publish/always") && lines[2].contains("10,000"));
        assert!(lines[3].contains("40,000") && lines[3].contains("151%"));
        assert!(t.contains("relaxed/always (herald, ws): throughput 4.00x, p50 0.25x, p99 0.25x"));
        // every row is as wide as the header's columns (aligned)
        let col = lines[0].find("msg/s").unwrap() + "msg/s".len();
        assert_eq!(lines[2].chars().nth(col - 1), Some('0'));
        let md = render_markdown(
            std::slice::from_ref(&cmp.numerator),
            std::slice::from_ref(&cmp),
        );
        assert!(md.contains("| herald | durable-publish/relaxed | ws | 32 | 256 | 40,000 |"));
        assert!(md.contains("throughput **4.00x**"));
    }
}
