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
//!
//! Hot path: the health checker rebuilds a [`Table`] per chain every status interval, holding
//! each routable node's location and its static cost (RTT and error penalties). For a caller
//! the table memoises the [`TOP_K`] best nodes per 1° latitude/longitude cell (at most ~1.1 ms
//! of distance error) and residency rule, with their static costs, so a request scores only
//! those K nodes against their live load, whatever the number of nodes.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use super::registry::{Node, Registry};
use crate::config::{Config, ResidencyRule, RoutingConfig, RoutingMode};
use crate::geo::{haversine_km, Location};

/// Nodes kept per caller cell: the failover order is this long.
pub const TOP_K: usize = 16;
/// Cells memoised per table before the memo is cleared (it is rebuilt every interval anyway).
const MEMO_CELLS: usize = 4096;

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

/// The residency rule binding a caller, if any, with its index.
pub fn residency_rule<'a>(
    rules: &'a [ResidencyRule],
    caller: Option<&Location>,
) -> Option<(usize, &'a ResidencyRule)> {
    let caller = caller?;
    rules.iter().enumerate().find(|(_, r)| {
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

/// What the router needs of a node beyond its table entry.
pub trait Routable: Clone {
    /// Requests in flight now.
    fn load(&self) -> u32;
    /// Still joined (a node that left since the table was built is skipped).
    fn usable(&self) -> bool;
}

impl Routable for Arc<Node> {
    fn load(&self) -> u32 {
        Node::load(self)
    }
    fn usable(&self) -> bool {
        !self.gone.is_cancelled() && !self.ejected()
    }
}

/// One routable node as of the last health check.
#[derive(Debug, Clone)]
pub struct Target<T> {
    pub item: T,
    pub lat: f64,
    pub lon: f64,
    pub region: String,
    /// RTT and error penalties in milliseconds (`rtt_weight * rtt + error_penalty * rate`,
    /// or the RTT alone in lowest-latency mode).
    pub base_ms: f64,
    pub plausible: bool,
}

type CellKey = (Option<(i32, i32)>, Option<usize>);
/// A cell's best targets: index and static cost, best first.
type Top = Arc<[(u32, f64)]>;

/// The routable nodes of one chain, with the per-cell memo.
pub struct Table<T> {
    targets: Vec<Target<T>>,
    memo: Mutex<foldhash::HashMap<CellKey, Top>>,
}

impl<T: Routable> Table<T> {
    pub fn new(targets: Vec<Target<T>>) -> Self {
        Self {
            targets,
            memo: Mutex::new(foldhash::HashMap::default()),
        }
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Best-first candidates for `caller`, limited to `rule`'s regions (and plausible nodes)
    /// when a residency rule binds the caller. Empty when none qualifies.
    pub fn rank(
        &self,
        cfg: &RoutingConfig,
        caller: Option<&Location>,
        rule: Option<(usize, &ResidencyRule)>,
    ) -> Vec<T> {
        let geo = cfg.mode == RoutingMode::Geo;
        let cell = caller
            .filter(|_| geo)
            .map(|c| (c.lat.round() as i32, c.lon.round() as i32));
        let key = (cell, rule.map(|(i, _)| i));
        let top = {
            let cached = self.memo.lock().get(&key).cloned();
            match cached {
                Some(t) => t,
                None => {
                    let t = self.top_k(cfg, cell, rule.map(|(_, r)| r));
                    let mut memo = self.memo.lock();
                    if memo.len() >= MEMO_CELLS {
                        memo.clear();
                    }
                    memo.insert(key, t.clone());
                    t
                }
            }
        };
        // Live load on the K memoised nodes only (their static cost is memoised too).
        let mut scored: Vec<(f64, &Target<T>)> = top
            .iter()
            .map(|&(i, static_ms)| (static_ms, &self.targets[i as usize]))
            .filter(|(_, t)| t.item.usable())
            .map(|(static_ms, t)| {
                let load = if geo {
                    cfg.load_penalty_ms * f64::from(t.item.load())
                } else {
                    0.0
                };
                (static_ms + load, t)
            })
            .collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0));
        spread(&mut scored, cfg.spread_ms);
        scored.into_iter().map(|(_, t)| t.item.clone()).collect()
    }

    /// Every candidate for `caller` (within `rule`), best first by static cost and live load:
    /// a full scan without the memo, for the rare request the best few cannot answer (see
    /// [`super::capability`]).
    pub fn rank_all(
        &self,
        cfg: &RoutingConfig,
        caller: Option<&Location>,
        rule: Option<&ResidencyRule>,
    ) -> Vec<T> {
        let geo = cfg.mode == RoutingMode::Geo;
        let cell = caller
            .filter(|_| geo)
            .map(|c| (c.lat.round() as i32, c.lon.round() as i32));
        let mut scored: Vec<(f64, &Target<T>)> = self
            .targets
            .iter()
            .filter(|t| t.item.usable())
            .filter(|t| rule.is_none_or(|r| t.plausible && r.regions.contains(&t.region)))
            .map(|t| {
                let load = match geo {
                    true => cfg.load_penalty_ms * f64::from(t.item.load()),
                    false => 0.0,
                };
                (self.static_ms(cfg, cell, t) + load, t)
            })
            .collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0));
        scored.into_iter().map(|(_, t)| t.item.clone()).collect()
    }

    /// The full scan behind a memo miss (public for benchmarks): indices of the best targets,
    /// with their static costs.
    pub fn scan(
        &self,
        cfg: &RoutingConfig,
        caller: Option<&Location>,
        rule: Option<&ResidencyRule>,
    ) -> Top {
        let cell = caller
            .filter(|_| cfg.mode == RoutingMode::Geo)
            .map(|c| (c.lat.round() as i32, c.lon.round() as i32));
        self.top_k(cfg, cell, rule)
    }

    fn static_ms(&self, cfg: &RoutingConfig, cell: Option<(i32, i32)>, t: &Target<T>) -> f64 {
        let dist = cell
            .map(|(la, lo)| {
                haversine_km((f64::from(la), f64::from(lo)), (t.lat, t.lon)) / cfg.km_per_ms
            })
            .unwrap_or(0.0);
        dist + t.base_ms
    }

    /// The K best targets for a cell by static cost (a full scan, once per cell per interval).
    fn top_k(
        &self,
        cfg: &RoutingConfig,
        cell: Option<(i32, i32)>,
        rule: Option<&ResidencyRule>,
    ) -> Top {
        let mut all: Vec<(f64, u32)> = self
            .targets
            .iter()
            .enumerate()
            .filter(|(_, t)| rule.is_none_or(|r| t.plausible && r.regions.contains(&t.region)))
            .map(|(i, t)| (self.static_ms(cfg, cell, t), i as u32))
            .collect();
        let k = TOP_K.min(all.len());
        if k < all.len() {
            all.select_nth_unstable_by(k, |a, b| a.0.total_cmp(&b.0));
            all.truncate(k);
        }
        all.sort_by(|a, b| a.0.total_cmp(&b.0));
        all.into_iter().map(|(ms, i)| (i, ms)).collect()
    }
}

