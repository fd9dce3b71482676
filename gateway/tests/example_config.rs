//! Holds `config/gateway.example.toml` to the code: it loads with the real loader, it names
//! every key the config structs accept (the commented-out optional ones included), and every
//! key it sets that has a default is set to that default.

use std::path::Path;

use gateway::config::{
    CacheConfig, Config, GeoConfig, HealthConfig, HedgeConfig, MethodsConfig, RoutingConfig,
    RoutingMode, DEFAULT_BODY_TIMEOUT, DEFAULT_BREAKER_ERROR_RATE, DEFAULT_BREAKER_MIN_REQUESTS,
    DEFAULT_COMPRESS_MIN_BYTES, DEFAULT_DENY, DEFAULT_ERROR_PENALTY_MS, DEFAULT_FAIL_AFTER,
    DEFAULT_GATEWAY_CACHE_BYTES, DEFAULT_GEO_CACHE_ENTRIES, DEFAULT_GEO_RELOAD_INTERVAL,
    DEFAULT_HEADER_TIMEOUT, DEFAULT_HEDGE_MAX_DELAY, DEFAULT_HEDGE_MAX_SHARE,
    DEFAULT_HEDGE_MIN_DELAY, DEFAULT_HEDGE_QUANTILE, DEFAULT_IDLE_TIMEOUT, DEFAULT_KM_PER_MS,
    DEFAULT_LOAD_PENALTY_MS, DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_HEAD_AGE,
    DEFAULT_MAX_LAG_BLOCKS, DEFAULT_MAX_NODES, DEFAULT_RECOVER_AFTER, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SPREAD_MS, DEFAULT_STATUS_DEADLINE, DEFAULT_STATUS_INTERVAL, DEFAULT_TIP_CACHE_BYTES,
};
use gateway::geo::HeaderPolicy;

#[path = "../../tests/support/example_keys.rs"]
mod example_keys;

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../config/gateway.example.toml"
);

/// Keys whose value in the example is an example, not a default: required keys are found by
/// the walk itself; these are the optional keys without a default that the example sets.
const EXAMPLE_VALUES: &[&str] = &["default_chain", "server.admin_listen"];

fn example_text() -> String {
    std::fs::read_to_string(EXAMPLE).expect("reading the example")
}

/// The example with its commented-out optional settings (`#key = ...`, `#[[table]]`: a `#`
/// directly followed by a key or a header) switched on. Prose comments are `# ...`.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '[') => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn example_loads_with_the_real_loader() {
    let cfg = Config::load(Path::new(EXAMPLE)).expect("the example must load");
    // Relative paths are resolved against the config file's folder.
    assert!(cfg.quic.key_file.ends_with("config/gateway.key"));
    assert_eq!(cfg.default_chain().name, "mainnet");
}

#[test]
fn example_names_every_key_the_code_accepts() {
    let full = uncommented(&example_text());
    Config::parse(&full, "uncommented example").expect("the commented-out settings must be valid");
    let root: toml::Value = toml::from_str(&full).unwrap();
    let (paths, missing) = example_keys::missing_keys::<Config>(&root);
    assert!(
        missing.is_empty(),
        "keys missing from the example: {missing:?}"
    );
    // The walk must have seen every section, or a missing one would go unnoticed.
    for section in [
        "server", "quic", "methods", "geo", "cache", "routing", "health", "tenants", "hedge",
        "timeouts",
    ] {
        assert!(paths.iter().any(|p| p == section), "no [{section}] walked");
    }
    assert!(paths.iter().any(|p| p == "chains[0]") && paths.iter().any(|p| p == "residency[0]"));
}

/// Generic: dropping any key the example sets must leave the config unchanged (its default
/// is what the example says), unless the key is required or listed in `EXAMPLE_VALUES`.
/// (`QuicConfig`'s `Debug` hides `max_frame_bytes` and `max_nodes`; the test below checks them.)
#[test]
fn every_key_with_a_default_is_set_to_it() {
    let root: toml::Value = toml::from_str(&example_text()).unwrap();
    let differ = example_keys::keys_off_their_defaults::<Config>(&root, EXAMPLE_VALUES);
    assert!(
        differ.is_empty(),
        "not at their defaults (or listed as examples but at a default / required): {differ:?}"
    );
}

