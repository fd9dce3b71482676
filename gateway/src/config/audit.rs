//! `[audit]`: re-asking a share of the nodes' answers off the request path, and the reputation
//! that decides when a node is ejected (`crate::nodes::audit`, `crate::nodes::reputation`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, Check};
use daemon::config::millis;

/// Final answers have one right answer, so a small share already catches a liar fast.
pub const DEFAULT_AUDIT_SHARE: f64 = 0.02;
pub const DEFAULT_AUDIT_MAX_IN_FLIGHT: usize = 32;
pub const DEFAULT_AUDIT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_PENALTY: f64 = 0.4;
pub const DEFAULT_REWARD: f64 = 0.01;
pub const DEFAULT_HEALTH_PENALTY: f64 = 0.02;
pub const DEFAULT_EJECT_BELOW: f64 = 0.5;
pub const DEFAULT_EJECT_FOR: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Share (0..=1) of final answers (and receipts) re-checked.
    #[serde(default = "d_share")]
    pub share: f64,
    /// Per-method shares, overriding `share` (e.g. `eth_call = 0.1`; 0 turns a method off).
    #[serde(default)]
    pub methods: BTreeMap<String, f64>,
    /// A JSON-RPC URL (http) the operator trusts: when set, audits ask it instead of a second
    /// node, and its answer decides.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Audits running at once; beyond it a sampled answer is not audited (counted as skipped).
    #[serde(default = "d_in_flight")]
    pub max_in_flight: usize,
    /// `timeout_ms`: how long one audit may take in all.
    #[serde(rename = "timeout_ms", default = "d_timeout", with = "millis")]
    pub timeout: Duration,
    /// Reputation lost for an answer shown wrong (a node starts at 1.0).
    #[serde(default = "d_penalty")]
    pub penalty: f64,
    /// Reputation regained per answer an audit confirmed (up to 1.0).
    #[serde(default = "d_reward")]
    pub reward: f64,
    /// Reputation lost each time the health checker drops the node for a chain.
    #[serde(default = "d_health_penalty")]
    pub health_penalty: f64,
    /// A node whose reputation falls below this is ejected.
    #[serde(default = "d_eject_below")]
    pub eject_below: f64,
    /// `eject_for_secs`: how long an ejected node stays out unless an operator re-admits it
    /// (`POST /admin/nodes/{id}/readmit`).
    #[serde(rename = "eject_for_secs", default = "d_eject_for", with = "secs")]
    pub eject_for: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            share: DEFAULT_AUDIT_SHARE,
            methods: BTreeMap::new(),
            upstream: None,
            max_in_flight: DEFAULT_AUDIT_MAX_IN_FLIGHT,
            timeout: DEFAULT_AUDIT_TIMEOUT,
            penalty: DEFAULT_PENALTY,
            reward: DEFAULT_REWARD,
            health_penalty: DEFAULT_HEALTH_PENALTY,
            eject_below: DEFAULT_EJECT_BELOW,
            eject_for: DEFAULT_EJECT_FOR,
        }
    }
}

impl AuditConfig {
    /// The share of `method`'s answers to audit (0 when audits are off).
    pub fn share_of(&self, method: &str) -> f64 {
        if !self.enabled {
            return 0.0;
        }
        self.methods.get(method).copied().unwrap_or(self.share)
    }
}

mod secs {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?))
    }
}

fn yes() -> bool {
    true
}
fn d_share() -> f64 {
    DEFAULT_AUDIT_SHARE
}
fn d_in_flight() -> usize {
    DEFAULT_AUDIT_MAX_IN_FLIGHT
}
fn d_timeout() -> Duration {
    DEFAULT_AUDIT_TIMEOUT
}
fn d_penalty() -> f64 {
    DEFAULT_PENALTY
}
fn d_reward() -> f64 {
    DEFAULT_REWARD
}
fn d_health_penalty() -> f64 {
    DEFAULT_HEALTH_PENALTY
}
fn d_eject_below() -> f64 {
    DEFAULT_EJECT_BELOW
}
fn d_eject_for() -> Duration {
    DEFAULT_EJECT_FOR
}

fn share_ok(v: f64) -> bool {
    (0.0..=1.0).contains(&v)
}

pub(super) fn check_audit(a: &AuditConfig) -> Check {
    if !share_ok(a.share) {
        return Err(invalid("audit.share", "must be between 0 and 1"));
    }
    if let Some((m, _)) = a.methods.iter().find(|(_, v)| !share_ok(**v)) {
        return Err(invalid(
            format!("audit.methods.{m}"),
            "must be between 0 and 1",
        ));
    }
    if let Some(u) = &a.upstream {
        let ok = u
            .parse::<http::Uri>()
            .is_ok_and(|uri| uri.scheme_str() == Some("http") && uri.host().is_some());
        if !ok {
            return Err(invalid(
                "audit.upstream",
                format!("{u:?} is not an http:// URL"),
            ));
        }
    }
    if a.max_in_flight == 0 {
        return Err(invalid("audit.max_in_flight", "must be at least 1"));
    }
    if a.timeout < Duration::from_millis(100) {
        return Err(invalid("audit.timeout_ms", "must be at least 100"));
    }
    for (key, v) in [
        ("audit.penalty", a.penalty),
        ("audit.reward", a.reward),
        ("audit.health_penalty", a.health_penalty),
    ] {
        if !share_ok(v) {
            return Err(invalid(key, "must be between 0 and 1"));
        }
    }
    if !(a.eject_below > 0.0 && a.eject_below < 1.0) {
        return Err(invalid(
            "audit.eject_below",
            "must be between 0 and 1 (exclusive): nodes start at 1.0",
        ));
    }
    if a.eject_for.is_zero() {
        return Err(invalid("audit.eject_for_secs", "must be at least 1"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_bounds_are_checked_by_key() {
        let mut a = AuditConfig::default();
        assert!(check_audit(&a).is_ok());
        a.methods.insert("eth_call".into(), 1.5);
        assert_eq!(check_audit(&a).unwrap_err().key, "audit.methods.eth_call");
        a.methods.insert("eth_call".into(), 0.5);
        assert_eq!(a.share_of("eth_call"), 0.5);
        assert_eq!(a.share_of("eth_getBalance"), DEFAULT_AUDIT_SHARE);
        a.upstream = Some("ws://x".into());
        assert_eq!(check_audit(&a).unwrap_err().key, "audit.upstream");
        a.upstream = Some("http://127.0.0.1:8545".into());
        a.eject_below = 1.0;
        assert_eq!(check_audit(&a).unwrap_err().key, "audit.eject_below");
        a.eject_below = 0.5;
        a.enabled = false;
        assert_eq!(a.share_of("eth_call"), 0.0);
    }
}
