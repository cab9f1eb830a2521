//! NATS for the tests: the `nats-server` binary, one server on a port of its
//! own, a 3-server NATS cluster (the HA bus) whose servers can be killed and
//! restarted, and a raw NATS protocol session for checking what a server
//! refuses.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use herald_testkit::{NatsStartError, StartedNats};
use serde_json::Value;

use super::TIMEOUT;

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `nats-server` binary; fails loudly when it is not installed.
pub fn nats_server_bin() -> String {
    herald_testkit::nats_server_bin().expect(
        "nats-server is required for cluster tests (apt-get install nats-server); \
         scripts/test-all.sh installs it",
    )
}

/// Starts `nats-server` with `args` and `env`, its output in `dir/name.log`
/// and its ports file beside it, and waits until this process reports its
/// client port (see `herald_testkit::start_nats` for why not just a
/// connect).
fn start_nats(
    dir: &Path,
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<StartedNats, NatsStartError> {
    let mut cmd = Command::new(nats_server_bin());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    herald_testkit::start_nats(cmd, &dir.join(format!("{name}.log")), TIMEOUT)
}

/// A real `nats-server` process on a loopback port of its own.
pub struct NatsServer {
    child: Option<Child>,
    /// Its client port.
    pub port: u16,
    /// Holds its log and ports file while it runs.
    _dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts on a port the kernel picks; fails loudly when `nats-server` is
    /// not installed.
    pub fn start() -> NatsServer {
        Self::start_args(&["-a", "127.0.0.1", "-p", "-1"], &[]).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts on `port` (to restart after [`NatsServer::stop`]). Another
    /// test may hold the port for a moment (it was free while stopped):
    /// that is retried for [`TIMEOUT`], then fails loudly.
    pub fn start_on(port: u16) -> NatsServer {
        let port_arg = port.to_string();
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            match Self::start_args(&["-a", "127.0.0.1", "-p", &port_arg], &[]) {
                Ok(nats) => return nats,
                Err(e) if e.port_taken() && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("nats-server on {port}: {e}"),
            }
        }
    }

    /// Starts with a configuration file's `text` (its `listen` is set here,
    /// to a port the kernel picks) and environment (for `$VAR` references
    /// in it). The directory holds the file and must outlive the server.
    pub fn start_with_config(text: &str, env: &[(&str, &str)]) -> (NatsServer, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("nats.conf");
        std::fs::write(&file, format!("{text}\nlisten: 127.0.0.1:-1\n")).unwrap();
        let nats = Self::start_args(&["-c", file.to_str().unwrap()], env)
            .unwrap_or_else(|e| panic!("{e}"));
        (nats, dir)
    }

    fn start_args(args: &[&str], env: &[(&str, &str)]) -> Result<NatsServer, NatsStartError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let started = start_nats(dir.path(), "nats", args, env)?;
        Ok(NatsServer {
            child: Some(started.child),
            port: started.port,
            _dir: dir,
        })
    }

    /// Its client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until something accepts connections on `port`; on failure shows
/// `log`.
pub(super) fn wait_port(port: u16, what: &str, log: Option<&Path>) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not start on {port}; log:\n{}",
            log.and_then(|l| std::fs::read_to_string(l).ok())
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Three real `nats-server`s routed into one NATS cluster (the HA bus), on
/// free loopback ports. Servers can be killed and restarted one at a time.
pub struct NatsCluster {
    servers: Vec<Option<Child>>,
    /// Client ports, one per server.
    pub ports: Vec<u16>,
    route_ports: Vec<u16>,
    monitor_ports: Vec<u16>,
    config: Option<PathBuf>,
    env: Vec<(String, String)>,
    route_auth: Option<(String, String)>,
    dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Three open servers (no auth), routed to each other.
    pub fn start() -> NatsCluster {
        Self::start_with(None, &[], None)
    }

    /// Three servers reading `config` (e.g. a deploy file; its addresses
    /// are overridden by flags) with `env` for its `$VAR`s; `route_auth`
    /// (user, password) goes into the route URLs when the config requires
    /// it.
    pub fn start_with(
        config: Option<&Path>,
        env: &[(&str, &str)],
        route_auth: Option<(&str, &str)>,
    ) -> NatsCluster {
        let n = 3;
        let mut cluster = NatsCluster {
            servers: (0..n).map(|_| None).collect(),
            ports: (0..n).map(|_| free_port()).collect(),
            route_ports: (0..n).map(|_| free_port()).collect(),
            monitor_ports: (0..n).map(|_| free_port()).collect(),
            config: config.map(Path::to_path_buf),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            route_auth: route_auth.map(|(u, p)| (u.to_string(), p.to_string())),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        for i in 0..n {
            cluster.spawn(i);
        }
        cluster.wait_routes();
        cluster
    }

    /// Starts server `i`. A port taken since it was picked (other tests
    /// pick free ports too) moves that server to fresh ports: it routes to
    /// the others itself, so the mesh still forms.
    fn spawn(&mut self, i: usize) {
        for _ in 0..5 {
            match self.spawn_once(i) {
                Ok(started) => {
                    self.servers[i] = Some(started.child);
                    return;
                }
                Err(e) => {
                    assert!(e.port_taken(), "NATS server {i}: {e}");
                    self.ports[i] = free_port();
                    self.route_ports[i] = free_port();
                    self.monitor_ports[i] = free_port();
                }
            }
        }
        panic!("NATS server {i}: no free ports after 5 tries");
    }

    fn spawn_once(&self, i: usize) -> Result<StartedNats, NatsStartError> {
        let userinfo = self
            .route_auth
            .as_ref()
            .map(|(u, p)| format!("{u}:{p}@"))
            .unwrap_or_default();
        let routes: Vec<String> = self
            .route_ports
            .iter()
            .map(|p| format!("nats-route://{userinfo}127.0.0.1:{p}"))
            .collect();
        // `--cluster` replaces the file's route authorization with the
        // URL's user and password (none: open routes), so they go in here.
        let (port, route, monitor) = (
            self.ports[i].to_string(),
            format!("nats://{userinfo}127.0.0.1:{}", self.route_ports[i]),
            self.monitor_ports[i].to_string(),
        );
        let name = format!("s{}", i + 1);
        let routes = routes.join(",");
        let mut args = vec![
            "-a",
            "127.0.0.1",
            "-p",
            &port,
            "-m",
            &monitor,
            "-n",
            &name,
            "--cluster_name",
            "herald-test",
            "--cluster",
            &route,
            "--routes",
            &routes,
        ];
        if let Some(config) = &self.config {
            args.extend(["-c", config.to_str().unwrap()]);
        }
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        start_nats(self.dir.path(), &name, &args, &env)
    }

    /// Every server's URL, comma-separated (what `--nats` takes).
    pub fn urls(&self) -> String {
        (0..self.ports.len())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Server `i`'s URL.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.ports[i])
    }

    /// Server `i`'s route port (for tests of the route listener itself).
    pub fn route_port(&self, i: usize) -> u16 {
        self.route_ports[i]
    }

    /// Server `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("s{}.log", i + 1))).unwrap_or_default()
    }

    /// Kills server `i` (SIGKILL): its clients must fail over.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `i` again on its ports and waits until it has routes to
    /// the others that are up.
    pub fn restart(&mut self, i: usize) {
        assert!(self.servers[i].is_none(), "server {i} is running");
        self.spawn(i);
        self.wait_routes();
    }

    /// Waits until every running server has a route to every other running
    /// one (`/routez`).
    pub fn wait_routes(&self) {
        let up: Vec<usize> = (0..self.servers.len())
            .filter(|i| self.servers[*i].is_some())
            .collect();
        let deadline = std::time::Instant::now() + TIMEOUT;
        for &i in &up {
            loop {
                let routes = http_get_json(self.monitor_ports[i], "/routez")
                    .and_then(|v| v["num_routes"].as_u64());
                if routes == Some(up.len() as u64 - 1) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "NATS server {i} has {routes:?} routes, expected {}; log:\n{}",
                    up.len() - 1,
                    self.log(i)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The server the client named `name` (e.g. `herald-n1`) is connected
    /// to, from every server's `/connz`.
    pub fn server_of(&self, name: &str) -> Option<usize> {
        (0..self.servers.len())
            .filter(|i| self.servers[*i].is_some())
            .find(|&i| {
                http_get_json(self.monitor_ports[i], "/connz?limit=1024")
                    .and_then(|v| v["connections"].as_array().cloned())
                    .is_some_and(|conns| conns.iter().any(|c| c["name"] == name))
            })
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}

/// A blocking `GET` of a JSON document on a loopback port (the NATS
/// monitoring endpoints), without an async runtime.
fn http_get_json(port: u16, path: &str) -> Option<Value> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.split_once("\r\n\r\n")?.1).ok()
}

/// Speaks the NATS client protocol by hand on `port`: reads `INFO`, sends
/// `CONNECT connect` and then `commands`, and returns everything the server
/// answered until it closed the connection or went quiet for a second.
pub fn raw_nats_session(port: u16, connect: Value, commands: &str) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut info = String::new();
    reader.read_line(&mut info).expect("INFO line");
    assert!(info.starts_with("INFO "), "{info}");
    let mut writer = stream;
    let mut connect = connect;
    connect["verbose"] = Value::Bool(false);
    connect["pedantic"] = Value::Bool(false);
    // The server may close as soon as it has read a refused CONNECT; what it
    // answered is still there to read.
    let _ = write!(writer, "CONNECT {connect}\r\n{commands}PING\r\n");
    let mut answer = String::new();
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    answer
}