#[test]
fn example_values_equal_the_code_defaults() {
    let cfg = Config::load(Path::new(EXAMPLE)).unwrap();

    let s = &cfg.server;
    assert_eq!(s.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    assert_eq!(s.max_batch, DEFAULT_MAX_BATCH);
    assert_eq!(s.request_timeout, DEFAULT_REQUEST_TIMEOUT);
    assert_eq!(s.max_connections, DEFAULT_MAX_CONNECTIONS);
    assert_eq!(s.max_connections_per_ip, DEFAULT_MAX_CONNECTIONS_PER_IP);
    assert_eq!(s.header_timeout, DEFAULT_HEADER_TIMEOUT);
    assert_eq!(s.idle_timeout, DEFAULT_IDLE_TIMEOUT);
    assert_eq!(s.body_timeout, DEFAULT_BODY_TIMEOUT);
    assert_eq!(s.compress_min_bytes, DEFAULT_COMPRESS_MIN_BYTES);
    // `#[serde(default)]` on a usize: no constant, the default is 0 (one thread per core).
    assert_eq!(s.worker_threads, 0);

    let q = &cfg.quic;
    assert_eq!(q.status_interval, DEFAULT_STATUS_INTERVAL);
    assert_eq!(q.status_deadline, DEFAULT_STATUS_DEADLINE);
    assert_eq!(q.max_frame_bytes, DEFAULT_MAX_FRAME_BYTES);
    assert_eq!(q.max_nodes, DEFAULT_MAX_NODES);

    assert_eq!(cfg.methods.deny, DEFAULT_DENY);
    assert_eq!(cfg.methods.deny, MethodsConfig::default().deny);

    let (g, gd) = (&cfg.geo, GeoConfig::default());
    assert_eq!(g.databases, gd.databases);
    assert_eq!(g.trusted_proxies, gd.trusted_proxies);
    assert_eq!(g.client_ip_header, HeaderPolicy::default());
    assert_eq!(g.client_ip_header, gd.client_ip_header);
    assert!(g.default_location.is_none() && gd.default_location.is_none());
    assert_eq!(g.gateway_location, gd.gateway_location);
    assert_eq!(g.cache_entries, DEFAULT_GEO_CACHE_ENTRIES);
    assert_eq!(g.cache_entries, gd.cache_entries);
    assert_eq!(g.reload_interval, DEFAULT_GEO_RELOAD_INTERVAL);
    assert_eq!(g.reload_interval, gd.reload_interval);

    let (c, cd) = (&cfg.cache, CacheConfig::default());
    assert_eq!(c.max_bytes, DEFAULT_GATEWAY_CACHE_BYTES);
    assert_eq!(c.max_bytes, cd.max_bytes);
    assert_eq!(c.tip_max_bytes, DEFAULT_TIP_CACHE_BYTES);
    assert_eq!(c.tip_max_bytes, cd.tip_max_bytes);

    let (r, rd) = (&cfg.routing, RoutingConfig::default());
    assert_eq!(r.mode, RoutingMode::Geo);
    assert_eq!(r.mode, rd.mode);
    assert_eq!(r.km_per_ms, DEFAULT_KM_PER_MS);
    assert_eq!(r.km_per_ms, rd.km_per_ms);
    // The serde default is the private `d_one()`; `RoutingConfig::default()` says 1.0 too.
    assert_eq!(r.rtt_weight, 1.0);
    assert_eq!(r.rtt_weight, rd.rtt_weight);
    assert_eq!(r.load_penalty_ms, DEFAULT_LOAD_PENALTY_MS);
    assert_eq!(r.load_penalty_ms, rd.load_penalty_ms);
    assert_eq!(r.error_penalty_ms, DEFAULT_ERROR_PENALTY_MS);
    assert_eq!(r.error_penalty_ms, rd.error_penalty_ms);
    assert_eq!(r.spread_ms, DEFAULT_SPREAD_MS);
    assert_eq!(r.spread_ms, rd.spread_ms);

    let (h, hd) = (&cfg.health, HealthConfig::default());
    assert_eq!(h.max_lag_blocks, DEFAULT_MAX_LAG_BLOCKS);
    assert_eq!(h.max_lag_blocks, hd.max_lag_blocks);
    assert_eq!(h.max_head_age, DEFAULT_MAX_HEAD_AGE);
    assert_eq!(h.max_head_age, hd.max_head_age);
    assert_eq!(h.fail_after, DEFAULT_FAIL_AFTER);
    assert_eq!(h.fail_after, hd.fail_after);
    assert_eq!(h.recover_after, DEFAULT_RECOVER_AFTER);
    assert_eq!(h.recover_after, hd.recover_after);
    assert_eq!(h.breaker_error_rate, DEFAULT_BREAKER_ERROR_RATE);
    assert_eq!(h.breaker_error_rate, hd.breaker_error_rate);
    assert_eq!(h.breaker_min_requests, DEFAULT_BREAKER_MIN_REQUESTS);
    assert_eq!(h.breaker_min_requests, hd.breaker_min_requests);

    let (h, hd) = (&cfg.hedge, HedgeConfig::default());
    assert!(h.enabled && hd.enabled);
    assert_eq!(h.quantile, DEFAULT_HEDGE_QUANTILE);
    assert_eq!(h.min_delay, DEFAULT_HEDGE_MIN_DELAY);
    assert_eq!(h.max_delay, DEFAULT_HEDGE_MAX_DELAY);
    assert_eq!(h.max_share, DEFAULT_HEDGE_MAX_SHARE);
    assert_eq!(
        (h.quantile, h.min_delay, h.max_delay, h.max_share),
        (hd.quantile, hd.min_delay, hd.max_delay, hd.max_share)
    );
    // No per-method timeouts by default: the example's are commented out.
    assert!(cfg.timeouts.0.is_empty());

    // No residency rules by default: the example's rule is commented out.
    assert!(cfg.residency.is_empty());

    assert_eq!(cfg.chains.len(), 1);
    let chain = &cfg.chains[0];
    // Per-chain lists: `methods_allow` has no default (None = everything not denied) and
    // `methods_deny` defaults to empty, both by `#[serde(default)]`.
    assert!(chain.methods_allow.is_none());
    assert!(chain.methods_deny.is_empty());
}

const TENANTS_EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../config/tenants.example.toml"
);

