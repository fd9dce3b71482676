//! Walks an example config (`config/*.example.toml`) against the config type it is for, so
//! the gateway and the edge node hold their examples to the code the same way. Included by
//! both crates' `tests/example_config.rs` (`#[path]`): one copy.

use std::fmt::Debug;

use serde::de::DeserializeOwned;

fn deserialize<C: DeserializeOwned>(v: &toml::Value) -> Result<C, String> {
    v.clone().try_into::<C>().map_err(|e| e.to_string())
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
/// Empty for a table that takes any key (a map by name, such as the gateway's `[timeouts]`).
fn expected_fields<C: DeserializeOwned>(root: &toml::Value, path: &str) -> Vec<String> {
    let mut probe = root.clone();
    table_at(&mut probe, path).insert("__probe__".into(), toml::Value::Integer(1));
    let Err(err) = deserialize::<C>(&probe) else {
        return Vec::new();
    };
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

/// The tables of `root` the walk saw, and the keys `C` accepts that `root` does not name.
pub fn missing_keys<C: DeserializeOwned>(root: &toml::Value) -> (Vec<String>, Vec<String>) {
    let mut paths = Vec::new();
    tables(root, "", &mut paths);
    let mut missing = Vec::new();
    for path in &paths {
        let mut at = root.clone();
        let table = table_at(&mut at, path).clone();
        for field in expected_fields::<C>(root, path) {
            if !table.contains_key(&field) {
                missing.push(join(path, &field));
            }
        }
    }
    (paths, missing)
}

/// Keys whose removal changes the config (so the example does not set them to their default),
/// or, for those in `example_values`, does not change it. Required keys are skipped.
pub fn keys_off_their_defaults<C: DeserializeOwned + Debug>(
    root: &toml::Value,
    example_values: &[&str],
) -> Vec<String> {
    let whole = format!("{:?}", deserialize::<C>(root).unwrap());
    let mut keys = Vec::new();
    leaves(root, "", &mut keys);
    let mut differ = Vec::new();
    for key in &keys {
        let mut without = root.clone();
        remove(&mut without, key);
        let Ok(cfg) = deserialize::<C>(&without) else {
            continue; // required
        };
        let is_example = example_values.contains(&key.as_str());
        if (format!("{cfg:?}") != whole) != is_example {
            differ.push(key.clone());
        }
    }
    differ
}
