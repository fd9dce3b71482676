//! `[routing]` (how a node is picked for a caller) and `[health]` (when a node stops being a
//! candidate). The routing weights stay `f64` milliseconds: they are terms of a score computed
//! per request, not durations anything waits for.

use std::time::Duration;

use serde::Deserialize;

use super::{invalid, Check};
use daemon::config::millis;

/// Light in fibre: about 200,000 km/s one way, so ~100 km per millisecond of round trip.
pub const DEFAULT_KM_PER_MS: f64 = 100.0;
pub const DEFAULT_LOAD_PENALTY_MS: f64 = 0.5;
pub const DEFAULT_ERROR_PENALTY_MS: f64 = 200.0;
pub const DEFAULT_SPREAD_MS: f64 = 5.0;
pub const DEFAULT_MAX_LAG_BLOCKS: u64 = 5;
pub const DEFAULT_MAX_HEAD_AGE: Duration = Duration::from_millis(60_000);
pub const DEFAULT_FAIL_AFTER: u32 = 2;
pub const DEFAULT_RECOVER_AFTER: u32 = 3;
pub const DEFAULT_BREAKER_ERROR_RATE: f64 = 0.5;
pub const DEFAULT_BREAKER_MIN_REQUESTS: u32 = 5;

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
    /// `max_head_age_ms`: a node whose head block is older than this is dropped.
    #[serde(
        rename = "max_head_age_ms",
        default = "d_max_head_age",
        with = "millis"
    )]
    pub max_head_age: Duration,
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
            max_head_age: d_max_head_age(),
            fail_after: d_fail_after(),
            recover_after: d_recover_after(),
            breaker_error_rate: d_breaker_rate(),
            breaker_min_requests: d_breaker_min(),
        }
    }
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
fn d_max_head_age() -> Duration {
    DEFAULT_MAX_HEAD_AGE
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

pub(super) fn check_routing(r: &RoutingConfig) -> Check {
    for (key, v) in [
        ("routing.km_per_ms", r.km_per_ms),
        ("routing.rtt_weight", r.rtt_weight),
        ("routing.load_penalty_ms", r.load_penalty_ms),
        ("routing.error_penalty_ms", r.error_penalty_ms),
        ("routing.spread_ms", r.spread_ms),
    ] {
        if !v.is_finite() || v < 0.0 {
            return Err(invalid(key, format!("{v} must be a finite number >= 0")));
        }
    }
    if r.km_per_ms == 0.0 {
        return Err(invalid("routing.km_per_ms", "must be greater than 0"));
    }
    Ok(())
}

pub(super) fn check_health(h: &HealthConfig) -> Check {
    if h.fail_after == 0 || h.recover_after == 0 {
        return Err(invalid(
            "health.fail_after",
            "fail_after and recover_after must be at least 1",
        ));
    }
    if !(0.0..=1.0).contains(&h.breaker_error_rate) {
        return Err(invalid(
            "health.breaker_error_rate",
            "must be within 0.0..=1.0",
        ));
    }
    Ok(())
}
