//! CPU and memory readings from `/proc` (Linux): the server's and the load
//! generator's own, so a report can show which side was saturated.

use std::{
    collections::BTreeMap,
    fs, io,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

/// Which process to read: this one or another by pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proc {
    SelfProc,
    Pid(u32),
}

impl Proc {
    fn path(self, file: &str) -> String {
        match self {
            Proc::SelfProc => format!("/proc/self/{file}"),
            Proc::Pid(pid) => format!("/proc/{pid}/{file}"),
        }
    }
}

/// Clock ticks per second used by `/proc/*/stat` times.
pub fn clock_ticks_per_sec() -> u64 {
    rustix::param::clock_ticks_per_second()
}

/// utime + stime (all threads) in clock ticks, from a `/proc/PID/stat` line.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may contain spaces or
    // ')' itself, so split after the *last* ')'. Fields after it start at
    // field 3 (state); utime is field 14 and stime field 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` in KiB, from a `/proc/PID/status` text.
pub fn parse_status_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_ascii_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// utime + stime of a process, clock ticks.
pub fn cpu_ticks(p: Proc) -> io::Result<u64> {
    let text = fs::read_to_string(p.path("stat"))?;
    parse_stat_cpu_ticks(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable stat line"))
}

/// Resident set size of a process, KiB.
pub fn rss_kib(p: Proc) -> io::Result<u64> {
    let text = fs::read_to_string(p.path("status"))?;
    parse_status_rss_kib(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS in status"))
}

/// The command name (field 2) of a `/proc/PID/task/TID/stat` line.
pub fn parse_stat_comm(stat: &str) -> Option<&str> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    (open < close).then(|| &stat[open + 1..close])
}

/// CPU ticks per thread name of a process (threads of the same name summed;
/// trailing digits are dropped so `actix-rt|system:0|arbiter:1` style and
/// `worker-3` style pools group together).
pub fn thread_ticks(pid: u32) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(text) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let (Some(comm), Some(ticks)) = (parse_stat_comm(&text), parse_stat_cpu_ticks(&text)) {
            *out.entry(thread_group(comm)).or_default() += ticks;
        }
    }
    out
}

/// `herald-writer` → `herald-writer`; `tokio-rt-worker7` → `tokio-rt-worker*`.
pub fn thread_group(comm: &str) -> String {
    let trimmed = comm.trim_end_matches(|c: char| c.is_ascii_digit());
    if trimmed.len() == comm.len() {
        comm.to_string()
    } else {
        format!("{trimmed}*")
    }
}

/// Aggregate (busy, total) jiffies of the whole machine from `/proc/stat`.
/// Busy excludes idle and iowait.
pub fn parse_host_cpu(proc_stat: &str) -> Option<(u64, u64)> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let vals: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    if vals.len() < 5 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is already in user)
    let total: u64 = vals.iter().take(8).sum();
    let idle = vals[3] + vals[4];
    Some((total - idle, total))
}

fn host_cpu() -> Option<(u64, u64)> {
    parse_host_cpu(&fs::read_to_string("/proc/stat").ok()?)
}

/// Cores available to this process.
pub fn host_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// CPU use of a set of processes over an interval.
pub struct CpuWindow {
    started: Instant,
    procs: Vec<(Proc, u64)>,
    host: Option<(u64, u64)>,
    /// Per-thread ticks of this process, to see which server thread is busy.
    threads_of: Option<(u32, BTreeMap<String, u64>)>,
}

/// CPU use over a window; 100 % = one core fully busy.
#[derive(Clone, Debug, Default)]
pub struct CpuUsage {
    /// CPU % of each process given to [`CpuWindow::start`], in order.
    pub per_proc_pct: Vec<f64>,
    /// Busy share of the whole machine (all cores), 0–100 %.
    pub host_busy_pct: Option<f64>,
    /// CPU % per thread group of the process given to [`CpuWindow::with_threads_of`].
    pub threads_pct: BTreeMap<String, f64>,
}

impl CpuWindow {
    /// Starts measuring `procs` (and the machine) now.
    pub fn start(procs: &[Proc]) -> Self {
        CpuWindow {
            started: Instant::now(),
            procs: procs
                .iter()
                .map(|&p| (p, cpu_ticks(p).unwrap_or(0)))
                .collect(),
            host: host_cpu(),
            threads_of: None,
        }
    }

    /// Also break down the CPU of `pid` by thread.
    pub fn with_threads_of(mut self, pid: u32) -> Self {
        self.threads_of = Some((pid, thread_ticks(pid)));
        self
    }

    /// CPU use since the start.
    pub fn finish(&self) -> CpuUsage {
        let wall = self.started.elapsed().as_secs_f64().max(1e-3);
        let hz = clock_ticks_per_sec() as f64;
        let per_proc_pct = self
            .procs
            .iter()
            .map(|&(p, t0)| match cpu_ticks(p) {
                Ok(t1) => t1.saturating_sub(t0) as f64 / hz / wall * 100.0,
                Err(_) => f64::NAN,
            })
            .collect();
        let host_busy_pct = match (self.host, host_cpu()) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                Some((b1 - b0) as f64 / (t1 - t0) as f64 * 100.0)
            }
            _ => None,
        };
        let threads_pct = match &self.threads_of {
            Some((pid, before)) => thread_ticks(*pid)
                .into_iter()
                .map(|(name, t1)| {
                    let t0 = before.get(&name).copied().unwrap_or(0);
                    (name, t1.saturating_sub(t0) as f64 / hz / wall * 100.0)
                })
                .filter(|(_, pct)| *pct >= 0.5)
                .collect(),
            None => BTreeMap::new(),
        };
        CpuUsage {
            per_proc_pct,
            host_busy_pct,
            threads_pct,
        }
    }
}

/// Peak RSS of a process, sampled by the caller's monitor loop.
#[derive(Clone, Default)]
pub struct RssPeak {
    peak: Arc<AtomicU64>,
}

impl RssPeak {
    /// Reads the RSS of `p` once and keeps the maximum.
    pub fn sample(&self, p: Proc) {
        if let Ok(kib) = rss_kib(p) {
            self.peak.fetch_max(kib, Ordering::Relaxed);
        }
    }
    /// The largest RSS sampled, KiB.
    pub fn peak_kib(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

/// How often monitor loops sample RSS and refresh progress.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_with_spaces_and_parens_in_comm() {
        let line = "4242 (herald (x) y) S 1 4242 4242 0 -1 4194304 1500 0 0 0 \
                    250 75 0 0 20 0 9 0 123456 1000000 2500 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(line), Some(325));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn status_rss() {
        let status = "Name:\therald\nVmPeak:\t  100 kB\nVmRSS:\t   18432 kB\nThreads:\t9\n";
        assert_eq!(parse_status_rss_kib(status), Some(18432));
        assert_eq!(parse_status_rss_kib("Name: x\n"), None);
    }

    #[test]
    fn thread_names() {
        assert_eq!(
            parse_stat_comm("12 (herald-writer) S 1 2"),
            Some("herald-writer")
        );
        assert_eq!(thread_group("herald-writer"), "herald-writer");
        assert_eq!(thread_group("tokio-rt-worker12"), "tokio-rt-worker*");
        let me = thread_ticks(std::process::id());
        assert!(!me.is_empty());
    }

    #[test]
    fn host_cpu_line() {
        let text = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8\n";
        assert_eq!(parse_host_cpu(text), Some((150, 1000)));
    }

    #[test]
    fn reads_own_process() {
        assert!(cpu_ticks(Proc::SelfProc).is_ok());
        assert!(rss_kib(Proc::SelfProc).unwrap() > 0);
    }
}
