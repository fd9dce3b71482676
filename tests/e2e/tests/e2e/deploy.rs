//! `deploy/`, checked offline: no cluster, no systemd instance, no image build.
//!
//! - Every Kubernetes manifest validates against the Kubernetes schemas (`kubernetes-validate
//!   --strict`, installed by `scripts/deps.sh`), holds the objects a deployment needs, and the
//!   configs inside its Secrets load with the real loaders and agree with the manifests that
//!   mount them (paths, ports, probes, grace periods), so the manifests stay true to the code.
//! - Every systemd unit passes `systemd-analyze verify` (with `ExecStart` pointed at the binary
//!   `cargo build --bins` made, since verify checks that it exists).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use e2e::repo_root;

/// Kubernetes versions the manifests are checked against: an old one still widely run, and the
/// newest that kubernetes-validate (pinned in `scripts/deps.sh`) bundles schemas for.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

/// How long an edge node's shutdown may take: `EdgeNode::shutdown` in edge-node/src/lib.rs
/// (not a public constant there).
const EDGE_NODE_DRAIN: Duration = Duration::from_secs(5);

/// The namespace every manifest names.
const NAMESPACE: &str = "meridian";

fn venv_bin(name: &str) -> PathBuf {
    let p = repo_root().join(".deps/venv/bin").join(name);
    assert!(
        p.exists(),
        "{} missing: run scripts/deps.sh (it installs kubernetes-validate into .deps/venv)",
        p.display()
    );
    p
}

/// Runs a program to completion: (success, stdout + stderr).
fn run(program: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `program` on PATH, or fail naming the Debian package that provides it.
fn on_path(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{program} not found on PATH: run scripts/deps.sh (Debian package {package})")
        })
}

/// The manifests: every `.yaml` under deploy/kubernetes except the kustomization.
fn manifest_files() -> Vec<PathBuf> {
    let dir = repo_root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("yaml"))
        .filter(|p| file_name(p) != "kustomization.yaml")
        .collect();
    files.sort();
    files
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// One YAML document: the file it came from and its content as JSON.
struct Doc {
    file: String,
    v: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.v["kind"].as_str().unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.v["metadata"]["name"].as_str().unwrap_or_default()
    }

    fn at(&self, pointer: &str) -> &Value {
        self.v.pointer(pointer).unwrap_or_else(|| {
            panic!(
                "{} {}/{}: nothing at {pointer}",
                self.file,
                self.kind(),
                self.name()
            )
        })
    }
}

/// Every document of `files`, read by PyYAML from the same venv (the e2e crate has no YAML
/// parser; the documents come back as JSON).
fn load_yaml(files: &[PathBuf]) -> Vec<Doc> {
    const SCRIPT: &str = "import json, sys, yaml\n\
        out = []\n\
        for f in sys.argv[1:]:\n\
        \x20   with open(f) as h:\n\
        \x20       out += [[f, d] for d in yaml.safe_load_all(h) if d is not None]\n\
        print(json.dumps(out))\n";
    let mut args = vec!["-c", SCRIPT];
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(names.iter().map(String::as_str));
    let python = venv_bin("python");
    let out = Command::new(&python).args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "reading the manifests: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Vec<(String, Value)> = serde_json::from_slice(&out.stdout).unwrap();
    all.into_iter()
        .map(|(f, v)| Doc {
            file: file_name(Path::new(&f)),
            v,
        })
        .collect()
}

fn find<'a>(docs: &'a [Doc], kind: &str, name: &str) -> &'a Doc {
    docs.iter()
        .find(|d| d.kind() == kind && d.name() == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/kubernetes"))
}

/// The pod's labels match the selector's `matchLabels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector["matchLabels"]
        .as_object()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// A workload's pod template: its labels, pod spec and its one container.
struct Pod<'a> {
    what: String,
    labels: &'a Value,
    spec: &'a Value,
    container: &'a Value,
}

