//! Edge-node metrics: one registry, every family prefixed `edge_`, bounded labels only
//! (configured upstream `host:port`, chain ids, fixed outcome names).
//!
//! Label sets that dashboards and alerts rely on are created at start (per configured chain, per
//! known outcome) so the series exist at 0 before the first event, rather than appearing late.

use daemon::metrics::Families;
use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

/// Upstream round trips run from ~100 µs (loopback) to the timeout.
const UPSTREAM_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Reorg depth in blocks: 1-2 is routine on proof-of-work style chains, anything deep is news.
const HEAD_DELAY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.0, 5.0,
];
const REORG_DEPTH_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0, 64.0, 128.0];

/// Why cache entries leave other than by being replaced: the byte bound or an expiry.
pub const EVICTION_CAUSES: &[&str] = &["size", "expired"];

/// Outcomes of a proof verification (`edge_proof_verifications_total{outcome}`).
pub const PROOF_OUTCOMES: &[&str] = &["verified", "failed"];

pub struct Metrics {
    pub registry: Registry,
    pub cache_requests: IntCounterVec,
    pub cache_entries: IntGauge,
    pub cache_bytes: IntGauge,
    pub coalesced: IntCounter,
    pub upstream_requests: IntCounterVec,
    pub upstream_duration: HistogramVec,
    pub head_block: IntGaugeVec,
    pub in_flight: IntGauge,
    /// Per gateway (its name, else its address): 1 while joined.
    pub gateway_connected: IntGaugeVec,
    pub gateway_connects: IntCounterVec,
    pub requests: IntCounter,
    pub cache_evictions: IntCounterVec,
    pub finalized_block: IntGaugeVec,
    pub reorgs: IntCounterVec,
    pub reorg_depth: HistogramVec,
    pub proof_verifications: IntCounterVec,
    pub header_verification_failures: IntCounter,
    pub build_info: IntGaugeVec,
    pub head_delay: HistogramVec,
    /// Per chain: the oldest block whose state the upstreams hold (0: archive).
    pub oldest_state_block: IntGaugeVec,
    /// WebSockets: subscription streams to gateways, and upstream sockets.
    pub sockets: Sockets,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("edge".into()), None).expect("valid prefix");
        let f = Families(&registry);
        let m = Self {
            cache_requests: f.counter_vec(
                "cache_requests_total",
                "Calls by cache result (hit, miss, bypass; negative: a remembered not-found about an unknown block hash).",
                &["result"],
            ),
            cache_entries: f.gauge("cache_entries", "Entries in the response cache."),
            cache_bytes: f.gauge(
                "cache_bytes",
                "Weighted size of the response cache (keys + values + overhead).",
            ),
            coalesced: f.counter(
                "coalesced_requests_total",
                "Calls that waited for an identical in-flight upstream request instead of sending their own.",
            ),
            upstream_requests: f.counter_vec(
                "upstream_requests_total",
                "Requests sent to upstreams by outcome.",
                &["upstream", "outcome"],
            ),
            upstream_duration: f.histogram_vec(
                "upstream_request_duration_seconds",
                "Upstream request latency.",
                UPSTREAM_BUCKETS,
                &["upstream"],
            ),
            head_block: f.gauge_vec(
                "head_block_number",
                "Latest block number seen per chain.",
                &["chain_id"],
            ),
            in_flight: f.gauge("in_flight_requests", "Gateway requests being handled."),
            gateway_connected: f.gauge_vec(
                "gateway_connected",
                "1 while the node is joined to the gateway (one series per configured gateway).",
                &["gateway"],
            ),
            gateway_connects: f.counter_vec(
                "gateway_connect_attempts_total",
                "Attempts to join the gateway by outcome.",
                &["outcome"],
            ),
            requests: f.counter(
                "gateway_requests_total",
                "Requests received from the gateways (refused ones included).",
            ),
            cache_evictions: f.counter_vec(
                "cache_evictions_total",
                "Cache entries evicted by cause (size: the byte bound; expired).",
                &["cause"],
            ),
            finalized_block: f.gauge_vec(
                "finalized_block_number",
                "Latest finalized block number seen per chain.",
                &["chain_id"],
            ),
            reorgs: f.counter_vec(
                "reorgs_total",
                "Chain reorganisations seen per chain.",
                &["chain_id"],
            ),
            reorg_depth: f.histogram_vec(
                "reorg_depth_blocks",
                "Depth of each reorganisation seen, in blocks.",
                REORG_DEPTH_BUCKETS,
                &["chain_id"],
            ),
            proof_verifications: f.counter_vec(
                "proof_verifications_total",
                "Merkle proof verifications by outcome.",
                &["outcome"],
            ),
            header_verification_failures: f.counter(
                "header_verification_failures_total",
                "Upstream headers rejected because their hash did not match their contents.",
            ),
            build_info: f.build_info(env!("CARGO_PKG_VERSION")),
            head_delay: f.histogram_vec(
                "head_delay_seconds",
                "Per chain, how long a new head can have waited at the upstream before the node published it (from the start of the last poll that did not see it).",
                HEAD_DELAY_BUCKETS,
                &["chain_id"],
            ),
            oldest_state_block: f.gauge_vec(
                "oldest_state_block",
                "Per chain, the oldest block whose state every upstream holds, as announced to gateways (0: archive; absent until the first probe).",
                &["chain_id"],
            ),
            sockets: Sockets::new(&f),
            registry,
        };
        m.precreate();
        m
    }

    /// Series that rates and alerts need before their first event exist at zero.
    fn precreate(&self) {
        for cause in EVICTION_CAUSES {
            self.cache_evictions.with_label_values(&[cause]);
        }
        for outcome in PROOF_OUTCOMES {
            self.proof_verifications.with_label_values(&[outcome]);
        }
    }

    /// Creates the per-chain series at zero for a configured chain.
    pub fn init_chain(&self, chain_id: u64) {
        let id = chain_id.to_string();
        self.reorgs.with_label_values(&[&id]);
        self.reorg_depth.with_label_values(&[&id]);
    }

    /// Creates the series of a WebSocket upstream (`label` as in `upstream_requests_total`) at
    /// zero.
    pub fn init_socket(&self, chain_id: u64, label: &str) {
        let id = chain_id.to_string();
        let w = &self.sockets;
        w.upstream_ws_connected.with_label_values(&[&id, label]);
        w.upstream_ws_heads.with_label_values(&[&id]);
        w.upstream_ws_reconnects.with_label_values(&[&id]);
    }

    pub fn render(&self) -> String {
        daemon::metrics::render(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The WebSocket families: subscription streams open from gateways (one per feed a gateway
/// follows here) and the events sent on them; upstream sockets followed for heads.
pub struct Sockets {
    /// Open subscription streams by kind (`newHeads`, `logs`, ...), from every gateway.
    pub subscriptions: IntGaugeVec,
    pub subscription_events: IntCounterVec,
    /// Per chain and WebSocket upstream (its `host:port` label): 1 while its `newHeads`
    /// subscription is live.
    pub upstream_ws_connected: IntGaugeVec,
    pub upstream_ws_heads: IntCounterVec,
    pub upstream_ws_reconnects: IntCounterVec,
}

impl Sockets {
    fn new(f: &Families<'_>) -> Self {
        Self {
            subscriptions: f.gauge_vec(
                "subscriptions",
                "Subscription streams open from gateways, by kind (one per chain and filter a gateway fans out).",
                &["kind"],
            ),
            subscription_events: f.counter_vec(
                "subscription_events_total",
                "Block events sent on subscription streams, by kind.",
                &["kind"],
            ),
            upstream_ws_connected: f.gauge_vec(
                "upstream_ws_connected",
                "1 while the node follows the upstream's head over its WebSocket (newHeads subscription live); one series per ws:// or wss:// upstream.",
                &["chain_id", "upstream"],
            ),
            upstream_ws_heads: f.counter_vec(
                "upstream_ws_heads_total",
                "newHeads notifications received over upstream WebSockets (each wakes the head tracker).",
                &["chain_id"],
            ),
            upstream_ws_reconnects: f.counter_vec(
                "upstream_ws_reconnects_total",
                "Attempts to connect an upstream WebSocket again after it dropped or could not be reached.",
                &["chain_id"],
            ),
        }
    }
}
