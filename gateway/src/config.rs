//! Gateway configuration: TOML, unknown keys rejected, every value parsed once at load into the
//! type it is used as (`*_ms` keys into `Duration`s, trusted proxies into networks), then validated section by section with errors that name the
//! key and the file. Every default is a `DEFAULT_*` constant documented in
//! `config/gateway.example.toml`.
//!
//! One submodule per group of sections owns its structs, defaults and checks: [`server`]
//! (`[server]`, `[quic]`), [`geo`] (`[geo]`), [`routing`] (`[routing]`, `[health]`),
//! [`chains`] (`[[chains]]`, `[methods]`, `[[residency]]`, `[cache]`), [`tenants`]
//! (`[tenants]`), [`websocket`] (`[websocket]`), [`hedge`] (`[hedge]`, `[timeouts]`);
//! `daemon::config::millis`
//! turns `*_ms` keys into `Duration`s.

mod audit;
mod chains;
mod geo;
mod hedge;
mod routing;
mod server;
mod tenants;
mod websocket;

use std::path::Path;

use serde::Deserialize;

pub use audit::AuditConfig;
pub use chains::{
    CacheConfig, ChainConfig, MethodsConfig, ResidencyRule, DEFAULT_DENY,
    DEFAULT_GATEWAY_CACHE_BYTES, DEFAULT_TIP_CACHE_BYTES,
};
pub use geo::{
    DefaultLocation, GeoConfig, Point, DEFAULT_GEO_CACHE_ENTRIES, DEFAULT_GEO_RELOAD_INTERVAL,
};
pub use hedge::{
    HedgeConfig, MethodTimeouts, DEFAULT_HEDGE_MAX_DELAY, DEFAULT_HEDGE_MAX_SHARE,
    DEFAULT_HEDGE_MIN_DELAY, DEFAULT_HEDGE_QUANTILE,
};
pub use routing::{
    HealthConfig, RoutingConfig, RoutingMode, DEFAULT_BREAKER_ERROR_RATE,
    DEFAULT_BREAKER_MIN_REQUESTS, DEFAULT_ERROR_PENALTY_MS, DEFAULT_FAIL_AFTER, DEFAULT_KM_PER_MS,
    DEFAULT_LOAD_PENALTY_MS, DEFAULT_MAX_HEAD_AGE, DEFAULT_MAX_LAG_BLOCKS, DEFAULT_RECOVER_AFTER,
    DEFAULT_SPREAD_MS,
};
pub use server::Secret;
pub use server::{
    QuicConfig, ServerConfig, DEFAULT_BODY_TIMEOUT, DEFAULT_COMPRESS_MIN_BYTES,
    DEFAULT_GATEWAY_NAME, DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_IP,
    DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_NODES, DEFAULT_REQUEST_TIMEOUT, DEFAULT_STATUS_DEADLINE,
    DEFAULT_STATUS_INTERVAL, MAX_WORKER_THREADS,
};
pub use tenants::{
    TenantsConfig, DEFAULT_REDIS_PREFIX, DEFAULT_SYNC_INTERVAL, DEFAULT_WATCH_INTERVAL,
};
pub use websocket::WebSocketConfig;

pub use daemon::config::ConfigError;

/// A failed check, before the file name is attached: the key (with its list index, e.g.
/// `chains[1].name`) and what is wrong with it.
#[derive(Debug)]
struct Invalid {
    key: String,
    problem: String,
}

