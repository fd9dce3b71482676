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
pub const DEFAULT_STATUS_INTERVAL_MS: u64 = 500;
pub const DEFAULT_STATUS_DEADLINE_MS: u64 = 2_000;
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
        if cfg.quic.key_file.is_relative() {
            if let Some(dir) = path.parent() {
                cfg.quic.key_file = dir.join(&cfg.quic.key_file);
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
        for (i, m) in self.methods.deny.iter().enumerate() {
            if m.is_empty() || m[..m.len() - 1].contains('*') {
                return Err(bad(
                    &format!("methods.deny[{i}]"),
                    format!("{m:?}: only a trailing '*' is allowed"),
                ));
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