/// The tenants file's example: with its commented-out settings on it passes the same checks a
/// reload makes (against the gateway example's chains), names every key the file accepts, and
/// sets every key that has a default to it.
#[test]
fn tenants_example_names_every_key_and_passes_the_checks() {
    use gateway::tenants::file::{Context, TenantsFile};
    let text = std::fs::read_to_string(TENANTS_EXAMPLE).unwrap();
    let full = uncommented(&text);
    let gw = Config::load(Path::new(EXAMPLE)).unwrap();
    let chains: Vec<(String, u64)> = gw
        .chains
        .iter()
        .map(|c| (c.name.clone(), c.chain_id))
        .collect();
    let cx = Context {
        chains: &chains,
        max_batch: gw.server.max_batch,
    };
    for t in [&text, &full] {
        let f: TenantsFile = toml::from_str(t).expect("the tenants example parses");
        if let Err(e) = f.check(&cx) {
            panic!("{}: {}", e.key, e.problem);
        }
    }
    // `[compute_units.methods]` is a map of method names (any key is one): not walked.
    let without_map = |mut v: toml::Value| {
        let cu = v["compute_units"].as_table_mut().unwrap();
        assert!(
            cu.remove("methods").is_some(),
            "[compute_units.methods] shown"
        );
        v
    };
    let root = without_map(toml::from_str(&full).unwrap());
    let (paths, missing) = example_keys::missing_keys::<TenantsFile>(&root);
    assert_eq!(
        missing,
        ["compute_units.methods"],
        "keys missing from the tenants example (besides the map taken out above)"
    );
    for section in ["keyless", "compute_units", "tenants[0]"] {
        assert!(paths.iter().any(|p| p == section), "no [{section}] walked");
    }
    let root = without_map(toml::from_str(&text).unwrap());
    let differ = example_keys::keys_off_their_defaults::<TenantsFile>(&root, &[]);
    assert!(differ.is_empty(), "not at their defaults: {differ:?}");
}