/// Per chain, the routing table the health checker rebuilt last, and what ranking needs.
pub struct Router {
    registry: Arc<Registry>,
    routing: RoutingConfig,
    residency: Vec<ResidencyRule>,
    chains: Vec<u64>,
    status_deadline: Duration,
    tables: RwLock<foldhash::HashMap<u64, Arc<Table<Arc<Node>>>>>,
}

impl Router {
    pub fn new(registry: Arc<Registry>, config: &Config) -> Self {
        Self {
            registry,
            routing: config.routing.clone(),
            residency: config.residency.clone(),
            chains: config.chains.iter().map(|c| c.chain_id).collect(),
            status_deadline: config.quic.status_deadline,
            tables: RwLock::default(),
        }
    }

    /// Builds the routing table of `chain_id` from the nodes routable now.
    pub fn build_table(&self, chain_id: u64) -> Table<Arc<Node>> {
        let r = &self.routing;
        let targets = self
            .registry
            .candidates(chain_id, self.status_deadline)
            .into_iter()
            .map(|n| {
                let rtt_ms = n.rtt().as_secs_f64() * 1000.0;
                let base_ms = match r.mode {
                    RoutingMode::LowestLatency => rtt_ms,
                    RoutingMode::Geo => {
                        r.rtt_weight * rtt_ms + r.error_penalty_ms * n.recent_error_rate()
                    }
                };
                Target {
                    lat: n.latitude,
                    lon: n.longitude,
                    region: n.region.clone(),
                    base_ms,
                    plausible: n.plausible(),
                    item: n,
                }
            })
            .collect();
        Table::new(targets)
    }

    /// Rebuilds every chain's table (the health checker calls this after each round).
    pub fn rebuild(&self) {
        let tables = self
            .chains
            .iter()
            .map(|&c| (c, Arc::new(self.build_table(c))))
            .collect();
        *self.tables.write() = tables;
    }

