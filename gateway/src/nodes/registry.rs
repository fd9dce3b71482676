//! The set of joined edge nodes and what the gateway knows of each: where it claims to be, its
//! QUIC connection, its last status report and its load.
//!
//! Invariant: a node is in the registry exactly while its QUIC connection is open and its
//! join was accepted. Removal fires the node's `gone` token, which fails over every request
//! in flight to it at once rather than waiting for a timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use proto::msg::{ChainStatus, Status};
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::capability::{self, Held, Need};

pub struct Node {
    pub id: String,
    pub region: String,
    /// `id` and `region` as the `x-edge-node` and `x-edge-region` values of the answers the
    /// node gives, built once (`None`: not a valid header value).
    pub id_header: Option<http::HeaderValue>,
    pub region_header: Option<http::HeaderValue>,
    pub latitude: f64,
    pub longitude: f64,
    pub chains: Vec<u64>,
    pub conn: quinn::Connection,
    /// Calls to the node, over its request stream.
    pub mux: super::mux::Mux,
    pub in_flight: AtomicU32,
    pub joined_at: Instant,
    /// Cancelled when the session ends ([`Self::mark_gone`], which also fails its calls).
    pub gone: CancellationToken,
    last: Mutex<Option<(Status, Instant)>>,
    /// Per served chain: may traffic go here, and why not.
    health: Mutex<foldhash::HashMap<u64, ChainHealth>>,
    /// Attempts that succeeded / failed since the last health check.
    window_ok: AtomicU32,
    window_err: AtomicU32,
    /// Smallest RTT seen; the bound for the location plausibility check.
    min_rtt: Mutex<Option<Duration>>,
    /// False when the claimed location is farther than the RTT allows.
    plausible: AtomicBool,
    /// Whose measurement ruled the claimed location out, with the figures.
    ruled_out_by: Mutex<Option<String>>,
    /// Failed share of attempts in the last health interval, in millionths.
    error_rate_ppm: AtomicU32,
    /// Cache results of the calls this node answered (the status page's hit ratio).
    pub cache: CacheTally,
    /// Per entry of `chains`: the newest chain-state version the node has announced (`Head`
    /// frames) or named on a response, 0 before the first. Answers the node tied to a state are
    /// repeated from the gateway only while it is current.
    state_versions: Vec<AtomicU64>,
    /// Per entry of `chains`: the highest head the node has announced (`Head` or status), and
    /// the highest finalized block (status).
    heads: Vec<AtomicU64>,
    finalized: Vec<AtomicU64>,
    /// Unique per joined session in this gateway process: a restarted node counts its state
    /// versions from 1 again, so answers kept for its last session must never match.
    pub session: u64,
    /// Stable across sessions (from the id): marks the answers the gateway kept from this node.
    pub origin: u64,
    /// Ejected for wrong answers (`nodes::reputation`): never routed to while set.
    ejected: AtomicBool,
    /// Per entry of `chains`: what the node last announced it can answer (`None`: nothing
    /// announced, an older node, taken to answer anything).
    capabilities: Vec<Mutex<Option<Held>>>,

    /// Recent attempt latencies per method class: the hedge delay (`super::hedge`).
    pub latency: super::latency::Latency,
}

/// Raises the per-chain value of `chain_id` (one per entry of `chains`) to at least `v`; false
/// for a chain not in `chains`.
fn raise(chains: &[u64], values: &[AtomicU64], chain_id: u64, v: u64) -> bool {
    match chains.iter().position(|&c| c == chain_id) {
        Some(i) => {
            values[i].fetch_max(v, Ordering::AcqRel);
            true
        }
        None => false,
    }
}

/// The per-chain value of `chain_id` (0 for a chain not in `chains`).
fn read(chains: &[u64], values: &[AtomicU64], chain_id: u64) -> u64 {
    chains
        .iter()
        .position(|&c| c == chain_id)
        .map_or(0, |i| values[i].load(Ordering::Acquire))
}

