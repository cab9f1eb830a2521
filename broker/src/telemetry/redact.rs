//! Keeps credentials out of every log line, whatever the level and whoever
//! logs (Herald, actix, async-nats, a future `trace!` of a request).
//!
//! Herald's own code logs no credentials, but at `trace` dependencies print
//! what they handle (frames, URLs, connect options), and an error message
//! may echo input. So the log writer itself masks, before anything reaches
//! stderr: the configured secrets (API keys, the JWT secret), anything
//! shaped like a JWT, the value after `Bearer `, `token=` (query parameter
//! or the `herald_token` cookie) and `X-API-Key`, the password part of a
//! URL, credential fields of a JSON connect message (NATS' `CONNECT`
//! included), and NATS NKey seeds (a `.creds` file's seed and user JWT).

use std::{
    io::{self, Write},
    sync::{Arc, LazyLock},
};

use regex::Regex;
use tracing_subscriber::fmt::MakeWriter;

/// What replaces a credential.
pub const MASK: &str = "[redacted]";

/// Configured secrets shorter than this are not masked verbatim: masking
/// every occurrence of a short word would garble logs, and a secret that
/// short is guessable anyway.
const MIN_SECRET_LEN: usize = 6;

/// Credential-shaped text. Group `keep` is the part left in place.
static SHAPES: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r#"(?i)(?P<keep>bearer\s+|token=|x-api-key["']?\s*[:=]\s*["']?|"#,
        r#""(?:pass|password|auth_token|token|jwt|sig|nkey|api_key)"\s*:\s*")"#,
        r#"[^\s&;,"'\\)]+"#,
        r#"|eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"#,
        // An NKey seed: `S`, the key type, base32 (58 characters in all).
        r#"|\bS[AUONCPX][A-Z2-7]{56}\b"#,
        r#"|(?P<scheme>[a-z][a-z0-9+.-]*://)[^/\s@]+@"#,
    ))
    .expect("valid pattern")
});

/// Masks credentials in log text.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Arc<Vec<String>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    /// Masks the credential shapes and these configured secrets.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .collect();
        // Longest first: a secret containing another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Redactor {
            secrets: Arc::new(secrets),
        }
    }

    /// `text` with every credential masked.
    pub fn redact<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        let mut out = SHAPES.replace_all(text, |c: &regex::Captures<'_>| {
            if let Some(scheme) = c.name("scheme") {
                format!("{}{MASK}@", scheme.as_str())
            } else {
                let keep = c.name("keep").map_or("", |m| m.as_str());
                let value = &c[0][keep.len()..];
                // mio's trace lines print its poll tokens as `token=Token(3)`.
                if value.starts_with("Token(") {
                    return c[0].to_string();
                }
                format!("{keep}{MASK}")
            }
        });
        for secret in self.secrets.iter() {
            if out.contains(secret.as_str()) {
                out = std::borrow::Cow::Owned(out.replace(secret.as_str(), MASK));
            }
        }
        out
    }
}

/// Stderr, one redacted event at a time (the log layer's writer).
#[derive(Clone, Debug)]
pub struct RedactingStderr {
    redactor: Redactor,
}

impl RedactingStderr {
    /// Writes to stderr through `redactor`.
    pub fn new(redactor: Redactor) -> Self {
        RedactingStderr { redactor }
    }
}

impl<'a> MakeWriter<'a> for RedactingStderr {
    type Writer = EventBuffer;

    fn make_writer(&'a self) -> EventBuffer {
        EventBuffer {
            redactor: self.redactor.clone(),
            buf: Vec::with_capacity(256),
        }
    }
}

/// Collects one formatted event; masks and writes it when dropped, so a
/// credential split across two `write` calls is still seen whole.
pub struct EventBuffer {
    redactor: Redactor,
    buf: Vec<u8>,
}

impl Write for EventBuffer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventBuffer {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let clean = self.redactor.redact(&text);
        // A log line that cannot be written has nowhere to be reported.
        let _ = io::stderr().lock().write_all(clean.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user NKey seed (from async-nats' documentation, not a real key).
    const SEED: &str = "SUAIO3FHUX5PNV2LQIIP7TZ3N4L7TX3W53MQGEIVYFIGA635OZCKEYHFLM";

    #[test]
    fn masks_every_credential_shape() {
        let r = Redactor::new(["svc-key-123".to_string(), "abc".to_string()]);
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl";
        let cases = [
            (
                format!("GET /v1/sse?topic=a&token={jwt}&x=1"),
                "token=[redacted]&x=1",
            ),
            (format!("authorization: Bearer {jwt}"), "Bearer [redacted]"),
            (
                format!(r#"{{"authorization": "bearer {jwt}"}}"#),
                "bearer [redacted]\"",
            ),
            (
                format!("cookie: a=b; herald_token={jwt}; c=d"),
                "herald_token=[redacted]; c=d",
            ),
            (
                "x-api-key: svc-key-123".to_string(),
                "x-api-key: [redacted]",
            ),
            (
                r#""x-api-key": "zzz-other""#.to_string(),
                r#""x-api-key": "[redacted]""#,
            ),
            ("key svc-key-123 used".to_string(), "key [redacted] used"),
            (
                format!("frame {{\"op\":\"refresh\",\"token\":\"{jwt}\"}}"),
                "\"token\":\"[redacted]\"",
            ),
            (
                "nats://user:s3cret@10.0.0.1:4222".to_string(),
                "nats://[redacted]@10.0.0.1:4222",
            ),
            (format!("bare {jwt} here"), "bare [redacted] here"),
            (
                format!("seed {SEED} in a creds file"),
                "seed [redacted] in a creds file",
            ),
            (
                r#"CONNECT {"user":"herald","pass":"s3cret","verbose":false}"#.to_string(),
                r#""pass":"[redacted]""#,
            ),
        ];
        for (input, expect) in cases {
            let out = r.redact(&input);
            assert!(out.contains(expect), "{input} -> {out}");
            assert!(!out.contains(jwt) && !out.contains("svc-key-123") && !out.contains("s3cret"));
            assert!(!out.contains(SEED));
        }
        // Short secrets are not masked verbatim; ordinary text is untouched.
        assert_eq!(
            r.redact("abc topic=orders.eu seq=4"),
            "abc topic=orders.eu seq=4"
        );
    }
}
