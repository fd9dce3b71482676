//! The dashboards and alert rules against a running stack: every metric they use is exported,
//! and a real Prometheus scraping the stack answers their queries.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{expo, promql, tools, traffic, Stack};

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
