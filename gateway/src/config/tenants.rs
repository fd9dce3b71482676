//! `[tenants]`: where the tenants file is and where limits are shared (the file's own format is
//! [`crate::tenants::file`]'s).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, Check};
use daemon::config::millis::{self, ms};

/// A lease of shared tokens lasts about two ticks: short enough that two gateways split a
/// tenant's rate closely, long enough that a busy tenant costs Redis one round trip per tick.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(50);
/// Well under the second within which a revoked key must stop working.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_millis(250);
pub const DEFAULT_REDIS_PREFIX: &str = "meridian";

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantsConfig {
    /// The tenants file (relative to the config file). Absent: no tenants, every caller is
    /// keyless and unlimited.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Redis the gateways share through: tenants' limits, and each gateway's RTTs to the nodes
    /// (location checks from every vantage point). Absent: each gateway keeps its own.
    #[serde(default)]
    pub redis_url: Option<String>,
    #[serde(default = "d_prefix")]
    pub redis_prefix: String,
    /// `sync_interval_ms`: how often local counts are reconciled (with Redis, or refilled
    /// locally without it).
    #[serde(rename = "sync_interval_ms", default = "d_sync", with = "millis")]
    pub sync_interval: Duration,
    /// `watch_interval_ms`: how often the tenants file is checked for changes (SIGHUP and the
    /// admin API reload at once).
    #[serde(rename = "watch_interval_ms", default = "d_watch", with = "millis")]
    pub watch_interval: Duration,
    /// Gateways sharing the limits, assumed until Redis has said how many there are (a
    /// gateway that starts while Redis is down enforces `1 / expected_gateways` of each rate).
    #[serde(default = "d_expected")]
    pub expected_gateways: u32,
}

/// The Redis URL may hold a password: never printed.
impl std::fmt::Debug for TenantsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantsConfig")
            .field("file", &self.file)
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<redacted>"))
            .field("redis_prefix", &self.redis_prefix)
            .field("sync_interval", &self.sync_interval)
            .field("watch_interval", &self.watch_interval)
            .field("expected_gateways", &self.expected_gateways)
            .finish()
    }
}

impl Default for TenantsConfig {
    fn default() -> Self {
        Self {
            file: None,
            redis_url: None,
            redis_prefix: d_prefix(),
            sync_interval: DEFAULT_SYNC_INTERVAL,
            watch_interval: DEFAULT_WATCH_INTERVAL,
            expected_gateways: 1,
        }
    }
}

fn d_expected() -> u32 {
    1
}

fn d_prefix() -> String {
    DEFAULT_REDIS_PREFIX.to_string()
}
fn d_sync() -> Duration {
    DEFAULT_SYNC_INTERVAL
}
fn d_watch() -> Duration {
    DEFAULT_WATCH_INTERVAL
}

pub(super) fn check_tenants(t: &TenantsConfig) -> Check {
    if !(10..=1000).contains(&ms(t.sync_interval)) {
        return Err(invalid(
            "tenants.sync_interval_ms",
            format!("{} is not in 10..=1000", ms(t.sync_interval)),
        ));
    }
    if !(50..=10_000).contains(&ms(t.watch_interval)) {
        return Err(invalid(
            "tenants.watch_interval_ms",
            format!("{} is not in 50..=10000", ms(t.watch_interval)),
        ));
    }
    if t.redis_prefix.is_empty() || t.redis_prefix.contains(char::is_whitespace) {
        return Err(invalid(
            "tenants.redis_prefix",
            "must be non-empty, without spaces",
        ));
    }
    if let Some(url) = &t.redis_url {
        // The URL is not repeated: it may hold a password.
        redis::Client::open(url.as_str())
            .map_err(|e| invalid("tenants.redis_url", format!("is not a Redis URL: {e}")))?;
    }
    if !(1..=1000).contains(&t.expected_gateways) {
        return Err(invalid(
            "tenants.expected_gateways",
            format!("{} is not in 1..=1000", t.expected_gateways),
        ));
    }
    Ok(())
}
