//! Issue 25: the deploy files run a closed, highly available bus and a load
//! balancer, checked without Docker or Kubernetes: the real `nats-server -t`
//! and `haproxy -c` on the configurations every deployment uses (with the
//! arguments and secrets each gives them), and cross-checks between the
//! compose, Kubernetes and systemd files (`config_reference.rs` checks the
//! Herald side of the same files).

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use herald::config::{split_urls, Config};
use serde::Deserialize;
use serde_yaml::Value as Yaml;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn load(rel: &str) -> Config {
    let config = Config::from_file(&root().join(rel)).unwrap_or_else(|e| panic!("{e}"));
    config.validate().unwrap_or_else(|e| panic!("{rel}: {e}"));
    config
}

fn yaml(rel: &str) -> Vec<Yaml> {
    serde_yaml::Deserializer::from_str(&read(rel))
        .map(|doc| {
            let mut v = Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{rel}: {e}"));
            v.apply_merge().unwrap();
            v
        })
        .collect()
}

fn strings(v: &Yaml) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

/// A tool's path; fails loudly when it is not installed.
fn tool(name: &str, package: &str) -> String {
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
fn make_secrets(
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
fn nats_check(file: &Path, args: &[String], env: &BTreeMap<String, String>) -> (bool, String) {
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

#[test]
fn make_secrets_writes_private_values_nats_can_read() {
    let (dir, files) = make_secrets(&["nats1.internal", "nats2.internal:7222"]);
    let keys = |f: &str| files[f].keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys("herald.env"), ["HERALD_API_KEYS", "HERALD_JWT_SECRET"]);
    assert_eq!(
        keys("bus.env"),
        ["HERALD_NATS_PASSWORD", "HERALD_NATS_USER"]
    );
    assert_eq!(keys("routes.env"), ["NATS_ROUTES", "NATS_ROUTE_PASSWORD"]);
    for (file, vars) in &files {
        for (key, value) in vars {
            // nats-server reads `$VAR` values as config values: a leading
            // digit would make a password a number.
            assert!(
                value.starts_with(|c: char| c.is_ascii_lowercase()) && value.len() >= 6,
                "{file}: {key}={value}"
            );
        }
    }
    assert!(files["herald.env"]["HERALD_JWT_SECRET"].len() >= 32);
    let routes = &files["routes.env"];
    let pass = &routes["NATS_ROUTE_PASSWORD"];
    assert_eq!(
        routes["NATS_ROUTES"],
        format!("nats-route://route:{pass}@nats1.internal:6222,nats-route://route:{pass}@nats2.internal:7222")
    );
    // A second run keeps live secrets.
    let again = Command::new(root().join("deploy/make-secrets.sh"))
        .arg(dir.path().join("s"))
        .output()
        .unwrap();
    assert!(again.status.success());
    let kept = std::fs::read_to_string(dir.path().join("s/bus.env")).unwrap();
    assert!(kept.contains(&files["bus.env"]["HERALD_NATS_PASSWORD"]));
}

/// The environment a NATS server gets: bus.env and routes.env.
fn nats_env(files: &BTreeMap<String, BTreeMap<String, String>>) -> BTreeMap<String, String> {
    files["bus.env"]
        .clone()
        .into_iter()
        .chain(files["routes.env"].clone())
        .collect()
}

#[test]
fn every_nats_config_passes_nats_server_check_as_each_deployment_runs_it() {
    let conf = root().join("deploy/nats/nats.conf");
    assert_eq!(
        read("deploy/nats/nats.conf"),
        read("deploy/k8s/nats.conf"),
        "deploy/k8s/nats.conf must be a copy of deploy/nats/nats.conf"
    );
    let (_dir, files) = make_secrets(&["nats1", "nats2", "nats3"]);
    let env = nats_env(&files);
    let pass = &env["NATS_ROUTE_PASSWORD"];

    // Without its secrets the server refuses to start (no default password).
    let (ok, text) = nats_check(&conf, &[], &BTreeMap::new());
    assert!(!ok && text.contains("HERALD_NATS_PASSWORD"), "{text}");

    // compose: `exec nats-server ARGS` with the route password substituted.
    let compose = &yaml("deploy/compose.yaml")[0];
    for name in ["nats1", "nats2", "nats3"] {
        let service = &compose["services"][name];
        let command = strings(&service["command"]).join(" ");
        let command = command.replace("$${NATS_ROUTE_PASSWORD}", pass);
        let args: Vec<String> = command
            .strip_prefix("exec nats-server -c /etc/nats/nats.conf")
            .unwrap_or_else(|| panic!("{name}: {command}"))
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let (ok, text) = nats_check(&conf, &args, &env);
        assert!(ok, "{name}: {text}");
    }

    // Kubernetes: the container's args with $(VAR)s expanded.
    let nats = yaml("deploy/k8s/nats.yaml")
        .into_iter()
        .find(|d| d["kind"] == "StatefulSet")
        .unwrap();
    let container = &nats["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = strings(&container["args"])
        .into_iter()
        .map(|a| {
            a.replace("$(NATS_ROUTE_PASSWORD)", pass)
                .replace("$(POD_NAME)", "nats-0")
        })
        .collect();
    assert_eq!(args[..2], ["-c", "/etc/nats/nats.conf"]);
    let (ok, text) = nats_check(&root().join("deploy/k8s/nats.conf"), &args[2..], &env);
    assert!(ok, "k8s: {text}");

    // systemd: the drop-in's ExecStart with ${NATS_ROUTES} from routes.env.
    let dropin = read("deploy/systemd/nats-server.service.d/herald.conf");
    let exec = dropin
        .lines()
        .filter_map(|l| l.strip_prefix("ExecStart="))
        .next_back()
        .unwrap()
        .replace("${NATS_ROUTES}", &env["NATS_ROUTES"])
        .replace("%H", "nats1");
    let args: Vec<String> = exec
        .strip_prefix("/usr/sbin/nats-server -c /etc/nats-server.conf")
        .unwrap_or_else(|| panic!("{exec}"))
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let (ok, text) = nats_check(&conf, &args, &env);
    assert!(ok, "systemd: {text}");
    for file in ["/etc/nats-server/bus.env", "/etc/nats-server/routes.env"] {
        assert!(
            dropin.contains(&format!("EnvironmentFile={file}")),
            "{file}"
        );
    }
}

#[test]
fn the_nats_config_admits_only_herald_and_only_on_herald_subjects() {
    let conf = read("deploy/nats/nats.conf");
    let text: String = conf
        .lines()
        .map(|l| l.split('#').next().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        text.matches("user:").count(),
        2,
        "the herald user and the route user only"
    );
    assert!(!text.contains("no_auth_user"), "no anonymous access");
    let allow: Vec<&str> = text
        .split("allow: [")
        .skip(1)
        .map(|rest| rest.split(']').next().unwrap())
        .collect();
    assert_eq!(allow.len(), 2, "publish and subscribe allow-lists");
    for file in [
        "deploy/herald/n1.toml",
        "deploy/herald/n2.toml",
        "deploy/herald/n3.toml",
        "deploy/k8s/herald.toml",
        "deploy/systemd/herald.toml",
    ] {
        let prefix = load(file).cluster.subject_prefix;
        for list in &allow {
            let subjects: Vec<&str> = list
                .split(',')
                .map(|s| s.trim().trim_matches('"'))
                .collect();
            assert_eq!(
                subjects,
                [format!("{prefix}.>").as_str(), "_INBOX.>"],
                "{file}"
            );
        }
    }
    // Routes need a password too (--cluster would override it: not used).
    assert!(text.contains("password: $NATS_ROUTE_PASSWORD"));
    assert!(text.contains("password: $HERALD_NATS_PASSWORD"));
    assert!(
        text.contains("http: 127.0.0.1:8222"),
        "monitoring has no auth: loopback only"
    );
}

/// `timeout NAME VALUE` of the HAProxy config.
fn haproxy_timeout(cfg: &str, name: &str) -> Duration {
    let value = cfg
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("timeout {name} ")))
        .unwrap_or_else(|| panic!("no timeout {name}"));
    humantime::parse_duration(value.trim()).unwrap()
}

#[test]
fn haproxy_config_passes_haproxy_check_and_fits_herald() {
    let file = root().join("deploy/haproxy/haproxy.cfg");
    let compose = &yaml("deploy/compose.yaml")[0];
    let env: BTreeMap<String, String> =
        serde_yaml::from_value(compose["services"]["haproxy"]["environment"].clone()).unwrap();
    let systemd: BTreeMap<String, String> = read("deploy/systemd/haproxy.env")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_once('=').unwrap())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        env.keys().collect::<Vec<_>>(),
        systemd.keys().collect::<Vec<_>>()
    );
    for (name, vars) in [("compose", &env), ("systemd", &systemd)] {
        let out = Command::new(tool("haproxy", "haproxy"))
            .arg("-c")
            .arg("-f")
            .arg(&file)
            .env_clear()
            .envs(vars)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("Configuration file is valid"),
            "{name}: {text}"
        );
    }
    // compose: the servers are the herald services on their listen port.
    for i in 1..=3 {
        let config = load(&format!("deploy/herald/n{i}.toml"));
        assert_eq!(
            env[&format!("HERALD_N{i}")],
            format!("herald{i}:{}", config.listen.port())
        );
        assert!(compose["services"][format!("herald{i}").as_str()].is_mapping());
    }

    let cfg: String = read("deploy/haproxy/haproxy.cfg")
        .lines()
        .map(|l| l.split('#').next().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let has = |line: &str| cfg.lines().any(|l| l.trim() == line);
    assert!(has("balance roundrobin") && has("option httpchk GET /readyz"));
    assert!(
        !cfg.contains("cookie ") && !cfg.contains("stick "),
        "no sticky sessions"
    );
    assert!(
        !cfg.contains("shutdown-sessions"),
        "a node marked down keeps its WebSockets until it closes them"
    );
    let defaults = Config::default();
    let poll = defaults.transport.poll_max_timeout;
    for name in ["client", "server"] {
        assert!(
            haproxy_timeout(&cfg, name) > poll,
            "timeout {name} must outlast a long-poll ({poll:?})"
        );
    }
    assert!(haproxy_timeout(&cfg, "tunnel") >= defaults.transport.ws_idle_timeout);
    // The 503 of a draining node is seen before it closes.
    let server_line = cfg
        .lines()
        .find(|l| l.trim().starts_with("default-server"))
        .unwrap();
    let word = |key: &str| -> Duration {
        let words: Vec<&str> = server_line.split_whitespace().collect();
        let at = words
            .iter()
            .position(|w| *w == key)
            .unwrap_or_else(|| panic!("no {key}"));
        humantime::parse_duration(words[at + 1])
            .unwrap_or_else(|_| Duration::from_secs(words[at + 1].parse().unwrap()))
    };
    let fall = word("fall").as_secs();
    let noticed = word("inter") + word("fastinter") * (fall as u32 - 1);
    assert!(
        noticed < defaults.drain_delay,
        "checks notice a drain after {noticed:?}, the 503 lasts {:?}",
        defaults.drain_delay
    );
}

