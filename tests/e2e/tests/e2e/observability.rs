//! Observability end to end: the `/metrics` expositions (parse, naming rules, promtool), the
//! shipped dashboards and alert rules (promtool, every metric they use is exported, a real
//! Prometheus answers their queries), the `/status` page in headless Chromium, and what the
//! logs carry.

mod browser;
mod expo;
mod promql;
mod tools;

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use edge_node::EdgeNode;
use gateway::Gateway;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use e2e::*;

const LONDON: &str = "81.2.69.142";
const MOUNTAIN_VIEW: &str = "8.8.8.8";
const SYDNEY: &str = "1.1.1.1";
/// A private address: located nowhere, counted as country `unknown`.
const PRIVATE: &str = "10.0.0.7";
const ACCT0: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

fn spec<'a>(r: (&'a str, f64, f64), upstream: &'a str) -> NodeSpec<'a> {
    NodeSpec {
        region: r.0,
        lat: r.1,
        lon: r.2,
        upstream,
    }
}

// === A running stack ===

/// anvil, a gateway with the real geo database, and three in-process edge nodes with admin
/// listeners.
struct Stack {
    _anvil: Anvil,
    gw: Gateway,
    nodes: Vec<EdgeNode>,
    http: Http,
    url: String,
}

impl Stack {
    async fn start() -> Self {
        let anvil = Anvil::start(&["--block-time", "1"]).await;
        // The tip tier off: repeats must reach the nodes, whose cache counters these tests read.
        let gw =
            start_gateway_with(&format!("{}[cache]\ntip_max_bytes = 0\n", geo_section(""))).await;
        let mut nodes = Vec::new();
        for r in [US_EAST, EU_WEST, AP_SOUTHEAST] {
            nodes.push(start_node(&gw, &spec(r, &anvil.url)).await);
        }
        wait_serving_for(&gw, 3, 20).await;
        let url = format!("http://{}/", gw.http_addr);
        Self {
            _anvil: anvil,
            gw,
            nodes,
            http: Http::default(),
            url,
        }
    }

    fn admin(&self) -> String {
        format!("http://{}", self.gw.admin_addr.expect("admin listener"))
    }

    fn edge_admins(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("http://{}", n.admin_addr.expect("edge admin listener")))
            .collect()
    }

    async fn scrape(&self, base: &str) -> String {
        let r = self.http.get(&format!("{base}/metrics")).await;
        assert_eq!(r.status, 200, "{base}/metrics");
        String::from_utf8(r.body.to_vec()).expect("exposition is UTF-8")
    }

    /// A little of everything: callers in three countries and one unlocatable, cache misses and
    /// hits, a batch, and requests refused at the gateway.
    async fn traffic(&self) {
        traffic(&self.http, &self.url).await;
    }

    async fn shutdown(self) {
        for n in self.nodes {
            n.shutdown().await;
        }
        self.gw.shutdown().await;
    }
}

async fn traffic(http: &Http, url: &str) {
    let genesis = http
        .rpc(url, "eth_getBlockByNumber", json!(["0x0", false]))
        .await;
    let hash = genesis["result"]["hash"]
        .as_str()
        .unwrap_or_else(|| panic!("no genesis hash: {genesis}"))
        .to_string();
    for ip in [LONDON, MOUNTAIN_VIEW, SYDNEY, PRIVATE] {
        for (m, p) in [
            ("eth_getBalance", json!([ACCT0, "latest"])),
            ("eth_getBlockByHash", json!([hash, false])),
            ("eth_getBlockByHash", json!([hash, false])),
            ("eth_getCode", json!([ACCT0, "latest"])),
        ] {
            call_as(http, url, ip, m, p)
                .await
                .unwrap_or_else(|e| panic!("{m} as {ip}: {e}"));
        }
    }
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance", "params": [ACCT0, "latest"]},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_getBlockByHash", "params": [hash, false]},
    ]);
    assert_eq!(http.post(url, batch.to_string()).await.status, 200);
    http.post(url, "{not json").await;
    http.rpc(url, "anvil_mine", json!([])).await;
    http.post(&format!("{url}no-such-chain"), "{}").await;
}

