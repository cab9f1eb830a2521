//! Keeps the operator-facing files in `deploy/` honest.
//!
//! - `deploy/CONFIG.md` must list exactly the keys the config structs accept,
//!   with their real defaults, and the flags and `HERALD_*` variables
//!   `herald serve` really has. The key set is discovered from the structs
//!   themselves (serialized defaults, plus serde's own list of expected
//!   fields), so a new field fails here until it is documented.
//! - Every TOML example under `deploy/` (and in the READMEs) must load and
//!   validate: `deny_unknown_fields` turns a stale key into a failure.
//! - Every YAML file under `deploy/` must parse, and the compose, Prometheus,
//!   Kubernetes and systemd files must agree with each other and with the
//!   broker's config on the points an outage would hinge on (probe paths, data
//!   volume, grace periods, scrape targets).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, Command, FromArgMatches};
use herald::config::{Config, ServeArgs};
use serde::Deserialize;
use serde_yaml::Value as Yaml;
use toml::Value;

/// The repository root (the broker crate is one level down).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("broker/ has a parent")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// The key set of the config structs
// ---------------------------------------------------------------------------

/// Opens every optional section once, so that their keys show up when the
/// parsed config is serialized again. `<name>` is the placeholder the
/// reference uses for a namespace; the leaves given here are the ones serde
/// requires (checked in `probe_leaves_are_really_required`).
const PROBE: &str = r#"
[namespaces."<name>".retention]

[[auth.api_keys]]
key = "probe"

[tls]
cert = "probe.pem"
key = "probe-key.pem"
"#;

/// Sections that are maps (any key is a name), not structs.
const MAP_SECTIONS: &[&str] = &["namespaces"];

/// What the reference must say a key defaults to.
#[derive(Debug, Clone, PartialEq)]
enum Expected {
    /// This value.
    Value(Value),
    /// No value unless given (an `Option` that is `None`).
    Unset,
    /// Must be given when its section is present.
    Required,
}

/// Flattens `value` into leaf paths (`a.b.c`; array-of-table elements as
/// `a[]`), recording table paths in `tables`. Empty tables and arrays are
/// leaves: they are what a default like `namespaces = {}` looks like.
fn flatten(
    path: &str,
    value: &Value,
    leaves: &mut BTreeMap<String, Value>,
    tables: &mut BTreeSet<String>,
) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Value::Table(t) if !t.is_empty() || path.is_empty() => {
            tables.insert(path.to_string());
            for (k, v) in t {
                flatten(&join(k), v, leaves, tables);
            }
        }
        Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_table) => {
            for element in a {
                flatten(&format!("{path}[]"), element, leaves, tables);
            }
        }
        _ => {
            leaves.insert(path.to_string(), value.clone());
        }
    }
}

fn to_value(config: &Config) -> Value {
    Value::try_from(config).expect("a Config serializes to TOML")
}

fn parse_probe(value: Value) -> Result<Config, String> {
    Config::deserialize(value).map_err(|e| e.to_string())
}

/// The value at `path` (as produced by [`flatten`]) inside `value`, taking
/// the first element of arrays of tables.
fn node_mut<'a>(value: &'a mut Value, path: &str) -> &'a mut Value {
    if path.is_empty() {
        return value;
    }
    let mut node = value;
    for segment in path.split('.') {
        let (key, element) = match segment.strip_suffix("[]") {
            Some(key) => (key, true),
            None => (segment, false),
        };
        node = node
            .as_table_mut()
            .and_then(|t| t.get_mut(key))
            .unwrap_or_else(|| panic!("no {key} in probe at {path}"));
        if element {
            node = node
                .as_array_mut()
                .and_then(|a| a.first_mut())
                .unwrap_or_else(|| panic!("empty array in probe at {path}"));
        }
    }
    node
}

