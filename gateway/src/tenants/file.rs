//! The tenants file: TOML, unknown keys rejected, checked as a whole before it replaces the
//! set in use (errors name the key, as the gateway config's do).

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

use crate::front::jsonrpc;

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantsFile {
    #[serde(default)]
    pub keyless: KeylessSpec,
    #[serde(default)]
    pub compute_units: ComputeUnitsSpec,
    #[serde(default)]
    pub tenants: Vec<TenantSpec>,
}

/// Callers without a key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeylessSpec {
    /// Served at all (else 401 without a key).
    #[serde(default = "yes")]
    pub serve: bool,
    /// Per caller address, on each gateway; 0: no limit.
    #[serde(default)]
    pub requests_per_second: u32,
}

impl Default for KeylessSpec {
    fn default() -> Self {
        Self {
            serve: true,
            requests_per_second: 0,
        }
    }
}

fn yes() -> bool {
    true
}

/// Method weights for `compute_units_per_second`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeUnitsSpec {
    /// Weight of a method named neither here nor in [`BUILTIN_CU`].
    #[serde(default = "d_cu")]
    pub default: u32,
    /// Per method; merged over the built-in table [`BUILTIN_CU`].
    #[serde(default)]
    pub methods: HashMap<String, u32>,
}

impl Default for ComputeUnitsSpec {
    fn default() -> Self {
        Self {
            default: DEFAULT_CU,
            methods: HashMap::new(),
        }
    }
}

fn d_cu() -> u32 {
    DEFAULT_CU
}

/// A method's weight when neither the file nor [`BUILTIN_CU`] names it.
pub const DEFAULT_CU: u32 = 10;

/// Built-in weights, roughly what the call costs a full node: reads of a value it holds in
/// memory are 1, executing code 20, scanning logs 75.
pub const BUILTIN_CU: &[(&str, u32)] = &[
    ("eth_chainId", 1),
    ("net_version", 1),
    ("eth_blockNumber", 1),
    ("eth_syncing", 1),
    ("web3_clientVersion", 1),
    ("eth_gasPrice", 2),
    ("eth_maxPriorityFeePerGas", 2),
    ("eth_getBalance", 5),
    ("eth_getTransactionCount", 5),
    ("eth_getCode", 5),
    ("eth_getStorageAt", 5),
    ("eth_getBlockByNumber", 8),
    ("eth_getBlockByHash", 8),
    ("eth_getTransactionByHash", 5),
    ("eth_getTransactionReceipt", 8),
    ("eth_feeHistory", 10),
    ("eth_call", 20),
    ("eth_estimateGas", 20),
    ("eth_sendRawTransaction", 25),
    ("eth_getProof", 30),
    ("eth_getBlockReceipts", 50),
    ("eth_getLogs", 75),
];

/// One tenant as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    pub name: String,
    /// SHA-256 of each key, 64 hex digits (`gateway --hash-key KEY` prints it).
    pub key_sha256: Vec<String>,
    /// Chains by name or id; absent: all.
    #[serde(default)]
    pub chains: Option<Vec<String>>,
    #[serde(default)]
    pub methods_allow: Option<Vec<String>>,
    #[serde(default)]
    pub methods_deny: Vec<String>,
    /// Browser origins (`scheme://host[:port]`, or `*`); absent: any.
    #[serde(default)]
    pub origins: Option<Vec<String>>,
    #[serde(default)]
    pub requests_per_second: u32,
    #[serde(default)]
    pub compute_units_per_second: u32,
    /// Calls per UTC day; 0: none.
    #[serde(default)]
    pub daily_quota: u64,
    /// 0: the gateway's `server.max_batch`.
    #[serde(default)]
    pub max_batch: usize,
    /// `eth_subscribe`s open at once on each gateway, over all the tenant's sockets; 0: no
    /// limit beyond `websocket.max_subscriptions_per_connection`.
    #[serde(default)]
    pub max_subscriptions: usize,
}

