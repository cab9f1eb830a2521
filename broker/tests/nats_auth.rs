//! Issue 25, the closed bus: NATS started with the deploy files' own
//! configuration (`deploy/nats/nats.conf`) admits Herald's user, on Herald's
//! subjects only; nobody else can publish on the cluster subjects, the
//! Herald nodes never see such an attempt, and the password never reaches
//! their logs. (The other credentials: `nats_credentials.rs`.)

mod common;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use common::*;
use herald::cluster::wire::{self, Heartbeat};
use serde_json::json;

fn deploy_nats_conf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats/nats.conf")
}

/// A random password shaped as `deploy/make-secrets.sh` makes them: a
/// letter first, since nats-server parses a `$VAR`'s value as a config value
/// (a leading digit makes it a number).
fn random_secret() -> String {
    use rand::Rng;
    let bytes: [u8; 18] = rand::thread_rng().gen();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("s{hex}")
}

/// A fake member's heartbeat: what a hostile client would inject.
fn evil_heartbeat() -> String {
    let hb = Heartbeat {
        node: "evil".into(),
        incarnation: 1,
        watermark: 0,
        leaving: false,
    };
    String::from_utf8(wire::encode(&hb).to_vec()).unwrap()
}

async fn members(node: &Node) -> u64 {
    metric(node, "herald_cluster_members").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_deploy_bus_admits_only_herald_and_only_on_its_subjects() {
    let password = random_secret();
    let route_password = random_secret();
    let nats = NatsCluster::start_with(
        Some(&deploy_nats_conf()),
        &[
            ("HERALD_NATS_PASSWORD", &password),
            ("NATS_ROUTE_PASSWORD", &route_password),
        ],
        Some(("route", &route_password)),
    );
    // Herald with the right credentials forms the cluster (the password from
    // the variable, as the deploy files give it; n3 logs everything).
    let urls = nats.urls();
    let mut nodes = Vec::new();
    for i in 1..=3 {
        let name = format!("n{i}");
        let log = if i == 3 { "trace" } else { "info" };
        nodes.push(Node::start_with_env(
            &["--nats", &urls, "--node-id", &name, "--nats-user", "herald"],
            &[("HERALD_NATS_PASSWORD", &password), ("HERALD_LOG", log)],
        ));
    }
    for node in &nodes {
        wait_ready(node, Duration::from_secs(30)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for node in &nodes {
        assert_eq!(members(node).await, 3, "{}", node.logs());
    }
    let (status, ack) = publish(&nodes[0], "closed.t", &json!("via n1")).await;
    assert_eq!(status, 200, "{ack}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, history) = get_json(&nodes[2], "/v1/topics/closed.t/messages").await;
        if history["last_seq"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "n3 never got it: {history}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Without Herald's credentials nothing reaches the cluster subjects.
    let hb = evil_heartbeat();
    let publish_hb = format!("PUB herald.c.hb.evil {}\r\n{hb}\r\n", hb.len());
    for (who, connect) in [
        ("anonymous", json!({})),
        (
            "wrong password",
            json!({"user": "herald", "pass": "guess-guess"}),
        ),
        ("another user", json!({"user": "app", "pass": password})),
        (
            "the route user",
            json!({"user": "route", "pass": route_password}),
        ),
    ] {
        for port in &nats.ports {
            let answer = raw_nats_session(*port, connect.clone(), &publish_hb);
            assert!(
                answer.contains("-ERR 'Authorization Violation'") && !answer.contains("PONG"),
                "{who} on {port}: {answer}"
            );
        }
    }
    // Herald's own user is confined to Herald's subjects.
    let herald = json!({"user": "herald", "pass": password});
    let answer = raw_nats_session(nats.ports[0], herald.clone(), "PUB orders.eu 2\r\nhi\r\n");
    assert!(
        answer.contains("Permissions Violation for Publish to \"orders.eu\""),
        "{answer}"
    );
    let answer = raw_nats_session(nats.ports[0], herald.clone(), "SUB > 1\r\n");
    assert!(
        answer.contains("Permissions Violation for Subscription to \">\""),
        "{answer}"
    );
    // Nor can anything join as a route without the route password (the
    // cluster name is public: every server's INFO shows it).
    let route = |pass: &str| {
        let connect =
            json!({"user": "route", "pass": pass, "name": "rogue", "cluster": "herald-test"});
        raw_nats_session(nats.route_port(0), connect, "")
    };
    let answer = route("guess-guess");
    assert!(answer.contains("Authorization Violation"), "{answer}");
    let answer = route(&route_password);
    assert!(
        !answer.contains("-ERR"),
        "the route password was refused: {answer}"
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    for node in &nodes {
        assert_eq!(members(node).await, 3, "a refused heartbeat reached a node");
    }
    // Control: the same heartbeat with Herald's credentials does reach the
    // nodes, so the check above can see an injection.
    let answer = raw_nats_session(nats.ports[1], herald, &publish_hb);
    assert!(
        answer.contains("PONG") && !answer.contains("-ERR"),
        "{answer}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while members(&nodes[0]).await != 4 {
        assert!(
            Instant::now() < deadline,
            "the control heartbeat never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A node with a wrong password stays unready, says why, and joins nobody.
    let mut wrong = Node::start_with_env(
        &["--nats", &urls, "--node-id", "n4", "--nats-user", "herald"],
        &[("HERALD_NATS_PASSWORD", "not-the-password")],
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, body) = get_json(&wrong, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        wrong.logs().contains("authorization violation"),
        "{}",
        wrong.logs()
    );
    assert!(!wrong.logs().contains("not-the-password"));
    wrong.kill9();

    // No password anywhere in the nodes' logs, even at trace (n3).
    for node in &nodes {
        let log = node.logs();
        assert!(!log.contains(&password), "the NATS password was logged");
    }
}
