//! Systems under test. Each is a server process the bench starts itself on a
//! free loopback port with fresh state, measures, and stops: Herald (alone or
//! as a cluster, this build or a baseline build), `nats-server` (a cluster's
//! bus, the core-NATS peer, and with JetStream the durable-ingest peer) and
//! the socket.io server.

pub mod herald;
pub mod jetstream;
pub mod nats;
pub mod socketio;

use std::{
    collections::VecDeque,
    io::{BufRead, BufReader, Read},
    net::SocketAddr,
    process::{Child, ExitStatus},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

/// Lines of server output kept for error messages.
const TAIL_LINES: usize = 40;

/// What every system under test exposes to scenarios.
pub trait ServerUnderTest {
    /// The server process id.
    fn pid(&self) -> u32;
    /// Where clients connect.
    fn addr(&self) -> SocketAddr;
}

/// The line of a dead process's last output that says why (Node's OOM, a
/// Rust panic), not the native stack trace after it; else its last line.
fn why_it_ended(tail: &str) -> String {
    tail.lines()
        .find(|l| l.contains("FATAL") || l.contains("panicked") || l.contains("rror:"))
        .or_else(|| tail.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("")
        .trim()
        .chars()
        .take(200)
        .collect()
}

/// A child process whose output is drained on a thread (a full pipe would
/// stall the server) with the last lines kept for diagnostics.
pub struct ManagedProcess {
    /// Name used in messages (`herald`, `nats-server`, …).
    pub name: String,
    child: Child,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl ManagedProcess {
    /// Takes a spawned child with piped stderr. Every stderr line is offered
    /// to `watch`; the first `Some` it returns is sent on the returned
    /// channel (e.g. the bound address).
    pub fn adopt<T: Send + 'static>(
        name: &str,
        mut child: Child,
        watch: impl Fn(&str) -> Option<T> + Send + 'static,
    ) -> (Self, mpsc::Receiver<T>) {
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::channel();
        if let Some(stderr) = child.stderr.take() {
            let tail = tail.clone();
            thread::Builder::new()
                .name(format!("{name}-stderr"))
                .spawn(move || drain(stderr, &tail, watch, tx))
                .expect("spawning a thread");
        }
        if let Some(stdout) = child.stdout.take() {
            let tail = tail.clone();
            thread::Builder::new()
                .name(format!("{name}-stdout"))
                .spawn(move || drain(stdout, &tail, |_| None::<()>, mpsc::channel().0))
                .expect("spawning a thread");
        }
        (
            ManagedProcess {
                name: name.to_string(),
                child,
                tail,
            },
            rx,
        )
    }

    /// Like [`Self::adopt`], with a watcher on each stream (piped stdout
    /// and stderr): the first `Some` of each is sent on the one channel.
    pub fn adopt_both<T: Send + 'static>(
        name: &str,
        mut child: Child,
        on_stdout: impl Fn(&str) -> Option<T> + Send + 'static,
        on_stderr: impl Fn(&str) -> Option<T> + Send + 'static,
    ) -> (Self, mpsc::Receiver<T>) {
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            let (tail, tx) = (tail.clone(), tx.clone());
            thread::Builder::new()
                .name(format!("{name}-stdout"))
                .spawn(move || drain(stdout, &tail, on_stdout, tx))
                .expect("spawning a thread");
        }
        if let Some(stderr) = child.stderr.take() {
            let tail = tail.clone();
            thread::Builder::new()
                .name(format!("{name}-stderr"))
                .spawn(move || drain(stderr, &tail, on_stderr, tx))
                .expect("spawning a thread");
        }
        (
            ManagedProcess {
                name: name.to_string(),
                child,
                tail,
            },
            rx,
        )
    }

    /// Like [`Self::adopt`], but `watch` sees stdout lines instead.
    pub fn adopt_stdout<T: Send + 'static>(
        name: &str,
        mut child: Child,
        watch: impl Fn(&str) -> Option<T> + Send + 'static,
    ) -> (Self, mpsc::Receiver<T>) {
        let stdout = child.stdout.take().map(std::os::fd::OwnedFd::from);
        let stderr = child.stderr.take().map(std::os::fd::OwnedFd::from);
        child.stdout = stderr.map(std::process::ChildStdout::from);
        child.stderr = stdout.map(std::process::ChildStderr::from);
        Self::adopt(name, child, watch)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines the process printed, for error messages.
    pub fn tail(&self) -> String {
        let tail = self.tail.lock().unwrap();
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// The exit status if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// If the process has exited: its status and the tail of its output.
    pub fn exited(&mut self) -> Option<String> {
        let status = self.try_wait()?;
        Some(format!("{status}; {}", why_it_ended(&self.tail())))
    }

    /// Waits for `rx` to yield, failing early if the process exits.
    pub fn wait_for<T>(
        &mut self,
        rx: &mpsc::Receiver<T>,
        limit: Duration,
        what: &str,
    ) -> Result<T> {
        let deadline = Instant::now() + limit;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(v) => return Ok(v),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // output closed; give the exit status a moment to appear
                    thread::sleep(Duration::from_millis(100));
                }
            }
            if let Some(status) = self.try_wait() {
                bail!(
                    "{} exited ({status}) before {what}; its last output:\n{}",
                    self.name,
                    self.tail()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not report {what} within {limit:?}; its last output:\n{}",
                    self.name,
                    self.tail()
                );
            }
        }
    }

    /// SIGTERM, then SIGKILL after `grace`. Returns how long the graceful
    /// part took and whether it had to be killed.
    pub fn stop(&mut self, grace: Duration) -> StopOutcome {
        let started = Instant::now();
        if self.try_wait().is_some() {
            return StopOutcome {
                took: Duration::ZERO,
                killed: false,
                status: self.try_wait(),
            };
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        while started.elapsed() < grace {
            if let Some(status) = self.try_wait() {
                return StopOutcome {
                    took: started.elapsed(),
                    killed: false,
                    status: Some(status),
                };
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        StopOutcome {
            took: started.elapsed(),
            killed: true,
            status,
        }
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How a stop went.
#[derive(Debug)]
pub struct StopOutcome {
    /// Time from SIGTERM to exit (or to the kill).
    pub took: Duration,
    /// Whether it had to be killed after the grace period.
    pub killed: bool,
    /// Its exit status, if known.
    pub status: Option<ExitStatus>,
}

fn drain<T>(
    pipe: impl Read,
    tail: &Mutex<VecDeque<String>>,
    watch: impl Fn(&str) -> Option<T>,
    tx: mpsc::Sender<T>,
) {
    let mut found = false;
    for line in BufReader::new(pipe).lines() {
        let Ok(line) = line else { break };
        if !found {
            if let Some(v) = watch(&line) {
                found = true;
                let _ = tx.send(v);
            }
        }
        let mut tail = tail.lock().unwrap();
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

#[cfg(test)]
mod tests {
    use super::why_it_ended;

    #[test]
    fn the_reason_not_the_stack_trace() {
        let node = "listening 40461\n\n<--- Last few GCs --->\n\nFATAL ERROR: Reached heap limit \
                    Allocation failed - JavaScript heap out of memory\n 1: 0xb78db3 \
                    node::OOMErrorHandler\n17: 0xf70256 v8::internal::Builtin_ErrorConstructor";
        assert_eq!(
            why_it_ended(node),
            "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory"
        );
        assert_eq!(why_it_ended("a\nlast words\n\n"), "last words");
        assert_eq!(why_it_ended(""), "");
    }
}
