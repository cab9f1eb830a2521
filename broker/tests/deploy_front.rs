//! Issue 25: the load balancer in front and the systemd units — the real
//! `haproxy -c` on the HAProxy config with compose's and systemd's
//! environment, its health checks and timeouts against Herald's drain and
//! long-polls, and auth on in the units (the bus: `deploy_bus.rs`).

mod deploy_support;

use std::{collections::BTreeMap, process::Command, time::Duration};

use deploy_support::*;
use herald::config::{split_urls, Config};

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
    // compose: each node waits for every NATS server to be healthy; the
    // front door only for the nodes to start (it checks /readyz itself).
    for i in 1..=3 {
        let depends = &compose["services"][format!("herald{i}").as_str()]["depends_on"];
        for nats in ["nats1", "nats2", "nats3"] {
            assert_eq!(
                depends[nats]["condition"], "service_healthy",
                "herald{i} on {nats}: {depends:?}"
            );
        }
        assert_eq!(
            compose["services"]["haproxy"]["depends_on"][format!("herald{i}").as_str()]
                ["condition"],
            "service_started"
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