fn pod_of(doc: &Doc) -> Pod<'_> {
    let containers = doc.at("/spec/template/spec/containers").as_array().unwrap();
    assert_eq!(containers.len(), 1, "{}: one container", doc.name());
    Pod {
        what: format!("{} {}", doc.kind(), doc.name()),
        labels: doc.at("/spec/template/metadata/labels"),
        spec: doc.at("/spec/template/spec"),
        container: &containers[0],
    }
}

impl Pod<'_> {
    /// The container port named `name`: (number, protocol).
    fn port(&self, name: &str) -> (u16, String) {
        let p = self.container["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{}: no container port {name}", self.what));
        (
            p["containerPort"].as_u64().unwrap() as u16,
            p["protocol"].as_str().unwrap_or("TCP").to_string(),
        )
    }

    /// The value of `--config` in the container's arguments.
    fn config_arg(&self) -> String {
        let args: Vec<&str> = self.container["args"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no args", self.what))
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let i = args
            .iter()
            .position(|a| *a == "--config")
            .unwrap_or_else(|| panic!("{}: no --config in {args:?}", self.what));
        args[i + 1].to_string()
    }

    /// The volume mounted at `dir` (exactly): its volume entry, or the claim template's name.
    fn volume_at(&self, dir: &Path) -> Mounted {
        let mounts = self.container["volumeMounts"].as_array().unwrap();
        let m = mounts
            .iter()
            .find(|m| Path::new(m["mountPath"].as_str().unwrap()) == dir)
            .unwrap_or_else(|| panic!("{}: nothing mounted at {}", self.what, dir.display()));
        assert!(
            m.get("subPath").is_none(),
            "{}: {} is a subPath mount, which never sees an updated Secret",
            self.what,
            dir.display()
        );
        let name = m["name"].as_str().unwrap();
        let volume = self.spec["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == name);
        match volume {
            Some(v) => match v["secret"]["secretName"].as_str() {
                Some(s) => Mounted::Secret(s.to_string()),
                None => panic!("{}: volume {name} is not a Secret", self.what),
            },
            None => Mounted::Claim(name.to_string()),
        }
    }

    /// The `httpGet` probe of `kind` (`readinessProbe`, `livenessProbe`): (path, port number).
    fn probe(&self, kind: &str) -> (String, u16) {
        let get = &self.container[kind]["httpGet"];
        let path = get["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no {kind} httpGet", self.what));
        let port = match &get["port"] {
            Value::String(name) => self.port(name).0,
            n => n.as_u64().unwrap() as u16,
        };
        (path.to_string(), port)
    }

    fn grace(&self) -> Duration {
        Duration::from_secs(
            self.spec["terminationGracePeriodSeconds"]
                .as_u64()
                .unwrap_or(30),
        )
    }

    /// Non-root, no privilege escalation, every capability dropped, a read-only root
    /// filesystem, a seccomp profile, and resource requests and limits.
    fn assert_locked_down(&self) {
        let (pod, c) = (
            &self.spec["securityContext"],
            &self.container["securityContext"],
        );
        let what = &self.what;
        assert_eq!(pod["runAsNonRoot"], true, "{what}: runAsNonRoot");
        assert!(
            pod["runAsUser"].as_u64().unwrap_or(0) > 0,
            "{what}: runAsUser"
        );
        assert_eq!(pod["seccompProfile"]["type"], "RuntimeDefault", "{what}");
        assert_eq!(c["allowPrivilegeEscalation"], false, "{what}");
        assert_eq!(c["readOnlyRootFilesystem"], true, "{what}");
        assert_eq!(
            c["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{what}"
        );
        for k in ["requests", "limits"] {
            for r in ["cpu", "memory"] {
                assert!(
                    self.container["resources"][k][r].is_string(),
                    "{what}: resources.{k}.{r}"
                );
            }
        }
        assert_eq!(self.spec["automountServiceAccountToken"], false, "{what}");
    }
}

enum Mounted {
    Secret(String),
    Claim(String),
}

/// The text of `key` in the Secret `name` (written as `stringData`, so that it is readable).
fn secret_text<'a>(docs: &'a [Doc], name: &str, key: &str) -> &'a str {
    let s = find(docs, "Secret", name);
    s.v["stringData"][key]
        .as_str()
        .unwrap_or_else(|| panic!("Secret {name} has no stringData {key:?}"))
}

