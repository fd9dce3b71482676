//! Edge-node configuration: TOML, unknown keys rejected, parsed once at load into typed values
//! (`*_ms` keys into [`Duration`]s, upstream URLs into [`http::Uri`]s) and validated section by
//! section, with errors that name the key and the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use daemon::config::millis;
use serde::{Deserialize, Deserializer};

pub const DEFAULT_CACHE_MAX_BYTES: u64 = 256 * 1024 * 1024;
pub const DEFAULT_UPSTREAM_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_HEAD_POLL_MS: u64 = 1_000;
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_millis(DEFAULT_UPSTREAM_TIMEOUT_MS);
pub const DEFAULT_HEAD_POLL: Duration = Duration::from_millis(DEFAULT_HEAD_POLL_MS);
/// Shortest `head_poll_ms` accepted.
pub const MIN_HEAD_POLL: Duration = Duration::from_millis(50);
pub const DEFAULT_MAX_FRAME_BYTES: usize = proto::DEFAULT_MAX_FRAME_BYTES;
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4096;
pub const DEFAULT_FINALITY_DEPTH: u64 = 64;
pub const DEFAULT_LOGS_MAX_RANGE: u64 = 10_000;
pub const DEFAULT_LOGS_CHUNK_BLOCKS: u64 = 2_000;

pub use daemon::config::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Path of this node's private key (PEM); created on first start. Relative paths are
    /// resolved against the config file's folder.
    pub key_file: PathBuf,
    /// Region name announced to the gateway, e.g. `eu-west`.
    pub region: String,
    pub latitude: f64,
    pub longitude: f64,
    /// Admin listener: `/metrics`, `/healthz`, `/readyz`.
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    /// The gateways this node joins: one QUIC connection each, the same join, status and
    /// `Head` reports to each, requests from any.
    pub gateways: Vec<GatewayLink>,
    #[serde(default)]
    pub cache: CacheConfig,
    pub chains: Vec<ChainConfig>,
    #[serde(default = "d_max_in_flight")]
    pub max_in_flight: usize,
    /// Runtime worker threads; 0 (the default) means one per CPU core but one, at least one
    /// ([`daemon::runtime`]). With one, a request never changes threads between the gateway
    /// link and the upstream (a current-thread runtime: the lowest latency while one core
    /// keeps up); more threads serve more cores.
    #[serde(default)]
    pub worker_threads: usize,
}

/// Bound on `worker_threads`.
pub const MAX_WORKER_THREADS: usize = 1024;

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayLink {
    /// A name for logs and the `gateway` label of this node's metrics (default: the address).
    #[serde(default)]
    pub name: Option<String>,
    /// The gateway's QUIC address (`host:port`).
    pub address: String,
    /// The gateway's public-key fingerprint (`sha256:<hex>`), as printed by
    /// `gateway --config FILE --print-fingerprint`.
    pub fingerprint: String,
    /// Join token shared with the gateway.
    pub token: String,
    #[serde(default = "d_max_frame")]
    pub max_frame_bytes: usize,
}

impl std::fmt::Debug for GatewayLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayLink")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("fingerprint", &self.fingerprint)
            .field("token", &"MASKED")
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Upper bound of cached keys plus values, in bytes.
    #[serde(default = "d_cache_bytes")]
    pub max_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_CACHE_MAX_BYTES,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// Expected chain id; the upstream's `eth_chainId` is checked against it.
    pub chain_id: u64,
    /// One or more JSON-RPC URLs, parsed at load: `http://` or `https://`, or `ws://` or
    /// `wss://` for an upstream whose head is followed over its WebSocket (`newHeads`) and
    /// that is asked requests over HTTP(S) at the same host, port and path (see
    /// [`ChainConfig::request_urls`] and [`ChainConfig::socket_urls`]).
    #[serde(deserialize_with = "uris")]
    pub upstreams: Vec<http::Uri>,
    /// TOML key `upstream_timeout_ms`.
    #[serde(
        rename = "upstream_timeout_ms",
        default = "d_upstream_timeout",
        with = "millis"
    )]
    pub upstream_timeout: Duration,
    /// Longest pause between head polls; the actual pace is a quarter of the observed block
    /// time when that is shorter. TOML key `head_poll_ms`.
    #[serde(rename = "head_poll_ms", default = "d_head_poll", with = "millis")]
    pub head_poll: Duration,
    /// Depth treated as final when the upstream has no `finalized` tag.
    #[serde(default = "d_finality_depth")]
    pub finality_depth: u64,
    /// Widest `eth_getLogs` block range served (error -32005 beyond).
    #[serde(default = "d_logs_max_range")]
    pub logs_max_range: u64,
    /// `eth_getLogs` ranges wider than this are split into parallel chunks.
    #[serde(default = "d_logs_chunk")]
    pub logs_chunk_blocks: u64,
    /// Answer balance/nonce/code/storage reads from `eth_getProof`, verified against the
    /// block's state root.
    #[serde(default)]
    pub verify_state: bool,
}