/// The fields the struct at `table` accepts, read from serde's
/// `unknown field` error; `None` when the section is a map.
fn accepted_fields(probe: &Value, table: &str) -> Option<Vec<String>> {
    const BOGUS: &str = "zz_not_a_herald_key";
    let mut value = probe.clone();
    node_mut(&mut value, table)
        .as_table_mut()
        .expect("a table")
        .insert(BOGUS.into(), Value::Integer(0));
    let err = match parse_probe(value) {
        Ok(_) => return None,
        Err(e) => e,
    };
    let marker = format!("unknown field `{BOGUS}`, expected ");
    let at = err.find(&marker)?;
    // The toml crate appends "\nin `section`"; the list is the first line.
    let list = err[at + marker.len()..].lines().next().unwrap_or_default();
    if list.starts_with("there are no fields") {
        return Some(Vec::new());
    }
    // "one of `a`, `b`" or "`a`": the names are the backquoted spans.
    Some(
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

/// Every key the config accepts, with its default.
fn config_keys() -> BTreeMap<String, Expected> {
    let probe: Value = toml::from_str(PROBE).expect("PROBE is TOML");
    let mut probe_given = BTreeMap::new();
    flatten("", &probe, &mut probe_given, &mut BTreeSet::new());

    let mut defaults = BTreeMap::new();
    let mut tables = BTreeSet::new();
    flatten(
        "",
        &to_value(&Config::default()),
        &mut defaults,
        &mut tables,
    );
    let probed = parse_probe(probe.clone()).expect("PROBE parses into Config");
    // Every section present, as the base for asking serde about fields.
    let full = to_value(&probed);
    let mut opened = BTreeMap::new();
    flatten("", &full, &mut opened, &mut tables);

    let mut keys: BTreeMap<String, Expected> = defaults
        .into_iter()
        .map(|(k, v)| (k, Expected::Value(v)))
        .collect();
    for (key, value) in opened {
        // Keys inside a section PROBE opened: their default is what serde
        // fills in when the section is present but the key is not.
        keys.entry(key.clone())
            .or_insert(if probe_given.contains_key(&key) {
                Expected::Required
            } else {
                Expected::Value(value)
            });
    }
    // Options that are `None` do not serialize; serde's field lists name them.
    for table in &tables {
        let Some(fields) = accepted_fields(&full, table) else {
            assert!(
                MAP_SECTIONS.contains(&table.as_str()),
                "section `{table}` accepts any key (a map, or a struct without deny_unknown_fields); if a map, add it to MAP_SECTIONS"
            );
            continue;
        };
        for field in fields {
            let key = if table.is_empty() {
                field.clone()
            } else {
                format!("{table}.{field}")
            };
            if keys.contains_key(&key) || tables.contains(&key) {
                continue;
            }
            // An optional *section* left closed would hide its keys.
            let mut value = full.clone();
            node_mut(&mut value, table)
                .as_table_mut()
                .expect("a table")
                .insert(field, Value::Table(Default::default()));
            assert!(
                parse_probe(value).is_err(),
                "`{key}` is an optional section: open it in PROBE so its keys are checked"
            );
            keys.insert(key, Expected::Unset);
        }
    }
    keys
}

#[test]
fn probe_leaves_are_really_required() {
    let probe: Value = toml::from_str(PROBE).unwrap();
    let mut given = BTreeMap::new();
    flatten("", &probe, &mut given, &mut BTreeSet::new());
    // Empty sections in PROBE only open a section; the values are what it must give.
    for key in given.iter().filter(|(_, v)| !v.is_table()).map(|(k, _)| k) {
        let (table, field) = key.rsplit_once('.').unwrap_or(("", key));
        let mut value = probe.clone();
        node_mut(&mut value, table)
            .as_table_mut()
            .unwrap()
            .remove(field);
        assert!(
            parse_probe(value).is_err(),
            "`{key}` has a default; drop it from PROBE"
        );
    }
}

// ---------------------------------------------------------------------------
// deploy/CONFIG.md
// ---------------------------------------------------------------------------

const REFERENCE: &str = "deploy/CONFIG.md";
const HEADER: &str = "| key | flag | env | type | default | meaning |";

/// One row of the reference tables.
#[derive(Debug)]
struct Row {
    flag: Option<String>,
    env: Option<String>,
    default: String,
}

/// The first backquoted span of a cell, or `None` for `—`.
fn code(cell: &str) -> Option<String> {
    let mut parts = cell.split('`');
    parts.next()?;
    parts.next().map(str::to_string)
}

/// Rows of every table with the reference header, by key.
fn reference_rows() -> BTreeMap<String, Row> {
    let text = read(REFERENCE);
    let mut rows = BTreeMap::new();
    let mut in_table = false;
    for line in text.lines() {
        let line = line.trim();
        if line == HEADER {
            in_table = true;
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        if !in_table || line.starts_with("| ---") {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 6, "{REFERENCE}: a row needs 6 cells: {line}");
        let key = code(cells[0]).unwrap_or_else(|| panic!("{REFERENCE}: no key in {line}"));
        let row = Row {
            flag: code(cells[1]),
            env: code(cells[2]),
            default: cells[4].to_string(),
        };
        assert!(
            rows.insert(key.clone(), row).is_none(),
            "{REFERENCE}: `{key}` is listed twice"
        );
    }
    assert!(rows.len() > 20, "{REFERENCE}: tables not found");
    rows
}

/// Whether the reference's default cell says what the structs default to.
fn default_matches(cell: &str, expected: &Expected) -> Result<(), String> {
    match expected {
        Expected::Unset if cell == "unset" => Ok(()),
        Expected::Required if cell == "required" => Ok(()),
        Expected::Value(want) => {
            let literal = code(cell).ok_or("the default must be a `TOML literal`")?;
            let got = toml::from_str::<toml::Table>(&format!("v = {literal}"))
                .map_err(|e| format!("`{literal}` is not a TOML value: {e}"))?
                .remove("v")
                .expect("parsed v");
            let same = got == *want
                || matches!((&got, want), (Value::String(a), Value::String(b))
                    if duration(a).is_some() && duration(a) == duration(b));
            if same {
                Ok(())
            } else {
                Err(format!("says {got}, the structs say {want}"))
            }
        }
        other => Err(format!("should say {other:?}")),
    }
}

fn duration(s: &str) -> Option<Duration> {
    humantime::parse_duration(s).ok()
}

#[test]
fn reference_lists_every_key_with_its_default() {
    let keys = config_keys();
    let rows = reference_rows();
    let mut problems = Vec::new();
    for (key, expected) in &keys {
        match rows.get(key) {
            None => problems.push(format!("`{key}` (default {expected:?}) is not documented")),
            Some(row) => {
                if let Err(e) = default_matches(&row.default, expected) {
                    problems.push(format!("`{key}`: default {e}"));
                }
            }
        }
    }
    for key in rows.keys() {
        if !keys.contains_key(key) {
            problems.push(format!("`{key}` is documented but is not a config key"));
        }
    }
    assert!(
        problems.is_empty(),
        "{REFERENCE} is out of date:\n  {}",
        problems.join("\n  ")
    );
}

fn serve_command() -> Command {
    ServeArgs::augment_args(Command::new("serve").no_binary_name(true))
}

/// A value for each flag that passes validation; a new flag fails
/// `reference_flags_set_their_keys` until it has one here.
fn sample_args(flag: &str) -> Vec<&'static str> {
    match flag {
        "--listen" => vec!["--listen", "10.1.2.3:9999"],
        "--data-dir" => vec!["--data-dir", "/srv/herald"],
        "--nats" => vec![
            "--nats",
            "nats://nats1.example:4222,nats://nats2.example:4222",
        ],
        "--nats-user" | "--nats-password" => {
            vec![
                "--nats-user",
                "herald",
                "--nats-password",
                "sample-password",
            ]
        }
        "--nats-nkey-file" => vec!["--nats-nkey-file", "/etc/herald/herald.nk"],
        "--nats-creds" => vec!["--nats-creds", "/etc/herald/herald.creds"],
        "--nats-tls-ca" => vec!["--nats-tls-ca", "/etc/herald/nats-ca.pem"],
        "--nats-tls-cert" | "--nats-tls-key" => vec![
            "--nats-tls-cert",
            "/etc/herald/nats.pem",
            "--nats-tls-key",
            "/etc/herald/nats-key.pem",
        ],
        "--nats-tls-required" => vec!["--nats-tls-required"],
        "--node-id" => vec!["--node-id", "sample-node"],
        "--allowed-origins" => vec!["--allowed-origins", "https://a.example,https://b.example"],
        "--durability" => vec!["--durability", "relaxed"],
        "--max-payload-bytes" => vec!["--max-payload-bytes", "1000"],
        "--queue-bytes" => vec!["--queue-bytes", "100000"],
        "--enable-echo" => vec!["--enable-echo"],
        "--accept-damage" => vec!["--accept-damage"],
        "--log" => vec!["--log", "debug"],
        "--workers" => vec!["--workers", "3"],
        "--jwt-secret" => vec!["--jwt-secret", "0123456789abcdef0123"],
        "--jwt-public-key" => vec!["--jwt-public-key", "/etc/herald/jwt.pem"],
        "--jwks" => vec!["--jwks", "/etc/herald/jwks.json"],
        "--api-key" => vec!["--api-key", "sample-key"],
        "--admin-api-key" => vec!["--admin-api-key", "sample-admin-key"],
        "--tls-cert" | "--tls-key" => vec!["--tls-cert", "/c.pem", "--tls-key", "/k.pem"],
        other => panic!("add a sample value for {other} to sample_args"),
    }
}

#[test]
fn reference_flags_and_variables_match_herald_serve() {
    let rows = reference_rows();
    let text = read(REFERENCE);
    let mut problems = Vec::new();
    let command = serve_command();
    let mut flags = BTreeSet::new();
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let flag = format!("--{long}");
        let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
        flags.insert(flag.clone());
        if long == "config" {
            // The file itself has no key; it is described in the prose.
            for needle in [
                flag.as_str(),
                env.as_deref().unwrap_or("--config has no env"),
            ] {
                if !text.contains(needle) {
                    problems.push(format!("`{needle}` is not mentioned"));
                }
            }
            continue;
        }
        let documented: Vec<&Row> = rows
            .values()
            .filter(|r| r.flag.as_deref() == Some(flag.as_str()))
            .collect();
        match documented.as_slice() {
            [] => problems.push(format!("flag {flag} is not documented on any key")),
            [row] if row.env != env => {
                problems.push(format!("{flag}: env is {env:?}, documented {:?}", row.env))
            }
            [_] => {}
            _ => problems.push(format!("flag {flag} is documented on several keys")),
        }
    }
    for (key, row) in &rows {
        if let Some(flag) = &row.flag {
            if !flags.contains(flag) {
                problems.push(format!("`{key}`: herald serve has no flag {flag}"));
            }
        }
        if row.flag.is_none() && row.env.is_some() {
            problems.push(format!("`{key}`: a variable without its flag"));
        }
    }
    assert!(
        problems.is_empty(),
        "{REFERENCE} disagrees with `herald serve --help`:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn reference_flags_set_their_keys() {
    let mut before = BTreeMap::new();
    flatten(
        "",
        &to_value(&Config::default()),
        &mut before,
        &mut BTreeSet::new(),
    );
    for (key, row) in reference_rows() {
        let Some(flag) = row.flag else { continue };
        let matches = serve_command()
            .try_get_matches_from(sample_args(&flag))
            .unwrap_or_else(|e| panic!("{flag}: {e}"));
        let args = ServeArgs::from_arg_matches(&matches).expect("ServeArgs from matches");
        let config = args.resolve().unwrap_or_else(|e| panic!("{flag}: {e}"));
        let mut after = BTreeMap::new();
        flatten("", &to_value(&config), &mut after, &mut BTreeSet::new());
        let changed = before.get(&key) != after.get(&key)
            // A list of sections: the flag adds elements below the key.
            || after.keys().any(|k| k.starts_with(&format!("{key}[]")));
        assert!(
            changed,
            "{REFERENCE}: {flag} is documented on `{key}` but does not change it"
        );
    }
}

// ---------------------------------------------------------------------------
// TOML examples
// ---------------------------------------------------------------------------

/// Loads and validates a config file with the broker's own loader.
fn load(rel: &str) -> Config {
    let config = Config::from_file(&root().join(rel)).unwrap_or_else(|e| panic!("{e}"));
    config.validate().unwrap_or_else(|e| panic!("{rel}: {e}"));
    config
}

/// Every TOML file under `deploy/`.
fn deploy_files(ext: &[&str]) -> Vec<String> {
    fn walk(dir: &Path, ext: &[&str], out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, ext, out);
            } else if path
                .extension()
                .is_some_and(|e| ext.iter().any(|x| e == *x))
            {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join("deploy"), ext, &mut out);
    out.sort();
    out.iter()
        .map(|p| {
            p.strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[test]
fn every_toml_example_loads_and_validates() {
    let files = deploy_files(&["toml"]);
    for expected in [
        "deploy/herald/n1.toml",
        "deploy/herald/n2.toml",
        "deploy/herald/n3.toml",
        "deploy/k8s/herald.toml",
        "deploy/systemd/herald.toml",
    ] {
        assert!(files.iter().any(|f| f == expected), "{expected} is missing");
    }
    for file in &files {
        load(file);
    }
    // ```toml blocks in the docs that show whole files.
    for doc in [REFERENCE, "README.md"] {
        let text = read(doc);
        let blocks: Vec<&str> = text
            .split("```toml\n")
            .skip(1)
            .map(|b| b.split("```").next().unwrap())
            .collect();
        assert!(!blocks.is_empty(), "{doc}: no toml example");
        for block in blocks {
            let config: Config = toml::from_str(block).unwrap_or_else(|e| panic!("{doc}: {e}"));
            config.validate().unwrap_or_else(|e| panic!("{doc}: {e}"));
        }
    }
}

// ---------------------------------------------------------------------------
// YAML: compose, Prometheus, Kubernetes
// ---------------------------------------------------------------------------

/// Every document of a YAML file (aliases resolved, `<<` merges applied).
fn yaml_docs(rel: &str) -> Vec<Yaml> {
    let text = read(rel);
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let mut value =
                Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"));
            value.apply_merge().unwrap_or_else(|e| panic!("{rel}: {e}"));
            value
        })
        .collect()
}

/// `value[a][b]…`; a number indexes a sequence.
fn at<'a>(value: &'a Yaml, path: &str) -> &'a Yaml {
    path.split('.')
        .fold(value, |v, key| match key.parse::<usize>() {
            Ok(i) => &v[i],
            Err(_) => &v[key],
        })
}