/// The Secret holding the file at `path` in `pod`: (Secret name, text).
fn file_in_secret<'a>(docs: &'a [Doc], pod: &Pod<'_>, path: &Path) -> (String, &'a str) {
    match pod.volume_at(path.parent().unwrap()) {
        Mounted::Secret(s) => {
            let text = secret_text(docs, &s, &file_name(path));
            (s, text)
        }
        Mounted::Claim(c) => panic!("{}: {} is on volume {c}", pod.what, path.display()),
    }
}

/// A `data` value of the ConfigMap `name`.
fn config_map_value<'a>(docs: &'a [Doc], name: &str, key: &str) -> &'a str {
    find(docs, "ConfigMap", name).v["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("ConfigMap {name} has no {key}"))
}

/// The ConfigMaps the container takes its environment from.
fn env_config_maps(pod: &Pod<'_>) -> Vec<String> {
    pod.container["envFrom"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["configMapRef"]["name"].as_str().map(str::to_string))
        .collect()
}

/// The Service of `type` whose one port has `protocol` and selects `labels`.
fn service<'a>(docs: &'a [Doc], kind: &str, protocol: &str, labels: &Value) -> &'a Doc {
    docs.iter()
        .find(|d| {
            d.kind() == "Service"
                && d.v["spec"]["type"] == kind
                && selects(
                    &serde_json::json!({ "matchLabels": d.v["spec"]["selector"] }),
                    labels,
                )
                && d.v["spec"]["ports"]
                    .as_array()
                    .is_some_and(|p| p.len() == 1 && p[0]["protocol"] == protocol)
        })
        .unwrap_or_else(|| panic!("no {kind} Service with one {protocol} port for {labels}"))
}

fn assert_listens_everywhere(what: &str, addr: SocketAddr) {
    assert!(
        addr.ip().is_unspecified(),
        "{what} = {addr}: the pod must listen on all interfaces for its Services and probes"
    );
}

