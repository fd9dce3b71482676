//! Per-node and per-chain gauges, computed from the node registry at scrape time rather than
//! kept up to date on every event: the registry already holds the truth, and rebuilding the
//! label sets on each scrape makes departed nodes vanish instead of leaving stale series.
//!
//! Labels: `node` (node id, 32 hex), `region` (as the node announced it, 1-64 chars), `chain`
//! (configured chain name). All are bounded by `quic.max_nodes` and the config.

use std::time::Duration;

use daemon::metrics::Families;
use parking_lot::Mutex;
use prometheus::{GaugeVec, IntGaugeVec};

use crate::config::ChainConfig;
use crate::nodes::registry::Registry as Nodes;

pub struct NodeGauges {
    pub info: IntGaugeVec,
    pub healthy: IntGaugeVec,
    pub rtt: GaugeVec,
    pub min_rtt: GaugeVec,
    pub in_flight: IntGaugeVec,
    pub error_ratio: GaugeVec,
    pub head: IntGaugeVec,
    pub lag: IntGaugeVec,
    pub plausible: IntGaugeVec,
    pub status_age: GaugeVec,
    pub chain_healthy_nodes: IntGaugeVec,
    pub reputation: GaugeVec,
    pub ejected: IntGaugeVec,
    /// Serialises reset-and-refill so two concurrent scrapes never see a half-built set.
    refresh: Mutex<()>,
}

const NODE: &[&str] = &["node", "region"];
const NODE_CHAIN: &[&str] = &["node", "region", "chain"];

impl NodeGauges {
    /// Makes the families and registers them with `f`'s registry.
    pub fn new(f: &Families<'_>) -> Self {
        let gauge = |name, help, labels| f.float_gauge_vec(name, help, labels);
        let int_gauge = |name, help, labels| f.gauge_vec(name, help, labels);
        Self {
            info: int_gauge(
                "node_info",
                "Always 1 per joined node; its claimed location is in the labels (for maps).",
                &["node", "region", "latitude", "longitude"],
            ),
            healthy: int_gauge(
                "node_healthy",
                "1 while the node is routable for the chain (health checks with hysteresis), else 0.",
                NODE_CHAIN,
            ),
            rtt: gauge(
                "node_rtt_seconds",
                "Current QUIC round-trip time estimate to the node.",
                NODE,
            ),
            min_rtt: gauge(
                "node_min_rtt_seconds",
                "Smallest QUIC round-trip time seen since the node joined.",
                NODE,
            ),
            in_flight: int_gauge(
                "node_in_flight_requests",
                "Requests the gateway has in flight to the node.",
                NODE,
            ),
            error_ratio: gauge(
                "node_error_ratio",
                "Failed share (0-1) of the gateway's attempts to the node in the last health interval.",
                NODE,
            ),
            head: int_gauge(
                "node_head_block_number",
                "Head block number the node last reported for the chain.",
                NODE_CHAIN,
            ),
            lag: int_gauge(
                "node_lag_blocks",
                "Blocks the node is behind the best head any live node reports for the chain.",
                NODE_CHAIN,
            ),
            plausible: int_gauge(
                "node_location_plausible",
                "1 while the node's claimed location fits its smallest RTT, 0 when it is farther than light allows.",
                NODE,
            ),
            status_age: gauge(
                "node_status_age_seconds",
                "Time since the node's last status report.",
                NODE,
            ),
            chain_healthy_nodes: int_gauge(
                "chain_healthy_nodes",
                "Nodes able to serve the chain right now (0 means requests for it fail).",
                &["chain"],
            ),
            reputation: gauge(
                "node_reputation",
                "The node's reputation (1.0 = spotless; audits showing wrong answers lower it, below audit.eject_below it is ejected).",
                NODE,
            ),
            ejected: int_gauge(
                "node_ejected",
                "1 while the node is ejected for wrong answers (not routed to), else 0.",
                NODE,
            ),
            refresh: Mutex::new(()),
        }
    }

    /// Rebuilds every series from the registry. Call right before rendering.
    pub fn refresh(&self, registry: &Nodes, chains: &[ChainConfig], status_deadline: Duration) {
        let _one_at_a_time = self.refresh.lock();
        for v in [
            &self.info,
            &self.healthy,
            &self.in_flight,
            &self.head,
            &self.lag,
            &self.plausible,
            &self.chain_healthy_nodes,
            &self.ejected,
        ] {
            v.reset();
        }
        for v in [
            &self.rtt,
            &self.min_rtt,
            &self.error_ratio,
            &self.status_age,
            &self.reputation,
        ] {
            v.reset();
        }
        let deadline = status_deadline;
        let nodes = registry.snapshot();
        for c in chains {
            let serving = nodes
                .iter()
                .filter(|n| n.serves(c.chain_id, deadline))
                .count();
            self.chain_healthy_nodes
                .with_label_values(&[&c.name])
                .set(serving as i64);
        }
        for n in &nodes {
            let id = n.id.as_str();
            let region = n.region.as_str();
            let node = [id, region];
            self.info
                .with_label_values(&[
                    id,
                    region,
                    &format!("{:.4}", n.latitude),
                    &format!("{:.4}", n.longitude),
                ])
                .set(1);
            self.rtt.with_label_values(&node).set(n.rtt().as_secs_f64());
            if let Some(m) = n.min_rtt() {
                self.min_rtt.with_label_values(&node).set(m.as_secs_f64());
            }
            self.in_flight
                .with_label_values(&node)
                .set(i64::from(n.load()));
            self.error_ratio
                .with_label_values(&node)
                .set(n.recent_error_rate());
            self.plausible
                .with_label_values(&node)
                .set(i64::from(n.plausible()));
            self.reputation
                .with_label_values(&node)
                .set(registry.book.standing(id).score);
            self.ejected
                .with_label_values(&node)
                .set(i64::from(n.ejected()));
            let status = n.last_status();
            if let Some((_, age)) = &status {
                self.status_age
                    .with_label_values(&node)
                    .set(age.as_secs_f64());
            }
            // Only configured chains: a node cannot grow the label set by announcing more.
            for c in chains.iter().filter(|c| n.chains.contains(&c.chain_id)) {
                let labels = [id, region, c.name.as_str()];
                self.healthy
                    .with_label_values(&labels)
                    .set(i64::from(n.serves(c.chain_id, deadline)));
                self.lag
                    .with_label_values(&labels)
                    .set(n.health(c.chain_id).lag_blocks as i64);
                if let Some(cs) = status
                    .as_ref()
                    .and_then(|(s, _)| s.chains.iter().find(|x| x.chain_id == c.chain_id))
                {
                    self.head
                        .with_label_values(&labels)
                        .set(cs.head_number as i64);
                }
            }
        }
    }
}