#[test]
fn compose_runs_a_closed_ha_bus_behind_haproxy_with_auth_on() {
    let compose = &yaml("deploy/compose.yaml")[0];
    let services = &compose["services"];
    let nats_names = ["nats1", "nats2", "nats3"];
    for name in nats_names {
        let s = &services[name];
        assert_eq!(
            strings(&s["networks"]),
            ["bus"],
            "{name} is on the internal network only"
        );
        assert!(s["ports"].is_null(), "{name} publishes no port");
        assert_eq!(
            strings(&s["env_file"]),
            ["secrets/bus.env", "secrets/routes.env"]
        );
        assert!(
            strings(&s["volumes"]).contains(&"./nats/nats.conf:/etc/nats/nats.conf:ro".to_string())
        );
        let command = strings(&s["command"]).join(" ");
        for peer in nats_names {
            assert!(
                command.contains(&format!(
                    "nats-route://route:$${{NATS_ROUTE_PASSWORD}}@{peer}:6222"
                )),
                "{name} routes to {peer}"
            );
        }
    }
    assert_eq!(compose["networks"]["bus"]["internal"].as_bool(), Some(true));
    for i in 1..=3 {
        let s = &services[format!("herald{i}").as_str()];
        assert_eq!(
            strings(&s["env_file"]),
            ["secrets/herald.env", "secrets/bus.env"],
            "auth and NATS login"
        );
        assert!(strings(&s["networks"]).contains(&"bus".to_string()));
        for port in strings(&s["ports"]) {
            assert!(
                port.starts_with("127.0.0.1:"),
                "herald{i} publishes {port} beyond this machine"
            );
        }
        let config = load(&format!("deploy/herald/n{i}.toml"));
        let urls: Vec<&str> = split_urls(config.nats.as_deref().unwrap()).collect();
        let expected: Vec<String> = nats_names
            .iter()
            .map(|n| format!("nats://{n}:4222"))
            .collect();
        assert_eq!(urls, expected, "herald{i} lists every NATS server");
        assert!(
            config.auth.api_keys.is_empty() && config.auth.jwt_secret.is_none(),
            "secrets stay in env files"
        );
    }
    let haproxy = &services["haproxy"];
    assert!(strings(&haproxy["volumes"])
        .contains(&"./haproxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro".to_string()));
    for port in strings(&services["prometheus"]["ports"])
        .iter()
        .chain(&strings(&haproxy["ports"])[1..])
    {
        assert!(port.starts_with("127.0.0.1:"), "{port}: no auth on it");
    }
    // make-secrets.sh writes exactly the files compose reads.
    let (_dir, files) = make_secrets(&[]);
    for file in ["herald.env", "bus.env", "routes.env"] {
        assert!(files.contains_key(file), "{file}");
    }
    assert!(read("deploy/.gitignore").lines().any(|l| l == "secrets/"));
}

