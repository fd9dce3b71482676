//! Health from sync status: every status interval, judge each node for each chain it serves
//! and flip its routability only after streaks of results (hysteresis), logging each flip with
//! its reason.
//!
//! A node is bad for a chain when its status is missing or stale, its upstream reports another
//! chain id, its upstream is down, it lags more than `max_lag_blocks` behind the best head any
//! live node reports, its head block is older than `max_head_age_ms`, or the gateway's attempts
//! to it failed at more than `breaker_error_rate` over the last interval. Hard faults (silence,
//! wrong chain) drop it at once; soft ones after `fail_after` checks in a row. A dropped or new
//! node serves after `recover_after` good checks in a row.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::registry::{Node, Registry};
use super::router::Router;
use super::tip::Marks;
use super::vantage::{Measurement, Vantage};
use crate::config::{Config, HealthConfig, Point};
use crate::ops::metrics::Metrics;

/// Result of one check.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Good {
        lag: u64,
    },
    Bad {
        hard: bool,
        reason: String,
        lag: u64,
    },
}

/// The health checker: what a round of checks reads and acts on.
pub struct Checker {
    registry: Arc<Registry>,
    router: Arc<Router>,
    metrics: Arc<Metrics>,
    /// The tip marks follow the chain down when every node stays below them.
    marks: Arc<Marks>,
    health: HealthConfig,
    interval: Duration,
    status_deadline: Duration,
    /// Where the gateway is, for location plausibility (`geo.gateway_location`), its name, and
    /// the other gateways' measurements.
    gateway_location: Option<Point>,
    name: String,
    vantage: Arc<Vantage>,
    check_locations: bool,
    km_per_ms: f64,
    /// What a drop costs a node's reputation (`audit.health_penalty`, and the thresholds).
    audit: crate::config::AuditConfig,
}

impl Checker {
    pub fn new(
        registry: Arc<Registry>,
        router: Arc<Router>,
        metrics: Arc<Metrics>,
        marks: Arc<Marks>,
        vantage: Arc<Vantage>,
        config: &Config,
    ) -> Self {
        Self {
            registry,
            router,
            metrics,
            marks,
            health: config.health.clone(),
            interval: config.quic.status_interval,
            status_deadline: config.quic.status_deadline,
            gateway_location: config.geo.gateway_location,
            name: config.server.name.clone(),
            vantage,
            check_locations: config.geo.check_node_locations,
            km_per_ms: config.routing.km_per_ms,
            audit: config.audit.clone(),
        }
    }

    /// Runs the checks until `stop` fires.
    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => self.check_all(),
            }
        }
    }

    /// One round of checks over every joined node, then the routing tables are rebuilt.
    pub fn check_all(&self) {
        let deadline = self.status_deadline;
        let nodes = self.registry.snapshot();
        let best = best_heads(&nodes, deadline);
        for (&chain_id, &head) in &best {
            self.marks.follow(chain_id, head);
        }
        for n in &nodes {
            self.check_plausibility(n);
            let window = n.take_window();
            for &chain_id in &n.chains {
                let best = best.get(&chain_id).copied();
                let v = judge(&self.health, n, chain_id, best, window, deadline);
                self.apply(n, chain_id, v);
            }
        }
        self.router.rebuild();
    }
}

/// The highest head reported per chain by nodes heard from within the deadline.
pub fn best_heads(nodes: &[Arc<Node>], deadline: Duration) -> HashMap<u64, u64> {
    let mut best = HashMap::new();
    for n in nodes {
        if let Some((s, age)) = n.last_status() {
            if age > deadline {
                continue;
            }
            for c in s.chains.iter().filter(|c| n.chains.contains(&c.chain_id)) {
                let e = best.entry(c.chain_id).or_insert(0);
                *e = (*e).max(c.head_number);
            }
        }
    }
    best
}

