//! The live status page: `/status` (one self-contained HTML page, [`PAGE`]) and the
//! `/status.json` it polls, built here from the node registry, the config and [`Recent`], the
//! small rings of recent failovers and departed nodes. The JSON is documented field by field in
//! `dashboards/README.md`.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

use crate::config::Config;
use crate::nodes::registry::{Node, Registry};

/// The page; it has no external references (the admin listener also sends a CSP that forbids
/// them), so it works on an air-gapped operator network.
pub const PAGE: &str = include_str!("status.html");

/// How many recent failovers the page can show.
pub const FAILOVER_RING: usize = 50;
/// How many departed nodes are remembered (until they rejoin).
pub const DEPARTED_RING: usize = 20;

use daemon::unix_ms as now_ms;

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// One attempt moved away from a node.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverEvent {
    pub at_ms: u64,
    pub request_id: String,
    pub chain_id: u64,
    pub node: String,
    pub region: String,
    /// Same values as `gateway_failovers_total{reason}`.
    pub reason: &'static str,
    /// Calls of the request moved for this reason from this node (batches move many at once).
    pub calls: u32,
}

/// A node that left, kept until it rejoins or falls out of the ring.
#[derive(Debug, Clone, Serialize)]
pub struct Departed {
    pub id: String,
    pub region: String,
    pub latitude: f64,
    pub longitude: f64,
    pub left_at_ms: u64,
    pub reason: String,
}

/// Bounded memory of recent events for the status page.
pub struct Recent {
    started: Instant,
    failovers: Mutex<VecDeque<FailoverEvent>>,
    departed: Mutex<VecDeque<Departed>>,
}

impl Default for Recent {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            failovers: Mutex::new(VecDeque::with_capacity(FAILOVER_RING)),
            departed: Mutex::new(VecDeque::with_capacity(DEPARTED_RING)),
        }
    }
}

impl Recent {
    /// Records a failover; repeated calls for one request, node and reason fold into one entry.
    pub fn failover(&self, node: &Node, chain_id: u64, request_id: &str, reason: &'static str) {
        self.push_failover(&node.id, &node.region, chain_id, request_id, reason);
    }

    fn push_failover(
        &self,
        node: &str,
        region: &str,
        chain_id: u64,
        request_id: &str,
        reason: &'static str,
    ) {
        let mut ring = self.failovers.lock();
        if let Some(last) = ring.back_mut() {
            if last.request_id == request_id && last.node == node && last.reason == reason {
                last.calls += 1;
                return;
            }
        }
        if ring.len() == FAILOVER_RING {
            ring.pop_front();
        }
        ring.push_back(FailoverEvent {
            at_ms: now_ms(),
            request_id: request_id.to_string(),
            chain_id,
            node: node.to_string(),
            region: region.to_string(),
            reason,
            calls: 1,
        });
    }

    /// Records that `node` left the registry.
    pub fn departed(&self, node: &Node, reason: String) {
        let mut ring = self.departed.lock();
        ring.retain(|d| d.id != node.id);
        if ring.len() == DEPARTED_RING {
            ring.pop_front();
        }
        ring.push_back(Departed {
            id: node.id.clone(),
            region: node.region.clone(),
            latitude: node.latitude,
            longitude: node.longitude,
            left_at_ms: now_ms(),
            reason,
        });
    }

    /// Newest first.
    pub fn failovers(&self) -> Vec<FailoverEvent> {
        self.failovers.lock().iter().rev().cloned().collect()
    }

    /// Newest first.
    pub fn departures(&self) -> Vec<Departed> {
        self.departed.lock().iter().rev().cloned().collect()
    }
}

// === /status.json ===

#[derive(Debug, Serialize)]
pub struct StatusDoc {
    /// `server.name`.
    pub gateway_name: String,
    pub version: &'static str,
    pub generated_at_ms: u64,
    pub uptime_seconds: f64,
    /// `geo.gateway_location` when configured (drawn on the map), else `null`.
    pub gateway_location: Option<Point>,
    pub chains: Vec<ChainDoc>,
    pub nodes: Vec<NodeDoc>,
    pub departed: Vec<Departed>,
    pub failovers: Vec<FailoverEvent>,
    pub websocket: WebSocketDoc,
}

