//! Audits of the nodes' answers and ejections (`crate::nodes::audit`).

use daemon::metrics::Families;
use prometheus::{IntCounter, IntCounterVec};

/// How an audit ended (`gateway_audits_total{outcome}`): `pass` (the answers agreed),
/// `wrong` (a node was shown wrong), `unresolved` (two answers differed and no third settled
/// it), `inconclusive` (nothing to compare with: no other node, an error, a timeout), `skipped`
/// (sampled, but `audit.max_in_flight` audits were running).
pub const OUTCOMES: &[&str] = &["pass", "wrong", "unresolved", "inconclusive", "skipped"];

pub struct AuditFamilies {
    pub audits: IntCounterVec,
    /// Calls the audits sent to nodes or the audit upstream: the traffic they add.
    pub calls: IntCounterVec,
    /// Calls to the audit upstream (`audit.upstream`).
    pub trusted_calls: IntCounter,
    pub ejections: IntCounter,
    /// Answers dropped from the gateway's tiers: shown wrong, or their node was ejected.
    pub dropped_answers: IntCounter,
}

impl AuditFamilies {
    pub fn new(f: &Families<'_>) -> Self {
        Self {
            audits: f.counter_vec(
                "audits_total",
                "Audits of node answers by chain and outcome (pass, wrong, unresolved, inconclusive, skipped).",
                &["chain", "outcome"],
            ),
            calls: f.counter_vec(
                "audit_calls_total",
                "Calls audits sent (to other nodes or the audit upstream), by chain.",
                &["chain"],
            ),
            trusted_calls: f.counter(
                "audit_upstream_calls_total",
                "Calls audits sent to the audit upstream the operator trusts (audit.upstream).",
            ),
            ejections: f.counter(
                "node_ejections_total",
                "Nodes ejected for a reputation below audit.eject_below.",
            ),
            dropped_answers: f.counter(
                "ejected_answers_dropped_total",
                "Kept answers dropped from the gateway's cache tiers: shown wrong by an audit, or given by a node since ejected.",
            ),
        }
    }

    /// Series alerts and rates need exist at zero for every chain.
    pub fn precreate(&self, chains: &[&str]) {
        for c in chains {
            for o in OUTCOMES {
                self.audits.with_label_values(&[c, o]);
            }
            self.calls.with_label_values(&[c]);
        }
    }
}
