//! JWT verification: HS256 with a shared secret, RS256/ES256 with a PEM
//! public key or a JWKS file. `alg: none` — and any algorithm not matching
//! the configured key — is refused.

use std::collections::HashMap;

use jsonwebtoken::{decode, decode_header, jwk::JwkSet, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::{AuthConfig, AuthError, Grants, Identity, Scope};

/// Claims Herald reads.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: u64,
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
    /// Scopes: a space-separated string as RFC 8693 §4.2 defines the claim
    /// (what identity providers issue), or an array of strings.
    #[serde(default)]
    scope: Option<ScopeClaim>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ScopeClaim {
    Text(String),
    List(Vec<String>),
}

impl ScopeClaim {
    /// Whether the claim names `scope`; scopes Herald does not know are
    /// ignored (providers put their own there).
    fn has(&self, scope: Scope) -> bool {
        match self {
            ScopeClaim::Text(text) => text.split_ascii_whitespace().any(|s| s == scope.as_str()),
            ScopeClaim::List(list) => list.iter().any(|s| s == scope.as_str()),
        }
    }
}

/// Verifies tokens against the configured keys.
pub struct JwtVerifier {
    audience: Option<String>,
    /// Keys without a `kid`, with the algorithms each accepts.
    default_keys: Vec<(DecodingKey, Vec<Algorithm>)>,
    /// JWKS keys by `kid`.
    by_kid: HashMap<String, (DecodingKey, Algorithm)>,
}

fn pem_algorithms(pem: &[u8]) -> Result<(DecodingKey, Vec<Algorithm>), AuthError> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok((key, vec![Algorithm::RS256]));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Ok((key, vec![Algorithm::ES256]));
    }
    Err(AuthError::Config(
        "jwt_public_key is neither an RSA nor an EC (P-256) public key in PEM".into(),
    ))
}

