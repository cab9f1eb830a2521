//! Starting a real `nats-server` whose client port is known to be its own.
//!
//! Tests run in parallel, and a port picked by binding port 0 and letting it
//! go can be picked again by another test before either server binds it.
//! Waiting until *something* accepts on the port then lets two tests share
//! one server (each test's nodes join the other's cluster). So the server
//! writes its ports file (`--ports_file_dir`, named after its pid) once it
//! listens, and a start counts only when that file, this process's, says so.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus},
    time::{Duration, Instant},
};

/// The `nats-server` binary: `NATS_SERVER_BIN`, or where the distributions
/// install it. `None` when it is not installed (the suites fail loudly).
pub fn nats_server_bin() -> Option<String> {
    std::env::var("NATS_SERVER_BIN").ok().or_else(|| {
        [
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
            "/usr/local/bin/nats-server",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .map(str::to_string)
    })
}

/// A `nats-server` that reported listening.
#[derive(Debug)]
pub struct StartedNats {
    /// The process; the caller kills it.
    pub child: Child,
    /// The client port it reported (the one asked for, or the one the
    /// kernel picked for `-p -1`).
    pub port: u16,
}

/// Why [`start_nats`] has no listening server to hand back.
#[derive(Debug, thiserror::Error)]
pub enum NatsStartError {
    /// The command could not be run at all.
    #[error("cannot run nats-server: {0}")]
    Spawn(std::io::Error),
    /// It exited before listening; [`NatsStartError::port_taken`] says
    /// whether another process held one of its ports.
    #[error("nats-server exited ({status}) before listening; log:\n{log}")]
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// What it wrote.
        log: String,
    },
    /// No ports file within the limit; the process was killed.
    #[error("nats-server did not report listening within {limit:?}; log:\n{log}")]
    TimedOut {
        /// The limit.
        limit: Duration,
        /// What it wrote.
        log: String,
    },
}

impl NatsStartError {
    /// Whether it failed because a port it was given is in use, so a retry
    /// on other ports (or later) may succeed.
    pub fn port_taken(&self) -> bool {
        matches!(self, NatsStartError::Exited { log, .. } if log.contains("address already in use"))
    }
}

/// Starts `cmd` (a `nats-server` command with its listen arguments) with its
/// output in `log` and its ports file beside it, and waits up to `limit`
/// until this process's ports file names its client port.
pub fn start_nats(
    mut cmd: Command,
    log: &Path,
    limit: Duration,
) -> Result<StartedNats, NatsStartError> {
    let dir = log.parent().unwrap_or(Path::new(".")).to_path_buf();
    let file = std::fs::File::create(log).map_err(NatsStartError::Spawn)?;
    cmd.arg("--ports_file_dir")
        .arg(&dir)
        .stdout(file.try_clone().map_err(NatsStartError::Spawn)?)
        .stderr(file);
    let mut child = cmd.spawn().map_err(NatsStartError::Spawn)?;
    let pid = child.id();
    let read_log = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + limit;
    loop {
        if let Some(port) = ports_file(&dir, pid).and_then(|f| client_port(&f)) {
            return Ok(StartedNats { child, port });
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(NatsStartError::Exited {
                status,
                log: read_log(),
            });
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(NatsStartError::TimedOut {
                limit,
                log: read_log(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The ports file of the `nats-server` with pid `pid`, once written
/// (`<executable name>_<pid>.ports`; the name is whatever the binary is
/// called).
fn ports_file(dir: &Path, pid: u32) -> Option<PathBuf> {
    let suffix = format!("_{pid}.ports");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(&suffix))
        })
}

/// The client port in a ports file (`{"nats":["nats://host:port"],…}`),
/// once it is there and complete.
fn client_port(file: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(file).ok()?;
    let doc: serde_json::Value = serde_json::from_str(&text).ok()?;
    doc["nats"][0].as_str()?.rsplit(':').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_port_is_read_from_a_complete_ports_file_only() {
        let dir = std::env::temp_dir().join(format!("testkit-ports-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.ports");
        std::fs::write(&file, r#"{"nats":["nats://127.0.0.1:42979"]}"#).unwrap();
        assert_eq!(client_port(&file), Some(42979));
        std::fs::write(&file, r#"{"nats":["nats://127.0.0.1:4"#).unwrap();
        assert_eq!(client_port(&file), None);
        assert_eq!(client_port(&dir.join("absent")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
