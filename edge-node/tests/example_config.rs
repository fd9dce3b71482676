//! Holds `config/edge-node.example.toml` to the code: it loads with the real loader, it names
//! every key the config structs accept, and every key it sets that has a default is set to
//! that default.

use std::path::Path;

use edge_node::config::{
    CacheConfig, Config, DEFAULT_CACHE_MAX_BYTES, DEFAULT_FINALITY_DEPTH, DEFAULT_HEAD_POLL,
    DEFAULT_LOGS_CHUNK_BLOCKS, DEFAULT_LOGS_MAX_RANGE, DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_IN_FLIGHT, DEFAULT_UPSTREAM_TIMEOUT,
};

#[path = "../../tests/support/example_keys.rs"]
mod example_keys;

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../config/edge-node.example.toml"
);

/// Keys whose value in the example is an example, not a default: required keys are found by
/// the walk itself; these are the optional keys without a default that the example sets.
const EXAMPLE_VALUES: &[&str] = &["admin_listen", "gateways[0].name"];

fn example_root() -> toml::Value {
    let text = std::fs::read_to_string(EXAMPLE).expect("reading the example");
    toml::from_str(&text).expect("the example is TOML")
}

#[test]
fn example_loads_with_the_real_loader() {
    let cfg = Config::load(Path::new(EXAMPLE)).expect("the example must load");
    // Relative paths are resolved against the config file's folder.
    assert!(cfg.key_file.ends_with("config/node.key"));
}

#[test]
fn example_names_every_key_the_code_accepts() {
    let root = example_root();
    let (paths, missing) = example_keys::missing_keys::<Config>(&root);
    assert!(
        missing.is_empty(),
        "keys missing from the example: {missing:?}"
    );
    // The walk must have seen every section, or a missing one would go unnoticed.
    for section in ["gateways[0]", "cache", "chains[0]"] {
        assert!(paths.iter().any(|p| p == section), "no [{section}] walked");
    }
}

/// Generic: dropping any key the example sets must leave the config unchanged (its default
/// is what the example says), unless the key is required or listed in `EXAMPLE_VALUES`.
/// (`GatewayLink`'s `Debug` hides `max_frame_bytes`; the test below checks it.)
#[test]
fn every_key_with_a_default_is_set_to_it() {
    let root = example_root();
    let differ = example_keys::keys_off_their_defaults::<Config>(&root, EXAMPLE_VALUES);
    assert!(
        differ.is_empty(),
        "not at their defaults (or listed as examples but at a default / required): {differ:?}"
    );
}

#[test]
fn example_values_equal_the_code_defaults() {
    let cfg = Config::load(Path::new(EXAMPLE)).unwrap();

    assert_eq!(cfg.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
    // `#[serde(default)]` on a usize: no constant, the default is 0 (one thread per core).
    assert_eq!(cfg.worker_threads, 0);

    assert_eq!(cfg.gateways[0].max_frame_bytes, DEFAULT_MAX_FRAME_BYTES);

    assert_eq!(cfg.cache.max_bytes, DEFAULT_CACHE_MAX_BYTES);
    assert_eq!(cfg.cache.max_bytes, CacheConfig::default().max_bytes);

    assert_eq!(cfg.chains.len(), 1);
    let c = &cfg.chains[0];
    assert_eq!(c.upstream_timeout, DEFAULT_UPSTREAM_TIMEOUT);
    assert_eq!(c.head_poll, DEFAULT_HEAD_POLL);
    assert_eq!(c.finality_depth, DEFAULT_FINALITY_DEPTH);
    assert_eq!(c.logs_max_range, DEFAULT_LOGS_MAX_RANGE);
    assert_eq!(c.logs_chunk_blocks, DEFAULT_LOGS_CHUNK_BLOCKS);
    // `#[serde(default)]` on a bool: no constant, the default is false.
    assert!(!c.verify_state);
}