fn str_at<'a>(value: &'a Yaml, path: &str) -> &'a str {
    at(value, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string in {value:?}"))
}

fn int_at(value: &Yaml, path: &str) -> u64 {
    at(value, path)
        .as_u64()
        .unwrap_or_else(|| panic!("{path} is not a number"))
}

#[test]
fn every_yaml_file_in_deploy_parses() {
    let files = deploy_files(&["yaml", "yml"]);
    assert!(
        files.len() >= 7,
        "expected compose, prometheus and k8s files: {files:?}"
    );
    for file in files {
        let docs = yaml_docs(&file);
        assert!(
            docs.iter().all(|d| d.is_mapping()),
            "{file}: every document should be a mapping"
        );
    }
}

/// The Kubernetes objects `kustomization.yaml` applies, by kind/name.
fn k8s_objects() -> BTreeMap<String, Yaml> {
    let kustomization = yaml_docs("deploy/k8s/kustomization.yaml").remove(0);
    let mut objects = BTreeMap::new();
    let resources = at(&kustomization, "resources").as_sequence().unwrap();
    for resource in resources {
        let file = format!("deploy/k8s/{}", resource.as_str().unwrap());
        for doc in yaml_docs(&file) {
            let id = format!("{}/{}", str_at(&doc, "kind"), str_at(&doc, "metadata.name"));
            assert!(objects.insert(id.clone(), doc).is_none(), "{id} twice");
        }
    }
    // Every manifest in the folder is applied (a file left out is a bug).
    for file in deploy_files(&["yaml"]) {
        if let Some(name) = file.strip_prefix("deploy/k8s/") {
            assert!(
                name == "kustomization.yaml" || resources.iter().any(|r| r.as_str() == Some(name)),
                "{file} is not listed in kustomization.yaml"
            );
        }
    }
    objects
}

