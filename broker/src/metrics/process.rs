//! The standard `process_*` series (what Prometheus client libraries
//! export), read from `/proc/self` at scrape time.

use std::fmt::Write as _;

/// Appends `process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
/// `process_threads` and `process_start_time_seconds` to `out`. A series
/// whose source cannot be read is left out.
pub fn render(out: &mut String) {
    let ticks = rustix::param::clock_ticks_per_second().max(1) as f64;
    let page = rustix::param::page_size() as f64;
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14, stime 15, threads 20, starttime 22.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        series(
            out,
            "process_cpu_seconds_total",
            "User and system CPU time, seconds.",
            "counter",
            (utime + stime) / ticks,
        );
    }
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let mut statm = statm.split_whitespace().map(|v| v.parse::<f64>().ok());
    if let (Some(Some(virt)), Some(Some(resident))) = (statm.next(), statm.next()) {
        series(
            out,
            "process_resident_memory_bytes",
            "Resident memory, bytes.",
            "gauge",
            resident * page,
        );
        series(
            out,
            "process_virtual_memory_bytes",
            "Virtual memory, bytes.",
            "gauge",
            virt * page,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        // The directory handle itself is one of them.
        let open = fds.count().saturating_sub(1);
        series(
            out,
            "process_open_fds",
            "Open file descriptors.",
            "gauge",
            open as f64,
        );
    }
    if let Some(max) = crate::limits::open_file_limit() {
        series(
            out,
            "process_max_fds",
            "The open-file limit.",
            "gauge",
            max as f64,
        );
    }
    if let Some(threads) = field(20) {
        series(out, "process_threads", "OS threads.", "gauge", threads);
    }
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    if let (Some(boot), Some(start)) = (boot, field(22)) {
        series(
            out,
            "process_start_time_seconds",
            "Start time of the process, seconds since the epoch.",
            "gauge",
            boot + start / ticks,
        );
    }
}

fn series(out: &mut String, name: &str, help: &str, kind: &str, value: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let mut out = String::new();
        super::render(&mut out);
        for name in [
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            let value: f64 = out
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing:\n{out}"))
                .parse()
                .unwrap();
            assert!(value > 0.0, "{name} = {value}");
        }
        // A fresh test process may not have used a whole clock tick.
        assert!(out.contains("\nprocess_cpu_seconds_total "), "{out}");
    }
}
