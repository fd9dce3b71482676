//! The gateway's cache tiers (`crate::answers`): entries and weighted bytes, read at each
//! scrape.

use daemon::metrics::Families;
use prometheus::IntGauge;

use crate::answers::Tiers;

pub struct AnswerGauges {
    pub answer_entries: IntGauge,
    pub answer_bytes: IntGauge,
    /// The tip part (answers tied to a node's chain state).
    pub tip_entries: IntGauge,
    pub tip_bytes: IntGauge,
}

impl AnswerGauges {
    pub fn new(f: &Families<'_>) -> Self {
        Self {
            answer_entries: f.gauge(
                "answer_cache_entries",
                "Final answers held in the gateway tier of the cache.",
            ),
            answer_bytes: f.gauge(
                "answer_cache_bytes",
                "Weighted size of the gateway tier of the cache (bounded by [cache] max_bytes).",
            ),
            tip_entries: f.gauge(
                "tip_cache_entries",
                "Tip answers (tied to a node's announced chain state) held in the gateway tier.",
            ),
            tip_bytes: f.gauge(
                "tip_cache_bytes",
                "Weighted size of the tip answers (bounded by [cache] tip_max_bytes).",
            ),
        }
    }

    /// Reads both tiers' usage.
    pub fn refresh(&self, tiers: &Tiers) {
        let (entries, bytes) = tiers.finals.usage();
        self.answer_entries.set(entries as i64);
        self.answer_bytes.set(bytes as i64);
        let (entries, bytes) = tiers.tips.usage();
        self.tip_entries.set(entries as i64);
        self.tip_bytes.set(bytes as i64);
    }
}