/// A probe's HTTP path, with its port checked against the container's.
fn probe_path<'a>(container: &'a Yaml, probe: &str) -> &'a str {
    let port = str_at(container, &format!("{probe}.httpGet.port"));
    let ports = at(container, "ports").as_sequence().unwrap();
    assert!(
        ports.iter().any(|p| p["name"].as_str() == Some(port)),
        "{probe} uses port {port}, which the container does not name"
    );
    str_at(container, &format!("{probe}.httpGet.path"))
}

#[test]
fn kubernetes_statefulset_is_wired_for_herald() {
    let objects = k8s_objects();
    let kustomization = yaml_docs("deploy/k8s/kustomization.yaml").remove(0);
    let generated = at(&kustomization, "configMapGenerator.0");
    assert_eq!(str_at(generated, "files.0"), "herald.toml");
    let config = load("deploy/k8s/herald.toml");
    assert_eq!(
        config.listen.ip().to_string(),
        "0.0.0.0",
        "a pod must listen on all interfaces"
    );
    assert!(config.nats.is_some(), "the StatefulSet is a cluster");
    assert!(config.node_id.is_none(), "node_id comes from the pod name");

    let sts = &objects["StatefulSet/herald"];
    assert_eq!(int_at(sts, "spec.replicas"), 3);
    let pod = at(sts, "spec.template.spec");
    let container = at(pod, "containers.0");
    let labels = at(sts, "spec.template.metadata.labels");
    assert_eq!(at(sts, "spec.selector.matchLabels"), labels);

    // Probes: ready means "takes publishes", alive means "process up".
    assert_eq!(probe_path(container, "readinessProbe"), "/readyz");
    assert_eq!(probe_path(container, "livenessProbe"), "/healthz");
    assert_eq!(probe_path(container, "startupProbe"), "/healthz");
    let port = container["ports"][0]["containerPort"].as_u64().unwrap();
    assert_eq!(port, u64::from(config.listen.port()));

    // Node id from the pod name.
    let env = at(container, "env").as_sequence().unwrap();
    let node_id = env
        .iter()
        .find(|e| e["name"].as_str() == Some("HERALD_NODE_ID"))
        .expect("HERALD_NODE_ID is set");
    assert_eq!(
        str_at(node_id, "valueFrom.fieldRef.fieldPath"),
        "metadata.name"
    );
    assert_eq!(at(pod, "enableServiceLinks").as_bool(), Some(false));
    // Pod names (`herald-0`, …) must themselves be valid node ids.
    let last_pod = format!(
        "{}-{}",
        str_at(sts, "metadata.name"),
        int_at(sts, "spec.replicas") - 1
    );
    Config {
        node_id: Some(last_pod.clone()),
        ..config.clone()
    }
    .validate()
    .unwrap_or_else(|e| panic!("pod name {last_pod} as node id: {e}"));

    // Config file and data volume where herald.toml says.
    let args: Vec<&str> = at(container, "args")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args, ["--config", "/etc/herald/herald.toml"]);
    let mounts = at(container, "volumeMounts").as_sequence().unwrap();
    let mount = |name: &str| {
        mounts
            .iter()
            .find(|m| m["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no {name} mount"))["mountPath"]
            .as_str()
            .unwrap()
    };
    assert_eq!(Path::new(mount("data")), config.data_dir);
    assert_eq!(mount("config"), "/etc/herald");
    let config_volume = at(pod, "volumes")
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str() == Some("config"))
        .expect("config volume");
    assert_eq!(
        str_at(config_volume, "configMap.name"),
        str_at(generated, "name")
    );
    let claim = at(sts, "spec.volumeClaimTemplates.0");
    assert_eq!(str_at(claim, "metadata.name"), "data");
    assert_eq!(str_at(claim, "spec.accessModes.0"), "ReadWriteOnce");

    // The kubelet must not SIGKILL a node still draining.
    let grace = int_at(pod, "terminationGracePeriodSeconds");
    let pre_stop: u64 = str_at(container, "lifecycle.preStop.exec.command.1")
        .parse()
        .unwrap();
    assert!(
        Duration::from_secs(grace)
            >= config.drain_delay + config.shutdown_timeout + Duration::from_secs(pre_stop + 10),
        "terminationGracePeriodSeconds {grace} leaves too little room for preStop {pre_stop}s + drain_delay {:?} + shutdown_timeout {:?}",
        config.drain_delay,
        config.shutdown_timeout
    );

    // Non-root, matching the image's numeric user.
    assert_eq!(
        at(pod, "securityContext.runAsNonRoot").as_bool(),
        Some(true)
    );
    let uid = int_at(pod, "securityContext.runAsUser");
    assert!(uid > 0);
    assert!(read("deploy/Dockerfile").contains(&format!("USER {uid}:")));
    assert_eq!(
        at(container, "securityContext.allowPrivilegeEscalation").as_bool(),
        Some(false)
    );

    // Services: headless for the StatefulSet, a client one; both select the pods.
    let headless = &objects[&format!("Service/{}", str_at(sts, "spec.serviceName"))];
    assert_eq!(str_at(headless, "spec.clusterIP"), "None");
    let client = &objects["Service/herald"];
    for service in [headless, client] {
        assert_eq!(at(service, "spec.selector"), labels);
    }

    // At most one node down for voluntary disruptions.
    let pdb = objects
        .iter()
        .find(|(id, _)| id.starts_with("PodDisruptionBudget/"))
        .expect("a PodDisruptionBudget")
        .1;
    assert_eq!(int_at(pdb, "spec.maxUnavailable"), 1);
    assert_eq!(at(pdb, "spec.selector.matchLabels"), labels);

    // Every NATS server the config names is a pod of the NATS StatefulSet,
    // behind its headless Service (the bus itself: tests/deploy_bus.rs).
    let nats = &objects["StatefulSet/nats"];
    let headless = str_at(nats, "spec.serviceName");
    assert!(objects.contains_key(&format!("Service/{headless}")));
    let urls: BTreeSet<String> = herald::config::split_urls(config.nats.as_deref().unwrap())
        .map(str::to_string)
        .collect();
    let pods: BTreeSet<String> = (0..int_at(nats, "spec.replicas"))
        .map(|i| format!("nats://nats-{i}.{headless}:4222"))
        .collect();
    assert_eq!(urls, pods, "herald.toml must list every NATS pod");
}

