//! `[[chains]]` (what is served, and at which path), `[methods]` and the per-chain method
//! lists, `[[residency]]` rules, and `[cache]` (the gateway tier's bounds).

use std::collections::HashSet;

use serde::Deserialize;

use super::{invalid, Check};

pub const DEFAULT_GATEWAY_CACHE_BYTES: u64 = 64 * 1024 * 1024;
pub const DEFAULT_TIP_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Methods that administer a node; refused unless `methods.deny` is set otherwise.
pub const DEFAULT_DENY: &[&str] = &[
    "anvil_*",
    "hardhat_*",
    "evm_*",
    "admin_*",
    "debug_setHead",
    "personal_*",
    "miner_*",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodsConfig {
    /// Refused methods; `prefix_*` matches a prefix.
    #[serde(default = "d_deny")]
    pub deny: Vec<String>,
}

impl Default for MethodsConfig {
    fn default() -> Self {
        Self { deny: d_deny() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// URL path segment, e.g. `mainnet` for `POST /mainnet`.
    pub name: String,
    pub chain_id: u64,
    /// When set, only these methods are served for this chain (`prefix_*` allowed).
    #[serde(default)]
    pub methods_allow: Option<Vec<String>>,
    /// Refused for this chain, on top of `methods.deny`.
    #[serde(default)]
    pub methods_deny: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResidencyRule {
    /// Human name for logs and errors, e.g. `eu`.
    pub name: String,
    /// Caller countries (ISO 3166-1 alpha-2) this rule binds.
    #[serde(default)]
    pub countries: Vec<String>,
    /// Caller continents (`EU`, `NA`, ...) this rule binds.
    #[serde(default)]
    pub continents: Vec<String>,
    /// Node regions allowed to serve those callers.
    pub regions: Vec<String>,
}

/// The gateway tier of the cache: final answers (finalized blocks, static facts) only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Bound on keys + values in bytes; 0 turns the gateway tier off.
    #[serde(default = "d_gw_cache")]
    pub max_bytes: u64,
    /// Bound for answers about the chain tip (`latest` reads, the block number), repeated
    /// only while the node that gave them announces no newer chain state; 0 turns it off.
    #[serde(default = "d_tip_cache")]
    pub tip_max_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_GATEWAY_CACHE_BYTES,
            tip_max_bytes: DEFAULT_TIP_CACHE_BYTES,
        }
    }
}

fn d_deny() -> Vec<String> {
    DEFAULT_DENY.iter().map(|s| s.to_string()).collect()
}
fn d_gw_cache() -> u64 {
    DEFAULT_GATEWAY_CACHE_BYTES
}
fn d_tip_cache() -> u64 {
    DEFAULT_TIP_CACHE_BYTES
}

/// A chain name is a URL path segment that cannot be mistaken for a chain id.
fn is_path_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.bytes().all(|b| b.is_ascii_digit())
}

pub(super) fn check_chains(chains: &[ChainConfig]) -> Check {
    if chains.is_empty() {
        return Err(invalid(
            "chains",
            "at least one [[chains]] entry is required",
        ));
    }
    let mut names = HashSet::new();
    let mut ids = HashSet::new();
    for (i, c) in chains.iter().enumerate() {
        if !is_path_name(&c.name) {
            return Err(invalid(
                format!("chains[{i}].name"),
                format!(
                    "{:?} must be letters, digits, '-' or '_' (and not all digits)",
                    c.name
                ),
            ));
        }
        // `/v1/{key}` is the default chain with a key in the URL.
        if c.name == "v1" {
            return Err(invalid(
                format!("chains[{i}].name"),
                "\"v1\" is reserved (`POST /v1/{key}` is the default chain with an API key)",
            ));
        }
        if !names.insert(c.name.as_str()) {
            return Err(invalid(format!("chains[{i}].name"), "is listed twice"));
        }
        if !ids.insert(c.chain_id) {
            return Err(invalid(format!("chains[{i}].chain_id"), "is listed twice"));
        }
    }
    Ok(())
}

pub(super) fn check_residency(rules: &[ResidencyRule]) -> Check {
    for (i, rule) in rules.iter().enumerate() {
        if rule.regions.is_empty() {
            return Err(invalid(
                format!("residency[{i}].regions"),
                "needs at least one region",
            ));
        }
        if rule.countries.is_empty() && rule.continents.is_empty() {
            return Err(invalid(
                format!("residency[{i}]"),
                "needs `countries` or `continents`",
            ));
        }
    }
    Ok(())
}

/// `methods.deny` and every chain's `methods_deny`/`methods_allow`: only a trailing `*`.
pub(super) fn check_method_lists(methods: &MethodsConfig, chains: &[ChainConfig]) -> Check {
    let mut lists = vec![("methods.deny".to_string(), &methods.deny)];
    for (i, c) in chains.iter().enumerate() {
        lists.push((format!("chains[{i}].methods_deny"), &c.methods_deny));
        if let Some(allow) = &c.methods_allow {
            lists.push((format!("chains[{i}].methods_allow"), allow));
        }
    }
    for (key, list) in lists {
        for (j, m) in list.iter().enumerate() {
            if m.is_empty() || m[..m.len() - 1].contains('*') {
                return Err(invalid(
                    format!("{key}[{j}]"),
                    format!("{m:?}: only a trailing '*' is allowed"),
                ));
            }
        }
    }
    Ok(())
}
