//! The process edge: flags, config errors, port in use, unreadable data
//! dir, health endpoints and graceful shutdown.

mod common;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use common::*;
use serde_json::json;

fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(binary());
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let status =
        wait_timeout(&mut child, Duration::from_secs(20)).expect("process should exit by itself");
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (status.code().unwrap_or(-1), text)
}

#[test]
fn bad_flags_and_settings_fail_clearly() {
    let (code, out) = run_to_exit(&["serve", "--bogus"], &[]);
    assert_ne!(code, 0);
    assert!(out.contains("--bogus"), "{out}");

    let (code, out) = run_to_exit(&["serve", "--listen", "not-an-address"], &[]);
    assert_ne!(code, 0);
    assert!(out.contains("not-an-address"), "{out}");

    let (code, out) = run_to_exit(&["serve"], &[("HERALD_LISTEN", "nope:99999")]);
    assert_ne!(code, 0, "a bad environment variable is refused too");
    assert!(out.contains("nope:99999"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    std::fs::write(&file, "lisen = \"127.0.0.1:1\"\n").unwrap();
    let (code, out) = run_to_exit(&["serve", "--config", file.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(
        out.contains("lisen") && out.contains("herald.toml"),
        "{out}"
    );

    let (code, out) = run_to_exit(&["serve", "--config", "/nonexistent/herald.toml"], &[]);
    assert_ne!(code, 0);
    assert!(out.contains("/nonexistent/herald.toml"), "{out}");
}

#[test]
fn port_in_use_fails_clearly() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = run_to_exit(
        &[
            "serve",
            "--listen",
            &addr,
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(
        out.contains(&addr) && out.to_lowercase().contains("in use"),
        "{out}"
    );
}

#[test]
fn unusable_data_dir_fails_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let bad = file.join("data");
    let (code, out) = run_to_exit(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            bad.to_str().unwrap(),
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(out.contains(bad.to_str().unwrap()), "{out}");

    // A data dir holding something that is not a Herald log is refused, not
    // overwritten.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(foreign.join("log")).unwrap();
    std::fs::write(foreign.join("log").join("db"), vec![0x5a; 4096]).unwrap();
    let (code, out) = run_to_exit(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            foreign.to_str().unwrap(),
        ],
        &[],
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains(foreign.to_str().unwrap()), "{out}");
}

#[test]
fn env_and_file_settings_apply_with_flags_on_top() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    std::fs::write(
        &file,
        "node_id = \"from-file\"\n[limits]\nmax_payload_bytes = 100\n",
    )
    .unwrap();
    let node = Node::start(&["--config", file.to_str().unwrap(), "--node-id", "from-flag"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (status, ready) = get_json(&node, "/readyz").await;
        assert_eq!((status, ready["node"].as_str()), (200, Some("from-flag")));
        let (status, body) = publish(&node, "a", &json!("x".repeat(200))).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (413, Some("payload_too_large")),
            "file limit applies"
        );
    });
}

/// Threads of `pid` named like actix's workers (`actix-rt|system:0|arbiter:N`,
/// cut to 15 bytes by the kernel).
fn worker_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter(|task| {
            let comm = std::fs::read_to_string(task.as_ref().unwrap().path().join("comm"));
            comm.unwrap().starts_with("actix-rt|system")
        })
        .count()
}

#[tokio::test]
async fn workers_setting_sets_the_connection_threads() {
    for (args, env, want) in [
        (vec!["--workers", "3"], vec![], 3),
        (vec![], vec![("HERALD_WORKERS", "1")], 1),
    ] {
        let node = Node::start_with_env(&args, &env);
        // The workers start once the server runs, just after it logs the
        // address the harness waits for.
        let started = std::time::Instant::now();
        while worker_threads(node.pid()) < want && started.elapsed() < TIMEOUT {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(worker_threads(node.pid()), want, "{args:?} {env:?}");
        // Connections spread over the workers all get the message.
        let mut subscribers = Vec::new();
        for _ in 0..4 {
            let mut ws = node.ws().await;
            ws.subscribe("w.x").await;
            subscribers.push(ws);
        }
        publish(&node, "w.x", &json!(1)).await;
        for ws in &mut subscribers {
            let frame = ws.recv().await;
            assert_eq!(
                (frame["type"].as_str(), frame["seq"].as_u64()),
                (Some("message"), Some(1))
            );
        }
    }
}

/// The ready line is the one thing on stdout, and it does not depend on
/// the logs: with logging off, a program still learns the bound port.
#[tokio::test]
async fn the_ready_line_names_the_bound_address_with_logging_off() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--node-id",
            "ready-1",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("HERALD_LOG", "off")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(TIMEOUT).expect("a ready line on stdout");
    assert!(
        line.starts_with(r#"{"listening":"#),
        "`listening` first, as documented: {line}"
    );
    let ready: serde_json::Value = serde_json::from_str(&line).expect("the ready line is JSON");
    let addr: std::net::SocketAddr = ready["addr"].as_str().unwrap().parse().unwrap();
    assert_ne!(addr.port(), 0, "{line}");
    assert_eq!(ready["listening"], format!("http://{addr}"), "{line}");
    assert_eq!(ready["node"], "ready-1", "{line}");
    let readyz: serde_json::Value = http()
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(readyz["node"], "ready-1");
    signal(child.id(), "TERM");
    wait_timeout(&mut child, Duration::from_secs(30)).expect("exits after SIGTERM");
    // The process is gone, so its stdout is at EOF and this ends.
    let rest: Vec<String> = rx.iter().collect();
    assert!(
        rest.is_empty(),
        "stdout holds only the ready line: {rest:?}"
    );
}

#[tokio::test]
async fn health_endpoints() {
    let node = Node::start(&[]);
    assert_eq!(get_json(&node, "/healthz").await.0, 200);
    let (status, body) = get_json(&node, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let metrics = http().get(node.url("/metrics")).send().await.unwrap();
    assert!(metrics.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert!(metrics
        .text()
        .await
        .unwrap()
        .contains("herald_messages_published_total 0"));
}

#[tokio::test]
async fn sigterm_closes_websockets_with_1012_and_exits_zero() {
    let mut node = Node::start(&[]);
    let mut a = node.ws().await;
    a.subscribe("x.y").await;
    let mut b = node.ws().await;
    let pid = node.pid();
    let status = tokio::task::spawn_blocking(move || {
        signal(pid, "TERM");
        pid
    });
    status.await.unwrap();
    assert_eq!(a.closed().await, Some(1012));
    assert_eq!(b.closed().await, Some(1012));
    let exit = tokio::task::spawn_blocking(move || node.sigterm_wait())
        .await
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}

#[tokio::test]
async fn drain_delay_turns_readiness_off_before_closing_connections() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, "drain_delay = \"1500ms\"\n").unwrap();
    let mut node = Node::start(&["--config", config.to_str().unwrap()]);
    let mut ws = node.ws().await;
    ws.subscribe("d.x").await;
    let (status, _) = get_json(&node, "/readyz").await;
    assert_eq!(status, 200);
    let pid = node.pid();
    tokio::task::spawn_blocking(move || signal(pid, "TERM"))
        .await
        .unwrap();
    let signalled = std::time::Instant::now();
    // Not ready at once, while connections keep working.
    let deadline = signalled + Duration::from_millis(800);
    loop {
        let (status, body) = get_json(&node, "/readyz").await;
        if status == 503 {
            assert_eq!(body["error"]["code"], "unavailable");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still ready while draining"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = publish(&node, "d.x", &json!("during drain")).await;
    assert_eq!(
        status, 200,
        "publishes are still taken during the drain delay"
    );
    assert_eq!(ws.recv().await["data"], "during drain");
    // Then the WebSocket is told to reconnect elsewhere, after the delay.
    assert_eq!(ws.closed().await, Some(1012));
    assert!(
        signalled.elapsed() >= Duration::from_millis(1400),
        "closed after {:?}, before the drain delay",
        signalled.elapsed()
    );
    let exit = tokio::task::spawn_blocking(move || node.sigterm_wait())
        .await
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// Issue 21: with the default configuration a SIGTERMed node answers
/// `/readyz` with 503 JSON for a while (the default `drain_delay`, 2 s)
/// before its port refuses connections, and serves new requests in that
/// window — what a load balancer's health check needs to see.
#[tokio::test]
async fn the_default_drain_shows_503_before_the_port_closes() {
    let mut node = Node::start(&[]);
    let pid = node.pid();
    tokio::task::spawn_blocking(move || signal(pid, "TERM"))
        .await
        .unwrap();
    let signalled = std::time::Instant::now();
    // A fresh connection per probe, like a health checker.
    let probe = || {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    let (mut first_503, mut refused) = (None, None);
    let mut served_while_draining = false;
    while signalled.elapsed() < Duration::from_secs(15) {
        match probe().get(node.url("/readyz")).send().await {
            Ok(res) if res.status() == 503 => {
                let body: serde_json::Value = res.json().await.expect("JSON body");
                assert_eq!(body["error"]["code"], "unavailable", "{body}");
                if first_503.is_none() {
                    first_503 = Some(signalled.elapsed());
                    // New requests are still served in the window.
                    let (status, _) = publish(&node, "drain.y", &json!(1)).await;
                    served_while_draining = status == 200;
                }
            }
            Ok(res) => assert!(
                res.status() == 200 && first_503.is_none(),
                "readyz {} after the first 503",
                res.status()
            ),
            Err(_) => {
                refused = Some(signalled.elapsed());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first_503 = first_503.expect("no 503 before the port closed");
    let refused = refused.expect("the port never closed");
    assert!(served_while_draining, "a publish in the window failed");
    assert!(
        refused - first_503 >= Duration::from_millis(1500),
        "503 for only {:?} (first at {first_503:?}, refused at {refused:?})",
        refused - first_503
    );
    let exit = tokio::task::spawn_blocking(move || node.sigterm_wait())
        .await
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// A client that keeps one keep-alive connection busy does not hold a
/// draining node: once the node is leaving, every answer says
/// `Connection: close`, so the client reconnects (elsewhere, behind a load
/// balancer) and the node exits soon after its drain delay instead of
/// waiting out the whole shutdown timeout (10 s).
#[tokio::test]
async fn a_busy_keep_alive_client_does_not_hold_the_drain() {
    let mut node = Node::start(&[]);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let url = node.url("/v1/topics/keep.alive/messages");
    let res = client.post(&url).json(&json!(0)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("connection").is_none_or(|v| v != "close"));
    let pid = node.pid();
    tokio::task::spawn_blocking(move || signal(pid, "TERM"))
        .await
        .unwrap();
    let signalled = std::time::Instant::now();
    let closes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let publisher = tokio::spawn({
        let closes = closes.clone();
        async move {
            while signalled.elapsed() < Duration::from_secs(15) {
                if let Ok(res) = client.post(&url).json(&json!(1)).send().await {
                    if res
                        .headers()
                        .get("connection")
                        .is_some_and(|v| v == "close")
                    {
                        closes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    let exit = tokio::task::spawn_blocking(move || node.sigterm_wait())
        .await
        .unwrap();
    let took = signalled.elapsed();
    publisher.abort();
    assert!(exit.success(), "{exit:?}");
    assert!(
        closes.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "no answer during the drain said Connection: close"
    );
    assert!(
        took < Duration::from_secs(6),
        "exited {took:?} after SIGTERM with a busy keep-alive client (drain delay 2 s)"
    );
}