#[test]
fn compose_and_prometheus_scrape_every_node() {
    let compose = yaml_docs("deploy/compose.yaml").remove(0);
    let services = at(&compose, "services").as_mapping().unwrap();
    let nodes: BTreeMap<String, Config> = services
        .iter()
        .filter_map(|(name, service)| {
            let volumes = service["volumes"].as_sequence()?;
            let file = volumes.iter().find_map(|v| {
                v.as_str()?
                    .strip_suffix(":/etc/herald/herald.toml:ro")?
                    .strip_prefix("./")
            })?;
            Some((
                name.as_str().unwrap().to_string(),
                load(&format!("deploy/{file}")),
            ))
        })
        .collect();
    assert_eq!(nodes.len(), 3, "three herald nodes in compose");
    let ids: BTreeSet<_> = nodes.values().map(|c| c.node_id.clone()).collect();
    assert_eq!(ids.len(), 3, "node ids must be unique: {ids:?}");
    assert!(
        nodes.values().all(|c| c.nats.is_some()),
        "every node clusters"
    );

    let prometheus = &services["prometheus"];
    assert!(prometheus["volumes"].as_sequence().unwrap().iter().any(
        |v| v.as_str() == Some("./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro")
    ));
    assert_eq!(str_at(prometheus, "ports.0"), "127.0.0.1:9090:9090");

    let scrape = yaml_docs("deploy/prometheus/prometheus.yml").remove(0);
    let job = at(&scrape, "scrape_configs")
        .as_sequence()
        .unwrap()
        .iter()
        .find(|j| j["job_name"].as_str() == Some("herald"))
        .expect("a herald job");
    assert_eq!(str_at(job, "metrics_path"), "/metrics");
    let mut targets = BTreeMap::new();
    for group in at(job, "static_configs").as_sequence().unwrap() {
        for target in group["targets"].as_sequence().unwrap() {
            targets.insert(
                target.as_str().unwrap().to_string(),
                group["labels"]["node"].as_str().map(str::to_string),
            );
        }
    }
    assert_eq!(targets.len(), 3, "{targets:?}");
    for (service, config) in &nodes {
        let target = format!("{service}:{}", config.listen.port());
        let label = targets
            .get(&target)
            .unwrap_or_else(|| panic!("{target} is not scraped"));
        assert_eq!(label.as_deref(), config.node_id.as_deref(), "{target}");
    }
}

