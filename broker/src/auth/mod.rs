//! Authentication (JWT connection tokens, API keys) and topic permissions.
//!
//! Auth is off in the embedded default: everyone may do everything. It is
//! on as soon as a JWT key or an API key is configured. Then every request
//! carries credentials — `Authorization: Bearer <jwt|api key>`, the
//! `herald_token` cookie, `X-API-Key`, or a `token` query parameter for
//! browsers' `WebSocket`/`EventSource`, which cannot set headers — or gets
//! only what the namespace policies grant anonymous clients.
//!
//! Permissions are topic patterns. Subscribing to a pattern requires a
//! granted pattern that covers *every* topic it can match (`chat.*` never
//! grants `chat.>` or `>`); publishing, reading history and resuming a
//! cursor require a granted pattern that matches the topic.

mod credentials;
mod jwt;

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use serde::{Deserialize, Serialize};

pub use self::{credentials::Credentials, jwt::JwtVerifier};
use herald_core::{Pattern, Topic};

/// Why a request was not authenticated or authorized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No usable credentials (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Credentials valid but not for this topic (403).
    #[error("{0}")]
    Forbidden(String),
    /// Auth configuration cannot be loaded.
    #[error("auth configuration: {0}")]
    Config(String),
}

/// An API key and what it may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The secret.
    pub key: String,
    /// Patterns it may publish to (default: everything).
    #[serde(default = "everything")]
    pub publish: Vec<String>,
    /// Patterns it may subscribe to and read (default: everything).
    #[serde(default = "everything")]
    pub subscribe: Vec<String>,
    /// Powers beyond topics (default: none).
    #[serde(default)]
    pub scopes: Vec<Scope>,
}

/// A power beyond topic grants, carried by an API key (`scopes`) or a JWT
/// (`scope` claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The admin API: list topics, disconnect clients, end their
    /// subscriptions, presence counts.
    Admin,
}

impl Scope {
    /// The scope's name, as configured and as in a token's `scope` claim.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
        }
    }
}

fn everything() -> Vec<String> {
    vec![">".into()]
}

/// `[auth]` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 shared secret.
    pub jwt_secret: Option<String>,
    /// PEM public key for RS256 / ES256 tokens.
    pub jwt_public_key: Option<PathBuf>,
    /// JWKS file (keys selected by `kid`).
    pub jwks: Option<PathBuf>,
    /// Server-side API keys.
    pub api_keys: Vec<ApiKeyConfig>,
    /// Required `aud` claim; when unset, `aud` is not checked.
    pub audience: Option<String>,
}

impl AuthConfig {
    /// Whether any credential is configured (auth on).
    pub fn enabled(&self) -> bool {
        self.jwt_secret.is_some()
            || self.jwt_public_key.is_some()
            || self.jwks.is_some()
            || !self.api_keys.is_empty()
    }
}

/// A set of granted patterns, shared by every connection holding them (an
/// identity is cloned per connection, its grants are not).
#[derive(Debug, Clone, Default)]
pub struct Grants {
    patterns: Arc<[Pattern]>,
}

impl Grants {
    /// Grants everything.
    pub fn all() -> Self {
        static ALL: std::sync::OnceLock<Grants> = std::sync::OnceLock::new();
        ALL.get_or_init(|| Grants {
            patterns: Arc::new([Pattern::parse(">").expect("valid")]),
        })
        .clone()
    }

    /// From pattern strings; invalid ones are ignored (and grant nothing).
    pub fn from_strings<'a>(patterns: impl IntoIterator<Item = &'a String>) -> Self {
        Grants {
            patterns: patterns
                .into_iter()
                .filter_map(|p| Pattern::parse(p).ok())
                .collect(),
        }
    }

    /// Whether every topic `pattern` can match is granted.
    pub fn covers(&self, pattern: &Pattern) -> bool {
        self.patterns.iter().any(|g| pattern.is_covered_by(g))
    }

    /// Whether `topic` is granted.
    pub fn allows(&self, topic: &Topic) -> bool {
        self.patterns.iter().any(|g| g.matches(topic))
    }

    fn extend(&mut self, other: &Grants) {
        if other.patterns.is_empty() {
            return;
        }
        self.patterns = self
            .patterns
            .iter()
            .chain(other.patterns.iter())
            .cloned()
            .collect();
    }
}

/// Who is connected and what they may do.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Client identity (`sub` claim, or the API key's name); none when anonymous.
    pub sub: Option<String>,
    /// Token expiry, seconds since the epoch (JWTs only).
    pub expires_at: Option<u64>,
    /// May subscribe / read.
    pub subscribe: Grants,
    /// May publish.
    pub publish: Grants,
    /// No credentials were presented: a refusal is 401 (bring
    /// credentials), not 403.
    pub anonymous: bool,
    /// Holds the `admin` scope (the admin API).
    pub admin: bool,
}

