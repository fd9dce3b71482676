//! Gateway configuration: TOML, unknown keys rejected, validated once at load with errors that
//! name the key and the file. Every default is a `DEFAULT_*` constant documented in
//! `config/gateway.example.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const DEFAULT_MAX_BODY_BYTES: usize = 5 * 1024 * 1024;
pub const DEFAULT_MAX_BATCH: usize = 1000;
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_BODY_TIMEOUT_MS: u64 = 10_000;
/// Status every 250 ms and a 750 ms silence deadline: a crashed node's traffic moves in under
/// a second, for a few bytes per node per report.
pub const DEFAULT_STATUS_INTERVAL_MS: u64 = 250;
pub const DEFAULT_STATUS_DEADLINE_MS: u64 = 750;
pub const DEFAULT_GEO_CACHE_ENTRIES: usize = 100_000;
pub const DEFAULT_GATEWAY_CACHE_BYTES: u64 = 64 * 1024 * 1024;
pub const DEFAULT_GEO_RELOAD_MS: u64 = 30_000;
/// Light in fibre: about 200,000 km/s one way, so ~100 km per millisecond of round trip.
pub const DEFAULT_KM_PER_MS: f64 = 100.0;
pub const DEFAULT_LOAD_PENALTY_MS: f64 = 0.5;
pub const DEFAULT_ERROR_PENALTY_MS: f64 = 200.0;
pub const DEFAULT_SPREAD_MS: f64 = 5.0;
pub const DEFAULT_MAX_LAG_BLOCKS: u64 = 5;
pub const DEFAULT_MAX_HEAD_AGE_MS: u64 = 60_000;
pub const DEFAULT_FAIL_AFTER: u32 = 2;
pub const DEFAULT_RECOVER_AFTER: u32 = 3;
pub const DEFAULT_BREAKER_ERROR_RATE: f64 = 0.5;
pub const DEFAULT_BREAKER_MIN_REQUESTS: u32 = 5;
pub const DEFAULT_MAX_FRAME_BYTES: usize = proto::DEFAULT_MAX_FRAME_BYTES;
pub const DEFAULT_MAX_NODES: usize = 10_000;

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

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: `{key}` {problem}")]
    Invalid {
        file: String,
        key: String,
        problem: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub quic: QuicConfig,
    #[serde(default)]
    pub methods: MethodsConfig,
    #[serde(default)]
    pub geo: GeoConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default)]
    pub health: HealthConfig,
    /// Data residency: callers matching a rule are served only by nodes in its regions.
    #[serde(default)]
    pub residency: Vec<ResidencyRule>,
    /// Chain served on `POST /`; by name or numeric id. Defaults to the first chain.
    #[serde(default)]
    pub default_chain: Option<String>,
    pub chains: Vec<ChainConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// JSON-RPC listener (HTTP/1.1 and h2c).
    pub listen: SocketAddr,
    /// Admin listener: `/metrics`, `/healthz`, `/readyz`.
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    #[serde(default = "d_body")]
    pub max_body_bytes: usize,
    #[serde(default = "d_batch")]
    pub max_batch: usize,
    #[serde(default = "d_req_timeout")]
    pub request_timeout_ms: u64,
    #[serde(default = "d_max_conn")]
    pub max_connections: usize,
    /// A client must finish sending its request headers within this time.
    #[serde(default = "d_header_timeout")]
    pub header_timeout_ms: u64,
    /// A client must finish sending its request body within this time.
    #[serde(default = "d_body_timeout")]
    pub body_timeout_ms: u64,
    /// Runtime worker threads; 0 (the default) means one per CPU core. With one, a request
    /// never changes threads on its way through (no cross-thread wakeups: the lowest latency
    /// while one core keeps up); more threads serve more cores.
    #[serde(default)]
    pub worker_threads: usize,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuicConfig {
    /// UDP address edge nodes dial.
    pub listen: SocketAddr,
    /// The gateway's private key (PEM), created on first start; relative to the config file.
    pub key_file: PathBuf,
    /// Tokens that let a node join. Any one matches.
    pub join_tokens: Vec<String>,
    #[serde(default = "d_status_interval")]
    pub status_interval_ms: u64,
    /// A node silent for this long is dropped from routing.
    #[serde(default = "d_status_deadline")]
    pub status_deadline_ms: u64,
    #[serde(default = "d_frame")]
    pub max_frame_bytes: usize,
    #[serde(default = "d_max_nodes")]
    pub max_nodes: usize,
}

