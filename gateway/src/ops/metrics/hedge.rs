//! Hedged reads (`crate::nodes::hedge`).

use daemon::metrics::Families;
use prometheus::{Histogram, IntCounterVec};

/// Hedge outcomes (`gateway_hedges_total{outcome}`), created at zero.
pub const OUTCOMES: &[&str] = &["sent", "won", "lost", "budget_exhausted"];

pub struct HedgeFamilies {
    /// `hedges_total{outcome}`: see [`OUTCOMES`].
    pub outcomes: IntCounterVec,
    pub delay: Histogram,
}

impl HedgeFamilies {
    pub fn new(f: &Families<'_>) -> Self {
        let m = Self {
            outcomes: f.counter_vec(
                "hedges_total",
                "Hedged reads (a late read also sent to the next node) by outcome: sent; won (the hedge answered first); lost (the first node did); budget_exhausted (late, but [hedge] max_share was spent).",
                &["outcome"],
            ),
            delay: f.histogram(
                "hedge_delay_seconds",
                "The delay after which each hedge was sent: the first node's recent latency quantile for the call's class, within [hedge] min_delay_ms..max_delay_ms.",
                super::REQUEST_BUCKETS,
            ),
        };
        for o in OUTCOMES {
            m.outcomes.with_label_values(&[o]);
        }
        m
    }
}
