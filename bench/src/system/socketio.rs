//! The socket.io 4 broadcast server of `bench/peers/socketio` (Node), as a
//! peer to compare with.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use super::{ManagedProcess, StopOutcome};

/// `bench/peers/socketio/server.js`, if `setup.sh` installed its modules.
pub fn locate_script() -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/socketio");
    if !dir.join("node_modules/socket.io").is_dir() {
        bail!(
            "{}/node_modules is missing — run bench/peers/setup.sh",
            dir.display()
        );
    }
    Ok(dir.join("server.js"))
}

/// The port from the server's `listening PORT` line.
pub fn parse_listening(line: &str) -> Option<u16> {
    line.strip_prefix("listening ")?.trim().parse().ok()
}

/// A running `node server.js 0`.
pub struct SocketIoServer {
    /// The process (the compare run checks and restarts it).
    pub(crate) proc: ManagedProcess,
    addr: SocketAddr,
}

impl SocketIoServer {
    /// Starts it on a free port (`node` on PATH).
    pub fn start(script: &Path) -> Result<Self> {
        let child = Command::new("node")
            .arg(script)
            .arg("0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting node (is Node installed?)")?;
        // the port is printed on stdout: route it through the stderr watcher
        // by reading stdout ourselves
        let (mut proc, rx) = ManagedProcess::adopt_stdout("socketio", child, parse_listening);
        let port = proc.wait_for(&rx, Duration::from_secs(20), "its port")?;
        Ok(SocketIoServer {
            proc,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node process's pid.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Graceful stop.
    pub fn stop(mut self, grace: Duration) -> StopOutcome {
        self.proc.stop(grace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_port_line() {
        assert_eq!(parse_listening("listening 40123"), Some(40123));
        assert_eq!(parse_listening("something else"), None);
    }
}