    /// Candidates for `chain_id`, best first.
    pub fn rank(
        &self,
        chain_id: u64,
        caller: Option<&Location>,
    ) -> Result<Vec<Arc<Node>>, RouteError> {
        let table = self.tables.read().get(&chain_id).cloned();
        // Before the first health round there is no table yet: build one on the spot.
        let table = table.unwrap_or_else(|| Arc::new(self.build_table(chain_id)));
        let rule = residency_rule(&self.residency, caller);
        let ranked = table.rank(&self.routing, caller, rule);
        if !ranked.is_empty() {
            return Ok(ranked);
        }
        Err(match rule {
            Some((_, rule)) => RouteError::Residency {
                rule: rule.name.clone(),
                country: caller
                    .and_then(|c| c.country.clone())
                    .unwrap_or_else(|| "?".into()),
                regions: rule.regions.join(", "),
            },
            None => RouteError::NoNode(chain_id),
        })
    }
}

impl Router {
    /// Every node that may serve `chain_id` for `caller`, best first (see [`Table::rank_all`]).
    pub fn rank_all(&self, chain_id: u64, caller: Option<&Location>) -> Vec<Arc<Node>> {
        let table = self.tables.read().get(&chain_id).cloned();
        let table = table.unwrap_or_else(|| Arc::new(self.build_table(chain_id)));
        let rule = residency_rule(&self.residency, caller);
        table.rank_all(&self.routing, caller, rule.map(|(_, r)| r))
    }
}

/// Power of two choices among the entries within `spread_ms` of the best.
fn spread<T: Routable>(scored: &mut [(f64, &Target<T>)], spread_ms: f64) {
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
    let pick = if scored[b].1.item.load() < scored[a].1.item.load() {
        b
    } else {
        a
    };
    scored[..=pick].rotate_right(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Clone)]
    struct Fake(u32, Arc<AtomicU32>);
    impl Routable for Fake {
        fn load(&self) -> u32 {
            self.1.load(Ordering::Relaxed)
        }
        fn usable(&self) -> bool {
            true
        }
    }

    fn target(id: u32, region: &str, lat: f64, lon: f64, base_ms: f64) -> Target<Fake> {
        Target {
            item: Fake(id, Arc::new(AtomicU32::new(0))),
            lat,
            lon,
            region: region.into(),
            base_ms,
            plausible: true,
        }
    }

    fn loc(lat: f64, lon: f64, country: &str, continent: &str) -> Location {
        Location {
            lat,
            lon,
            country: Some(country.into()),
            continent: Some(continent.into()),
        }
    }

    #[test]
    fn nearest_first_then_failover_order() {
        let t = Table::new(vec![
            target(1, "us-east", 39.04, -77.49, 1.0),
            target(2, "eu-west", 50.11, 8.68, 1.0),
            target(3, "ap-southeast", 1.35, 103.82, 1.0),
        ]);
        let cfg = RoutingConfig {
            spread_ms: 0.0,
            ..Default::default()
        };
        let ids = |v: Vec<Fake>| v.iter().map(|f| f.0).collect::<Vec<_>>();
        assert_eq!(
            ids(t.rank(&cfg, Some(&loc(51.5, -0.1, "GB", "EU")), None)),
            vec![2, 1, 3]
        );
        assert_eq!(
            ids(t.rank(&cfg, Some(&loc(-33.9, 151.2, "AU", "OC")), None))[0],
            3
        );
        let rule = ResidencyRule {
            name: "eu".into(),
            countries: vec![],
            continents: vec!["EU".into()],
            regions: vec!["eu-west".into()],
        };
        assert_eq!(
            ids(t.rank(&cfg, Some(&loc(48.8, 2.3, "FR", "EU")), Some((0, &rule)))),
            vec![2]
        );
    }

    #[test]
    fn load_moves_traffic_between_near_equal_nodes_only() {
        let a = target(1, "eu-west", 50.1, 8.7, 1.0);
        let b = target(2, "eu-west", 50.2, 8.6, 1.0);
        let far = target(3, "us-east", 39.0, -77.5, 1.0);
        a.item.1.store(50, Ordering::Relaxed);
        let t = Table::new(vec![a, b, far]);
        let cfg = RoutingConfig::default();
        let caller = loc(50.0, 8.0, "DE", "EU");
        for _ in 0..50 {
            let first = t.rank(&cfg, Some(&caller), None)[0].0;
            assert_eq!(first, 2, "the busy node loses to its near-equal neighbour");
        }
    }
}
