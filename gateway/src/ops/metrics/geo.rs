//! Geo database reload counters (`gateway_geo_reloads_total{result}`), copied from
//! [`GeoStats`] at scrape time: the geo service already counts reloads itself, so the reload
//! path stays free of metric handles.

use daemon::metrics::Families;
use parking_lot::Mutex;
use prometheus::{IntCounter, IntCounterVec};

use crate::geo::GeoStats;

pub struct GeoReloads {
    pub reloads: IntCounterVec,
    ok: IntCounter,
    error: IntCounter,
    /// Serialises catch-ups so two concurrent scrapes never add the same reloads twice.
    refresh: Mutex<()>,
}

impl GeoReloads {
    /// Both series exist from the start, at zero, so rates and alerts see them before the
    /// first reload.
    pub fn new(f: &Families<'_>) -> Self {
        let reloads = f.counter_vec(
            "geo_reloads_total",
            "Geo database files reloaded, by result (ok; error: the previous file kept serving).",
            &["result"],
        );
        Self {
            ok: reloads.with_label_values(&["ok"]),
            error: reloads.with_label_values(&["error"]),
            reloads,
            refresh: Mutex::new(()),
        }
    }

    /// Brings the counters up to `stats`. Call right before rendering.
    pub fn refresh(&self, stats: &GeoStats) {
        let _one_at_a_time = self.refresh.lock();
        catch_up(&self.ok, stats.reloads_ok);
        catch_up(&self.error, stats.reload_failures);
    }
}

/// Raises `counter` to `total` (the stats are monotonic, so it never has to go down).
fn catch_up(counter: &IntCounter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::metrics::Metrics;

    #[test]
    fn rendered_metrics_carry_the_geo_reload_counters() {
        let m = Metrics::new();
        let zero = m.render();
        assert!(
            zero.contains("gateway_geo_reloads_total{result=\"ok\"} 0"),
            "{zero}"
        );
        assert!(zero.contains("gateway_geo_reloads_total{result=\"error\"} 0"));
        let stats = GeoStats {
            reloads_ok: 3,
            reload_failures: 1,
            ..GeoStats::default()
        };
        m.geo_reloads.refresh(&stats);
        m.geo_reloads.refresh(&stats); // a second scrape adds nothing
        let text = m.render();
        assert!(
            text.contains("# TYPE gateway_geo_reloads_total counter"),
            "{text}"
        );
        assert!(
            text.contains("gateway_geo_reloads_total{result=\"ok\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("gateway_geo_reloads_total{result=\"error\"} 1"),
            "{text}"
        );
    }
}
