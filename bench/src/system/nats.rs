//! Starting and stopping a plain `nats-server` (no JetStream, no auth) on a
//! free loopback port, as the message bus of a Herald cluster.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use super::{ManagedProcess, StopOutcome};

/// Where Debian's `nats-server` package puts the binary.
pub const DEFAULT_NATS_SERVER: &str = "/usr/sbin/nats-server";

/// Finds `nats-server`: the explicit path (flag or `NATS_SERVER_BIN`) if
/// given, else `/usr/sbin/nats-server`, else `nats-server` on `PATH`.
pub fn locate_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    const HINT: &str = "install it (Debian/Ubuntu: `apt-get install nats-server`) \
                        or point --nats-server-bin / NATS_SERVER_BIN at it";
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!("nats-server not found at {} — {HINT}", p.display());
    }
    let default = Path::new(DEFAULT_NATS_SERVER);
    if default.is_file() {
        return Ok(default.to_path_buf());
    }
    if let Some(found) = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nats-server"))
            .find(|p| p.is_file())
    }) {
        return Ok(found);
    }
    bail!("nats-server not found (looked at {DEFAULT_NATS_SERVER} and on PATH) — {HINT}")
}

/// The client address from nats-server's
/// `Listening for client connections on 127.0.0.1:4222` line.
pub fn parse_listening(line: &str) -> Option<SocketAddr> {
    const MARKER: &str = "Listening for client connections on ";
    let rest = &line[line.find(MARKER)? + MARKER.len()..];
    rest.split_ascii_whitespace().next()?.parse().ok()
}

/// A free loopback port right now (another process may take it before we
/// use it; [`NatsServer::start`] retries).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// A running `nats-server -a 127.0.0.1 -p PORT`.
pub struct NatsServer {
    proc: ManagedProcess,
    addr: SocketAddr,
}

impl NatsServer {
    /// Starts it on a free port and waits until it accepts clients.
    pub fn start(binary: &Path) -> Result<Self> {
        let mut last_error = None;
        for _ in 0..3 {
            let port = free_port()?;
            let child = Command::new(binary)
                .args(["-a", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("starting {}", binary.display()))?;
            let (mut proc, rx) = ManagedProcess::adopt("nats-server", child, parse_listening);
            match proc.wait_for(&rx, Duration::from_secs(10), "its client port") {
                Ok(addr) => return Ok(NatsServer { proc, addr }),
                // most likely the port was taken in between: try another
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn log_tail(&self) -> String {
        self.proc.tail()
    }

    pub fn stop(mut self, grace: Duration) -> StopOutcome {
        self.proc.stop(grace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_listening_line() {
        let line = "[14688] 2026/11/24 21:01:28.614030 [INF] Listening for client connections on 127.0.0.1:42683";
        assert_eq!(
            parse_listening(line),
            Some("127.0.0.1:42683".parse().unwrap())
        );
        assert_eq!(parse_listening("[1] [INF] Server is ready"), None);
    }

    #[test]
    fn explicit_missing_binary_is_a_clear_error() {
        let err = locate_binary(Some(Path::new("/nonexistent/nats-server")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/nats-server"), "{err}");
        assert!(err.contains("NATS_SERVER_BIN"), "{err}");
    }
}
