//! Node choice: which healthy nodes may serve a request, in the order to try them.
//!
//! Score (milliseconds, lower is better), see ARCHITECTURE.md:
//!
//! ```text
//! geo:            distance_km(caller, node) / km_per_ms + rtt_weight * rtt_ms
//!                 + load_penalty_ms * in_flight + error_penalty_ms * error_rate
//! lowest-latency: rtt_ms
//! ```
//!
//! The order after the first node is the failover order. The first place is shared between
//! near-equal nodes (within `spread_ms` of the best) by the power of two choices: two picked at
//! random, the less loaded one wins, so the nearest node is not melted.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{ResidencyRule, RoutingMode};
use crate::geo::{haversine_km, Location};
use crate::registry::Node;
use crate::App;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RouteError {
    #[error("no healthy edge node serves chain {0}")]
    NoNode(u64),
    #[error("no healthy edge node in the regions allowed for callers from {country} (data residency rule {rule:?}: {regions})")]
    Residency {
        rule: String,
        country: String,
        regions: String,
    },
}

impl RouteError {
    /// Bounded metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            RouteError::NoNode(_) => "no_healthy_node",
            RouteError::Residency { .. } => "residency",
        }
    }
}

/// The residency rule binding a caller, if any.
pub fn residency_rule<'a>(
    rules: &'a [ResidencyRule],
    caller: Option<&Location>,
) -> Option<&'a ResidencyRule> {
    let caller = caller?;
    rules.iter().find(|r| {
        caller
            .country
            .as_deref()
            .is_some_and(|c| r.countries.iter().any(|x| x.eq_ignore_ascii_case(c)))
            || caller
                .continent
                .as_deref()
                .is_some_and(|c| r.continents.iter().any(|x| x.eq_ignore_ascii_case(c)))
    })
}

/// Candidates for `chain_id`, best first.
pub fn rank(
    app: &App,
    chain_id: u64,
    caller: Option<&Location>,
) -> Result<Vec<Arc<Node>>, RouteError> {
    let deadline = Duration::from_millis(app.config.quic.status_deadline_ms);
    let mut nodes = app.registry.candidates(chain_id, deadline);
    if let Some(rule) = residency_rule(&app.config.residency, caller) {
        // Residency-bound callers only go to allowed regions, and only to nodes whose claimed
        // location is plausible.
        nodes.retain(|n| n.plausible() && rule.regions.iter().any(|r| *r == n.region));
        if nodes.is_empty() {
            return Err(RouteError::Residency {
                rule: rule.name.clone(),
                country: caller
                    .and_then(|c| c.country.clone())
                    .unwrap_or_else(|| "?".into()),
                regions: rule.regions.join(", "),
            });
        }
    }
    if nodes.is_empty() {
        return Err(RouteError::NoNode(chain_id));
    }
    let mut scored: Vec<(f64, Arc<Node>)> = nodes
        .into_iter()
        .map(|n| (score(app, &n, caller), n))
        .collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    spread(&mut scored, app.config.routing.spread_ms);
    Ok(scored.into_iter().map(|(_, n)| n).collect())
}

/// Estimated milliseconds for `caller` via `n` (see the module docs).
pub fn score(app: &App, n: &Node, caller: Option<&Location>) -> f64 {
    let r = &app.config.routing;
    let rtt_ms = n.rtt().as_secs_f64() * 1000.0;
    match r.mode {
        RoutingMode::LowestLatency => rtt_ms,
        RoutingMode::Geo => {
            let dist_ms = caller
                .map(|c| haversine_km(c.coords(), (n.latitude, n.longitude)) / r.km_per_ms)
                .unwrap_or(0.0);
            let err = n.recent_error_rate();
            dist_ms
                + r.rtt_weight * rtt_ms
                + r.load_penalty_ms * f64::from(n.load())
                + r.error_penalty_ms * err
        }
    }
}

/// Power of two choices among the nodes within `spread_ms` of the best.
fn spread(scored: &mut [(f64, Arc<Node>)], spread_ms: f64) {
    let Some(best) = scored.first().map(|s| s.0) else {
        return;
    };
    let near = scored
        .iter()
        .take_while(|s| s.0 - best <= spread_ms)
        .count();
    if near < 2 {
        return;
    }
    let a = rand::random_range(0..near);
    let mut b = rand::random_range(0..near - 1);
    if b >= a {
        b += 1;
    }
    let pick = if scored[b].1.load() < scored[a].1.load() {
        b
    } else {
        a
    };
    scored[..=pick].rotate_right(1);
}
