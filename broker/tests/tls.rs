//! Issue 6 (TLS): `--tls-cert` / `--tls-key` serve HTTPS and WSS.

mod common;

use std::sync::Arc;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn self_signed(dir: &std::path::Path) -> (String, String, String) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let cert_pem = cert.cert.pem();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, &cert_pem).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    (
        cert_path.to_str().unwrap().into(),
        key_path.to_str().unwrap().into(),
        cert_pem,
    )
}

#[tokio::test]
async fn https_and_wss() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, pem) = self_signed(dir.path());
    let node = Node::start(&["--tls-cert", &cert, "--tls-key", &key]);
    assert!(node.logs().contains("https://"), "{}", node.logs());
    let https = format!("https://{}", node.addr);

    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let res = client
        .post(format!("{https}/v1/topics/tls.x/messages"))
        .json(&json!("secure"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"topic":"tls.x","seq":1})
    );
    // Plain HTTP on the TLS port gets nowhere.
    assert!(http()
        .get(node.url("/healthz"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true));

    // WSS with the same certificate as the only root.
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = tokio_rustls::rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("wss://{}/v1/ws", node.addr), tls)
        .await
        .unwrap();
    ws.send(WsMessage::Text(
        json!({"op":"subscribe","topic":"tls.x","since":0}).to_string(),
    ))
    .await
    .unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        if let Some(Ok(WsMessage::Text(t))) = ws.next().await {
            got.push(serde_json::from_str::<Value>(&t).unwrap());
        }
    }
    assert_eq!(got[0]["type"], "subscribed");
    assert_eq!(
        (got[1]["type"].as_str(), got[1]["data"].as_str()),
        (Some("message"), Some("secure"))
    );
}

#[test]
fn unreadable_certificates_fail_clearly() {
    let out = std::process::Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tempfile::tempdir().unwrap().path())
        .args([
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("/nonexistent/cert.pem"), "{stderr}");
}