impl std::fmt::Debug for QuicConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicConfig")
            .field("listen", &self.listen)
            .field("key_file", &self.key_file)
            .field("join_tokens", &"MASKED")
            .field("status_interval_ms", &self.status_interval_ms)
            .field("status_deadline_ms", &self.status_deadline_ms)
            .finish()
    }
}

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

/// A point on Earth in degrees.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Point {
    pub lat: f64,
    pub lon: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultLocation {
    pub lat: f64,
    pub lon: f64,
    #[serde(default)]
    pub country: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoConfig {
    /// MaxMind DB files (GeoIP2/GeoLite2 City or DB-IP Lite), asked in order. Empty: no
    /// geolocation, every caller gets `default_location`.
    #[serde(default)]
    pub databases: Vec<PathBuf>,
    /// Proxies whose `X-Forwarded-For`/`Forwarded` headers are believed (CIDRs or addresses).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Location for private, loopback and unknown addresses.
    #[serde(default)]
    pub default_location: Option<DefaultLocation>,
    /// Where this gateway is; enables the node location plausibility check.
    #[serde(default)]
    pub gateway_location: Option<Point>,
    #[serde(default = "d_geo_cache")]
    pub cache_entries: usize,
    /// How often the database files are checked for changes (SIGHUP reloads at once).
    #[serde(default = "d_geo_reload")]
    pub reload_interval_ms: u64,
}

impl Default for GeoConfig {
    fn default() -> Self {
        Self {
            databases: Vec::new(),
            trusted_proxies: Vec::new(),
            default_location: None,
            gateway_location: None,
            cache_entries: DEFAULT_GEO_CACHE_ENTRIES,
            reload_interval_ms: DEFAULT_GEO_RELOAD_MS,
        }
    }
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

pub const DEFAULT_TIP_CACHE_BYTES: u64 = 16 * 1024 * 1024;

fn d_tip_cache() -> u64 {
    DEFAULT_TIP_CACHE_BYTES
}

fn d_gw_cache() -> u64 {
    DEFAULT_GATEWAY_CACHE_BYTES
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoutingMode {
    /// Estimated latency from the caller's location, see ARCHITECTURE.md.
    Geo,
    /// Measured gateway-to-node RTT alone, for a gateway that serves one region.
    LowestLatency,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    #[serde(default = "d_mode")]
    pub mode: RoutingMode,
    /// Distance light covers in fibre per millisecond of round trip.
    #[serde(default = "d_km_per_ms")]
    pub km_per_ms: f64,
    /// Weight of the measured gateway-to-node RTT (1.0 = counted as is).
    #[serde(default = "d_one")]
    pub rtt_weight: f64,
    /// Milliseconds added per request in flight on the node.
    #[serde(default = "d_load_penalty")]
    pub load_penalty_ms: f64,
    /// Milliseconds added at a 100 % recent error rate (scaled linearly).
    #[serde(default = "d_error_penalty")]
    pub error_penalty_ms: f64,
    /// Nodes scoring within this of the best share its traffic (power of two choices).
    #[serde(default = "d_spread")]
    pub spread_ms: f64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            mode: d_mode(),
            km_per_ms: d_km_per_ms(),
            rtt_weight: 1.0,
            load_penalty_ms: d_load_penalty(),
            error_penalty_ms: d_error_penalty(),
            spread_ms: d_spread(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// A node this many blocks behind the best head is dropped.
    #[serde(default = "d_max_lag")]
    pub max_lag_blocks: u64,
    /// A node whose head block is older than this is dropped.
    #[serde(default = "d_max_head_age")]
    pub max_head_age_ms: u64,
    /// Consecutive bad checks before a node is dropped (disconnects and wrong chains: at once).
    #[serde(default = "d_fail_after")]
    pub fail_after: u32,
    /// Consecutive good checks before a dropped (or new) node serves again.
    #[serde(default = "d_recover_after")]
    pub recover_after: u32,
    /// Error rate of gateway-to-node attempts over one check interval that opens the breaker.
    #[serde(default = "d_breaker_rate")]
    pub breaker_error_rate: f64,
    /// Attempts needed in an interval before the error rate counts.
    #[serde(default = "d_breaker_min")]
    pub breaker_min_requests: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            max_lag_blocks: d_max_lag(),
            max_head_age_ms: d_max_head_age(),
            fail_after: d_fail_after(),
            recover_after: d_recover_after(),
            breaker_error_rate: d_breaker_rate(),
            breaker_min_requests: d_breaker_min(),
        }
    }
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

fn d_body() -> usize {
    DEFAULT_MAX_BODY_BYTES
}
fn d_batch() -> usize {
    DEFAULT_MAX_BATCH
}
fn d_req_timeout() -> u64 {
    DEFAULT_REQUEST_TIMEOUT_MS
}
/// Bound on `server.worker_threads`.
pub const MAX_WORKER_THREADS: usize = 1024;

fn d_max_conn() -> usize {
    DEFAULT_MAX_CONNECTIONS
}
fn d_header_timeout() -> u64 {
    DEFAULT_HEADER_TIMEOUT_MS
}
fn d_body_timeout() -> u64 {
    DEFAULT_BODY_TIMEOUT_MS
}
fn d_status_interval() -> u64 {
    DEFAULT_STATUS_INTERVAL_MS
}
fn d_status_deadline() -> u64 {
    DEFAULT_STATUS_DEADLINE_MS
}
fn d_frame() -> usize {
    DEFAULT_MAX_FRAME_BYTES
}
fn d_max_nodes() -> usize {
    DEFAULT_MAX_NODES
}
fn d_geo_cache() -> usize {
    DEFAULT_GEO_CACHE_ENTRIES
}
fn d_geo_reload() -> u64 {
    DEFAULT_GEO_RELOAD_MS
}
fn d_mode() -> RoutingMode {
    RoutingMode::Geo
}
fn d_km_per_ms() -> f64 {
    DEFAULT_KM_PER_MS
}
fn d_one() -> f64 {
    1.0
}
fn d_load_penalty() -> f64 {
    DEFAULT_LOAD_PENALTY_MS
}
fn d_error_penalty() -> f64 {
    DEFAULT_ERROR_PENALTY_MS
}
fn d_spread() -> f64 {
    DEFAULT_SPREAD_MS
}
fn d_max_lag() -> u64 {
    DEFAULT_MAX_LAG_BLOCKS
}
fn d_max_head_age() -> u64 {
    DEFAULT_MAX_HEAD_AGE_MS
}
fn d_fail_after() -> u32 {
    DEFAULT_FAIL_AFTER
}
fn d_recover_after() -> u32 {
    DEFAULT_RECOVER_AFTER
}
fn d_breaker_rate() -> f64 {
    DEFAULT_BREAKER_ERROR_RATE
}
fn d_breaker_min() -> u32 {
    DEFAULT_BREAKER_MIN_REQUESTS
}
fn d_deny() -> Vec<String> {
    DEFAULT_DENY.iter().map(|s| s.to_string()).collect()
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        let mut cfg = Self::parse(&text, &file)?;
        if let Some(dir) = path.parent() {
            if cfg.quic.key_file.is_relative() {
                cfg.quic.key_file = dir.join(&cfg.quic.key_file);
            }
            for db in &mut cfg.geo.databases {
                if db.is_relative() {
                    *db = dir.join(&*db);
                }
            }
        }
        Ok(cfg)
    }

    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_string(),
            message: e.to_string(),
        })?;
        cfg.validate(file)?;
        Ok(cfg)
    }

    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, problem: String| ConfigError::Invalid {
            file: file.to_string(),
            key: key.to_string(),
            problem,
        };
        let positive = [
            ("server.max_body_bytes", self.server.max_body_bytes as u64),
            ("server.max_batch", self.server.max_batch as u64),
            ("server.request_timeout_ms", self.server.request_timeout_ms),
            ("server.max_connections", self.server.max_connections as u64),
            ("server.header_timeout_ms", self.server.header_timeout_ms),
            ("server.body_timeout_ms", self.server.body_timeout_ms),
            ("quic.status_interval_ms", self.quic.status_interval_ms),
            ("quic.max_nodes", self.quic.max_nodes as u64),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(bad(key, "must be greater than 0".into()));
            }
        }
        // Nodes clamp the interval they are asked for to this range (edge_node::link).
        if !(100..=1000).contains(&self.quic.status_interval_ms) {
            return Err(bad(
                "quic.status_interval_ms",
                format!(
                    "{} is not in 100..=1000 (nodes report at most that often and at least that rarely)",
                    self.quic.status_interval_ms
                ),
            ));
        }
        if self.server.worker_threads > MAX_WORKER_THREADS {
            return Err(bad(
                "server.worker_threads",
                format!(
                    "{} is more than {MAX_WORKER_THREADS}",
                    self.server.worker_threads
                ),
            ));
        }
        if self.quic.status_deadline_ms <= self.quic.status_interval_ms {
            return Err(bad(
                "quic.status_deadline_ms",
                format!(
                    "({}) must be longer than quic.status_interval_ms ({})",
                    self.quic.status_deadline_ms, self.quic.status_interval_ms
                ),
            ));
        }
        if self.quic.max_frame_bytes < self.server.max_body_bytes + 1024 {
            return Err(bad(
                "quic.max_frame_bytes",
                "must exceed server.max_body_bytes by at least 1024".into(),
            ));
        }
        if self.quic.join_tokens.is_empty() || self.quic.join_tokens.iter().any(|t| t.len() < 8) {
            return Err(bad(
                "quic.join_tokens",
                "needs at least one token, each at least 8 characters".into(),
            ));
        }
        if self.chains.is_empty() {
            return Err(bad(
                "chains",
                "at least one [[chains]] entry is required".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        let mut ids = std::collections::HashSet::new();
        for (i, c) in self.chains.iter().enumerate() {
            let ok = !c.name.is_empty()
                && c.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !c.name.bytes().all(|b| b.is_ascii_digit());
            if !ok {
                return Err(bad(
                    &format!("chains[{i}].name"),
                    format!(
                        "{:?} must be letters, digits, '-' or '_' (and not all digits)",
                        c.name
                    ),
                ));
            }
            if !names.insert(c.name.clone()) {
                return Err(bad(&format!("chains[{i}].name"), "is listed twice".into()));
            }
            if !ids.insert(c.chain_id) {
                return Err(bad(
                    &format!("chains[{i}].chain_id"),
                    "is listed twice".into(),
                ));
            }
        }
        if let Some(d) = &self.default_chain {
            if self.chain(d).is_none() {
                return Err(bad(
                    "default_chain",
                    format!("{d:?} is not a configured chain"),
                ));
            }
        }
        if let Err(e) = crate::geo::TrustedProxies::parse(&self.geo.trusted_proxies) {
            return Err(bad("geo.trusted_proxies", e.to_string()));
        }
        let in_range =
            |p: (f64, f64)| (-90.0..=90.0).contains(&p.0) && (-180.0..=180.0).contains(&p.1);
        if let Some(d) = &self.geo.default_location {
            if !in_range((d.lat, d.lon)) {
                return Err(bad(
                    "geo.default_location",
                    "coordinates out of range".into(),
                ));
            }
        }
        if let Some(g) = &self.geo.gateway_location {
            if !in_range((g.lat, g.lon)) {
                return Err(bad(
                    "geo.gateway_location",
                    "coordinates out of range".into(),
                ));
            }
        }
        if self.geo.reload_interval_ms < 100 {
            return Err(bad("geo.reload_interval_ms", "must be at least 100".into()));
        }
        let r = &self.routing;
        for (key, v) in [
            ("routing.km_per_ms", r.km_per_ms),
            ("routing.rtt_weight", r.rtt_weight),
            ("routing.load_penalty_ms", r.load_penalty_ms),
            ("routing.error_penalty_ms", r.error_penalty_ms),
            ("routing.spread_ms", r.spread_ms),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(bad(key, format!("{v} must be a finite number >= 0")));
            }
        }
        if r.km_per_ms == 0.0 {
            return Err(bad("routing.km_per_ms", "must be greater than 0".into()));
        }
        let h = &self.health;
        if h.fail_after == 0 || h.recover_after == 0 {
            return Err(bad(
                "health.fail_after",
                "fail_after and recover_after must be at least 1".into(),
            ));
        }
        if !(0.0..=1.0).contains(&h.breaker_error_rate) {
            return Err(bad(
                "health.breaker_error_rate",
                "must be within 0.0..=1.0".into(),
            ));
        }
        for (i, rule) in self.residency.iter().enumerate() {
            if rule.regions.is_empty() {
                return Err(bad(
                    &format!("residency[{i}].regions"),
                    "needs at least one region".into(),
                ));
            }
            if rule.countries.is_empty() && rule.continents.is_empty() {
                return Err(bad(
                    &format!("residency[{i}]"),
                    "needs `countries` or `continents`".into(),
                ));
            }
        }
        let named = |list: &'_ [String], key: String| {
            list.iter()
                .enumerate()
                .map(move |(j, m)| (format!("{key}[{j}]"), m.clone()))
                .collect::<Vec<_>>()
        };
        let mut lists = named(&self.methods.deny, "methods.deny".into());
        for (i, c) in self.chains.iter().enumerate() {
            lists.extend(named(&c.methods_deny, format!("chains[{i}].methods_deny")));
            if let Some(allow) = &c.methods_allow {
                lists.extend(named(allow, format!("chains[{i}].methods_allow")));
            }
        }
        for (key, m) in lists {
            if m.is_empty() || m[..m.len() - 1].contains('*') {
                return Err(bad(&key, format!("{m:?}: only a trailing '*' is allowed")));
            }
        }
        Ok(())
    }

    /// Finds a chain by name or decimal id.
    pub fn chain(&self, key: &str) -> Option<&ChainConfig> {
        match key.parse::<u64>() {
            Ok(id) => self.chains.iter().find(|c| c.chain_id == id),
            Err(_) => self.chains.iter().find(|c| c.name == key),
        }
    }

    pub fn default_chain(&self) -> &ChainConfig {
        self.default_chain
            .as_deref()
            .and_then(|d| self.chain(d))
            .unwrap_or(&self.chains[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const GOOD: &str = r#"
[server]
listen = "127.0.0.1:0"
[quic]
listen = "127.0.0.1:0"
key_file = "gw.key"
join_tokens = ["0123456789"]
[[chains]]
name = "anvil"
chain_id = 31337
"#;

    #[test]
    fn good_config_parses_with_defaults() {
        let c = Config::parse(GOOD, "g.toml").unwrap();
        assert_eq!(c.server.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(c.server.max_batch, DEFAULT_MAX_BATCH);
        assert_eq!(c.methods.deny.len(), DEFAULT_DENY.len());
        assert_eq!(c.default_chain().chain_id, 31337);
        assert_eq!(c.chain("31337").unwrap().name, "anvil");
        assert!(c.chain("mainnet").is_none());
        assert!(!format!("{:?}", c.quic).contains("0123456789"));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (GOOD.replace("0123456789", "short"), "quic.join_tokens"),
            (
                GOOD.replace("name = \"anvil\"", "name = \"a/b\""),
                "chains[0].name",
            ),
            (format!("default_chain = \"nope\"\n{GOOD}"), "default_chain"),
            (
                GOOD.replace("[server]", "[server]\nmax_batch = 0"),
                "server.max_batch",
            ),
            (GOOD.replace("[server]", "[server]\nbogus = 1"), "bogus"),
            (
                GOOD.replace("[server]", "[server]\nworker_threads = 5000"),
                "server.worker_threads",
            ),
            (
                GOOD.replace("[quic]", "[quic]\nstatus_interval_ms = 50"),
                "quic.status_interval_ms",
            ),
            (
                format!("{GOOD}\n[methods]\ndeny = [\"a*b\"]\n"),
                "methods.deny[0]",
            ),
        ];
        for (text, key) in cases {
            let err = Config::parse(&text, "g.toml").unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("g.toml"), "{key}: {err}");
        }
    }
}
