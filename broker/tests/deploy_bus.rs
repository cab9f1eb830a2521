//! Issue 25: the deploy files run a closed, highly available NATS bus —
//! checked without Docker or Kubernetes: the real `nats-server -t` on the
//! NATS config with the arguments and secrets compose, Kubernetes and systemd
//! give it, the permissions it grants, and the wiring of the bus in compose
//! and Kubernetes (`config_reference.rs` checks the Herald side of the same
//! files; the balancer and systemd: `deploy_front.rs`).

mod deploy_support;

use std::{collections::BTreeMap, process::Command};

use deploy_support::*;
use herald::config::split_urls;
use serde_yaml::Value as Yaml;

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
    let pdb = find("PodDisruptionBudget", "nats");
    assert_eq!(pdb["spec"]["maxUnavailable"].as_u64(), Some(1));
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        nats["spec"]["selector"]["matchLabels"]
    );
    let policy = find("NetworkPolicy", "nats");
    assert_eq!(
        policy["spec"]["ingress"].as_sequence().map(Vec::len),
        Some(2)
    );
}
