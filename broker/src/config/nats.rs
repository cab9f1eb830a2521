//! The NATS side of the configuration: the server list (`nats`) and how a
//! node proves who it is to NATS (`cluster.nats_*`).

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize};

use super::{Config, ConfigError};

/// A credential kept out of `Debug` output (configs are printed in test
/// failures and could be in logs); the redactor masks its value too.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The credential itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// The server URLs of a `nats` setting: comma-separated, blanks dropped.
pub fn split_urls(nats: &str) -> impl Iterator<Item = &str> {
    nats.split(',').map(str::trim).filter(|u| !u.is_empty())
}

/// `url` with any `user:password@` removed, for messages that do not pass
/// through the log redactor (startup errors go straight to stderr).
pub fn display_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    match authority.rfind('@') {
        Some(at) => format!("{scheme}://[redacted]@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// `nats` in the file: one string (comma-separated URLs) or a list of URLs;
/// kept as one comma-separated string, as the flag and variable give it.
pub(super) fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Urls {
        One(String),
        Many(Vec<String>),
    }
    Ok(Option::<Urls>::deserialize(d)?.map(|urls| match urls {
        Urls::One(s) => s,
        Urls::Many(list) => list.join(","),
    }))
}

/// Checks the server list and that the NATS credentials fit together.
pub(super) fn validate(config: &Config) -> Result<(), ConfigError> {
    let invalid = |field, message: String| Err(ConfigError::Invalid { field, message });
    if let Some(nats) = &config.nats {
        if split_urls(nats).next().is_none() {
            return invalid(
                "nats",
                "must be NATS URLs such as nats://127.0.0.1:4222".into(),
            );
        }
        for url in split_urls(nats) {
            if let Err(e) = async_nats::ServerAddr::from_str(url) {
                return invalid("nats", format!("{}: {e}", display_url(url)));
            }
        }
    }
    let c = &config.cluster;
    if c.nats_user.is_some() != c.nats_password.is_some() {
        return invalid(
            "cluster.nats_user",
            "nats_user and nats_password go together".into(),
        );
    }
    let methods = [
        c.nats_user.is_some(),
        c.nats_nkey_file.is_some(),
        c.nats_creds.is_some(),
    ];
    if methods.into_iter().filter(|m| *m).count() > 1 {
        return invalid(
            "cluster.nats_creds",
            "give one NATS credential: nats_user/nats_password, nats_nkey_file or nats_creds"
                .into(),
        );
    }
    if c.nats_tls_cert.is_some() != c.nats_tls_key.is_some() {
        return invalid(
            "cluster.nats_tls_cert",
            "nats_tls_cert and nats_tls_key go together".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_and_passwords_stay_out_of_messages() {
        let urls: Vec<_> = split_urls(" nats://a:4222, ,nats://b:4222 ").collect();
        assert_eq!(urls, ["nats://a:4222", "nats://b:4222"]);
        assert_eq!(
            display_url("nats://herald:s3cret-pw@nats1:4222"),
            "nats://[redacted]@nats1:4222"
        );
        assert_eq!(display_url("nats://nats1:4222"), "nats://nats1:4222");
        assert_eq!(
            format!("{:?}", Secret::new("s3cret-pw")),
            "Secret([redacted])"
        );
    }

    #[test]
    fn the_nats_password_is_handed_to_the_redactor() {
        let mut c = Config {
            nats: Some("nats://u:url-pass-1@a:4222,nats://b:4222".into()),
            ..Default::default()
        };
        c.cluster.nats_user = Some("herald".into());
        c.cluster.nats_password = Some(Secret::new("flag-pass-2"));
        let secrets = c.secrets();
        assert!(secrets.contains(&"url-pass-1".to_string()), "{secrets:?}");
        assert!(secrets.contains(&"flag-pass-2".to_string()), "{secrets:?}");
        assert!(!format!("{c:?}").contains("flag-pass-2"));
    }

    #[test]
    fn nats_is_a_string_or_a_list_and_credentials_must_fit() {
        let c: Config = toml::from_str("nats = [\"nats://a:4222\", \"nats://b:4222\"]").unwrap();
        assert_eq!(c.nats.as_deref(), Some("nats://a:4222,nats://b:4222"));
        assert!(c.validate().is_ok());
        let c: Config = toml::from_str("nats = \"nats://a:4222,nats://b:4222\"").unwrap();
        assert!(c.validate().is_ok());
        for bad in [
            "nats = \"http://a:4222\"",
            "nats = \" , \"",
            "[cluster]\nnats_user = \"herald\"",
            "[cluster]\nnats_user = \"h\"\nnats_password = \"p\"\nnats_creds = \"/h.creds\"",
            "[cluster]\nnats_nkey_file = \"/s.nk\"\nnats_creds = \"/h.creds\"",
            "[cluster]\nnats_tls_cert = \"/c.pem\"",
        ] {
            let c: Config = toml::from_str(bad).unwrap();
            assert!(c.validate().is_err(), "{bad} was accepted");
        }
    }
}
