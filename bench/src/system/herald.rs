//! Starting and stopping a `herald serve` process for a run.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

use super::{ManagedProcess, ServerUnderTest, StopOutcome};

/// Finds the release `herald` binary: the explicit path (flag or
/// `HERALD_BIN`) if given, else next to this executable (both live in
/// `target/release/`), else `<workspace>/target/release/herald`.
pub fn locate_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    const HINT: &str = "build it with `cargo build --release -p herald` \
                        or point --herald-bin / HERALD_BIN at it";
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!("herald binary not found at {} — {HINT}", p.display());
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join("herald"));
        }
    }
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target")
            .join("release")
            .join("herald"),
    );
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    bail!(
        "herald binary not found (looked at {}) — {HINT}",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The bound address from the ready line `herald serve` prints on stdout
/// (`{"listening":"http://…","addr":"127.0.0.1:PORT","node":…}`).
pub fn parse_ready_line(line: &str) -> Option<SocketAddr> {
    let value: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    value.get("listening")?;
    value.get("addr")?.as_str()?.parse().ok()
}

/// Extracts the bound address from a startup log line: the text format's
/// `addr=127.0.0.1:PORT` or the JSON format's `"addr":"127.0.0.1:PORT"`.
/// Only for `--baseline-bin` builds from before the ready line.
pub fn parse_bound_addr(line: &str) -> Option<SocketAddr> {
    for marker in ["addr=", "\"addr\":"] {
        let mut rest = line;
        while let Some(i) = rest.find(marker) {
            let after = &rest[i + marker.len()..];
            let value: String = after
                .trim_start_matches('"')
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ',' && *c != '}')
                .collect();
            if let Ok(addr) = value.parse() {
                return Some(addr);
            }
            rest = after;
        }
    }
    None
}

/// Whether `path` lives on a tmpfs (RAM), where fsync is free.
fn is_tmpfs(path: &Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    rustix::fs::statfs(path).is_ok_and(|st| st.f_type == TMPFS_MAGIC)
}

/// How to start `herald serve`.
#[derive(Clone, Debug)]
pub struct HeraldOptions {
    /// The `herald` binary.
    pub binary: PathBuf,
    /// `always` or `relaxed`.
    pub durability: String,
    /// Parent of the fresh temp data dir (default: the system temp dir).
    pub data_root: Option<PathBuf>,
    /// Further `herald serve` flags.
    pub extra_args: Vec<String>,
    /// `--nats URL`: join a cluster through this NATS server.
    pub nats: Option<String>,
    /// `--node-id NAME` (cluster members need distinct, readable ones).
    pub node_id: Option<String>,
}

/// A running `herald serve` on 127.0.0.1:<free port> with its own data dir
/// (deleted when this is dropped).
pub struct HeraldServer {
    /// The process (the compare run checks and restarts it).
    pub(crate) proc: ManagedProcess,
    addr: SocketAddr,
    data_dir: TempDir,
}

