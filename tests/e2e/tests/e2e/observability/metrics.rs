//! The `/metrics` expositions of a running stack: they parse, follow our naming rules and pass
//! promtool; per-node series and `/status.json` follow nodes as they leave.

use std::collections::BTreeSet;
use std::time::Duration;

use e2e::CHAIN_ID;

use super::{expo, tools, Stack};

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
