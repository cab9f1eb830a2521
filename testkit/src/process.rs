//! Starting a process that announces itself with a ready line, and the
//! signals and deadlines tests use on it.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use crate::Ready;

/// Every line a launched process wrote, stdout and stderr interleaved in
/// the order written. Shared with the thread that reads them.
pub type Log = Arc<Mutex<Vec<String>>>;

/// A process that printed its ready line.
#[derive(Debug)]
pub struct Launched {
    /// The process; the caller kills it (the suites' `Node`s do on drop).
    pub child: Child,
    /// What its ready line said.
    pub ready: Ready,
    /// Its output so far, and from now on.
    pub log: Log,
}

/// Why [`launch`] has no ready process to hand back.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The command could not be run at all.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The failure.
        source: std::io::Error,
    },
    /// It closed its output (exited, usually refusing to start) without a
    /// ready line.
    #[error("exited ({status:?}) without a ready line; output:\n{output}")]
    Exited {
        /// The exit status, if it came within a few seconds.
        status: Option<ExitStatus>,
        /// Everything it wrote.
        output: String,
    },
    /// No ready line within the limit; the process was killed.
    #[error("no ready line within {limit:?}; output:\n{output}")]
    TimedOut {
        /// The limit.
        limit: Duration,
        /// Everything it wrote.
        output: String,
    },
}

/// Starts `cmd` with stdout and stderr on one pipe and waits up to `limit`
/// for its ready line.
///
/// One pipe keeps the order the process wrote in: a log line written before
/// the ready line is in [`Launched::log`] by the time `launch` returns. With
/// `HERALD_TEST_ECHO` set, every line is also echoed to the test's stderr,
/// prefixed `[herald]`.
pub fn launch(mut cmd: Command, limit: Duration) -> Result<Launched, LaunchError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let spawn_error = |source| LaunchError::Spawn {
        program: program.clone(),
        source,
    };
    let (reader, writer) = std::io::pipe().map_err(spawn_error)?;
    cmd.stdout(writer.try_clone().map_err(spawn_error)?)
        .stderr(writer);
    let mut child = cmd.spawn().map_err(spawn_error)?;
    // The command holds the pipe's write ends: until it is gone the reader
    // would never see the end of the output of a process that exited.
    drop(cmd);

    let log: Log = Arc::default();
    let (tx, rx) = mpsc::channel();
    let sink = log.clone();
    let echo = std::env::var_os("HERALD_TEST_ECHO").is_some();
    std::thread::spawn(move || {
        let mut announced = false;
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if echo {
                eprintln!("[herald] {line}");
            }
            let ready = (!announced).then(|| Ready::parse(&line)).flatten();
            sink.lock().unwrap().push(line);
            if let Some(ready) = ready {
                announced = true;
                let _ = tx.send(Some(ready));
            }
        }
        let _ = tx.send(None);
    });

    let output = |log: &Log| log.lock().unwrap().join("\n");
    match rx.recv_timeout(limit) {
        Ok(Some(ready)) => Ok(Launched { child, ready, log }),
        Ok(None) => {
            let status = wait_timeout(&mut child, Duration::from_secs(10));
            Err(LaunchError::Exited {
                status,
                output: output(&log),
            })
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(LaunchError::TimedOut {
                limit,
                output: output(&log),
            })
        }
    }
}

/// Sends `sig` (a name such as `TERM`, `KILL`, `STOP`) to `pid` with
/// `kill(1)`; panics if it cannot be delivered.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .status()
        .expect("kill(1) runs")
        .success();
    assert!(ok, "kill -{sig} {pid} failed");
}

/// Waits up to `limit` for `child` to exit; past it, kills it and returns
/// `None`.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[test]
    fn the_ready_line_comes_after_what_was_written_before_it() {
        let mut launched = launch(
            sh(r#"echo "a log line" >&2; echo '{"listening":"http://127.0.0.1:7","addr":"127.0.0.1:7","node":"n"}'; sleep 30"#),
            Duration::from_secs(10),
        )
        .expect("ready");
        assert_eq!(launched.ready.addr.port(), 7);
        assert_eq!(launched.log.lock().unwrap()[0], "a log line");
        launched.child.kill().unwrap();
        launched.child.wait().unwrap();
    }

    #[test]
    fn a_process_that_exits_first_is_reported_with_its_output() {
        match launch(
            sh("echo 'cannot listen' >&2; exit 3"),
            Duration::from_secs(10),
        ) {
            Err(LaunchError::Exited { status, output }) => {
                assert_eq!(status.and_then(|s| s.code()), Some(3));
                assert_eq!(output, "cannot listen");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_process_that_never_gets_ready_is_killed() {
        match launch(sh("exec sleep 30"), Duration::from_millis(300)) {
            Err(LaunchError::TimedOut { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}