/// Each section's checks; the first failure is reported.
type Check = Result<(), Invalid>;

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Invalid {
    Invalid {
        key: key.into(),
        problem: problem.into(),
    }
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
    /// Tenants, keys and limits (`crate::tenants`).
    #[serde(default)]
    pub tenants: TenantsConfig,
    /// JSON-RPC over WebSocket and `eth_subscribe` (`crate::subs`).
    #[serde(default)]
    pub websocket: WebSocketConfig,
    /// Audits of the nodes' answers and their reputation (`crate::nodes::audit`).
    #[serde(default)]
    pub audit: AuditConfig,
    /// Hedged reads (`crate::nodes::hedge`).
    #[serde(default)]
    pub hedge: HedgeConfig,
    /// Request timeouts per method, over `server.request_timeout_ms`.
    #[serde(default)]
    pub timeouts: MethodTimeouts,
    /// Chain served on `POST /`; by name or numeric id. Defaults to the first chain.
    #[serde(default)]
    pub default_chain: Option<String>,
    pub chains: Vec<ChainConfig>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = daemon::config::read(path)?;
        let mut cfg = Self::parse(&text, &file)?;
        if let Some(dir) = path.parent() {
            if cfg.quic.key_file.is_relative() {
                cfg.quic.key_file = dir.join(&cfg.quic.key_file);
            }
            if let Some(f) = cfg.tenants.file.as_mut().filter(|f| f.is_relative()) {
                *f = dir.join(&*f);
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
        let cfg: Self = daemon::config::parse_toml(text, file)?;
        cfg.validate(file)?;
        Ok(cfg)
    }

    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        self.check()
            .map_err(|e| ConfigError::invalid(file, e.key, e.problem))
    }

    fn check(&self) -> Check {
        server::check_server(&self.server)?;
        server::check_quic(&self.quic, &self.server)?;
        chains::check_chains(&self.chains)?;
        if let Some(d) = &self.default_chain {
            if self.chain(d).is_none() {
                return Err(invalid(
                    "default_chain",
                    format!("{d:?} is not a configured chain"),
                ));
            }
        }
        geo::check_geo(&self.geo)?;
        routing::check_routing(&self.routing)?;
        routing::check_health(&self.health)?;
        chains::check_residency(&self.residency)?;
        tenants::check_tenants(&self.tenants)?;
        websocket::check_websocket(&self.websocket)?;
        audit::check_audit(&self.audit)?;
        hedge::check_hedge(&self.hedge)?;
        hedge::check_timeouts(&self.timeouts)?;
        chains::check_method_lists(&self.methods, &self.chains)
    }

    fn chain_index(&self, key: &str) -> Option<usize> {
        match key.parse::<u64>() {
            Ok(id) => self.chains.iter().position(|c| c.chain_id == id),
            Err(_) => self.chains.iter().position(|c| c.name == key),
        }
    }

    /// Finds a chain by name or decimal id.
    pub fn chain(&self, key: &str) -> Option<&ChainConfig> {
        self.chain_index(key).map(|i| &self.chains[i])
    }

    /// A configured chain by its id.
    pub fn chain_by_id(&self, chain_id: u64) -> Option<&ChainConfig> {
        self.chains.iter().find(|c| c.chain_id == chain_id)
    }

    /// The chain `POST /` serves: `default_chain`, else the first.
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
    use crate::geo::HeaderPolicy;

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

    fn with_geo(geo: &str) -> String {
        format!("{GOOD}\n[geo]\n{geo}\n")
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let c = Config::parse(GOOD, "g.toml").unwrap();
        assert_eq!(c.server.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(c.server.max_batch, DEFAULT_MAX_BATCH);
        assert_eq!(c.server.request_timeout, DEFAULT_REQUEST_TIMEOUT);
        assert_eq!(c.server.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        assert_eq!(
            c.server.max_connections_per_ip,
            DEFAULT_MAX_CONNECTIONS_PER_IP
        );
        assert_eq!(c.quic.status_deadline, DEFAULT_STATUS_DEADLINE);
        assert_eq!(c.geo.client_ip_header, HeaderPolicy::PreferXForwardedFor);
        assert_eq!(c.methods.deny.len(), DEFAULT_DENY.len());
        assert_eq!(c.default_chain().chain_id, 31337);
        assert_eq!(c.chain("31337").unwrap().name, "anvil");
        assert!(c.chain("mainnet").is_none());
        assert!(!format!("{:?}", c.quic).contains("0123456789"));
    }

    #[test]
    fn ms_keys_become_durations() {
        let text = GOOD
            .replace(
                "[server]",
                "[server]\nheader_timeout_ms = 1500\nidle_timeout_ms = 2500",
            )
            .replace("[quic]", "[quic]\nstatus_deadline_ms = 900");
        let c = Config::parse(&text, "g.toml").unwrap();
        assert_eq!(
            c.server.header_timeout,
            std::time::Duration::from_millis(1500)
        );
        assert_eq!(
            c.server.idle_timeout,
            std::time::Duration::from_millis(2500)
        );
        assert_eq!(
            c.quic.status_deadline,
            std::time::Duration::from_millis(900)
        );
    }

    #[test]
    fn default_chain_is_found_by_name_or_id() {
        let text =
            format!("default_chain = \"7\"\n{GOOD}\n[[chains]]\nname = \"b\"\nchain_id = 7\n");
        let c = Config::parse(&text, "g.toml").unwrap();
        assert_eq!(c.default_chain().name, "b");
    }

    #[test]
    fn trusted_proxies_are_parsed_once_at_load() {
        let c = Config::parse(
            &with_geo("trusted_proxies = [\"10.1.2.3/8\", \"192.168.1.1\"]"),
            "g.toml",
        )
        .unwrap();
        let nets: Vec<String> = c
            .geo
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["10.0.0.0/8", "192.168.1.1/32"]);
        let trusted = c.geo.trusted();
        assert!(trusted.contains("10.9.9.9".parse().unwrap()));
        assert_eq!(trusted.policy(), HeaderPolicy::PreferXForwardedFor);
    }

    #[test]
    fn each_client_ip_header_value_reaches_its_policy() {
        let cases = [
            ("prefer-x-forwarded-for", HeaderPolicy::PreferXForwardedFor),
            ("prefer-forwarded", HeaderPolicy::PreferForwarded),
            ("x-forwarded-for", HeaderPolicy::XForwardedForOnly),
            ("forwarded", HeaderPolicy::ForwardedOnly),
        ];
        for (value, policy) in cases {
            let text = with_geo(&format!("client_ip_header = {value:?}"));
            let c = Config::parse(&text, "g.toml").unwrap();
            assert_eq!(c.geo.client_ip_header, policy, "{value}");
            assert_eq!(c.geo.trusted().policy(), policy, "{value}");
        }
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
                GOOD.replace("[server]", "[server]\nrequest_timeout_ms = 0"),
                "server.request_timeout_ms",
            ),
            (
                GOOD.replace("[server]", "[server]\nidle_timeout_ms = 0"),
                "server.idle_timeout_ms",
            ),
            (
                GOOD.replace("[server]", "[server]\nmax_connections_per_ip = 0"),
                "server.max_connections_per_ip",
            ),
            (
                GOOD.replace("[server]", "[server]\nmax_connections_per_ip = -1"),
                "max_connections_per_ip",
            ),
            (
                GOOD.replace("[quic]", "[quic]\nstatus_interval_ms = 50"),
                "quic.status_interval_ms",
            ),
            (
                GOOD.replace("[quic]", "[quic]\nstatus_deadline_ms = 200"),
                "quic.status_deadline_ms",
            ),
            (
                format!("{GOOD}\n[methods]\ndeny = [\"a*b\"]\n"),
                "methods.deny[0]",
            ),
            (
                format!("{GOOD}\n[[chains]]\nname = \"anvil\"\nchain_id = 1\n"),
                "chains[1].name",
            ),
            (
                with_geo("trusted_proxies = [\"proxy.local\"]"),
                "geo.trusted_proxies",
            ),
            (
                with_geo("reload_interval_ms = 10"),
                "geo.reload_interval_ms",
            ),
            (
                format!("{GOOD}\n[health]\nmax_head_age_ms = -1\n"),
                "max_head_age_ms",
            ),
            (
                format!("{GOOD}\n[[residency]]\nname = \"eu\"\nregions = [\"eu\"]\n"),
                "residency[0]",
            ),
            (
                format!("{GOOD}\n[hedge]\nmax_share = 0\n"),
                "hedge.max_share",
            ),
            (
                format!("{GOOD}\n[hedge]\nquantile = 1.5\n"),
                "hedge.quantile",
            ),
            (
                format!("{GOOD}\n[hedge]\nmin_delay_ms = 50\nmax_delay_ms = 20\n"),
                "hedge.max_delay_ms",
            ),
            (
                format!("{GOOD}\n[timeouts]\neth_getLogs = 0\n"),
                "timeouts.eth_getLogs",
            ),
            (
                format!("{GOOD}\n[timeouts]\n\"eth_*\" = 100\n"),
                "timeouts.eth_*",
            ),
        ];
        for (text, key) in cases {
            let err = Config::parse(&text, "g.toml").unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("g.toml"), "{key}: {err}");
        }
    }

    #[test]
    fn a_bad_client_ip_header_names_the_key_and_the_allowed_values() {
        let err = Config::parse(&with_geo("client_ip_header = \"xff\""), "g.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("geo.client_ip_header") && err.contains("g.toml"),
            "{err}"
        );
        for allowed in HeaderPolicy::NAMES {
            assert!(err.contains(allowed.0), "{allowed:?} not listed: {err}");
        }
    }

    #[test]
    fn parse_errors_keep_their_cause() {
        let err = Config::parse("not toml [", "g.toml").unwrap_err();
        assert!(std::error::Error::source(&err).is_some());
    }
}
