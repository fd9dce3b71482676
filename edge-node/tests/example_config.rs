//! Holds `config/edge-node.example.toml` to the code: it loads with the real loader, it names
//! every key the config structs accept, and every key it sets that has a default is set to
//! that default.

use std::path::Path;

use edge_node::config::{
    CacheConfig, Config, DEFAULT_CACHE_MAX_BYTES, DEFAULT_FINALITY_DEPTH, DEFAULT_HEAD_POLL_MS,
    DEFAULT_LOGS_CHUNK_BLOCKS, DEFAULT_LOGS_MAX_RANGE, DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_IN_FLIGHT, DEFAULT_UPSTREAM_TIMEOUT_MS,
};

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../config/edge-node.example.toml"
);

/// Keys whose value in the example is an example, not a default: required keys are found by
/// the walk itself; these are the optional keys without a default that the example sets.
const EXAMPLE_VALUES: &[&str] = &["admin_listen"];

fn example_root() -> toml::Value {
    let text = std::fs::read_to_string(EXAMPLE).expect("reading the example");
    toml::from_str(&text).expect("the example is TOML")
}

fn deserialize(v: &toml::Value) -> Result<Config, String> {
    v.clone().try_into::<Config>().map_err(|e| e.to_string())
}

/// Every table in `v` (the root, nested tables, each entry of an array of tables), by path.
fn tables(v: &toml::Value, path: &str, out: &mut Vec<String>) {
    out.push(path.to_string());
    let toml::Value::Table(t) = v else { return };
    for (k, child) in t {
        let p = join(path, k);
        match child {
            toml::Value::Table(_) => tables(child, &p, out),
            toml::Value::Array(items) if items.iter().all(toml::Value::is_table) => {
                for (i, item) in items.iter().enumerate() {
                    tables(item, &format!("{p}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
}

/// Every key whose value is not a table or an array of tables, by path.
fn leaves(v: &toml::Value, path: &str, out: &mut Vec<String>) {
    let toml::Value::Table(t) = v else { return };
    for (k, child) in t {
        let p = join(path, k);
        match child {
            toml::Value::Table(_) => leaves(child, &p, out),
            toml::Value::Array(items)
                if !items.is_empty() && items.iter().all(toml::Value::is_table) =>
            {
                for (i, item) in items.iter().enumerate() {
                    leaves(item, &format!("{p}[{i}]"), out);
                }
            }
            _ => out.push(p),
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The table at `path` (segments `a`, `a[0]`), created when missing.
fn table_at<'a>(root: &'a mut toml::Value, path: &str) -> &'a mut toml::Table {
    let mut v = root;
    for seg in path.split('.').filter(|s| !s.is_empty()) {
        let (key, index) = match seg.split_once('[') {
            Some((k, i)) => (k, Some(i.trim_end_matches(']').parse::<usize>().unwrap())),
            None => (seg, None),
        };
        let t = v.as_table_mut().unwrap();
        v = t
            .entry(key)
            .or_insert_with(|| toml::Value::Table(Default::default()));
        if let Some(i) = index {
            v = &mut v.as_array_mut().unwrap()[i];
        }
    }
    v.as_table_mut().unwrap()
}

/// The fields serde expects at `path`, read from its unknown-field error (every config struct
/// is `deny_unknown_fields`): so a key added to the code and not to the example is found.
fn expected_fields(root: &toml::Value, path: &str) -> Vec<String> {
    let mut probe = root.clone();
    table_at(&mut probe, path).insert("__probe__".into(), toml::Value::Integer(0));
    let err = deserialize(&probe).expect_err("an unknown key must be refused");
    let list = err
        .split("unknown field `__probe__`, expected ")
        .nth(1)
        .unwrap_or_else(|| panic!("{path}: no field list in {err}"));
    let list = list.lines().next().unwrap();
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn remove(root: &mut toml::Value, path: &str) {
    let (parent, key) = path.rsplit_once('.').unwrap_or(("", path));
    table_at(root, parent).remove(key);
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
    let mut paths = Vec::new();
    tables(&root, "", &mut paths);
    let mut missing = Vec::new();
    for path in &paths {
        let mut at = root.clone();
        let table = table_at(&mut at, path).clone();
        for field in expected_fields(&root, path) {
            if !table.contains_key(&field) {
                missing.push(join(path, &field));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keys missing from the example: {missing:?}"
    );
    // The walk must have seen every section, or a missing one would go unnoticed.
    for section in ["gateway", "cache", "chains[0]"] {
        assert!(paths.iter().any(|p| p == section), "no [{section}] walked");
    }
}

/// Generic: dropping any key the example sets must leave the config unchanged (its default
/// is what the example says), unless the key is required or listed in `EXAMPLE_VALUES`.
/// (`GatewayLink`'s `Debug` hides `max_frame_bytes`; the test below checks it.)
#[test]
fn every_key_with_a_default_is_set_to_it() {
    let root = example_root();
    let whole = format!("{:?}", deserialize(&root).unwrap());
    let mut keys = Vec::new();
    leaves(&root, "", &mut keys);
    let mut differ = Vec::new();
    for key in &keys {
        let mut without = root.clone();
        remove(&mut without, key);
        let Ok(cfg) = deserialize(&without) else {
            continue; // required
        };
        let is_example = EXAMPLE_VALUES.contains(&key.as_str());
        if (format!("{cfg:?}") != whole) != is_example {
            differ.push(key.clone());
        }
    }
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

    assert_eq!(cfg.gateway.max_frame_bytes, DEFAULT_MAX_FRAME_BYTES);

    assert_eq!(cfg.cache.max_bytes, DEFAULT_CACHE_MAX_BYTES);
    assert_eq!(cfg.cache.max_bytes, CacheConfig::default().max_bytes);

    assert_eq!(cfg.chains.len(), 1);
    let c = &cfg.chains[0];
    assert_eq!(c.upstream_timeout_ms, DEFAULT_UPSTREAM_TIMEOUT_MS);
    assert_eq!(c.head_poll_ms, DEFAULT_HEAD_POLL_MS);
    assert_eq!(c.finality_depth, DEFAULT_FINALITY_DEPTH);
    assert_eq!(c.logs_max_range, DEFAULT_LOGS_MAX_RANGE);
    assert_eq!(c.logs_chunk_blocks, DEFAULT_LOGS_CHUNK_BLOCKS);
    // `#[serde(default)]` on a bool: no constant, the default is false.
    assert!(!c.verify_state);
}
