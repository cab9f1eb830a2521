//! HAProxy in front of test nodes, with the repository's deploy config, and
//! the fixed ports such nodes need (HAProxy's server list does not follow a
//! node that comes back on another port).

use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::{free_port, wait_port};

/// `haproxy -db -f deploy/haproxy/haproxy.cfg` in the foreground; killed
/// on drop.
pub struct Haproxy {
    child: Child,
    /// Where clients connect.
    pub port: u16,
    /// The stats page (CSV at `/;csv`).
    pub stats_port: u16,
}

impl Haproxy {
    /// Starts HAProxy on free ports in front of `nodes` (its config names
    /// three servers, `HERALD_N1..3`); fails loudly without `haproxy`.
    pub fn start(nodes: &[SocketAddr]) -> Haproxy {
        assert_eq!(nodes.len(), 3, "the deploy config has three servers");
        let bin = [
            "/usr/sbin/haproxy",
            "/usr/bin/haproxy",
            "/usr/local/sbin/haproxy",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("haproxy is required for this test: apt-get install haproxy");
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/haproxy/haproxy.cfg");
        let (port, stats_port) = (free_port(), free_port());
        let mut cmd = Command::new(bin);
        cmd.arg("-db")
            .arg("-f")
            .arg(config)
            .env("HAPROXY_BIND", format!("127.0.0.1:{port}"))
            .env("HAPROXY_STATS_BIND", format!("127.0.0.1:{stats_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (i, node) in nodes.iter().enumerate() {
            cmd.env(format!("HERALD_N{}", i + 1), node.to_string());
        }
        let child = cmd.spawn().expect("start haproxy");
        let haproxy = Haproxy {
            child,
            port,
            stats_port,
        };
        wait_port(port, "haproxy", None);
        haproxy
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Each server's name and status (`UP`, `DOWN`, `UP 1/2`, …) from the
    /// stats CSV; empty when the page does not answer.
    pub async fn statuses(&self) -> Vec<(String, String)> {
        let Ok(res) = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/;csv", self.stats_port))
            .timeout(Duration::from_secs(2))
            .send()
            .await
        else {
            return Vec::new();
        };
        let text = res.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with("herald,n"))
            .map(|l| {
                let fields: Vec<&str> = l.split(',').collect();
                (fields[1].to_string(), fields[17].to_string())
            })
            .collect()
    }

    /// Waits until HAProxy's checks see every server `UP`.
    pub async fn wait_all_up(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let s = self.statuses().await;
            if s.len() == 3 && s.iter().all(|(_, status)| status == "UP") {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "HAProxy never saw 3 ready nodes: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback address below the ephemeral port range (32768+), so no
/// outgoing connection can take it while its node is down between a kill
/// and the restart. Picked at random to keep concurrent tests apart.
pub fn stable_addr() -> SocketAddr {
    for _ in 0..200 {
        let port = rand::random::<u16>() % 10_000 + 21_000;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().unwrap();
        }
    }
    panic!("no free port in 21000..31000");
}
