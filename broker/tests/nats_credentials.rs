//! Issue 25: every NATS credential Herald takes, against real servers —
//! an NKey seed over mutual TLS, a `.creds` file in operator (JWT) mode —
//! and what happens with wrong or missing ones: never ready, or stopped at
//! start-up; never a seed in the log.

mod common;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use common::*;
use serde_json::json;

/// A random suffix for JWT ids.
fn random_id() -> String {
    use rand::Rng;
    format!("{:016x}", rand::thread_rng().gen::<u64>())
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as
/// PEM files in `dir`.
fn tls_files(dir: &Path) -> [PathBuf; 5] {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issue = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = issue(vec!["127.0.0.1".into(), "localhost".into()]);
    let (client_cert, client_key) = issue(vec!["herald-node".into()]);
    let files = [
        ("ca.pem", ca.pem()),
        ("server.pem", server_cert),
        ("server-key.pem", server_key),
        ("client.pem", client_cert),
        ("client-key.pem", client_key),
    ];
    files.map(|(name, pem)| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nkey_and_mutual_tls_credentials_connect_and_wrong_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let [ca, server_cert, server_key, client_cert, client_key] = tls_files(dir.path());
    let user = nkeys::KeyPair::new_user();
    let seed_file = dir.path().join("herald.nk");
    std::fs::write(&seed_file, format!("{}\n", user.seed().unwrap())).unwrap();
    let config = format!(
        r#"
authorization {{
  users: [ {{ nkey: {}, permissions: {{ publish: {{ allow: ["herald.>", "_INBOX.>"] }}, subscribe: {{ allow: ["herald.>", "_INBOX.>"] }} }} }} ]
}}
tls {{ cert_file: "{}", key_file: "{}", ca_file: "{}", verify: true }}
"#,
        user.public_key(),
        server_cert.display(),
        server_key.display(),
        ca.display(),
    );
    let (nats, _nats_dir) = NatsServer::start_with_config(&config, &[]);
    let url = nats.url();
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let tls = [
        "--nats-tls-ca".to_string(),
        s(&ca),
        "--nats-tls-cert".into(),
        s(&client_cert),
        "--nats-tls-key".into(),
        s(&client_key),
    ];
    let args = |extra: &[String]| -> Vec<String> {
        let mut a = vec![
            "--nats".into(),
            url.clone(),
            "--node-id".into(),
            "t1".into(),
        ];
        a.extend_from_slice(extra);
        a
    };
    let start = |a: &[String]| Node::start(&a.iter().map(String::as_str).collect::<Vec<_>>());

    // Seed and client certificate: ready, and publishing works.
    let mut good = args(&tls);
    good.extend(["--nats-nkey-file".into(), s(&seed_file)]);
    let node = start(&good);
    wait_ready(&node, Duration::from_secs(20)).await;
    let (status, ack) = publish(&node, "tls.t", &json!(1)).await;
    assert_eq!((status, ack["seq"].as_u64()), (200, Some(1)), "{ack}");
    let seed = user.seed().unwrap();
    assert!(!node.logs().contains(&seed), "the seed was logged");
    drop(node);

    // Another seed, or no client certificate: never ready.
    let other = nkeys::KeyPair::new_user();
    let other_file = dir.path().join("other.nk");
    std::fs::write(&other_file, other.seed().unwrap()).unwrap();
    let mut wrong_seed = args(&tls);
    wrong_seed.extend(["--nats-nkey-file".into(), s(&other_file)]);
    let no_cert = args(&[
        "--nats-tls-ca".into(),
        s(&ca),
        "--nats-nkey-file".into(),
        s(&seed_file),
    ]);
    for (what, a) in [
        ("another seed", wrong_seed),
        ("no client certificate", no_cert),
    ] {
        let node = start(&a);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (status, body) = get_json(&node, "/readyz").await;
        assert_eq!(status, 503, "{what}: {body}");
        assert!(!node.logs().contains(&seed), "the seed was logged");
    }

    // A missing seed file stops the node at start-up instead.
    let out = std::process::Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data-missing"))
        .args(["--nats", &url, "--nats-nkey-file"])
        .arg(dir.path().join("missing.nk"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("missing.nk"),
        "{stderr}"
    );
}

/// base64url without padding (JWT encoding).
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A NATS JWT (`ed25519-nkey`) with `nats` claims for `subject`, signed by
/// `issuer`.
fn nats_jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    let header = b64url(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = json!({
        "jti": format!("{name}-{}", random_id()),
        "iat": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
        "iss": issuer.public_key(),
        "sub": subject,
        "name": name,
        "nats": nats,
    });
    let body = format!("{header}.{}", b64url(claims.to_string().as_bytes()));
    let signature = issuer.sign(body.as_bytes()).unwrap();
    format!("{body}.{}", b64url(&signature))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_creds_file_logs_in_to_nats_in_operator_mode() {
    let (operator, account, user) = (
        nkeys::KeyPair::new_operator(),
        nkeys::KeyPair::new_account(),
        nkeys::KeyPair::new_user(),
    );
    let unlimited = json!({"subs": -1, "data": -1, "payload": -1});
    let operator_jwt = nats_jwt(
        &operator,
        &operator.public_key(),
        "op",
        json!({"type": "operator", "version": 2}),
    );
    let account_claims = json!({
        "type": "account", "version": 2,
        "limits": {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                   "wildcards": true, "conn": -1, "leaf": -1},
    });
    let account_jwt = nats_jwt(
        &operator,
        &account.public_key(),
        "herald-account",
        account_claims,
    );
    let mut user_claims = json!({
        "type": "user", "version": 2,
        "pub": {"allow": ["herald.>", "_INBOX.>"]},
        "sub": {"allow": ["herald.>", "_INBOX.>"]},
    });
    user_claims
        .as_object_mut()
        .unwrap()
        .extend(unlimited.as_object().unwrap().clone());
    let user_jwt = nats_jwt(&account, &user.public_key(), "herald", user_claims);
    let config = format!(
        "operator: {operator_jwt}\nresolver: MEMORY\nresolver_preload: {{ {}: {account_jwt} }}\n",
        account.public_key()
    );
    let (nats, dir) = NatsServer::start_with_config(&config, &[]);
    let creds = dir.path().join("herald.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        ),
    )
    .unwrap();
    let creds_arg = creds.to_str().unwrap().to_string();
    let node = Node::start(&[
        "--nats",
        &nats.url(),
        "--node-id",
        "c1",
        "--nats-creds",
        &creds_arg,
    ]);
    wait_ready(&node, Duration::from_secs(20)).await;
    let (status, ack) = publish(&node, "creds.t", &json!(1)).await;
    assert_eq!((status, ack["seq"].as_u64()), (200, Some(1)), "{ack}");
    assert!(
        !node.logs().contains(&user.seed().unwrap()),
        "the seed was logged"
    );

    // Anonymous clients are refused by the operator-mode server too.
    let answer = raw_nats_session(nats.port, json!({}), "PUB herald.c.hb.x 2\r\nhi\r\n");
    assert!(answer.contains("Authorization Violation"), "{answer}");

    // A malformed creds file stops the node at start-up.
    std::fs::write(&creds, "not a creds file\n").unwrap();
    let out = std::process::Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data-bad-creds"))
        .args(["--nats", &nats.url(), "--nats-creds", &creds_arg])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("herald.creds"),
        "{stderr}"
    );
}
