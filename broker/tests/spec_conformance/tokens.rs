//! Credentials for the checks with auth on: the secret and API key, signed
//! and unsigned tokens, and the nodes that check them.

use super::*;

pub(crate) const SECRET: &str = "spec-conformance-secret-0123456789";
pub(crate) const API_KEY: &str = "spec-api-key-1";
/// The headers of a WebSocket upgrade, for handshakes refused before the
/// upgrade (their answer is an ordinary JSON error).
pub(crate) const UPGRADE: Headers = &[
    ("connection", "Upgrade"),
    ("upgrade", "websocket"),
    ("sec-websocket-version", "13"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token signed with `secret` and `alg` carrying `claims`.
pub(crate) fn sign(alg: jsonwebtoken::Algorithm, secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token")
}

/// An HS256 token of `alice` expiring at `exp` with these grants.
pub(crate) fn mint(exp: u64, subscribe: &[&str], publish: &[&str]) -> String {
    sign(
        jsonwebtoken::Algorithm::HS256,
        SECRET,
        &json!({"sub":"alice","exp":exp,"subscribe":subscribe,"publish":publish}),
    )
}

/// Alice may subscribe to `chat.*` and `public.>`, and publish to `chat.room1`.
pub(crate) fn alice() -> String {
    mint(now_secs() + 600, &["chat.*", "public.>"], &["chat.room1"])
}

pub(crate) fn base64url(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// An unsigned (`alg: none`) token granting everything.
pub(crate) fn unsigned_token() -> String {
    let claims = json!({"sub":"eve","exp":now_secs() + 600,"subscribe":[">"],"publish":[">"]});
    format!(
        "{}.{}.",
        base64url(br#"{"alg":"none","typ":"JWT"}"#),
        base64url(claims.to_string().as_bytes())
    )
}

/// A node with auth on (HS256 with `SECRET`, the API key `API_KEY`) whose
/// `public` namespace anonymous clients may subscribe to; `extra` is
/// appended to its config file.
pub(crate) fn auth_node(dir: &std::path::Path, extra: &str) -> Node {
    let file = dir.join("auth.toml");
    std::fs::write(
        &file,
        format!("[namespaces.public]\nanonymous_subscribe = true\n{extra}"),
    )
    .unwrap();
    Node::start(&[
        "--jwt-secret",
        SECRET,
        "--api-key",
        API_KEY,
        "--config",
        file.to_str().unwrap(),
    ])
}

/// A node whose config file is `text`.
pub(crate) fn node_with_config(dir: &std::path::Path, text: &str) -> Node {
    let file = dir.join("limits.toml");
    std::fs::write(&file, text).unwrap();
    Node::start(&["--config", file.to_str().unwrap()])
}
