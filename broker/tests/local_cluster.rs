//! `deploy/local-cluster.sh` runs the deploy topology on this machine — a
//! 3-server NATS cluster with the deploy NATS config, three Herald nodes
//! with auth on, HAProxy in front — and its `SMOKE=1` check passes: an
//! anonymous publish is refused, publishes through every node and through
//! HAProxy are read back everywhere with a minted JWT. Needs Debian's
//! `nats-server` and `haproxy`; the script fails loudly without them.

use std::{path::Path, process::Command};

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local-cluster.sh")
}

/// Every port the script uses is a default plus this: below the ephemeral
/// range (where tests pick free ports), and different per test process.
fn port_offset() -> u32 {
    20_000 + (std::process::id() % 40) * 10
}

#[test]
fn smoke_passes_and_a_node_that_cannot_start_fails_the_script() {
    let tmp = tempfile::tempdir().unwrap();
    // A DATA directory that does not exist yet is created.
    let data = tmp.path().join("not/there/yet");
    let off = port_offset();
    let out = Command::new(script())
        .env("SMOKE", "1")
        .env("DATA", &data)
        .env("PORT_OFFSET", off.to_string())
        .env("HERALD_BIN", env!("CARGO_BIN_EXE_herald"))
        .output()
        .expect("run local-cluster.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("smoke test passed"),
        "local-cluster.sh failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!("clients -> http://127.0.0.1:{}", 8080 + off)),
        "{stdout}"
    );
    for i in 1..=3 {
        assert!(
            stdout.contains(&format!("n{i}: http://127.0.0.1:{} {{", 8080 + i + off)),
            "{stdout}"
        );
    }
    assert!(data.join("secrets/herald.env").exists());

    // A node that exits at once: the script says which and fails, instead
    // of printing "cluster up" over empty lines.
    let out = Command::new(script())
        .env("SMOKE", "1")
        .env("DATA", tmp.path().join("broken"))
        .env("PORT_OFFSET", off.to_string())
        .env("HERALD_BIN", "/bin/true")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("node n1 exited"), "{stderr}");
    assert!(!stdout.contains("cluster up"), "{stdout}");
}
