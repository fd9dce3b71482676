//! The shipped dashboards and alert rules, read as files: promtool checks the rules and the
//! scrape config and runs the alert unit tests, and the dashboards are linted. No stack runs.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::{promql, tools};

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
        "MeridianTenantAtLimit",
        "MeridianRedisUnreachable",
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