fn d_max_in_flight() -> usize {
    DEFAULT_MAX_IN_FLIGHT
}
fn d_max_frame() -> usize {
    DEFAULT_MAX_FRAME_BYTES
}
fn d_cache_bytes() -> u64 {
    DEFAULT_CACHE_MAX_BYTES
}
fn d_upstream_timeout() -> Duration {
    DEFAULT_UPSTREAM_TIMEOUT
}
fn d_head_poll() -> Duration {
    DEFAULT_HEAD_POLL
}
fn d_finality_depth() -> u64 {
    DEFAULT_FINALITY_DEPTH
}
fn d_logs_max_range() -> u64 {
    DEFAULT_LOGS_MAX_RANGE
}
fn d_logs_chunk() -> u64 {
    DEFAULT_LOGS_CHUNK_BLOCKS
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = daemon::config::read(path)?;
        let mut cfg = Self::parse(&text, &file)?;
        if cfg.key_file.is_relative() {
            if let Some(dir) = path.parent() {
                cfg.key_file = dir.join(&cfg.key_file);
            }
        }
        Ok(cfg)
    }

    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let cfg: Self = daemon::config::parse_toml(text, file)?;
        cfg.validate(file)?;
        Ok(cfg)
    }

    /// Checks every section; the error names the file and the key (with its list index).
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let named = |Bad { key, problem }| ConfigError::invalid(file, key, problem);
        self.validate_node().map_err(named)?;
        validate_gateways(&self.gateways).map_err(named)?;
        self.cache.validate().map_err(named)?;
        validate_chains(&self.chains).map_err(named)
    }

    fn validate_node(&self) -> Result<(), Bad> {
        if self.worker_threads > MAX_WORKER_THREADS {
            return Err(Bad::new(
                "worker_threads",
                format!("{} is more than {MAX_WORKER_THREADS}", self.worker_threads),
            ));
        }
        if self.region.trim().is_empty() {
            return Err(Bad::new("region", "must not be empty"));
        }
        if !(-90.0..=90.0).contains(&self.latitude) {
            return Err(Bad::new(
                "latitude",
                format!("{} is not in -90..=90", self.latitude),
            ));
        }
        if !(-180.0..=180.0).contains(&self.longitude) {
            return Err(Bad::new(
                "longitude",
                format!("{} is not in -180..=180", self.longitude),
            ));
        }
        if self.max_in_flight == 0 {
            return Err(Bad::new("max_in_flight", "must be greater than 0"));
        }
        Ok(())
    }
}

/// A key and what is wrong with it; [`Config::validate`] adds the file.
struct Bad {
    key: String,
    problem: String,
}

impl Bad {
    fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

impl GatewayLink {
    /// What logs and metrics call this gateway.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.address)
    }

    fn validate(&self, at: &str) -> Result<(), Bad> {
        let key = |k: &str| format!("{at}.{k}");
        let fp = &self.fingerprint;
        let hex = fp.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Bad::new(
                key("fingerprint"),
                format!("{fp:?} is not `sha256:` followed by 64 hex digits"),
            ));
        }
        if self.token.is_empty() {
            return Err(Bad::new(key("token"), "must not be empty"));
        }
        if self.address.is_empty() {
            return Err(Bad::new(key("address"), "must not be empty"));
        }
        if self.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            return Err(Bad::new(key("name"), "must not be empty"));
        }
        if self.max_frame_bytes < 1024 {
            return Err(Bad::new(key("max_frame_bytes"), "must be at least 1024"));
        }
        Ok(())
    }
}

/// At most this many gateways per node (each is a connection and a status stream).
pub const MAX_GATEWAYS: usize = 64;

fn validate_gateways(links: &[GatewayLink]) -> Result<(), Bad> {
    if links.is_empty() {
        return Err(Bad::new(
            "gateways",
            "at least one [[gateways]] entry is required",
        ));
    }
    if links.len() > MAX_GATEWAYS {
        return Err(Bad::new(
            "gateways",
            format!("{} entries; at most {MAX_GATEWAYS}", links.len()),
        ));
    }
    let (mut addresses, mut labels) = (
        std::collections::HashSet::new(),
        std::collections::HashSet::new(),
    );
    for (i, l) in links.iter().enumerate() {
        let at = format!("gateways[{i}]");
        l.validate(&at)?;
        if !addresses.insert(l.address.as_str()) {
            return Err(Bad::new(format!("{at}.address"), "is listed twice"));
        }
        if !labels.insert(l.label()) {
            return Err(Bad::new(format!("{at}.name"), "is used twice"));
        }
    }
    Ok(())
}