#[test]
fn kubernetes_manifests_validate_and_match_the_code() {
    let files = manifest_files();
    let validator = venv_bin("kubernetes-validate");

    // 1. The schemas. kubernetes-validate only warns (exit 0) about a kind it has no schema
    // for, so every document must be reported as passed, for each version.
    let mut args = vec!["--strict"];
    for k in KUBERNETES_VERSIONS {
        args.extend(["-k", k]);
    }
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(names.iter().map(String::as_str));
    let (ok, out) = run(&validator, &args);
    let docs = load_yaml(&files);
    let passed = out
        .lines()
        .filter(|l| l.starts_with("INFO ") && l.contains(" passed "))
        .count();
    let complaints: Vec<&str> = out.lines().filter(|l| !l.starts_with("INFO ")).collect();
    assert!(
        ok && complaints.is_empty() && passed == docs.len() * KUBERNETES_VERSIONS.len(),
        "kubernetes-validate --strict failed ({passed} of {} passed):\n{out}",
        docs.len() * KUBERNETES_VERSIONS.len()
    );

    // 2. `kubectl apply -k` applies every manifest but the example Secrets.
    let kustomization = load_yaml(&[repo_root().join("deploy/kubernetes/kustomization.yaml")]);
    let listed: BTreeSet<String> = kustomization[0].v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = files
        .iter()
        .map(|f| file_name(f))
        .filter(|f| !f.ends_with(".example.yaml"))
        .collect();
    assert_eq!(listed, expected, "kustomization.yaml resources");
    for d in &docs {
        if d.kind() != "Namespace" {
            assert_eq!(
                d.v["metadata"]["namespace"],
                NAMESPACE,
                "{}: {} {} names its namespace (for kubectl apply -f)",
                d.file,
                d.kind(),
                d.name()
            );
        }
    }

    // 3. The gateway: Deployment, HTTP (TCP) and QUIC (UDP) Services, PodDisruptionBudget.
    let deployment = find(&docs, "Deployment", "meridian-gateway");
    let gw = pod_of(deployment);
    gw.assert_locked_down();
    let config_path = PathBuf::from(gw.config_arg());
    let (config_secret, text) = file_in_secret(&docs, &gw, &config_path);
    let file = format!("deploy/kubernetes Secret {config_secret}");
    let mut cfg = gateway::config::Config::parse(text, &file).unwrap_or_else(|e| panic!("{e}"));
    // The environment: MERIDIAN_REDIS_URL replaces [tenants] redis_url, as the binary does.
    let env = env_config_maps(&gw);
    assert_eq!(env.len(), 1, "gateway envFrom: {env:?}");
    let redis_url = config_map_value(&docs, &env[0], "MERIDIAN_REDIS_URL");
    cfg.tenants.redis_url = Some(redis_url.to_string());
    cfg.validate(&file)
        .unwrap_or_else(|e| panic!("with MERIDIAN_REDIS_URL: {e}"));
    assert!(
        redis_url.contains("meridian-redis"),
        "MERIDIAN_REDIS_URL {redis_url} names the Redis Service"
    );
    // Listeners, container ports and probes agree.
    let admin = cfg
        .server
        .admin_listen
        .expect("the probes need server.admin_listen");
    assert_listens_everywhere("server.listen", cfg.server.listen);
    assert_listens_everywhere("server.admin_listen", admin);
    assert_listens_everywhere("quic.listen", cfg.quic.listen);
    assert_eq!(gw.port("http"), (cfg.server.listen.port(), "TCP".into()));
    assert_eq!(gw.port("quic"), (cfg.quic.listen.port(), "UDP".into()));
    assert_eq!(gw.port("admin"), (admin.port(), "TCP".into()));
    assert_eq!(gw.probe("readinessProbe"), ("/readyz".into(), admin.port()));
    assert_eq!(gw.probe("livenessProbe"), ("/healthz".into(), admin.port()));
    // The key and the tenants file come from Secrets mounted where the config says.
    let (key_secret, key_text) = file_in_secret(&docs, &gw, &cfg.quic.key_file);
    assert!(
        key_text.contains("PRIVATE KEY") && key_secret != config_secret,
        "quic.key_file: a PEM key in a Secret of its own"
    );
    let tenants_path = cfg.tenants.file.clone().expect("[tenants] file");
    let (_, tenants_text) = file_in_secret(&docs, &gw, &tenants_path);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join(file_name(&tenants_path));
    std::fs::write(&local, tenants_text).unwrap();
    let mut local_cfg = cfg.clone();
    local_cfg.tenants.file = Some(local);
    local_cfg.tenants.redis_url = None;
    let metrics = std::sync::Arc::new(gateway::ops::metrics::Metrics::new());
    gateway::tenants::Tenancy::load(&local_cfg, metrics).unwrap_or_else(|e| panic!("{e}"));
    // Termination: preStop's sleep, then SHUTDOWN_GRACE for open requests and one second
    // more for the tasks (Gateway::shutdown), all inside the grace period.
    let pre_stop: Vec<&str> = gw.container["lifecycle"]["preStop"]["exec"]["command"]
        .as_array()
        .expect("gateway preStop exec")
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        pre_stop.len() == 2 && pre_stop[0].ends_with("/sleep"),
        "{pre_stop:?}"
    );
    let sleep = Duration::from_secs(pre_stop[1].parse().unwrap());
    let needed = sleep + gateway::SHUTDOWN_GRACE + Duration::from_secs(1);
    assert!(
        gw.grace() >= needed + Duration::from_secs(5),
        "gateway terminationGracePeriodSeconds {:?}: the drain takes up to {needed:?}",
        gw.grace()
    );
    // Services: callers over TCP, nodes over UDP (a Service each), both reaching the ports
    // above; nodes may join a gateway that is not ready yet (it is not ready without them).
    let http = service(&docs, "LoadBalancer", "TCP", gw.labels);
    assert_eq!(http.v["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(
        http.v["spec"]["externalTrafficPolicy"], "Local",
        "callers' addresses kept"
    );
    let quic = service(&docs, "LoadBalancer", "UDP", gw.labels);
    assert_eq!(quic.v["spec"]["ports"][0]["targetPort"], "quic");
    assert_eq!(quic.v["spec"]["publishNotReadyAddresses"], true);
    let quic_port = quic.v["spec"]["ports"][0]["port"].as_u64().unwrap();
    let pdb = docs
        .iter()
        .find(|d| d.kind() == "PodDisruptionBudget" && selects(&d.v["spec"]["selector"], gw.labels))
        .expect("a PodDisruptionBudget for the gateway");
    assert!(
        pdb.v["spec"].get("minAvailable").is_some()
            || pdb.v["spec"].get("maxUnavailable").is_some()
    );

    // 4. Edge nodes: a StatefulSet whose key lives on a volume claim of its own.
    let sts = find(&docs, "StatefulSet", "meridian-edge-node");
    let node = pod_of(sts);
    node.assert_locked_down();
    let config_path = PathBuf::from(node.config_arg());
    let (node_secret, text) = file_in_secret(&docs, &node, &config_path);
    let ncfg =
        edge_node::config::Config::parse(text, &format!("deploy/kubernetes Secret {node_secret}"))
            .unwrap_or_else(|e| panic!("{e}"));
    let claims: Vec<&str> = sts
        .at("/spec/volumeClaimTemplates")
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap())
        .collect();
    match node.volume_at(ncfg.key_file.parent().unwrap()) {
        Mounted::Claim(c) => assert!(claims.contains(&c.as_str()), "{c} is not a claim template"),
        Mounted::Secret(s) => {
            panic!("key_file is on Secret {s}: the node must be able to create it")
        }
    }
    assert!(ncfg.key_file.is_absolute());
    let admin = ncfg.admin_listen.expect("the probes need admin_listen");
    assert_listens_everywhere("admin_listen", admin);
    assert_eq!(node.port("admin"), (admin.port(), "TCP".into()));
    assert_eq!(
        node.probe("readinessProbe"),
        ("/readyz".into(), admin.port())
    );
    assert_eq!(
        node.probe("livenessProbe"),
        ("/healthz".into(), admin.port())
    );
    assert!(
        node.grace() >= EDGE_NODE_DRAIN + Duration::from_secs(5),
        "edge node terminationGracePeriodSeconds {:?}",
        node.grace()
    );
    // The example node joins the example gateway: its QUIC Service, one of its tokens.
    let first = &ncfg.gateways[0];
    assert_eq!(
        first.address,
        format!("{}.{NAMESPACE}.svc:{quic_port}", quic.name()),
        "the node dials the gateway's QUIC Service"
    );
    assert!(
        cfg.quic.join_tokens.contains(&first.token),
        "the node's token is one of the gateway's join_tokens"
    );
    assert!(!env_config_maps(&node).is_empty());

    // 5. Redis for the shared limits: redis:7, nothing kept on disk, reachable by the URL.
    let redis = find(&docs, "Deployment", "meridian-redis");
    let r = pod_of(redis);
    r.assert_locked_down();
    let image = r.container["image"].as_str().unwrap();
    assert!(
        image == "redis:7" || image.starts_with("redis:7."),
        "{image}"
    );
    let args: Vec<&str> = r.container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.windows(2).any(|w| w == ["--save", ""]), "{args:?}");
    assert!(
        args.windows(2).any(|w| w == ["--appendonly", "no"]),
        "{args:?}"
    );
    let redis_svc = service(&docs, "ClusterIP", "TCP", r.labels);
    let port = redis_svc.v["spec"]["ports"][0]["port"].as_u64().unwrap();
    assert!(
        redis_url.contains(&format!("{}.{NAMESPACE}.svc:{port}", redis_svc.name())),
        "MERIDIAN_REDIS_URL {redis_url} reaches Service {}:{port}",
        redis_svc.name()
    );

    // 6. Every kind the deployment is made of is there.
    let kinds: BTreeSet<&str> = docs.iter().map(Doc::kind).collect();
    for k in [
        "Namespace",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "StatefulSet",
        "ConfigMap",
        "Secret",
    ] {
        assert!(kinds.contains(k), "no {k} in deploy/kubernetes");
    }
}