impl Identity {
    /// Everything allowed (auth off).
    pub fn unrestricted() -> Self {
        Identity {
            sub: None,
            expires_at: None,
            subscribe: Grants::all(),
            publish: Grants::all(),
            anonymous: false,
            // Auth off opens everything, the admin API included, as it
            // opens every topic to every client.
            admin: true,
        }
    }

    fn refuse(&self, what: String) -> AuthError {
        if self.anonymous {
            AuthError::Unauthorized(format!("{what} without credentials"))
        } else {
            AuthError::Forbidden(what)
        }
    }

    /// Checks a subscription pattern.
    pub fn check_subscribe(&self, pattern: &Pattern) -> Result<(), AuthError> {
        if self.subscribe.covers(pattern) {
            Ok(())
        } else {
            Err(self.refuse(format!("not allowed to subscribe to {pattern}")))
        }
    }

    /// Checks reading a topic (history, resume cursors).
    pub fn check_read(&self, topic: &Topic) -> Result<(), AuthError> {
        if self.subscribe.allows(topic) {
            Ok(())
        } else {
            Err(self.refuse(format!("not allowed to read {topic}")))
        }
    }

    /// Checks the `admin` scope (every admin route).
    pub fn check_admin(&self) -> Result<(), AuthError> {
        if self.admin {
            Ok(())
        } else {
            Err(self.refuse("the admin API needs credentials with the admin scope".into()))
        }
    }

    /// Checks publishing to a topic.
    pub fn check_publish(&self, topic: &Topic) -> Result<(), AuthError> {
        if self.publish.allows(topic) {
            Ok(())
        } else {
            Err(self.refuse(format!("not allowed to publish to {topic}")))
        }
    }
}

/// What anonymous clients may do per namespace when auth is on.
#[derive(Debug, Clone, Default)]
pub struct AnonymousAccess {
    /// Namespaces anyone may subscribe to.
    pub subscribe: Vec<String>,
    /// Namespaces anyone may publish to.
    pub publish: Vec<String>,
}

/// What one API key may do.
struct KeyGrants {
    subscribe: Grants,
    publish: Grants,
    admin: bool,
}

/// Turns credentials into identities.
pub struct Authenticator {
    enabled: bool,
    jwt: Option<JwtVerifier>,
    api_keys: HashMap<String, KeyGrants>,
    anonymous: Option<Identity>,
}

impl Authenticator {
    /// Loads keys per the configuration.
    pub fn new(config: &AuthConfig, anonymous: &AnonymousAccess) -> Result<Arc<Self>, AuthError> {
        let jwt = JwtVerifier::from_config(config)?;
        let api_keys = config
            .api_keys
            .iter()
            .map(|k| {
                (
                    k.key.clone(),
                    KeyGrants {
                        subscribe: Grants::from_strings(&k.subscribe),
                        publish: Grants::from_strings(&k.publish),
                        admin: k.scopes.contains(&Scope::Admin),
                    },
                )
            })
            .collect();
        let ns_grants = |namespaces: &[String]| {
            let patterns: Vec<String> = namespaces
                .iter()
                .flat_map(|n| [n.clone(), format!("{n}.>")])
                .collect();
            Grants::from_strings(&patterns)
        };
        let anonymous =
            (!anonymous.subscribe.is_empty() || !anonymous.publish.is_empty()).then(|| Identity {
                sub: None,
                expires_at: None,
                subscribe: ns_grants(&anonymous.subscribe),
                publish: ns_grants(&anonymous.publish),
                anonymous: true,
                admin: false,
            });
        Ok(Arc::new(Authenticator {
            enabled: config.enabled(),
            jwt,
            api_keys,
            anonymous,
        }))
    }

    /// Whether auth is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The identity for these credentials. Without credentials: unrestricted
    /// when auth is off, the anonymous grants (or 401) when it is on.
    pub fn authenticate(&self, credentials: &Credentials) -> Result<Identity, AuthError> {
        if !self.enabled {
            return Ok(Identity::unrestricted());
        }
        if let Some(key) = &credentials.api_key {
            return self.api_key(key);
        }
        let Some(token) = &credentials.token else {
            return self.anonymous.clone().ok_or_else(|| {
                AuthError::Unauthorized(
                    "credentials required: a bearer token, the herald_token cookie or ?token="
                        .into(),
                )
            });
        };
        // A bearer value may be an API key rather than a JWT.
        if self.api_keys.contains_key(token) {
            return self.api_key(token);
        }
        let jwt = self
            .jwt
            .as_ref()
            .ok_or_else(|| AuthError::Unauthorized("token auth is not configured".into()))?;
        let mut identity = jwt.verify(token)?;
        // Anonymous grants apply to token holders too.
        if let Some(anon) = &self.anonymous {
            identity.subscribe.extend(&anon.subscribe);
            identity.publish.extend(&anon.publish);
        }
        Ok(identity)
    }

