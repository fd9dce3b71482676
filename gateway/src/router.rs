//! Node choice: which healthy nodes may serve a request, in the order to try them.

use std::sync::Arc;
use std::time::Duration;

use crate::registry::Node;
use crate::App;

/// Candidates for `chain_id`, best first. The first two are compared by load (power of two
/// choices) so near-equal nodes share traffic instead of the best one taking it all.
pub fn rank(app: &App, chain_id: u64) -> Vec<Arc<Node>> {
    let deadline = Duration::from_millis(app.config.quic.status_deadline_ms);
    let mut c = app.registry.candidates(chain_id, deadline);
    c.sort_by_key(|n| (n.rtt(), n.load()));
    if c.len() >= 2 && c[1].load() < c[0].load() {
        c.swap(0, 1);
    }
    c
}