/// Parses one binary's exposition, applies our naming rules and promtool's linter.
async fn check_exposition(prefix: &str, text: &str) -> Vec<expo::Family> {
    let fams = expo::parse(text).unwrap_or_else(|e| panic!("{prefix} exposition: {e}"));
    assert!(fams.len() >= 10, "{prefix}: only {} families", fams.len());
    let problems = expo::lint(prefix, &fams);
    assert!(
        problems.is_empty(),
        "{prefix} metrics break the naming rules:\n{}",
        problems.join("\n")
    );
    let (ok, out) = tools::run(&tools::promtool(), &["check", "metrics"], Some(text)).await;
    assert!(ok, "promtool check metrics on {prefix}:\n{out}");
    fams
}

fn values<'a>(fams: &'a [expo::Family], name: &str) -> Vec<&'a expo::Sample> {
    expo::family(fams, name)
        .unwrap_or_else(|| panic!("{name} is not exported"))
        .samples
        .iter()
        .collect()
}

fn label_values(fams: &[expo::Family], name: &str, label: &str) -> BTreeSet<String> {
    values(fams, name)
        .iter()
        .filter_map(|s| s.labels.get(label).cloned())
        .collect()
}

// === /metrics ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expositions_parse_and_follow_naming_rules() {
    let s = Stack::start().await;
    s.traffic().await;
    // One health round after the traffic, so per-node figures are fresh.
    tokio::time::sleep(Duration::from_millis(600)).await;

    let gw = check_exposition("gateway", &s.scrape(&s.admin()).await).await;
    println!(
        "gateway families ({}): {}",
        gw.len(),
        gw.iter()
            .map(|f| format!("{} ({})", f.name, f.kind))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let countries = label_values(&gw, "gateway_requests_by_country_total", "country");
    for c in &countries {
        assert!(
            c == "unknown" || (c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase())),
            "unbounded country label {c:?}"
        );
    }
    for want in ["GB", "US", "AU", "unknown"] {
        assert!(countries.contains(want), "no {want} in {countries:?}");
    }
    let hits: f64 = values(&gw, "gateway_cache_results_total")
        .iter()
        .filter(|s| s.labels["tier"] == "edge" && s.labels["result"] == "hit")
        .map(|s| s.value)
        .sum();
    assert!(hits >= 4.0, "edge cache hits counted: {hits}");
    // Per-node gauges mirror the registry.
    let ids: BTreeSet<String> = s.nodes.iter().map(|n| n.node_id.clone()).collect();
    assert_eq!(label_values(&gw, "gateway_node_info", "node"), ids);
    assert_eq!(
        label_values(&gw, "gateway_node_info", "region"),
        ["ap-southeast", "eu-west", "us-east"]
            .map(String::from)
            .into(),
    );
    let healthy = values(&gw, "gateway_node_healthy");
    assert_eq!(healthy.len(), 3);
    assert!(healthy
        .iter()
        .all(|s| s.value == 1.0 && s.labels["chain"] == "anvil"));
    assert_eq!(values(&gw, "gateway_chain_healthy_nodes")[0].value, 3.0);
    assert_eq!(values(&gw, "gateway_node_head_block_number").len(), 3);
    let handshakes = values(&gw, "gateway_quic_connection_events_total")
        .into_iter()
        .find(|s| s.labels["event"] == "handshake_ok")
        .unwrap()
        .value;
    assert_eq!(handshakes, 3.0);

    for (i, base) in s.edge_admins().iter().enumerate() {
        let edge = check_exposition("edge", &s.scrape(base).await).await;
        if i == 0 {
            println!(
                "edge families ({}): {}",
                edge.len(),
                edge.iter()
                    .map(|f| format!("{} ({})", f.name, f.kind))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        for name in [
            "edge_cache_evictions_total",
            "edge_reorgs_total",
            "edge_reorg_depth_blocks",
            "edge_proof_verifications_total",
            "edge_build_info",
        ] {
            assert!(
                expo::family(&edge, name).is_some(),
                "{name} missing at {base}"
            );
        }
        assert_eq!(
            label_values(&edge, "edge_reorgs_total", "chain_id"),
            [CHAIN_ID.to_string()].into()
        );
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_node_series_and_status_follow_departures() {
    let mut s = Stack::start().await;
    s.traffic().await;
    let gone = s.nodes.remove(1);
    let gone_id = gone.node_id.clone();
    gone.shutdown().await;
    for _ in 0..100 {
        if s.gw.app.registry.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.gw.app.registry.len(), 2, "the stopped node did not leave");
    let text = s.scrape(&s.admin()).await;
    let gw = expo::parse(&text).unwrap();
    for f in gw.iter().filter(|f| f.name.starts_with("gateway_node_")) {
        for smp in &f.samples {
            assert_ne!(
                smp.labels.get("node"),
                Some(&gone_id),
                "{} kept a series for the departed node",
                f.name
            );
        }
    }
    assert_eq!(values(&gw, "gateway_node_info").len(), 2);
    assert_eq!(values(&gw, "gateway_chain_healthy_nodes")[0].value, 2.0);
    // The session's end is counted just after the node leaves the registry.
    let mut ends = BTreeSet::new();
    for _ in 0..40 {
        let gw = expo::parse(&s.scrape(&s.admin()).await).unwrap();
        ends = values(&gw, "gateway_quic_connection_events_total")
            .into_iter()
            .filter(|x| x.value > 0.0 && x.labels["event"] != "handshake_ok")
            .map(|x| format!("{}={}", x.labels["event"], x.value))
            .collect();
        if !ends.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        ends,
        ["closed=1".to_string()].into(),
        "a clean shutdown is one closed session"
    );

    // /status.json: two live nodes, the departed one with its reason.
    let doc = s.http.get(&format!("{}/status.json", s.admin())).await;
    assert_eq!(doc.header("content-type"), Some("application/json"));
    let doc = doc.json();
    assert_eq!(doc["nodes"].as_array().unwrap().len(), 2, "{doc:#}");
    let departed = doc["departed"].as_array().unwrap();
    assert_eq!(departed.len(), 1);
    assert_eq!(departed[0]["id"], gone_id.as_str());
    assert_eq!(departed[0]["region"], "eu-west");
    assert!(departed[0]["reason"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));
    for n in doc["nodes"].as_array().unwrap() {
        assert_eq!(n["state"], "healthy");
        assert!(n["rtt_ms"].as_f64().is_some());
        assert!(n["chains"][0]["head"].as_u64().is_some());
        // Callers from the US and Australia each asked twice for one block by hash on their
        // nearest node: the second was a hit there.
        assert!(
            n["cache"]["hit"].as_u64().is_some_and(|h| h >= 1)
                && n["cache"]["hit_ratio"].as_f64().is_some(),
            "{n:#}"
        );
    }
    assert_eq!(doc["chains"][0]["healthy_nodes"], 2);
    s.shutdown().await;
}

// === dashboards and alert rules ===

#[tokio::test]
async fn alert_rules_and_scrape_config_pass_promtool() {
    let dir = promql::dashboards_dir();
    let promtool = tools::promtool();
    for (cmd, file) in [
        ("check rules", "alerts.yml"),
        ("check config", "prometheus.yml"),
        ("test rules", "alerts_test.yml"),
    ] {
        let path = dir.join(file).display().to_string();
        let mut args: Vec<&str> = cmd.split(' ').collect();
        args.push(&path);
        let (ok, out) = tools::run(&promtool, &args, None).await;
        assert!(ok, "promtool {cmd} {file}:\n{out}");
        println!("promtool {cmd} {file}: {}", out.trim().replace('\n', " | "));
    }
    // The rules cover what the issue asks for.
    let text = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    for alert in [
        "MeridianEdgeNodeDown",
        "MeridianNodeLagging",
        "MeridianNodeErrorRate",
        "MeridianHighErrorRate",
        "MeridianCacheHitRatioCollapse",
        "MeridianNoHealthyNode",
        "MeridianNodeLocationImplausible",
    ] {
        assert!(text.contains(&format!("alert: {alert}")), "{alert} missing");
    }
}

#[test]
fn dashboards_use_a_datasource_variable_and_sound_queries() {
    let mut uids = BTreeSet::new();
    for path in promql::dashboard_files() {
        let name = path.display().to_string();
        let d: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert!(
            uids.insert(d["uid"].as_str().unwrap().to_string()),
            "{name}: uid reused"
        );
        let vars = d["templating"]["list"].as_array().unwrap();
        assert!(
            vars.iter().any(|v| v["name"] == "datasource"
                && v["type"] == "datasource"
                && v["query"] == "prometheus"),
            "{name}: no Prometheus datasource variable"
        );
        // Every datasource reference anywhere is the variable, never a hard-wired uid.
        fn walk(v: &Value, at: &str, name: &str) {
            match v {
                Value::Object(o) => {
                    if let Some(ds) = o.get("datasource") {
                        assert_eq!(
                            ds,
                            &json!({"type": "prometheus", "uid": "${datasource}"}),
                            "{name}: {at} has a hard-wired datasource"
                        );
                    }
                    for (k, x) in o {
                        walk(x, &format!("{at}.{k}"), name);
                    }
                }
                Value::Array(a) => {
                    for (i, x) in a.iter().enumerate() {
                        walk(x, &format!("{at}[{i}]"), name);
                    }
                }
                _ => {}
            }
        }
        walk(&d["panels"], "panels", &name);
        let mut ids = BTreeSet::new();
        let mut panels = 0;
        for p in d["panels"].as_array().unwrap() {
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "{name}: panel id reused"
            );
            let g = &p["gridPos"];
            assert!(
                g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
                "{name}: {} is wider than the grid",
                p["title"]
            );
            if p["type"] != "row" {
                panels += 1;
                assert!(
                    !p["targets"].as_array().unwrap().is_empty(),
                    "{name}: {} has no query",
                    p["title"]
                );
            }
        }
        assert!(panels >= 6, "{name}: only {panels} panels");
        for e in promql::dashboard_exprs(&path) {
            // Quantiles of histograms must keep `le` when aggregating, or they are meaningless.
            if e.expr.contains("histogram_quantile") {
                assert!(
                    e.expr.contains("by (le"),
                    "{}: histogram_quantile without `by (le ...)`: {}",
                    e.origin,
                    e.expr
                );
            }
            // Counters are only ever read through rate()/increase().
            for m in promql::metric_names(&e.expr) {
                if m.ends_with("_total") || m.ends_with("_bucket") {
                    assert!(
                        e.expr.contains("rate(")
                            || e.expr.contains("increase(")
                            || e.origin.contains("variable"),
                        "{}: counter {m} read raw: {}",
                        e.origin,
                        e.expr
                    );
                }
            }
        }
    }
    // The geography dashboard has the geomap with callers by country and nodes by location.
    let geo: Value = serde_json::from_slice(
        &std::fs::read(promql::dashboards_dir().join("geography.json")).unwrap(),
    )
    .unwrap();
    let map = geo["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["type"] == "geomap")
        .expect("a geomap panel");
    let layers = map["options"]["layers"].as_array().unwrap();
    assert!(layers.iter().any(|l| l["location"]["lookup"] == "country"));
    assert!(layers.iter().any(|l| l["location"]["mode"] == "coords"));
}

/// Every expression in the dashboards and alert rules.
fn all_exprs() -> Vec<promql::Expr> {
    let mut exprs: Vec<promql::Expr> = promql::dashboard_files()
        .iter()
        .flat_map(promql::dashboard_exprs)
        .collect();
    let rules = promql::rule_exprs(&promql::dashboards_dir().join("alerts.yml"));
    let alerts = std::fs::read_to_string(promql::dashboards_dir().join("alerts.yml"))
        .unwrap()
        .matches("- alert:")
        .count();
    assert_eq!(rules.len(), alerts, "one expr per alert rule");
    exprs.extend(rules);
    exprs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_dashboards_and_alerts_is_exported() {
    let s = Stack::start().await;
    s.traffic().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut exported = expo::sample_names(&expo::parse(&s.scrape(&s.admin()).await).unwrap());
    for base in s.edge_admins() {
        exported.extend(expo::sample_names(
            &expo::parse(&s.scrape(&base).await).unwrap(),
        ));
    }
    // `up` is written by Prometheus itself for every target.
    exported.insert("up".into());
    let exprs = all_exprs();
    let mut used = BTreeSet::new();
    let mut missing = Vec::new();
    for e in &exprs {
        for m in promql::metric_names(&e.expr) {
            if !exported.contains(&m) {
                missing.push(format!("{m} ({})", e.origin));
            }
            used.insert(m);
        }
    }
    println!(
        "{} expressions use {} metrics, all exported",
        exprs.len(),
        used.len()
    );
    assert!(
        used.len() >= 30,
        "suspiciously few metric names extracted: {used:?}"
    );
    assert!(
        missing.is_empty(),
        "used in dashboards/alerts but not exported:\n{}",
        missing.join("\n")
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_stack_and_answers_dashboard_queries() {
    let s = Stack::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let edges: Vec<String> = s
        .nodes
        .iter()
        .map(|n| format!("\"{}\"", n.admin_addr.unwrap()))
        .collect();
    let config = format!(
        r#"
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {rules:?}
scrape_configs:
  - job_name: meridian-gateway
    static_configs:
      - targets: ["{gw}"]
  - job_name: meridian-edge
    static_configs:
      - targets: [{edges}]
"#,
        rules = promql::dashboards_dir()
            .join("alerts.yml")
            .display()
            .to_string(),
        gw = s.gw.admin_addr.unwrap(),
        edges = edges.join(", ")
    );
    let cfg_path = tmp.path().join("prometheus.yml");
    std::fs::write(&cfg_path, config).unwrap();
    let port = tools::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut prom = tools::Proc::spawn(
        &tools::prometheus(),
        &[
            format!("--config.file={}", cfg_path.display()),
            format!("--storage.tsdb.path={}", tmp.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn".into(),
        ],
        tmp.path().join("prometheus.log"),
    );
    tools::wait_http_ok(&s.http, &format!("{base}/-/ready"), &mut prom, "prometheus").await;

    // Keep traffic flowing so rates have something to show.
    let stop = Arc::new(AtomicBool::new(false));
    let bg = {
        let (http, url, stop) = (s.http.clone(), s.url.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                traffic(&http, &url).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let query = |q: String| {
        let http = s.http.clone();
        let base = base.clone();
        async move {
            let url = format!("{base}/api/v1/query?query={}", urlencode(&q));
            let r = http.get(&url).await;
            let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            (r.status, v)
        }
    };

    // All four targets up.
    let mut up = Value::Null;
    for _ in 0..60 {
        let (_, v) = query("sum(up)".into()).await;
        up = v["data"]["result"][0]["value"][1].clone();
        if up == "4" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(up, "4", "targets up; log:\n{}", prom.log_tail());

    // Every dashboard and alert expression is valid PromQL to a real Prometheus...
    let exprs = all_exprs();
    for e in &exprs {
        let q = promql::substitute(&e.expr, "5s", "1m");
        let (status, v) = query(q.clone()).await;
        assert!(
            status == 200 && v["status"] == "success",
            "{}: Prometheus rejected {q}: {v}",
            e.origin
        );
    }
    // ...and the headline panels return data from the running stack.
    let wanted = [
        ("gateway-overview.json", "Requests"),
        ("gateway-overview.json", "Latency percentiles"),
        ("gateway-overview.json", "Cache hit ratio"),
        ("gateway-overview.json", "Healthy nodes per chain"),
        ("gateway-overview.json", "Edge nodes"),
        ("geography.json", "Callers by country and edge nodes"),
        ("geography.json", "Top caller countries"),
        ("edge-node.json", "Cache lookups by result"),
        ("edge-node.json", "Upstream latency"),
        ("edge-node.json", "Head and finalized block"),
    ];
    for (file, title) in wanted {
        let origin = format!("{file}: panel {:?}", title);
        let picked: Vec<_> = exprs
            .iter()
            .filter(|e| e.origin.starts_with(&origin))
            .collect();
        assert!(!picked.is_empty(), "no panel {origin}");
        let mut got = Value::Null;
        'wait: for _ in 0..60 {
            for e in &picked {
                let (_, v) = query(promql::substitute(&e.expr, "5s", "1m")).await;
                let res = &v["data"]["result"];
                if res.as_array().is_some_and(|a| {
                    a.iter()
                        .any(|x| x["value"][1].as_str().is_some_and(|n| n != "NaN"))
                }) {
                    got = res.clone();
                    break 'wait;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(!got.is_null(), "{origin}: no data from Prometheus");
        println!("{origin}: {}", compact(&got));
    }
    // The geomap's node layer carries coordinates and health per node.
    let (_, v) = query(promql::substitute(
        &exprs
            .iter()
            .find(|e| {
                e.origin.contains("Callers by country and edge nodes")
                    && e.expr.contains("gateway_node_info")
            })
            .unwrap()
            .expr,
        "5s",
        "1m",
    ))
    .await;
    let rows = v["data"]["result"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{v}");
    assert!(rows
        .iter()
        .all(|r| r["metric"]["latitude"].is_string() && r["value"][1] == "1"));

    // The rules loaded and evaluate without errors.
    let r = s.http.get(&format!("{base}/api/v1/rules")).await.json();
    let rules: Vec<&Value> = r["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert!(rules.len() >= 7);
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{}", rule);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = bg.await;
    prom.stop().await;
    s.shutdown().await;
}

fn compact(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 300 {
        format!("{}…", &s[..300])
    } else {
        s
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// === the status page ===

/// An upstream that answers HTTP 502 for one method and passes everything else to anvil: the
/// node stays healthy (its probes pass) while that method fails over to another node.
async fn failing_upstream(upstream: &str, method: &'static str) -> String {
    struct Fail(&'static str);
    impl Intercept for Fail {
        fn before(&self, method: &str, _params: &Value) -> Option<(http::StatusCode, Bytes)> {
            (method == self.0).then(|| (http::StatusCode::BAD_GATEWAY, Bytes::new()))
        }
    }
    start_proxy(upstream, Arc::new(Fail(method))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_headless_chromium() {
    let anvil = Anvil::start(&["--block-time", "1"]).await;
    let gw = start_gateway_with(&geo_section("")).await;
    // eu-west's upstream fails eth_getTransactionCount, so London callers fail over from it.
    let flaky = failing_upstream(&anvil.url, "eth_getTransactionCount").await;
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Vec::new();
    for (r, up) in [
        (US_EAST, anvil.url.as_str()),
        (EU_WEST, flaky.as_str()),
        (AP_SOUTHEAST, anvil.url.as_str()),
    ] {
        procs.push((r.0, NodeProcess::spawn(&gw, &spec(r, up), dir.path()).await));
    }
    wait_serving_for(&gw, 3, 30).await;
    let ids: Vec<(String, String)> = gw
        .app
        .registry
        .snapshot()
        .iter()
        .map(|n| (n.id.clone(), n.region.clone()))
        .collect();
    let http = Http::default();
    let url = format!("http://{}/", gw.http_addr);
    traffic(&http, &url).await;
    for _ in 0..3 {
        // Served in the end (by the next node), after a failover away from eu-west.
        call_as(
            &http,
            &url,
            LONDON,
            "eth_getTransactionCount",
            json!([ACCT0, "latest"]),
        )
        .await
        .unwrap();
    }

    let page = format!("http://{}/status", gw.admin_addr.unwrap());
    let raw = http.get(&page).await;
    assert_eq!(raw.status, 200);
    assert!(raw
        .header("content-security-policy")
        .is_some_and(|c| c.contains("default-src 'none'")));

    let browser = browser::Browser::start(1440, 1010).await;
    browser.goto(&page).await;
    browser
        .wait_for(
            "return document.body.dataset.fetch === 'ok' && document.querySelectorAll('#nodes tbody tr[data-node-id]').length",
            20,
            "the page to render the nodes",
        )
        .await;
    let rows = browser
        .eval(
            "return [...document.querySelectorAll('#nodes tbody tr[data-node-id]')]
               .map(r => [r.dataset.nodeId, r.dataset.state, r.cells[1].textContent]);",
        )
        .await;
    let rows: Vec<(String, String, String)> = serde_json::from_value(rows).unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (id, region) in &ids {
        assert!(
            rows.iter()
                .any(|(i, st, r)| i == id && r == region && st == "healthy"),
            "{region} ({id}) not shown healthy: {rows:?}"
        );
        let marker = browser
            .eval(&format!(
                "return document.querySelector('#map g.marker[data-node-id=\"{id}\"]')?.dataset.state"
            ))
            .await;
        assert_eq!(marker, "healthy", "map marker for {region}");
    }
    let failovers = browser
        .eval("return [...document.querySelectorAll('#failovers li[data-reason]')].map(li => li.textContent)")
        .await;
    let failovers: Vec<String> = serde_json::from_value(failovers).unwrap();
    assert!(
        failovers
            .iter()
            .any(|f| f.contains("eu-west") && f.contains("node error")),
        "failovers shown: {failovers:?}"
    );

    // Kill eu-west (SIGKILL, no goodbye) with London traffic flowing: the page must show it down.
    let stop = Arc::new(AtomicBool::new(false));
    let bg = {
        let (http, url, stop) = (http.clone(), url.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = call_as(
                    &http,
                    &url,
                    LONDON,
                    "eth_getBalance",
                    json!([ACCT0, "latest"]),
                )
                .await;
            }
        })
    };
    let eu_id = ids.iter().find(|(_, r)| r == "eu-west").unwrap().0.clone();
    procs[1].1.kill().await;
    browser
        .wait_for(
            &format!(
                "const r = document.querySelector('#nodes tr[data-node-id=\"{eu_id}\"]');
                 const m = document.querySelector('#map g.marker[data-node-id=\"{eu_id}\"]');
                 return r && m && r.dataset.state === 'down' && m.dataset.state === 'down';"
            ),
            20,
            "the killed node to show as down",
        )
        .await;
    let live = browser
        .eval("return [...document.querySelectorAll('#nodes tbody tr[data-state=\"healthy\"]')].length")
        .await;
    assert_eq!(live, 2);
    stop.store(true, Ordering::Relaxed);
    let _ = bg.await;
    // Let one more refresh land so the screenshot shows the settled state.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let console = browser.console().await;
    let errors: Vec<_> = console
        .iter()
        .filter(|(level, _)| level == "SEVERE" || level == "WARNING")
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");

    let shot = repo_root().join("target/status-page.png");
    browser.screenshot(&shot).await;
    // Written past the test harness's capture so it shows in a normal `cargo test` run.
    let _ = writeln!(
        std::io::stderr(),
        "status page screenshot: {}",
        shot.display()
    );
    browser.quit().await;
    for (_, mut p) in procs {
        let _ = p.child.kill().await;
    }
    gw.shutdown().await;
}

// === logs ===

/// Waits for a JSON log line whose message is `message` in the file at `path`.
async fn wait_log_line(path: &std::path::Path, message: &str) -> Value {
    for _ in 0..200 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for line in text.lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                if v["fields"]["message"] == message {
                    return v;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "no {message:?} line in {}:\n{}",
        path.display(),
        std::fs::read_to_string(path).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_the_request_id_but_no_bodies_or_caller_addresses() {
    // Both binaries as real processes at their default log level, in JSON; the node's link
    // module at debug so its per-request line shows the span it runs in.
    const MARKER: &str = "0x00000000000000000000000000000000005ec2e7";
    let anvil = Anvil::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let (v4, v6) = dbip_paths();
    let gw_cfg = dir.path().join("gateway.toml");
    std::fs::write(
        &gw_cfg,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
[quic]
listen = "127.0.0.1:0"
key_file = "gateway.key"
join_tokens = ["{TOKEN}"]
[geo]
databases = [{v4:?}, {v6:?}]
trusted_proxies = ["127.0.0.0/8"]
[[chains]]
name = "anvil"
chain_id = {CHAIN_ID}
"#
        ),
    )
    .unwrap();
    let bin_dir = edge_node_bin().parent().unwrap().to_path_buf();
    let gw_log = dir.path().join("gateway.log");
    let mut gw = tokio::process::Command::new(bin_dir.join("gateway"))
        .arg("--config")
        .arg(&gw_cfg)
        .env_remove("RUST_LOG")
        .env("LOG_FORMAT", "json")
        .stderr(std::fs::File::create(&gw_log).unwrap())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning the gateway binary");
    let started = wait_log_line(&gw_log, "gateway started").await;
    let http_addr = started["fields"]["http_addr"].as_str().unwrap().to_string();
    let quic_addr = started["fields"]["quic_addr"].as_str().unwrap().to_string();
    let fingerprint = started["fields"]["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();

    let node_cfg = dir.path().join("node.toml");
    std::fs::write(
        &node_cfg,
        format!(
            r#"
key_file = "node.key"
region = "eu-west"
latitude = 50.11
longitude = 8.68
[gateway]
address = "{quic_addr}"
fingerprint = "{fingerprint}"
token = "{TOKEN}"
[[chains]]
chain_id = {CHAIN_ID}
upstreams = ["{}"]
head_poll_ms = 200
"#,
            anvil.url
        ),
    )
    .unwrap();
    let node_log = dir.path().join("node.log");
    let mut node = tokio::process::Command::new(edge_node_bin())
        .arg("--config")
        .arg(&node_cfg)
        .env("RUST_LOG", "info,edge_node::link=debug")
        .env("LOG_FORMAT", "json")
        .stderr(std::fs::File::create(&node_log).unwrap())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning the edge-node binary");
    let http = Http::default();
    let url = format!("http://{http_addr}/");
    let mut ready = false;
    for _ in 0..200 {
        if http.get(&format!("{url}readyz")).await.status == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        ready,
        "node did not become ready:\n{}",
        std::fs::read_to_string(&node_log).unwrap_or_default()
    );

    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "eth_getBalance", "params": [MARKER, "latest"]})
        .to_string();
    let req = http::Request::post(&url)
        .header("content-type", "application/json")
        .header("x-forwarded-for", LONDON)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = http.client.request(req).await.unwrap();
    let rid = resp
        .headers()
        .get("x-request-id")
        .expect("x-request-id")
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await;

    // The node logged the request inside a span carrying the gateway's request id.
    let answered = wait_log_line(&node_log, "request answered").await;
    assert_eq!(answered["span"]["name"], "request", "{answered}");
    assert_eq!(answered["span"]["id"], rid.as_str(), "{answered}");
    println!("edge node log line for request {rid}: {answered}");

    let _ = gw.kill().await;
    let _ = node.kill().await;
    for (who, path) in [("gateway", &gw_log), ("edge node", &node_log)] {
        let text = std::fs::read_to_string(path).unwrap().to_ascii_lowercase();
        assert!(!text.is_empty(), "{who} logged nothing");
        assert!(
            !text.contains(&MARKER[2..]),
            "{who} logged request params:\n{text}"
        );
        assert!(
            !text.contains(LONDON),
            "{who} logged the caller's address:\n{text}"
        );
    }
}
