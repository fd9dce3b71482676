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
    // The demo has one gateway and three nodes, plus one example of each.
    assert!(
        gateways >= 2 && nodes >= 4,
        "found {gateways} gateway and {nodes} node configs"
    );
}
