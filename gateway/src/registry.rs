//! The set of joined edge nodes and what the gateway knows of each: where it claims to be, its
//! QUIC connection, its last status report and its load.
//!
//! Invariant: a node is in the registry exactly while its QUIC connection is open and its
//! join was accepted. Removal fires the node's `gone` token, which fails over every request
//! in flight to it at once rather than waiting for a timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use proto::msg::{ChainStatus, Status};
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub struct Node {
    pub id: String,
    pub region: String,
    pub latitude: f64,
    pub longitude: f64,
    pub chains: Vec<u64>,
    pub conn: quinn::Connection,
    pub in_flight: AtomicU32,
    pub joined_at: Instant,
    pub gone: CancellationToken,
    last: Mutex<Option<(Status, Instant)>>,
}

impl Node {
    pub fn new(hello: &proto::msg::Hello, conn: quinn::Connection) -> Self {
        Self {
            id: hello.node_id.clone(),
            region: hello.region.clone(),
            latitude: hello.latitude,
            longitude: hello.longitude,
            chains: hello.chains.clone(),
            conn,
            in_flight: AtomicU32::new(0),
            joined_at: Instant::now(),
            gone: CancellationToken::new(),
            last: Mutex::new(None),
        }
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

    /// Healthy enough to route to: recent status, right chain, upstream answering.
    pub fn serves(&self, chain_id: u64, status_deadline: Duration) -> bool {
        if self.gone.is_cancelled() || !self.chains.contains(&chain_id) {
            return false;
        }
        matches!(self.chain_status(chain_id), Some((c, age)) if age <= status_deadline && c.upstream_healthy)
    }

    pub fn rtt(&self) -> Duration {
        self.conn.rtt()
    }

    pub fn load(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
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
}

impl Registry {
    /// Adds a node; a node rejoining under the same id replaces (and closes) its old session.
    pub fn insert(&self, node: Arc<Node>) -> Option<Arc<Node>> {
        let old = self.nodes.write().insert(node.id.clone(), node);
        if let Some(old) = &old {
            old.gone.cancel();
            old.conn.close(0u32.into(), b"replaced by a newer session");
        }
        old
    }

    /// Removes `node` if it is still the registered session for its id.
    pub fn remove(&self, node: &Arc<Node>) -> bool {
        node.gone.cancel();
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