impl HeraldServer {
    /// Starts it and waits for its listen address (the ready line).
    pub fn start(opts: &HeraldOptions) -> Result<Self> {
        let data_dir = match &opts.data_root {
            Some(root) => {
                std::fs::create_dir_all(root)
                    .with_context(|| format!("creating {}", root.display()))?;
                tempfile::Builder::new()
                    .prefix("herald-bench-")
                    .tempdir_in(root)
            }
            None => tempfile::Builder::new().prefix("herald-bench-").tempdir(),
        }
        .context("creating a temp data dir")?;
        if is_tmpfs(data_dir.path()) && opts.durability == "always" {
            eprintln!(
                "warning: {} is on tmpfs: fsync costs nothing there, so `always` is not measured \
                 as on a disk; pass --data-root on a real disk",
                data_dir.path().display()
            );
        }
        let mut cmd = Command::new(&opts.binary);
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir.path().join("data"))
            .arg("--durability")
            .arg(&opts.durability);
        if let Some(url) = &opts.nats {
            cmd.arg("--nats").arg(url);
        }
        if let Some(node) = &opts.node_id {
            cmd.arg("--node-id").arg(node);
        }
        cmd.args(&opts.extra_args)
            // a baseline build announces its address only in an info-level
            // log line; a RUST_LOG from the caller's shell could hide it or
            // flood the pipe
            .env_remove("RUST_LOG")
            .env_remove("HERALD_LOG_FORMAT")
            .env_remove("HERALD_CONFIG")
            // a cluster only when asked for
            .env_remove("HERALD_NATS")
            .env_remove("HERALD_NODE_ID")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", opts.binary.display()))?;
        let name = match &opts.node_id {
            Some(node) => format!("herald-{node}"),
            None => "herald".to_string(),
        };
        // The ready line, or a baseline build's log line: the same address.
        let (mut proc, rx) =
            ManagedProcess::adopt_both(&name, child, parse_ready_line, parse_bound_addr);
        let addr = proc.wait_for(&rx, Duration::from_secs(20), "its listen address")?;
        Ok(HeraldServer {
            proc,
            addr,
            data_dir,
        })
    }

    /// Polls `/readyz` until 200.
    pub async fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok((status, _)) =
                crate::http::get(self.addr, "/readyz", Duration::from_secs(2)).await
            {
                if status.is_success() {
                    return Ok(());
                }
            }
            if let Some(status) = self.proc.try_wait() {
                bail!(
                    "{} exited ({status}) before it was ready:\n{}",
                    self.proc.name,
                    self.proc.tail()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} at {} not ready within {limit:?}:\n{}",
                    self.proc.name,
                    self.addr,
                    self.proc.tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The temp dir holding its data dir.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The last lines it logged.
    pub fn log_tail(&self) -> String {
        self.proc.tail()
    }

    /// Graceful stop (SIGTERM), killed after `grace`.
    pub fn stop(mut self, grace: Duration) -> StopOutcome {
        self.proc.stop(grace)
    }
}

impl ServerUnderTest for HeraldServer {
    fn pid(&self) -> u32 {
        self.proc.pid()
    }
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ready_line_only() {
        let line = r#"{"listening":"http://127.0.0.1:40123","addr":"127.0.0.1:40123","node":"n1"}"#;
        assert_eq!(
            parse_ready_line(line),
            Some("127.0.0.1:40123".parse().unwrap())
        );
        let log =
            r#"{"level":"INFO","fields":{"message":"herald listening","addr":"127.0.0.1:9"}}"#;
        assert_eq!(parse_ready_line(log), None);
        assert_eq!(parse_ready_line("addr=127.0.0.1:9"), None);
    }

    #[test]
    fn parses_the_text_log_line() {
        let line = "2025-11-24T19:01:02.123456Z  INFO herald::server: herald listening on \
                    http://127.0.0.1:40123 addr=127.0.0.1:40123 node=n-1a2b";
        assert_eq!(
            parse_bound_addr(line),
            Some("127.0.0.1:40123".parse().unwrap())
        );
    }

    #[test]
    fn parses_the_json_log_line_and_ignores_others() {
        let line = r#"{"level":"INFO","fields":{"message":"herald listening","addr":"127.0.0.1:9","node":"x"}}"#;
        assert_eq!(parse_bound_addr(line), Some("127.0.0.1:9".parse().unwrap()));
        assert_eq!(parse_bound_addr("peer_addr=unknown starting"), None);
        assert_eq!(
            parse_bound_addr("addr=nope addr=[::1]:80"),
            Some("[::1]:80".parse().unwrap())
        );
    }

    #[test]
    fn tmpfs_detection() {
        if Path::new("/dev/shm").is_dir() {
            assert!(is_tmpfs(Path::new("/dev/shm")));
        }
        assert!(!is_tmpfs(Path::new("/proc")));
    }

    #[test]
    fn explicit_missing_binary_is_a_clear_error() {
        let err = locate_binary(Some(Path::new("/nonexistent/herald")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cargo build --release -p herald"), "{err}");
        assert!(err.contains("/nonexistent/herald"), "{err}");
    }
}