/// A failed check: the key and what is wrong.
pub struct Invalid {
    pub key: String,
    pub problem: String,
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Invalid {
    Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

/// What the file is checked against: the gateway's chains (name, id) and batch limit.
pub struct Context<'a> {
    pub chains: &'a [(String, u64)],
    pub max_batch: usize,
}

impl TenantsFile {
    /// Every tenant's checks, then the names and keys across tenants; the first failure.
    pub fn check(&self, cx: &Context<'_>) -> Result<(), Invalid> {
        let mut names = HashSet::new();
        let mut keys = HashSet::new();
        for (i, t) in self.tenants.iter().enumerate() {
            t.check(&format!("tenants[{i}]"), cx)?;
            if !names.insert(t.name.as_str()) {
                return Err(invalid(
                    format!("tenants[{i}].name"),
                    format!("{:?} is listed twice", t.name),
                ));
            }
            for (j, k) in t.key_sha256.iter().enumerate() {
                if !keys.insert(k.to_ascii_lowercase()) {
                    return Err(invalid(
                        format!("tenants[{i}].key_sha256[{j}]"),
                        "the same key is listed twice",
                    ));
                }
            }
        }
        Ok(())
    }
}

impl TenantSpec {
    /// This tenant's own checks; `at` is its key (`tenants[i]`).
    fn check(&self, at: &str, cx: &Context<'_>) -> Result<(), Invalid> {
        let key = |k: &str| format!("{at}.{k}");
        let name_ok = (1..=64).contains(&self.name.len())
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(invalid(
                key("name"),
                format!("{:?} must be 1 to 64 of a-z, 0-9, '-', '_'", self.name),
            ));
        }
        if self.name == super::KEYLESS {
            return Err(invalid(
                key("name"),
                "\"keyless\" is reserved for callers without a key",
            ));
        }
        if self.key_sha256.is_empty() {
            return Err(invalid(key("key_sha256"), "needs at least one key hash"));
        }
        if let Some(j) = self.key_sha256.iter().position(|k| parse_hash(k).is_none()) {
            return Err(invalid(
                format!("{at}.key_sha256[{j}]"),
                "must be 64 hex digits (the SHA-256 of the key; `gateway --hash-key KEY`)",
            ));
        }
        if let Some((j, c)) = (self.chains.iter().flatten().enumerate())
            .find(|(_, c)| chain_id(cx.chains, c).is_none())
        {
            return Err(invalid(
                format!("{at}.chains[{j}]"),
                format!("{c:?} is not a configured chain"),
            ));
        }
        let lists = [
            (
                "methods_allow",
                self.methods_allow.as_deref().unwrap_or(&[]),
            ),
            ("methods_deny", &self.methods_deny),
        ];
        for (k, list) in lists {
            if let Some((j, m)) = (list.iter().enumerate())
                .find(|(_, m)| m.is_empty() || m[..m.len() - 1].contains('*'))
            {
                return Err(invalid(
                    format!("{at}.{k}[{j}]"),
                    format!("{m:?}: only a trailing '*' is allowed"),
                ));
            }
        }
        if let Some((j, o)) =
            (self.origins.iter().flatten().enumerate()).find(|(_, o)| !origin_ok(o))
        {
            return Err(invalid(
                format!("{at}.origins[{j}]"),
                format!("{o:?} must be \"*\" or scheme://host[:port] without a path"),
            ));
        }
        if self.max_batch > cx.max_batch {
            return Err(invalid(
                key("max_batch"),
                format!(
                    "{} is above server.max_batch ({})",
                    self.max_batch, cx.max_batch
                ),
            ));
        }
        Ok(())
    }
}

/// A chain by name or decimal id.
pub fn chain_id(chains: &[(String, u64)], key: &str) -> Option<u64> {
    chains
        .iter()
        .find(|(n, id)| n == key || key.parse::<u64>() == Ok(*id))
        .map(|(_, id)| *id)
}

/// 64 hex digits into 32 bytes.
pub fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// An origin as browsers send it: `scheme://host[:port]`, no path, no trailing slash (any
/// scheme: `chrome-extension://id` is one), or `*`.
fn origin_ok(o: &str) -> bool {
    if o == "*" {
        return true;
    }
    let Some((scheme, rest)) = o.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', ' '])
}

/// The method weights: the built-in table, then the file's.
pub fn weights(spec: &ComputeUnitsSpec) -> (HashMap<String, u32>, u32) {
    let mut m: HashMap<String, u32> = BUILTIN_CU
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    m.extend(spec.methods.iter().map(|(k, v)| (k.clone(), *v)));
    (m, spec.default)
}

/// Whether `method` passes a tenant's lists (the same glob rule as `[methods]`).
pub fn method_allowed(allow: Option<&[String]>, deny: &[String], method: &str) -> bool {
    !jsonrpc::denied(deny, method) && allow.is_none_or(|a| jsonrpc::denied(a, method))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx() -> Vec<(String, u64)> {
        vec![("anvil".to_string(), 31337)]
    }

    fn check(text: &str) -> Result<(), String> {
        let f: TenantsFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let chains = cx();
        f.check(&Context {
            chains: &chains,
            max_batch: 100,
        })
        .map_err(|e| format!("{}: {}", e.key, e.problem))
    }

    const KEY: &str = "0000000000000000000000000000000000000000000000000000000000000001";

    #[test]
    fn a_good_file_passes_and_bad_keys_are_named() {
        let good = format!(
            "[[tenants]]\nname = \"a\"\nkey_sha256 = [\"{KEY}\"]\nchains = [\"anvil\", \"31337\"]\norigins = [\"chrome-extension://abc\", \"http://127.0.0.1:3000\"]\n"
        );
        check(&good).unwrap();
        for (text, key) in [
            (good.replace("\"a\"", "\"A b\""), "tenants[0].name"),
            (good.replace("\"a\"", "\"keyless\""), "tenants[0].name"),
            (good.replace(KEY, "abc"), "tenants[0].key_sha256[0]"),
            (
                good.replace("\"31337\"", "\"mainnet\""),
                "tenants[0].chains[1]",
            ),
            (
                good.replace("http://127.0.0.1:3000", "http://x/path"),
                "tenants[0].origins[1]",
            ),
            (format!("{good}max_batch = 101\n"), "tenants[0].max_batch"),
            (
                format!("{good}methods_deny = [\"e*th\"]\n"),
                "tenants[0].methods_deny[0]",
            ),
            (
                format!("{good}{}", good.replace("\"a\"", "\"b\"")),
                "tenants[1].key_sha256[0]",
            ),
            (format!("{good}{good}"), "tenants[1].name"),
        ] {
            let e = check(&text).unwrap_err();
            assert!(e.starts_with(key), "{e} (wanted {key})");
        }
        assert!(check("[keyless]\nserv = true\n")
            .unwrap_err()
            .contains("unknown field"));
    }

    #[test]
    fn weights_merge_the_file_over_the_builtin_table() {
        let spec = ComputeUnitsSpec {
            default: 3,
            methods: [("eth_call".to_string(), 40)].into(),
        };
        let (m, d) = weights(&spec);
        assert_eq!((m["eth_call"], m["eth_getLogs"], d), (40, 75, 3));
        assert!(m["eth_getLogs"] > m["eth_chainId"]);
    }
}