impl CacheConfig {
    fn validate(&self) -> Result<(), Bad> {
        if self.max_bytes == 0 {
            return Err(Bad::new("cache.max_bytes", "must be greater than 0"));
        }
        Ok(())
    }
}

fn validate_chains(chains: &[ChainConfig]) -> Result<(), Bad> {
    if chains.is_empty() {
        return Err(Bad::new(
            "chains",
            "at least one [[chains]] entry is required",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, c) in chains.iter().enumerate() {
        if !seen.insert(c.chain_id) {
            return Err(Bad::new(
                format!("chains[{i}].chain_id"),
                format!("{} is listed twice", c.chain_id),
            ));
        }
        c.validate(&format!("chains[{i}]"))?;
    }
    Ok(())
}

impl ChainConfig {
    /// `at` is this chain's place in the file, e.g. `chains[0]`.
    fn validate(&self, at: &str) -> Result<(), Bad> {
        if self.upstreams.is_empty() {
            return Err(Bad::new(
                format!("{at}.upstreams"),
                "needs at least one URL",
            ));
        }
        for (j, u) in self.upstreams.iter().enumerate() {
            if !matches!(u.scheme_str(), Some("http" | "https" | "ws" | "wss"))
                || u.host().is_none()
            {
                return Err(Bad::new(
                    format!("{at}.upstreams[{j}]"),
                    format!(
                        "{:?} is not an http://, https://, ws:// or wss:// URL",
                        u.to_string()
                    ),
                ));
            }
        }
        if self.upstream_timeout.is_zero() {
            return Err(Bad::new(
                format!("{at}.upstream_timeout_ms"),
                "must be greater than 0",
            ));
        }
        if self.logs_max_range == 0 || self.logs_chunk_blocks == 0 {
            return Err(Bad::new(
                format!("{at}.logs_max_range"),
                "logs_max_range and logs_chunk_blocks must be greater than 0",
            ));
        }
        if self.head_poll < MIN_HEAD_POLL {
            return Err(Bad::new(
                format!("{at}.head_poll_ms"),
                "must be at least 50",
            ));
        }
        Ok(())
    }
}

impl ChainConfig {
    /// The URLs requests go to, one per configured upstream in order: an `http(s)://` entry as
    /// it is, a `ws(s)://` entry's HTTP(S) twin (same host, port, path and query). What
    /// [`crate::upstream::Upstreams`] is built from: it only ever sees http(s) URLs.
    pub fn request_urls(&self) -> Vec<http::Uri> {
        self.upstreams.iter().map(http_twin).collect()
    }

    /// The upstreams followed over a WebSocket: their index in `upstreams` (and so in
    /// [`Self::request_urls`]) and their `ws(s)://` URL.
    pub fn socket_urls(&self) -> Vec<(usize, http::Uri)> {
        self.upstreams
            .iter()
            .enumerate()
            .filter(|(_, u)| matches!(u.scheme_str(), Some("ws" | "wss")))
            .map(|(i, u)| (i, u.clone()))
            .collect()
    }
}

/// A `ws://` URL's `http://` twin, a `wss://` URL's `https://` twin (host, port, path and query
/// kept); any other URL as it is.
pub fn http_twin(url: &http::Uri) -> http::Uri {
    let scheme = match url.scheme_str() {
        Some("ws") => http::uri::Scheme::HTTP,
        Some("wss") => http::uri::Scheme::HTTPS,
        _ => return url.clone(),
    };
    let mut parts = url.clone().into_parts();
    parts.scheme = Some(scheme);
    http::Uri::from_parts(parts).expect("only the scheme changed, to a valid one")
}

/// Upstream URLs, parsed once here; whether each is http(s) or ws(s) with a host is checked by
/// [`ChainConfig::validate`], which names the key.
fn uris<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<http::Uri>, D::Error> {
    Vec::<String>::deserialize(d)?
        .into_iter()
        .enumerate()
        .map(|(j, u)| {
            u.parse::<http::Uri>().map_err(|e| {
                serde::de::Error::custom(format!("upstreams[{j}]: {u:?} is not a URL ({e})"))
            })
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal valid config with one chain (31337); other tests append to it.
    pub(crate) const GOOD: &str = r#"
key_file = "node.key"
region = "eu-west"
latitude = 50.11
longitude = 8.68
[[gateways]]
address = "127.0.0.1:4433"
fingerprint = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
token = "secret"
[[chains]]
chain_id = 31337
upstreams = ["http://127.0.0.1:8545"]
"#;

    #[test]
    fn good_config_parses_with_defaults() {
        let c = Config::parse(GOOD, "t.toml").unwrap();
        assert_eq!(c.cache.max_bytes, DEFAULT_CACHE_MAX_BYTES);
        assert_eq!(c.chains[0].upstream_timeout, DEFAULT_UPSTREAM_TIMEOUT);
        assert_eq!(
            c.chains[0].head_poll,
            Duration::from_millis(DEFAULT_HEAD_POLL_MS)
        );
        assert!(!format!("{:?}", c.gateways).contains("secret"));
        assert_eq!(c.gateways[0].label(), "127.0.0.1:4433");
    }

    /// A second gateway for `GOOD`.
    const SECOND: &str = r#"[[gateways]]
name = "gw-us"
address = "127.0.0.2:4434"
fingerprint = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
token = "other"
"#;

    #[test]
    fn several_gateways_each_with_its_own_pin() {
        let text = GOOD.replace("[[chains]]", &format!("{SECOND}\n[[chains]]"));
        let c = Config::parse(&text, "t.toml").unwrap();
        assert_eq!(c.gateways.len(), 2);
        assert_eq!(c.gateways[1].label(), "gw-us");
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                GOOD.replace("latitude = 50.11", "latitude = 91.0"),
                "latitude",
            ),
            (
                GOOD.replace("http://127.0.0.1:8545", "ftp://x"),
                "chains[0].upstreams[0]",
            ),
            (
                GOOD.replace("sha256:00", "sha1:00"),
                "gateways[0].fingerprint",
            ),
            (
                GOOD.replace("token = \"secret\"", "token = \"\""),
                "gateways[0].token",
            ),
            (
                GOOD.replace(
                    "[[chains]]",
                    &format!(
                        "{}\n[[chains]]",
                        SECOND.replace("127.0.0.2:4434", "127.0.0.1:4433")
                    ),
                ),
                "gateways[1].address",
            ),
            (
                GOOD.replace("[[gateways]]", "[gateway]"),
                "unknown field `gateway`",
            ),
            (format!("{GOOD}\nbogus = 1\n"), "bogus"),
            (format!("worker_threads = 5000\n{GOOD}"), "worker_threads"),
        ];
        for (text, key) in cases {
            let err = Config::parse(&text, "t.toml").unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("t.toml"), "{key}: {err}");
        }
    }

    #[test]
    fn socket_upstreams_are_asked_over_their_http_twin() {
        let text = GOOD.replace(
            r#"["http://127.0.0.1:8545"]"#,
            r#"["ws://127.0.0.1:8545", "https://rpc.example/v1", "wss://node.example:8443/ws/x?k=1"]"#,
        );
        let c = &Config::parse(&text, "t.toml").unwrap().chains[0];
        let asked: Vec<String> = c.request_urls().iter().map(|u| u.to_string()).collect();
        assert_eq!(
            asked,
            [
                "http://127.0.0.1:8545/",
                "https://rpc.example/v1",
                "https://node.example:8443/ws/x?k=1"
            ]
        );
        let followed: Vec<(usize, String)> = c
            .socket_urls()
            .into_iter()
            .map(|(i, u)| (i, u.to_string()))
            .collect();
        assert_eq!(
            followed,
            [
                (0, "ws://127.0.0.1:8545/".to_string()),
                (2, "wss://node.example:8443/ws/x?k=1".to_string())
            ]
        );
        // HTTP-only chains follow nothing over a socket.
        let plain = &Config::parse(GOOD, "t.toml").unwrap().chains[0];
        assert!(plain.socket_urls().is_empty());
        assert_eq!(plain.request_urls(), plain.upstreams);
    }

    #[test]
    fn bad_upstream_schemes_name_the_key() {
        for bad in [
            "ftp://x",
            "wsx://127.0.0.1:8545",
            "/path-only",
            "127.0.0.1:8546",
        ] {
            let text = GOOD.replace(
                r#"["http://127.0.0.1:8545"]"#,
                &format!(r#"["ws://127.0.0.1:8545", "{bad}"]"#),
            );
            let err = Config::parse(&text, "t.toml").unwrap_err().to_string();
            assert!(
                err.contains("chains[0].upstreams[1]") && err.contains("t.toml"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn typed_values_and_unparsable_urls() {
        let c = Config::parse(
            &GOOD.replace(
                "31337",
                "31337\nhead_poll_ms = 250\nupstream_timeout_ms = 300",
            ),
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.chains[0].head_poll, Duration::from_millis(250));
        assert_eq!(c.chains[0].upstream_timeout, Duration::from_millis(300));
        assert_eq!(c.chains[0].upstreams[0].host(), Some("127.0.0.1"));
        let err = Config::parse(&GOOD.replace("127.0.0.1:8545", "a b"), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("upstreams[0]") && err.contains("t.toml"),
            "{err}"
        );
        let short = GOOD.replace("31337", "31337\nhead_poll_ms = 49");
        let err = Config::parse(&short, "t.toml").unwrap_err().to_string();
        assert!(err.contains("chains[0].head_poll_ms"), "{err}");
    }
}
