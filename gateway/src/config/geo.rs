//! `[geo]`: geolocation databases, the default and gateway locations, and whose forwarding
//! headers are believed (`trusted_proxies`, parsed into networks at load, and
//! `client_ip_header`, which header they write).

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use super::{invalid, Check};
use crate::geo::{HeaderPolicy, TrustedProxies};
use daemon::config::millis::{self, ms};

pub const DEFAULT_GEO_CACHE_ENTRIES: usize = 100_000;
pub const DEFAULT_GEO_RELOAD_INTERVAL: Duration = Duration::from_millis(30_000);

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
    /// Proxies whose `X-Forwarded-For`/`Forwarded` headers are believed, written as CIDRs or
    /// addresses (an address is a single-host network; host bits are cleared).
    #[serde(default, deserialize_with = "trusted_proxies")]
    pub trusted_proxies: Vec<IpNet>,
    /// Which forwarding header the trusted proxies write (see [`HeaderPolicy::NAMES`]).
    #[serde(default, deserialize_with = "client_ip_header")]
    pub client_ip_header: HeaderPolicy,
    /// Location for private, loopback and unknown addresses.
    #[serde(default)]
    pub default_location: Option<DefaultLocation>,
    /// Where this gateway is: drawn on the status page, shared with the other gateways with
    /// its RTTs, and the base of the node location check.
    #[serde(default)]
    pub gateway_location: Option<Point>,
    /// Judge nodes' claimed locations against the gateways' RTTs (needs `gateway_location`
    /// here or on another gateway). Off only where RTTs say nothing, as on one machine.
    #[serde(default = "d_true")]
    pub check_node_locations: bool,
    #[serde(default = "d_geo_cache")]
    pub cache_entries: usize,
    /// `reload_interval_ms`: how often the database files are checked for changes (SIGHUP
    /// reloads at once).
    #[serde(
        rename = "reload_interval_ms",
        default = "d_geo_reload",
        with = "millis"
    )]
    pub reload_interval: Duration,
}

impl Default for GeoConfig {
    fn default() -> Self {
        Self {
            databases: Vec::new(),
            trusted_proxies: Vec::new(),
            client_ip_header: HeaderPolicy::default(),
            default_location: None,
            gateway_location: None,
            check_node_locations: true,
            cache_entries: DEFAULT_GEO_CACHE_ENTRIES,
            reload_interval: DEFAULT_GEO_RELOAD_INTERVAL,
        }
    }
}

impl GeoConfig {
    /// The per-request trust policy: the parsed networks and the configured header.
    pub fn trusted(&self) -> TrustedProxies {
        TrustedProxies::new(self.trusted_proxies.clone()).with_policy(self.client_ip_header)
    }
}

fn d_true() -> bool {
    true
}

fn d_geo_cache() -> usize {
    DEFAULT_GEO_CACHE_ENTRIES
}
fn d_geo_reload() -> Duration {
    DEFAULT_GEO_RELOAD_INTERVAL
}

/// Parsed while deserializing, so a bad entry fails the load (serde errors carry a message,
/// hence the key in it) and nothing parses the list again.
fn trusted_proxies<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let entries = Vec::<String>::deserialize(d)?;
    TrustedProxies::parse(&entries)
        .map(|t| t.nets().to_vec())
        .map_err(|e| D::Error::custom(format!("`geo.trusted_proxies`: {e}")))
}

fn client_ip_header<'de, D: Deserializer<'de>>(d: D) -> Result<HeaderPolicy, D::Error> {
    String::deserialize(d)?
        .parse()
        .map_err(|e| D::Error::custom(format!("`geo.client_ip_header`: {e}")))
}

pub(super) fn check_geo(g: &GeoConfig) -> Check {
    let in_range =
        |lat: f64, lon: f64| (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon);
    if let Some(d) = &g.default_location {
        if !in_range(d.lat, d.lon) {
            return Err(invalid("geo.default_location", "coordinates out of range"));
        }
    }
    if let Some(p) = &g.gateway_location {
        if !in_range(p.lat, p.lon) {
            return Err(invalid("geo.gateway_location", "coordinates out of range"));
        }
    }
    if ms(g.reload_interval) < 100 {
        return Err(invalid("geo.reload_interval_ms", "must be at least 100"));
    }
    Ok(())
}
