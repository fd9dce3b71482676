//! Every shipped config file loads and validates.

use e2e::repo_root;

#[test]
fn shipped_configs_load() {
    let dir = repo_root().join("config");
    let mut gateways = 0;
    let mut nodes = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("gateway") {
            gateway::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            gateways += 1;
        } else if name.starts_with("edge") {
            edge_node::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            nodes += 1;
        }
    }
    // Each tenants file loads the way a gateway loads it: the demo's against the demo config.
    let demo = dir.join("gateway.toml");
    let mut cfg = gateway::config::Config::load(&demo).unwrap();
    for file in ["tenants.toml", "tenants.example.toml"] {
        cfg.tenants.file = Some(dir.join(file));
        cfg.tenants.redis_url = None;
        let metrics = std::sync::Arc::new(gateway::ops::metrics::Metrics::new());
        let t = gateway::tenants::Tenancy::load(&cfg, metrics).unwrap_or_else(|e| panic!("{e}"));
        if file == "tenants.toml" {
            // The README's demo key is the demo tenant's, at 50 requests per second.
            let set = t.current();
            let demo = t
                .identify(&set, Some("demo-key-change-me"), &Default::default())
                .unwrap()
                .expect("the demo key names a tenant");
            assert_eq!(
                (demo.name.as_str(), demo.budget.requests.rate()),
                ("demo", 50)
            );
            assert!(
                set.keyless_serve && set.keyless_rps == 0,
                "keyless callers stay served"
            );
        }
    }
    // The demo has one gateway and three nodes, plus one example of each.
    assert!(
        gateways >= 2 && nodes >= 4,
        "found {gateways} gateway and {nodes} node configs"
    );
}