/// Open sockets and subscriptions (`eth_subscribe`).
#[derive(Debug, Serialize)]
pub struct WebSocketDoc {
    pub connections: i64,
    #[serde(flatten)]
    pub summary: crate::subs::Summary,
}

#[derive(Debug, Serialize)]
pub struct Point {
    pub latitude: f64,
    pub longitude: f64,
}

#[derive(Debug, Serialize)]
pub struct ChainDoc {
    pub name: String,
    pub chain_id: u64,
    pub healthy_nodes: usize,
    /// Highest head reported by a live node; `null` before any report.
    pub best_head: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct NodeDoc {
    pub id: String,
    pub region: String,
    pub latitude: f64,
    pub longitude: f64,
    /// `healthy` (routable for every configured chain it serves), `degraded` (for some),
    /// `unhealthy` (for none).
    pub state: &'static str,
    pub joined_seconds_ago: f64,
    pub status_age_ms: Option<f64>,
    pub rtt_ms: f64,
    pub min_rtt_ms: Option<f64>,
    pub in_flight: u32,
    pub error_rate: f64,
    pub location_plausible: bool,
    /// Which gateway's measurement put the claimed location out of reach (when implausible).
    pub location_ruled_out_by: Option<String>,
    /// The gateways the node reports being joined to (this one included).
    pub gateways: Vec<String>,
    /// Subscription feeds this gateway follows from the node.
    pub feeds: usize,
    pub cache: CacheDoc,
    pub reputation: ReputationDoc,
    pub chains: Vec<NodeChainDoc>,
}

/// What audits found of a node (`crate::nodes::reputation`).
#[derive(Debug, Serialize)]
pub struct ReputationDoc {
    /// 1.0 = spotless; below `audit.eject_below` the node is ejected.
    pub score: f64,
    pub confirmed: u64,
    pub wrong: u64,
    pub ejections: u32,
    pub ejected: bool,
    /// Seconds until the ejection ends by itself.
    pub ejected_for_secs: Option<u64>,
    /// The evidence of its last wrong answer.
    pub last_wrong: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct CacheDoc {
    pub hit: u64,
    pub miss: u64,
    pub bypass: u64,
    pub hit_ratio: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct NodeChainDoc {
    pub name: String,
    pub chain_id: u64,
    pub healthy: bool,
    pub reason: String,
    pub head: Option<u64>,
    pub lag_blocks: u64,
    pub head_age_ms: Option<u64>,
    pub upstream_healthy: Option<bool>,
    /// What the node announced it can answer (`None`: nothing announced, so anything).
    pub capabilities: Option<proto::msg::Capabilities>,
}

/// Builds the document the page renders.
pub fn build(
    config: &Config,
    registry: &Registry,
    recent: &Recent,
    websocket: WebSocketDoc,
) -> StatusDoc {
    let deadline = config.quic.status_deadline;
    let nodes = registry.snapshot();
    let best = crate::nodes::health::best_heads(&nodes, deadline);
    let chains = config
        .chains
        .iter()
        .map(|c| ChainDoc {
            name: c.name.clone(),
            chain_id: c.chain_id,
            healthy_nodes: nodes
                .iter()
                .filter(|n| n.serves(c.chain_id, deadline))
                .count(),
            best_head: best.get(&c.chain_id).copied(),
        })
        .collect();
    let node_docs: Vec<NodeDoc> = nodes
        .iter()
        .map(|n| NodeDoc {
            feeds: websocket
                .summary
                .feeds_by_node
                .get(&n.id)
                .copied()
                .unwrap_or(0),
            ..node_doc(config, n, deadline, &registry.book)
        })
        .collect();
    let departed = recent
        .departures()
        .into_iter()
        .filter(|d| !nodes.iter().any(|n| n.id == d.id))
        .collect();
    StatusDoc {
        gateway_name: config.server.name.clone(),
        version: env!("CARGO_PKG_VERSION"),
        generated_at_ms: now_ms(),
        uptime_seconds: recent.started.elapsed().as_secs_f64(),
        gateway_location: config.geo.gateway_location.as_ref().map(|p| Point {
            latitude: p.lat,
            longitude: p.lon,
        }),
        chains,
        nodes: node_docs,
        departed,
        failovers: recent.failovers(),
        websocket,
    }
}

fn node_doc(
    config: &Config,
    n: &Node,
    deadline: Duration,
    book: &crate::nodes::reputation::Book,
) -> NodeDoc {
    let status = n.last_status();
    let chains: Vec<NodeChainDoc> = config
        .chains
        .iter()
        .filter(|c| n.chains.contains(&c.chain_id))
        .map(|c| {
            let h = n.health(c.chain_id);
            let cs = status
                .as_ref()
                .and_then(|(s, _)| s.chains.iter().find(|x| x.chain_id == c.chain_id));
            NodeChainDoc {
                name: c.name.clone(),
                chain_id: c.chain_id,
                healthy: n.serves(c.chain_id, deadline),
                reason: h.reason,
                head: cs.map(|x| x.head_number),
                lag_blocks: h.lag_blocks,
                head_age_ms: cs.map(|x| x.head_age_ms).filter(|a| *a != u64::MAX),
                upstream_healthy: cs.map(|x| x.upstream_healthy),
                capabilities: cs.and_then(|x| x.capabilities.clone()),
            }
        })
        .collect();
    let serving = chains.iter().filter(|c| c.healthy).count();
    let standing = book.standing(&n.id);
    let state = match serving {
        _ if n.ejected() => "ejected",
        0 => "unhealthy",
        s if s == chains.len() => "healthy",
        _ => "degraded",
    };
    NodeDoc {
        id: n.id.clone(),
        region: n.region.clone(),
        latitude: n.latitude,
        longitude: n.longitude,
        state,
        joined_seconds_ago: n.joined_at.elapsed().as_secs_f64(),
        status_age_ms: status.as_ref().map(|(_, age)| ms(*age)),
        rtt_ms: ms(n.rtt()),
        min_rtt_ms: n.min_rtt().map(ms),
        in_flight: n.load(),
        error_rate: n.recent_error_rate(),
        location_plausible: n.plausible(),
        location_ruled_out_by: n.ruled_out_by(),
        gateways: status
            .as_ref()
            .map(|(s, _)| s.gateways.clone())
            .unwrap_or_default(),
        feeds: 0,
        cache: CacheDoc {
            hit: n.cache.hit.load(Ordering::Relaxed),
            miss: n.cache.miss.load(Ordering::Relaxed),
            bypass: n.cache.bypass.load(Ordering::Relaxed),
            hit_ratio: n.cache.hit_ratio(),
        },
        reputation: ReputationDoc {
            score: standing.score,
            confirmed: standing.confirmed,
            wrong: standing.wrong,
            ejections: standing.ejections,
            ejected: n.ejected(),
            ejected_for_secs: book.ejected_for(&n.id).map(|d| d.as_secs()),
            last_wrong: standing.last_wrong,
        },
        chains,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_ring_is_bounded_newest_first_and_folds_batches() {
        let r = Recent::default();
        for i in 0..(FAILOVER_RING + 10) {
            r.push_failover("n1", "eu-west", 1, &format!("req{i}"), "node_gone");
        }
        // A batch moving many calls at once is one entry.
        for _ in 0..3 {
            r.push_failover("n2", "us-east", 1, "batch", "node_error");
        }
        let f = r.failovers();
        assert_eq!(f.len(), FAILOVER_RING);
        assert_eq!((f[0].request_id.as_str(), f[0].calls), ("batch", 3));
        assert_eq!(f[1].request_id, format!("req{}", FAILOVER_RING + 9));
        // The oldest fell out.
        assert!(f.iter().all(|e| e.request_id != "req0"));
    }

    #[test]
    fn page_is_self_contained() {
        // No external URL of any kind: the CSP would block it and the page must work offline.
        for needle in ["http://", "https://", "//fonts.", "@import", "src=\""] {
            let hits: Vec<_> = PAGE
                .match_indices(needle)
                .map(|(i, _)| &PAGE[i.saturating_sub(20)..(i + 40).min(PAGE.len())])
                .filter(|ctx| !ctx.contains("www.w3.org/2000/svg"))
                .collect();
            assert!(hits.is_empty(), "{needle} in status.html: {hits:?}");
        }
        assert!(PAGE.contains("status.json"));
    }
}