impl JwtVerifier {
    /// Loads the keys, or `None` when no JWT key is configured.
    pub fn from_config(config: &AuthConfig) -> Result<Option<Self>, AuthError> {
        let mut default_keys = Vec::new();
        let mut by_kid = HashMap::new();
        if let Some(secret) = &config.jwt_secret {
            if secret.len() < 16 {
                return Err(AuthError::Config(
                    "jwt_secret must be at least 16 bytes".into(),
                ));
            }
            default_keys.push((
                DecodingKey::from_secret(secret.as_bytes()),
                vec![Algorithm::HS256],
            ));
        }
        if let Some(path) = &config.jwt_public_key {
            let pem = std::fs::read(path)
                .map_err(|e| AuthError::Config(format!("cannot read {}: {e}", path.display())))?;
            default_keys.push(pem_algorithms(&pem)?);
        }
        if let Some(path) = &config.jwks {
            let text = std::fs::read_to_string(path)
                .map_err(|e| AuthError::Config(format!("cannot read {}: {e}", path.display())))?;
            let set: JwkSet = serde_json::from_str(&text)
                .map_err(|e| AuthError::Config(format!("invalid JWKS {}: {e}", path.display())))?;
            for jwk in &set.keys {
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| AuthError::Config(format!("unusable JWK: {e}")))?;
                let alg = match &jwk.algorithm {
                    jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                    _ => {
                        return Err(AuthError::Config(
                            "only RSA and EC P-256 JWKs are supported".into(),
                        ))
                    }
                };
                let kid = jwk.common.key_id.clone().unwrap_or_default();
                if kid.is_empty() {
                    default_keys.push((key, vec![alg]));
                } else {
                    by_kid.insert(kid, (key, alg));
                }
            }
        }
        if default_keys.is_empty() && by_kid.is_empty() {
            return Ok(None);
        }
        Ok(Some(JwtVerifier {
            audience: config.audience.clone(),
            default_keys,
            by_kid,
        }))
    }

    /// Verifies signature, algorithm and expiry; returns the identity.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let bad = |m: &str| AuthError::Unauthorized(format!("invalid token: {m}"));
        let header = decode_header(token).map_err(|e| bad(&e.to_string()))?;
        let candidates: Vec<(&DecodingKey, Vec<Algorithm>)> =
            match header.kid.as_ref().and_then(|k| self.by_kid.get(k)) {
                Some((key, alg)) => vec![(key, vec![*alg])],
                None => self
                    .default_keys
                    .iter()
                    .map(|(k, a)| (k, a.clone()))
                    .collect(),
            };
        let mut last = bad("no key for this token");
        for (key, algorithms) in candidates {
            if !algorithms.contains(&header.alg) {
                last = bad(&format!("algorithm {:?} not accepted", header.alg));
                continue;
            }
            let mut validation = Validation::new(header.alg);
            validation.algorithms = algorithms;
            validation.leeway = 5;
            validation.set_required_spec_claims(&["exp"]);
            match &self.audience {
                Some(aud) => validation.set_audience(&[aud]),
                // Identity providers often set `aud`; without a configured
                // audience it is not checked.
                None => validation.validate_aud = false,
            }
            match decode::<Claims>(token, key, &validation) {
                Ok(data) => {
                    let c = data.claims;
                    return Ok(Identity {
                        sub: c.sub,
                        expires_at: Some(c.exp),
                        subscribe: Grants::from_strings(&c.subscribe),
                        publish: Grants::from_strings(&c.publish),
                        anonymous: false,
                        admin: c.scope.as_ref().is_some_and(|s| s.has(Scope::Admin)),
                    });
                }
                Err(e) => {
                    last = match e.kind() {
                        jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                            AuthError::Unauthorized("token expired".into())
                        }
                        _ => bad(&e.to_string()),
                    }
                }
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn verifier() -> JwtVerifier {
        JwtVerifier::from_config(&AuthConfig {
            jwt_secret: Some(SECRET.into()),
            ..Default::default()
        })
        .unwrap()
        .unwrap()
    }

    fn token(exp_in: i64, secret: &str) -> String {
        let exp = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + exp_in) as u64;
        let claims = serde_json::json!({"sub": "alice", "exp": exp, "subscribe": ["chat.*"], "publish": ["chat.room1"]});
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn verifies_and_refuses() {
        let v = verifier();
        let id = v.verify(&token(60, SECRET)).unwrap();
        assert_eq!(id.sub.as_deref(), Some("alice"));
        assert!(v
            .verify(&token(-60, SECRET))
            .unwrap_err()
            .to_string()
            .contains("expired"));
        assert!(v
            .verify(&token(60, "another-secret-another-secret"))
            .is_err());
        // alg: none
        let none = format!(
            "{}.{}.",
            base64_url(r#"{"alg":"none","typ":"JWT"}"#),
            base64_url(r#"{"sub":"eve","exp":99999999999,"subscribe":[">"]}"#)
        );
        assert!(v.verify(&none).is_err());
        assert!(v.verify("garbage").is_err());
    }

    #[test]
    fn the_scope_claim_grants_admin() {
        let v = verifier();
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 60;
        let with = |scope: serde_json::Value| {
            let claims = serde_json::json!({"sub": "ops", "exp": exp, "scope": scope});
            let token = encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap();
            v.verify(&token).unwrap().admin
        };
        assert!(with(serde_json::json!("openid admin profile")));
        assert!(with(serde_json::json!(["admin"])));
        assert!(!with(serde_json::json!("openid administrator")));
        assert!(!with(serde_json::json!([])));
        assert!(
            !v.verify(&token(60, SECRET)).unwrap().admin,
            "no claim, no admin"
        );
    }

    fn signed(alg: Algorithm, kid: Option<&str>, pem: &str) -> String {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 60;
        let claims = serde_json::json!({"sub": "svc", "exp": exp, "publish": ["a.>"]});
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        };
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_string);
        encode(&header, &claims, &key).unwrap()
    }

    fn testdata(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/auth/testdata")
            .join(name)
    }

    #[test]
    fn rs256_es256_and_jwks() {
        let rsa_key = include_str!("testdata/rs256.key.pem");
        let ec_key = include_str!("testdata/es256.key.pem");
        let rsa = JwtVerifier::from_config(&AuthConfig {
            jwt_public_key: Some(testdata("rs256.pub.pem")),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
        assert_eq!(
            rsa.verify(&signed(Algorithm::RS256, None, rsa_key))
                .unwrap()
                .sub
                .as_deref(),
            Some("svc")
        );
        assert!(
            rsa.verify(&signed(Algorithm::ES256, None, ec_key)).is_err(),
            "wrong algorithm for the key"
        );
        let ec = JwtVerifier::from_config(&AuthConfig {
            jwt_public_key: Some(testdata("es256.pub.pem")),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
        assert!(ec.verify(&signed(Algorithm::ES256, None, ec_key)).is_ok());
        assert!(ec.verify(&signed(Algorithm::RS256, None, rsa_key)).is_err());
        let jwks = JwtVerifier::from_config(&AuthConfig {
            jwks: Some(testdata("jwks.json")),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
        assert!(jwks
            .verify(&signed(Algorithm::RS256, Some("test-rsa"), rsa_key))
            .is_ok());
        assert!(jwks
            .verify(&signed(Algorithm::ES256, Some("test-rsa"), ec_key))
            .is_err());
    }

    fn base64_url(s: &str) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let b = s.as_bytes();
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n = (chunk[0] as u32) << 16
                | (*chunk.get(1).unwrap_or(&0) as u32) << 8
                | *chunk.get(2).unwrap_or(&0) as u32;
            for i in 0..=chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}