#[test]
fn kubernetes_runs_a_closed_ha_bus_with_auth_from_secrets() {
    let kustomization = &yaml("deploy/k8s/kustomization.yaml")[0];
    let generated: BTreeMap<String, Vec<String>> = kustomization["secretGenerator"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|g| (g["name"].as_str().unwrap().to_string(), strings(&g["envs"])))
        .collect();
    let (_dir, files) = make_secrets(&[]);
    let keys_of = |secret: &str| -> Vec<String> {
        let file = generated[secret][0]
            .strip_prefix("secrets/")
            .unwrap()
            .to_string();
        files[&file].keys().cloned().collect()
    };
    assert_eq!(
        keys_of("herald-auth"),
        ["HERALD_API_KEYS", "HERALD_JWT_SECRET"]
    );
    assert_eq!(
        keys_of("herald-nats"),
        ["HERALD_NATS_PASSWORD", "HERALD_NATS_USER"]
    );
    assert_eq!(keys_of("nats-routes"), ["NATS_ROUTE_PASSWORD"]);
    assert!(read("deploy/.gitignore")
        .lines()
        .any(|l| l == "k8s/secrets/"));

    let docs: Vec<Yaml> = ["nats.yaml", "statefulset.yaml"]
        .iter()
        .flat_map(|f| yaml(&format!("deploy/k8s/{f}")))
        .collect();
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind}/{name}"))
    };
    let nats = find("StatefulSet", "nats");
    assert_eq!(nats["spec"]["replicas"].as_u64(), Some(3));
    let container = &nats["spec"]["template"]["spec"]["containers"][0];
    let routes = strings(&container["args"]).join(" ");
    for i in 0..3 {
        assert!(routes.contains(&format!(
            "nats-route://route:$(NATS_ROUTE_PASSWORD)@nats-{i}.nats-headless:6222"
        )));
    }
    let env = container["env"].as_sequence().unwrap();
    for (var, secret) in [
        ("HERALD_NATS_PASSWORD", "herald-nats"),
        ("NATS_ROUTE_PASSWORD", "nats-routes"),
    ] {
        let entry = env
            .iter()
            .find(|e| e["name"] == var)
            .unwrap_or_else(|| panic!("{var}"));
        assert_eq!(
            entry["valueFrom"]["secretKeyRef"]["name"].as_str(),
            Some(secret)
        );
    }
    let herald = find("StatefulSet", "herald");
    let from: Vec<&str> = herald["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        .as_sequence()
        .expect("herald gets its secrets with envFrom")
        .iter()
        .map(|e| e["secretRef"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        from,
        ["herald-auth", "herald-nats"],
        "auth on and the NATS login"
    );
    let policy = find("NetworkPolicy", "nats");
    assert_eq!(
        policy["spec"]["ingress"].as_sequence().map(Vec::len),
        Some(2)
    );
}

#[test]
fn systemd_turns_auth_on_and_logs_in_to_nats() {
    let unit = read("deploy/systemd/herald.service");
    assert!(
        unit.lines()
            .any(|l| l == "EnvironmentFile=/etc/herald/herald.env"),
        "auth secrets are required"
    );
    assert!(unit
        .lines()
        .any(|l| l == "EnvironmentFile=-/etc/herald/bus.env"));
    let config = load("deploy/systemd/herald.toml");
    assert!(
        config.listen.ip().is_loopback(),
        "behind a proxy on the machine by default"
    );
    let commented = read("deploy/systemd/herald.toml")
        .lines()
        .find_map(|l| l.strip_prefix("# nats = "))
        .map(str::to_string)
        .expect("the cluster example");
    let example: Config = toml::from_str(&format!("nats = {commented}")).unwrap();
    assert_eq!(split_urls(example.nats.as_deref().unwrap()).count(), 3);
}