/// Judges one node for one chain.
pub fn judge(
    h: &HealthConfig,
    n: &Node,
    chain_id: u64,
    best: Option<u64>,
    (ok, err): (u32, u32),
    deadline: Duration,
) -> Verdict {
    let bad = |hard, reason: String, lag| Verdict::Bad { hard, reason, lag };
    let Some((status, age)) = n.last_status() else {
        return bad(false, "no status yet".into(), 0);
    };
    if age > deadline {
        return bad(true, format!("silent for {} ms", age.as_millis()), 0);
    }
    let Some(c) = status.chains.iter().find(|c| c.chain_id == chain_id) else {
        let reported: Vec<u64> = status.chains.iter().map(|c| c.chain_id).collect();
        return bad(
            true,
            format!("wrong chain: upstream reports {reported:?}, expected {chain_id}"),
            0,
        );
    };
    let lag = best.unwrap_or(c.head_number).saturating_sub(c.head_number);
    if !c.upstream_healthy {
        return bad(false, "upstream not answering".into(), lag);
    }
    if lag > h.max_lag_blocks {
        return bad(
            false,
            format!(
                "lagging {lag} blocks behind the best head (max {})",
                h.max_lag_blocks
            ),
            lag,
        );
    }
    if Duration::from_millis(c.head_age_ms) > h.max_head_age {
        return bad(
            false,
            format!(
                "head is {} s old (max {} s)",
                c.head_age_ms / 1000,
                h.max_head_age.as_secs()
            ),
            lag,
        );
    }
    let total = ok + err;
    if total >= h.breaker_min_requests && total > 0 {
        let rate = f64::from(err) / f64::from(total);
        if rate > h.breaker_error_rate {
            return bad(
                false,
                format!("error rate {:.0}% over {total} requests", rate * 100.0),
                lag,
            );
        }
    }
    Verdict::Good { lag }
}

impl Checker {
    /// Applies a verdict with hysteresis; logs and counts every flip.
    pub fn apply(&self, n: &Node, chain_id: u64, v: Verdict) {
        let h = &self.health;
        let flip = n.update_health(chain_id, |st| match v {
            Verdict::Good { lag } => {
                st.lag_blocks = lag;
                st.bad_streak = 0;
                st.good_streak = st.good_streak.saturating_add(1);
                if !st.healthy && st.good_streak >= h.recover_after {
                    st.healthy = true;
                    Some((true, std::mem::take(&mut st.reason)))
                } else {
                    None
                }
            }
            Verdict::Bad { hard, reason, lag } => {
                st.lag_blocks = lag;
                st.good_streak = 0;
                st.bad_streak = st.bad_streak.saturating_add(1);
                st.reason = reason.clone();
                if st.healthy && (hard || st.bad_streak >= h.fail_after) {
                    st.healthy = false;
                    Some((false, reason))
                } else {
                    None
                }
            }
        });
        match flip {
            Some((true, was)) => {
                self.metrics
                    .health_transitions
                    .with_label_values(&["healthy"])
                    .inc();
                tracing::info!(node = %n.id, region = %n.region, chain_id, previously = %was, "node healthy: serving");
            }
            Some((false, reason)) => {
                self.metrics
                    .health_transitions
                    .with_label_values(&["unhealthy"])
                    .inc();
                tracing::warn!(node = %n.id, region = %n.region, chain_id, %reason, "node unhealthy: dropped from routing");
                // The audit tick acts on an ejection this causes; with audits off, health
                // alone never ejects (nothing would ever restore the score).
                if self.audit.enabled {
                    let drop = super::reputation::Event::HealthDrop;
                    self.registry.book.record(&n.id, drop, &self.audit);
                }
            }
            None => {}
        }
    }

    /// Flags a node whose claimed location is farther from a gateway than light in fibre could
    /// reach in that gateway's smallest measured RTT: this gateway's own measurement, and every
    /// other gateway's shared through Redis ([`super::vantage`]). A node can add delay but not
    /// remove it, so only the too-far direction is judged.
    fn check_plausibility(&self, n: &Node) {
        let min_rtt = n.sample_min_rtt();
        if !self.check_locations {
            return;
        }
        let mut all = self.vantage.of(&n.id);
        if let Some(at) = self.gateway_location {
            all.insert(
                0,
                Measurement {
                    gateway: self.name.clone(),
                    at,
                    min_rtt,
                },
            );
        }
        if all.is_empty() {
            // Nothing measured it (any more): no verdict against it either.
            n.set_plausible(true, None);
            return;
        }
        let ruled_out = all.iter().find_map(|m| {
            let (ok, km, reach) = m.allows(n.latitude, n.longitude, self.km_per_ms);
            (!ok).then(|| {
                format!(
                    "{}: claimed location {:.0} km away, {:.2} ms RTT reaches {:.0} km",
                    m.gateway,
                    km,
                    m.min_rtt.as_secs_f64() * 1000.0,
                    reach
                )
            })
        });
        let plausible = ruled_out.is_none();
        let was = n.set_plausible(plausible, ruled_out.clone());
        if was != plausible {
            if plausible {
                tracing::info!(node = %n.id, region = %n.region, "node location now plausible");
            } else {
                self.metrics.implausible_nodes_total.inc();
                tracing::warn!(
                    node = %n.id,
                    region = %n.region,
                    ruled_out_by = ruled_out.as_deref().unwrap_or(""),
                    "node location implausible: farther than a gateway's RTT allows; excluded from residency routing"
                );
            }
        }
    }
}
