//! `[hedge]` (a second node asked when the first is late with a read) and `[timeouts]` (request
//! deadlines per method, over `server.request_timeout_ms`).

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::{invalid, Check};
use daemon::config::millis::{self, ms};

pub const DEFAULT_HEDGE_QUANTILE: f64 = 0.95;
/// Below this a hedge would mostly race the first node's own normal answer.
pub const DEFAULT_HEDGE_MIN_DELAY: Duration = Duration::from_millis(10);
/// Also the delay while a node has too few recent answers to know its latency.
pub const DEFAULT_HEDGE_MAX_DELAY: Duration = Duration::from_millis(1000);
pub const DEFAULT_HEDGE_MAX_SHARE: f64 = 0.1;
/// A per-method timeout longer than this is a typo, not a plan.
pub const MAX_METHOD_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HedgeConfig {
    /// Hedge reads at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Which quantile of the node's recent latency (for the call's method class) it may take
    /// before the next node is asked too.
    #[serde(default = "d_quantile")]
    pub quantile: f64,
    /// `min_delay_ms`, `max_delay_ms`: bounds of that delay.
    #[serde(rename = "min_delay_ms", default = "d_min", with = "millis")]
    pub min_delay: Duration,
    #[serde(rename = "max_delay_ms", default = "d_max", with = "millis")]
    pub max_delay: Duration,
    /// Hedges at most this share of dispatched requests (a token bucket), so a slow network
    /// does not double its own load.
    #[serde(default = "d_share")]
    pub max_share: f64,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            quantile: DEFAULT_HEDGE_QUANTILE,
            min_delay: DEFAULT_HEDGE_MIN_DELAY,
            max_delay: DEFAULT_HEDGE_MAX_DELAY,
            max_share: DEFAULT_HEDGE_MAX_SHARE,
        }
    }
}

/// `[timeouts]`: method name = milliseconds. A request's deadline is the largest timeout of
/// its calls, `server.request_timeout_ms` for methods not listed.
#[derive(Debug, Clone, Default)]
pub struct MethodTimeouts(pub HashMap<String, Duration>);

impl<'de> Deserialize<'de> for MethodTimeouts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = HashMap::<String, u64>::deserialize(d)?;
        Ok(Self(
            raw.into_iter()
                .map(|(m, v)| (m, Duration::from_millis(v)))
                .collect(),
        ))
    }
}

impl MethodTimeouts {
    /// The timeout of a request made of `methods`: the largest of theirs.
    pub fn for_methods<'m>(
        &self,
        methods: impl IntoIterator<Item = &'m str>,
        default: Duration,
    ) -> Duration {
        if self.0.is_empty() {
            return default;
        }
        methods
            .into_iter()
            .map(|m| self.0.get(m).copied().unwrap_or(default))
            .max()
            .unwrap_or(default)
    }
}

fn yes() -> bool {
    true
}
fn d_quantile() -> f64 {
    DEFAULT_HEDGE_QUANTILE
}
fn d_min() -> Duration {
    DEFAULT_HEDGE_MIN_DELAY
}
fn d_max() -> Duration {
    DEFAULT_HEDGE_MAX_DELAY
}
fn d_share() -> f64 {
    DEFAULT_HEDGE_MAX_SHARE
}

pub(super) fn check_hedge(h: &HedgeConfig) -> Check {
    if !(h.quantile > 0.0 && h.quantile < 1.0) {
        return Err(invalid("hedge.quantile", "must be within (0, 1)"));
    }
    if !(h.max_share > 0.0 && h.max_share <= 1.0) {
        return Err(invalid("hedge.max_share", "must be within (0, 1]"));
    }
    if h.min_delay.is_zero() {
        return Err(invalid("hedge.min_delay_ms", "must be at least 1"));
    }
    if h.max_delay < h.min_delay {
        return Err(invalid(
            "hedge.max_delay_ms",
            format!("must be at least min_delay_ms ({} ms)", ms(h.min_delay)),
        ));
    }
    Ok(())
}

pub(super) fn check_timeouts(t: &MethodTimeouts) -> Check {
    let mut names: Vec<_> = t.0.iter().collect();
    names.sort();
    for (method, &d) in names {
        let key = format!("timeouts.{method}");
        let plausible = !method.is_empty()
            && method
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !plausible {
            return Err(invalid(key, "is not a JSON-RPC method name"));
        }
        if d.is_zero() || d > MAX_METHOD_TIMEOUT {
            return Err(invalid(
                key,
                format!("must be within 1..={} ms", ms(MAX_METHOD_TIMEOUT)),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_gets_the_largest_of_its_calls_timeouts() {
        let t = MethodTimeouts(HashMap::from([
            ("eth_getLogs".to_string(), Duration::from_secs(20)),
            ("eth_chainId".to_string(), Duration::from_secs(1)),
        ]));
        let d = Duration::from_secs(10);
        assert_eq!(t.for_methods(["eth_getLogs"], d), Duration::from_secs(20));
        assert_eq!(t.for_methods(["eth_chainId"], d), Duration::from_secs(1));
        assert_eq!(t.for_methods(["eth_chainId", "eth_call"], d), d);
        assert_eq!(
            t.for_methods(["eth_chainId", "eth_getLogs"], d),
            Duration::from_secs(20)
        );
        assert_eq!(MethodTimeouts::default().for_methods(["eth_getLogs"], d), d);
    }
}
