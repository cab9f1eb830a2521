//! How a node reaches NATS: every configured server (the client fails over
//! between them and learns the rest of a NATS cluster from its INFO), the
//! node's credentials and TLS.
//!
//! Files are read here, at start-up, so a missing or malformed credential
//! stops the node with a clear error instead of an endless reconnect loop
//! (the client retries connections for ever, the first one included).

use std::{path::Path, str::FromStr, time::Duration};

use async_nats::{ConnectOptions, ServerAddr};

use super::ClusterError;
use crate::config::{display_url, split_urls, ClusterConfig};

/// The servers of a `nats` setting (comma-separated URLs).
pub(super) fn server_addrs(nats: &str) -> Result<Vec<ServerAddr>, ClusterError> {
    let addrs = split_urls(nats)
        .map(|url| {
            ServerAddr::from_str(url).map_err(|e| ClusterError::Connect {
                url: display_url(url),
                reason: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if addrs.is_empty() {
        return Err(ClusterError::Connect {
            url: nats.to_string(),
            reason: "no NATS URL given".into(),
        });
    }
    Ok(addrs)
}

/// The servers, with passwords masked, for logs and errors.
pub(super) fn describe(nats: &str) -> String {
    split_urls(nats)
        .map(display_url)
        .collect::<Vec<_>>()
        .join(",")
}

/// Connection options for `node`: reconnect for ever, fast; credentials and
/// TLS as configured.
pub(super) async fn options(
    node: &str,
    settings: &ClusterConfig,
) -> Result<ConnectOptions, ClusterError> {
    let mut options = ConnectOptions::new()
        .name(format!("herald-{node}"))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        // A server that vanished without closing the socket (host down,
        // partition) is noticed after two unanswered pings; the default
        // minute would stall the node that long before it fails over.
        .ping_interval(Duration::from_secs(5))
        .request_timeout(Some(settings.request_timeout))
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((100 * attempts as u64).min(1000))
        });
    if let (Some(user), Some(password)) = (&settings.nats_user, &settings.nats_password) {
        options = options.user_and_password(user.clone(), password.expose().to_string());
    }
    if let Some(path) = &settings.nats_nkey_file {
        options = options.nkey(read_seed(path)?);
    }
    if let Some(path) = &settings.nats_creds {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| credential(path, e.to_string()))?;
    }
    let mut tls = settings.nats_tls_required;
    if let Some(ca) = &settings.nats_tls_ca {
        readable(ca)?;
        options = options.add_root_certificates(ca.clone());
        tls = true;
    }
    if let (Some(cert), Some(key)) = (&settings.nats_tls_cert, &settings.nats_tls_key) {
        readable(cert)?;
        readable(key)?;
        options = options.add_client_certificate(cert.clone(), key.clone());
        tls = true;
    }
    Ok(options.require_tls(tls))
}

/// The seed in an NKey file: the first line that is one (`nk -gen user`
/// writes the bare seed; decorated files carry it between marker lines).
fn read_seed(path: &Path) -> Result<String, ClusterError> {
    let text = std::fs::read_to_string(path).map_err(|e| credential(path, e.to_string()))?;
    let seed = text
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 58 && l.starts_with("SU"))
        .ok_or_else(|| credential(path, "no user NKey seed (a line `SU…`) in it".into()))?;
    nkeys::KeyPair::from_seed(seed)
        .map_err(|e| credential(path, format!("not a valid NKey seed: {e}")))?;
    Ok(seed.to_string())
}

fn readable(path: &Path) -> Result<(), ClusterError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| credential(path, e.to_string()))
}

fn credential(path: &Path, reason: String) -> ClusterError {
    ClusterError::Credentials {
        path: path.to_path_buf(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_url_is_a_server_and_bad_ones_are_named_without_passwords() {
        let addrs = server_addrs("nats://a:4222, nats://b:4223,tls://c:4224").unwrap();
        assert_eq!(addrs.len(), 3);
        let err = server_addrs("nats://a:4222,http://u:pw-123456@b:80")
            .unwrap_err()
            .to_string();
        assert!(err.contains("http://[redacted]@b:80"), "{err}");
        assert!(!err.contains("pw-123456"), "{err}");
        assert_eq!(
            describe("nats://u:pw@a:4222,nats://b:4222"),
            "nats://[redacted]@a:4222,nats://b:4222"
        );
    }

    #[test]
    fn an_nkey_file_must_hold_a_user_seed() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.nk");
        let seed = "SUAIO3FHUX5PNV2LQIIP7TZ3N4L7TX3W53MQGEIVYFIGA635OZCKEYHFLM";
        std::fs::write(&good, format!("-----BEGIN USER NKEY SEED-----\n{seed}\n")).unwrap();
        assert_eq!(read_seed(&good).unwrap(), seed);
        let bad = dir.path().join("bad.nk");
        std::fs::write(&bad, "UAPUBLICKEYNOTASEED\n").unwrap();
        let err = read_seed(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.nk") && err.contains("seed"), "{err}");
        assert!(read_seed(&dir.path().join("missing.nk")).is_err());
    }
}