/// The binary a unit's `ExecStart=/usr/local/bin/NAME` names, as `cargo build --bins` made it.
fn built(name: &str) -> PathBuf {
    match name {
        "gateway" => e2e::gateway_bin(),
        "edge-node" => e2e::edge_node_bin(),
        other => {
            panic!("a unit starts /usr/local/bin/{other}, which this workspace does not build")
        }
    }
}

/// A `Key=value` of the unit (the last one, as systemd takes it).
fn unit_value<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    let prefix = format!("{key}=");
    unit.lines()
        .rev()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
}

#[test]
fn systemd_units_verify() {
    let analyze = on_path("systemd-analyze", "systemd");
    let dir = repo_root().join("deploy/systemd");
    let tmp = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = file_name(&path);
        if !name.ends_with(".service") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let exec = unit_value(&text, "ExecStart").unwrap_or_else(|| panic!("{name}: no ExecStart"));
        let program = exec.split_whitespace().next().unwrap();
        let bin = program
            .strip_prefix("/usr/local/bin/")
            .unwrap_or_else(|| panic!("{name}: ExecStart={exec} is not in /usr/local/bin"));
        let local = text.replace(program, &built(bin).display().to_string());
        let copy = tmp.path().join(&name);
        std::fs::write(&copy, &local).unwrap();
        let (ok, out) = run(
            &analyze,
            &["verify", "--man=no", &copy.display().to_string()],
        );
        // Only lines about this unit count: verify also loads the host's units it depends on.
        let about: Vec<&str> = out.lines().filter(|l| l.contains(name.as_str())).collect();
        assert!(
            ok && about.is_empty(),
            "systemd-analyze verify {name}:\n{out}"
        );

        // Stopped with SIGTERM and given longer than the binary's drain; restarted on failure;
        // state (the key) in a state directory; hardened.
        assert_eq!(unit_value(&text, "KillSignal"), Some("SIGTERM"), "{name}");
        assert_eq!(unit_value(&text, "Restart"), Some("on-failure"), "{name}");
        let stop =
            unit_value(&text, "TimeoutStopSec").unwrap_or_else(|| panic!("{name}: TimeoutStopSec"));
        let stop = Duration::from_secs(stop.trim_end_matches('s').parse().unwrap());
        let drain = match bin {
            "gateway" => gateway::SHUTDOWN_GRACE + Duration::from_secs(1),
            _ => EDGE_NODE_DRAIN,
        };
        assert!(
            stop > drain,
            "{name}: TimeoutStopSec {stop:?} is not above the drain {drain:?}"
        );
        assert!(
            unit_value(&text, "StateDirectory").is_some(),
            "{name}: StateDirectory"
        );
        for (k, v) in [
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
        ] {
            assert_eq!(unit_value(&text, k), Some(v), "{name}: {k}");
        }
        if bin == "gateway" {
            assert_eq!(
                unit_value(&text, "ExecReload"),
                Some("/bin/kill -HUP $MAINPID"),
                "{name}: SIGHUP reloads the geo databases and the tenants file"
            );
        }
        units.push(bin.to_string());
    }
    units.sort();
    assert_eq!(units, ["edge-node", "gateway"], "one unit per binary");
}

/// The README's Deployment section names every file under `deploy/`.
#[test]
fn readme_names_every_deployment_file() {
    let root = repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let start = readme
        .find("\n## Deployment")
        .expect("README has a Deployment section");
    let end = readme[start + 1..]
        .find("\n## ")
        .map_or(readme.len(), |i| start + 1 + i);
    let section = &readme[start..end];
    let mut files = Vec::new();
    let mut dirs = vec![root.join("deploy")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p.strip_prefix(&root).unwrap().display().to_string());
            }
        }
    }
    assert!(files.len() >= 8, "{files:?}");
    let missing: Vec<_> = files
        .iter()
        .filter(|f| !section.contains(f.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "not named in README's Deployment section: {missing:?}"
    );
}
