//! Helpers of the deploy-file tests (`deploy_bus.rs`, `deploy_front.rs`):
//! reading the files under `deploy/`, the real tools that check them, and
//! the secrets `deploy/make-secrets.sh` writes.

#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use herald::config::Config;
use serde::Deserialize;
use serde_yaml::Value as Yaml;

/// Variables by file name, as `make-secrets.sh` writes them.
pub type Secrets = BTreeMap<String, BTreeMap<String, String>>;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

pub fn load(rel: &str) -> Config {
    let config = Config::from_file(&root().join(rel)).unwrap_or_else(|e| panic!("{e}"));
    config.validate().unwrap_or_else(|e| panic!("{rel}: {e}"));
    config
}

pub fn yaml(rel: &str) -> Vec<Yaml> {
    serde_yaml::Deserializer::from_str(&read(rel))
        .map(|doc| {
            let mut v = Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{rel}: {e}"));
            v.apply_merge().unwrap();
            v
        })
        .collect()
}

pub fn strings(v: &Yaml) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

/// A tool's path; fails loudly when it is not installed.
pub fn tool(name: &str, package: &str) -> String {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| format!("{d}/{name}"))
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!("{name} is required for the deploy checks: apt-get install {package}")
        })
}

/// Runs `deploy/make-secrets.sh` into a fresh directory; returns it and
/// every variable the files define, by file.
pub fn make_secrets(
    hosts: &[&str],
) -> (
    tempfile::TempDir,
    BTreeMap<String, BTreeMap<String, String>>,
) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(root().join("deploy/make-secrets.sh"))
        .arg(dir.path().join("s"))
        .args(hosts)
        .output()
        .expect("run make-secrets.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir.path().join("s")).unwrap() {
        let path = entry.unwrap().path();
        let mode = path.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is mode {mode:o}", path.display());
        let vars = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| l.split_once('=').expect("KEY=VALUE"))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        files.insert(
            path.file_name().unwrap().to_string_lossy().into_owned(),
            vars,
        );
    }
    (dir, files)
}

/// `nats-server -t -c FILE ARGS` with `env`; (passed, output).
pub fn nats_check(file: &Path, args: &[String], env: &BTreeMap<String, String>) -> (bool, String) {
    let out = Command::new(tool("nats-server", "nats-server"))
        .arg("-t")
        .arg("-c")
        .arg(file)
        .args(args)
        .env_clear()
        .envs(env)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success() && text.contains("is valid"), text)
}

/// The environment a NATS server gets: bus.env and routes.env.
pub fn nats_env(files: &Secrets) -> BTreeMap<String, String> {
    files["bus.env"]
        .clone()
        .into_iter()
        .chain(files["routes.env"].clone())
        .collect()
}