// ---------------------------------------------------------------------------
// systemd
// ---------------------------------------------------------------------------

#[test]
fn systemd_unit_is_hardened_and_outlasts_the_drain() {
    let unit = read("deploy/systemd/herald.service");
    let mut settings: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with('[') || line.is_empty() {
            continue;
        }
        let (key, value) = line.split_once('=').expect("key=value");
        settings.entry(key).or_default().push(value);
    }
    let one = |key: &str| -> &str {
        match settings.get(key).map(Vec::as_slice) {
            Some([value]) => value,
            other => panic!("{key}: expected one value, got {other:?}"),
        }
    };
    assert_eq!(
        one("ExecStart"),
        "/usr/local/bin/herald serve --config /etc/herald/herald.toml"
    );
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("StateDirectory", "herald"),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(one(key), value, "{key}");
    }
    let config = load("deploy/systemd/herald.toml");
    assert_eq!(
        config.data_dir,
        Path::new("/var/lib/herald"),
        "= StateDirectory"
    );
    let stop = humantime::parse_duration(one("TimeoutStopSec")).expect("TimeoutStopSec");
    assert!(
        stop >= config.drain_delay + config.shutdown_timeout + Duration::from_secs(5),
        "TimeoutStopSec {stop:?} must outlast drain_delay {:?} + shutdown_timeout {:?}",
        config.drain_delay,
        config.shutdown_timeout
    );
    let nofile: usize = one("LimitNOFILE").parse().unwrap();
    assert!(
        nofile > config.limits.max_connections + 1024,
        "LimitNOFILE must leave room for the log and NATS beyond max_connections"
    );
}