    fn api_key(&self, key: &str) -> Result<Identity, AuthError> {
        let grants = self
            .api_keys
            .get(key)
            .ok_or_else(|| AuthError::Unauthorized("unknown API key".into()))?;
        // A stable, non-secret name for the key (logs, rate limits).
        let digest = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        Ok(Identity {
            sub: Some(format!("api-key:{digest:016x}")),
            expires_at: None,
            subscribe: grants.subscribe.clone(),
            publish: grants.publish.clone(),
            anonymous: false,
            admin: grants.admin,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn grants_never_escalate() {
        let g = Grants::from_strings(&["chat.*".to_string()]);
        assert!(g.covers(&p("chat.room1")));
        assert!(g.covers(&p("chat.*")));
        assert!(!g.covers(&p("chat.>")));
        assert!(!g.covers(&p(">")));
        assert!(!g.covers(&p("*.room1")));
        assert!(g.allows(&Topic::parse("chat.x").unwrap()));
        assert!(!g.allows(&Topic::parse("chat.x.y").unwrap()));
    }

    #[test]
    fn disabled_means_unrestricted_and_enabled_needs_credentials() {
        let off = Authenticator::new(&AuthConfig::default(), &AnonymousAccess::default()).unwrap();
        let id = off.authenticate(&Credentials::default()).unwrap();
        assert!(id.check_publish(&Topic::parse("a.b").unwrap()).is_ok());

        let config = AuthConfig {
            api_keys: vec![ApiKeyConfig {
                key: "k1".into(),
                publish: vec!["orders.>".into()],
                subscribe: vec![],
                scopes: vec![],
            }],
            ..Default::default()
        };
        let on = Authenticator::new(&config, &AnonymousAccess::default()).unwrap();
        assert!(matches!(
            on.authenticate(&Credentials::default()),
            Err(AuthError::Unauthorized(_))
        ));
        let id = on
            .authenticate(&Credentials {
                api_key: Some("k1".into()),
                ..Default::default()
            })
            .unwrap();
        assert!(id
            .check_publish(&Topic::parse("orders.eu").unwrap())
            .is_ok());
        assert!(id
            .check_publish(&Topic::parse("payments.eu").unwrap())
            .is_err());
        assert!(id.check_subscribe(&p("orders.eu")).is_err());
        let anon = AnonymousAccess {
            subscribe: vec!["public".into()],
            publish: vec![],
        };
        let open = Authenticator::new(&config, &anon).unwrap();
        let id = open.authenticate(&Credentials::default()).unwrap();
        assert!(id.check_subscribe(&p("public.>")).is_ok());
        assert!(matches!(
            id.check_subscribe(&p("secret.x")),
            Err(AuthError::Unauthorized(_))
        ));
    }

    #[test]
    fn only_keys_with_the_admin_scope_are_admins() {
        let key = |key: &str, scopes: Vec<Scope>| ApiKeyConfig {
            key: key.into(),
            publish: vec![">".into()],
            subscribe: vec![">".into()],
            scopes,
        };
        let config = AuthConfig {
            api_keys: vec![key("ops", vec![Scope::Admin]), key("svc", vec![])],
            ..Default::default()
        };
        let anon = AnonymousAccess {
            subscribe: vec!["public".into()],
            publish: vec![],
        };
        let auth = Authenticator::new(&config, &anon).unwrap();
        let as_key = |k: &str| {
            auth.authenticate(&Credentials {
                api_key: Some(k.into()),
                ..Default::default()
            })
            .unwrap()
        };
        assert!(as_key("ops").check_admin().is_ok());
        assert!(matches!(
            as_key("svc").check_admin(),
            Err(AuthError::Forbidden(_))
        ));
        let anonymous = auth.authenticate(&Credentials::default()).unwrap();
        assert!(matches!(
            anonymous.check_admin(),
            Err(AuthError::Unauthorized(_))
        ));
        assert!(Identity::unrestricted().check_admin().is_ok());
        let parsed: ApiKeyConfig = toml::from_str("key = \"k\"\nscopes = [\"admin\"]").unwrap();
        assert_eq!(parsed.scopes, [Scope::Admin]);
        assert!(toml::from_str::<ApiKeyConfig>("key = \"k\"\nscopes = [\"admni\"]").is_err());
    }
}