/// A node id's [`Node::origin`]: its first 16 hex digits (ids are hex of a SHA-256 prefix), or
/// a hash of the id when it is not hex.
pub fn origin(id: &str) -> u64 {
    id.get(..16)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or_else(|| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            id.hash(&mut h);
            h.finish()
        })
}

/// Source of [`Node::session`].
static SESSIONS: AtomicU64 = AtomicU64::new(1);

/// Cache results (from `x-cache`) of the calls one node answered since it joined.
#[derive(Debug, Default)]
pub struct CacheTally {
    pub hit: AtomicU64,
    pub miss: AtomicU64,
    pub bypass: AtomicU64,
}

impl CacheTally {
    /// Counts the answered calls in `results`; node errors are not answers.
    pub fn record(&self, results: &[proto::msg::CallResult]) {
        use proto::msg::{CacheStatus, Outcome};
        for r in results {
            if matches!(r.outcome, Outcome::NodeError(_)) {
                continue;
            }
            let c = match r.cache {
                CacheStatus::Hit => &self.hit,
                CacheStatus::Miss => &self.miss,
                CacheStatus::Bypass => &self.bypass,
            };
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Hits over cacheable calls (hits + misses); `None` before any cacheable call.
    pub fn hit_ratio(&self) -> Option<f64> {
        let hit = self.hit.load(Ordering::Relaxed);
        let miss = self.miss.load(Ordering::Relaxed);
        (hit + miss > 0).then(|| hit as f64 / (hit + miss) as f64)
    }
}

/// Health of one node for one chain, with the streaks that give it hysteresis.
#[derive(Debug, Clone, Default)]
pub struct ChainHealth {
    pub healthy: bool,
    pub good_streak: u32,
    pub bad_streak: u32,
    /// Why the node is (or last was) unhealthy; empty while it never was.
    pub reason: String,
    pub lag_blocks: u64,
}

impl Node {
    pub fn new(hello: &proto::msg::Hello, conn: quinn::Connection, mux: super::mux::Mux) -> Self {
        Self {
            id: hello.node_id.clone(),
            region: hello.region.clone(),
            id_header: http::HeaderValue::from_str(&hello.node_id).ok(),
            region_header: http::HeaderValue::from_str(&hello.region).ok(),
            latitude: hello.latitude,
            longitude: hello.longitude,
            chains: hello.chains.clone(),
            conn,
            mux,
            in_flight: AtomicU32::new(0),
            joined_at: Instant::now(),
            gone: CancellationToken::new(),
            last: Mutex::new(None),
            health: Mutex::default(),
            window_ok: AtomicU32::new(0),
            window_err: AtomicU32::new(0),
            min_rtt: Mutex::new(None),
            plausible: AtomicBool::new(true),
            ruled_out_by: Mutex::new(None),
            error_rate_ppm: AtomicU32::new(0),
            cache: CacheTally::default(),
            state_versions: hello.chains.iter().map(|_| AtomicU64::new(0)).collect(),
            heads: hello.chains.iter().map(|_| AtomicU64::new(0)).collect(),
            finalized: hello.chains.iter().map(|_| AtomicU64::new(0)).collect(),
            session: SESSIONS.fetch_add(1, Ordering::Relaxed),
            origin: origin(&hello.node_id),
            ejected: AtomicBool::new(false),
            capabilities: hello.chains.iter().map(|_| Mutex::new(None)).collect(),

            latency: super::latency::Latency::new(),
        }
    }

    pub fn ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// The session is over: `gone` is cancelled, and the calls waiting on the node fail now
    /// (over to the next node), so an attempt need not watch `gone` itself.
    pub fn mark_gone(&self) {
        self.gone.cancel();
        self.mux.close();
    }

    /// Sets the ejection flag; returns the previous one.
    pub fn set_ejected(&self, v: bool) -> bool {
        self.ejected.swap(v, Ordering::Relaxed)
    }

    /// Records a chain-state version the node announced (`Head`) or named on a response: the
    /// newest wins, whichever stream arrives first. False for a chain the node did not join with.
    pub fn raise_state_version(&self, chain_id: u64, version: u64) -> bool {
        raise(&self.chains, &self.state_versions, chain_id, version)
    }

    /// The chain-state version last announced for `chain_id` (0: none yet).
    pub fn state_version(&self, chain_id: u64) -> u64 {
        read(&self.chains, &self.state_versions, chain_id)
    }

    /// Records a head the node announced for `chain_id` (the highest wins).
    pub fn raise_head(&self, chain_id: u64, head: u64) {
        raise(&self.chains, &self.heads, chain_id, head);
    }

    /// The highest head announced for `chain_id` (0: none yet).
    pub fn head(&self, chain_id: u64) -> u64 {
        read(&self.chains, &self.heads, chain_id)
    }

    /// Records a finalized block the node reported for `chain_id` (the highest wins).
    pub fn raise_finalized(&self, chain_id: u64, n: u64) {
        raise(&self.chains, &self.finalized, chain_id, n);
    }

    /// The highest finalized block reported for `chain_id` (0: none yet).
    pub fn finalized(&self, chain_id: u64) -> u64 {
        read(&self.chains, &self.finalized, chain_id)
    }

    /// Failed share (0.0 ..= 1.0) of the gateway's attempts in the last health interval.
    pub fn recent_error_rate(&self) -> f64 {
        f64::from(self.error_rate_ppm.load(Ordering::Relaxed)) / 1e6
    }

    /// Counts one attempt for the circuit breaker.
    pub fn record_attempt(&self, ok: bool) {
        if ok {
            self.window_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.window_err.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes (and resets) the attempt counts since the last call, and remembers their error
    /// rate for ranking.
    pub fn take_window(&self) -> (u32, u32) {
        let ok = self.window_ok.swap(0, Ordering::Relaxed);
        let err = self.window_err.swap(0, Ordering::Relaxed);
        let ppm = if ok + err == 0 {
            0
        } else {
            (u64::from(err) * 1_000_000 / u64::from(ok + err)) as u32
        };
        self.error_rate_ppm.store(ppm, Ordering::Relaxed);
        (ok, err)
    }

    pub fn health(&self, chain_id: u64) -> ChainHealth {
        self.health
            .lock()
            .get(&chain_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Applies `f` to the health record of `chain_id`.
    pub fn update_health<R>(&self, chain_id: u64, f: impl FnOnce(&mut ChainHealth) -> R) -> R {
        f(self.health.lock().entry(chain_id).or_default())
    }

    /// Samples the connection RTT into the running minimum and returns that minimum.
    pub fn sample_min_rtt(&self) -> Duration {
        let rtt = self.conn.rtt();
        let mut m = self.min_rtt.lock();
        let v = m.map_or(rtt, |cur| cur.min(rtt));
        *m = Some(v);
        v
    }

    pub fn min_rtt(&self) -> Option<Duration> {
        *self.min_rtt.lock()
    }

    pub fn plausible(&self) -> bool {
        self.plausible.load(Ordering::Relaxed)
    }

    /// Sets the verdict (and why, when implausible); returns the previous one.
    pub fn set_plausible(&self, v: bool, why: Option<String>) -> bool {
        *self.ruled_out_by.lock() = why;
        self.plausible.swap(v, Ordering::Relaxed)
    }

    pub fn ruled_out_by(&self) -> Option<String> {
        self.ruled_out_by.lock().clone()
    }

    pub fn record_status(&self, s: Status) {
        *self.last.lock() = Some((s, Instant::now()));
    }

    /// The last status for `chain_id` and its age.
    pub fn chain_status(&self, chain_id: u64) -> Option<(ChainStatus, Duration)> {
        let last = self.last.lock();
        let (s, at) = last.as_ref()?;
        let c = s.chains.iter().find(|c| c.chain_id == chain_id)?;
        Some((c.clone(), at.elapsed()))
    }

    pub fn last_status(&self) -> Option<(Status, Duration)> {
        let last = self.last.lock();
        last.as_ref().map(|(s, at)| (s.clone(), at.elapsed()))
    }

    /// Routable for `chain_id`: judged healthy by the health checker (with hysteresis) and
    /// heard from within the status deadline.
    pub fn serves(&self, chain_id: u64, status_deadline: Duration) -> bool {
        if self.gone.is_cancelled() || self.ejected() || !self.chains.contains(&chain_id) {
            return false;
        }
        if !self.health.lock().get(&chain_id).is_some_and(|h| h.healthy) {
            return false;
        }
        matches!(self.last.lock().as_ref(), Some((_, at)) if at.elapsed() <= status_deadline)
    }

    pub fn rtt(&self) -> Duration {
        self.conn.rtt()
    }

    pub fn load(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

// === impl Node: capabilities ===

impl Node {
    /// Records what the node announced it can answer for `chain_id` (from its status).
    pub fn set_capabilities(&self, chain_id: u64, held: Option<Held>) {
        if let Some(i) = self.chains.iter().position(|&c| c == chain_id) {
            *self.capabilities[i].lock() = held;
        }
    }

    /// What the node last announced for `chain_id` (`None`: nothing).
    pub fn capabilities(&self, chain_id: u64) -> Option<Held> {
        let i = self.chains.iter().position(|&c| c == chain_id)?;
        *self.capabilities[i].lock()
    }

    /// Can the node answer a call that needs `need` on `chain_id`?
    pub fn can(&self, chain_id: u64, need: Need) -> bool {
        match need {
            // A range ending past the node's head is passed to its upstream as asked (whose
            // answer or refusal is the caller's), not refused by the node.
            Need::LogRange { last, .. } if last > self.head(chain_id) => true,
            _ => capability::covers(self.capabilities(chain_id), need),
        }
    }
}

/// Guard counting one in-flight request against a node.
pub struct InFlight(Arc<Node>);

impl InFlight {
    pub fn new(node: Arc<Node>) -> Self {
        node.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(node)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
pub struct Registry {
    nodes: RwLock<HashMap<String, Arc<Node>>>,
    /// Every node's reputation by id, kept across its sessions.
    pub book: super::reputation::Book,
}

impl Registry {
    /// Adds a node; a node rejoining under the same id replaces (and closes) its old session.
    pub fn insert(&self, node: Arc<Node>) -> Option<Arc<Node>> {
        // Rejoining does not end an ejection.
        node.set_ejected(self.book.is_ejected(&node.id));
        let old = self.nodes.write().insert(node.id.clone(), node);
        if let Some(old) = &old {
            old.mark_gone();
            old.conn.close(0u32.into(), b"replaced by a newer session");
        }
        old
    }

    /// Removes `node` if it is still the registered session for its id.
    pub fn remove(&self, node: &Arc<Node>) -> bool {
        node.mark_gone();
        let mut nodes = self.nodes.write();
        match nodes.get(&node.id) {
            Some(cur) if Arc::ptr_eq(cur, node) => {
                nodes.remove(&node.id);
                true
            }
            _ => false,
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn snapshot(&self) -> Vec<Arc<Node>> {
        let mut v: Vec<_> = self.nodes.read().values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    pub fn get(&self, id: &str) -> Option<Arc<Node>> {
        self.nodes.read().get(id).cloned()
    }

    /// Nodes able to serve `chain_id` right now.
    pub fn candidates(&self, chain_id: u64, status_deadline: Duration) -> Vec<Arc<Node>> {
        self.nodes
            .read()
            .values()
            .filter(|n| n.serves(chain_id, status_deadline))
            .cloned()
            .collect()
    }
}
