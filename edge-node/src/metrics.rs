//! Edge-node metrics: one registry, every family prefixed `edge_`, bounded labels only
//! (configured upstream `host:port`, chain ids, fixed outcome names).
//!
//! Label sets that dashboards and alerts rely on are created at start (per configured chain, per
//! known outcome) so the series exist at 0 before the first event, rather than appearing late.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Upstream round trips run from ~100 µs (loopback) to the timeout.
const UPSTREAM_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Reorg depth in blocks: 1-2 is routine on proof-of-work style chains, anything deep is news.
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
    pub gateway_connected: IntGauge,
    pub gateway_connects: IntCounterVec,
    pub requests: IntCounter,
    pub cache_evictions: IntCounterVec,
    pub finalized_block: IntGaugeVec,
    pub reorgs: IntCounterVec,
    pub reorg_depth: HistogramVec,
    pub proof_verifications: IntCounterVec,
    pub header_verification_failures: IntCounter,
    pub build_info: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("edge".into()), None).expect("valid prefix");
        let m = Self {
            cache_requests: IntCounterVec::new(
                Opts::new("cache_requests_total", "Calls by cache result (hit, miss, bypass)."),
                &["result"],
            )
            .unwrap(),
            cache_entries: IntGauge::new("cache_entries", "Entries in the response cache.").unwrap(),
            cache_bytes: IntGauge::new(
                "cache_bytes",
                "Weighted size of the response cache (keys + values + overhead).",
            )
            .unwrap(),
            coalesced: IntCounter::new(
                "coalesced_requests_total",
                "Calls that waited for an identical in-flight upstream request instead of sending their own.",
            )
            .unwrap(),
            upstream_requests: IntCounterVec::new(
                Opts::new("upstream_requests_total", "Requests sent to upstreams by outcome."),
                &["upstream", "outcome"],
            )
            .unwrap(),
            upstream_duration: HistogramVec::new(
                HistogramOpts::new(
                    "upstream_request_duration_seconds",
                    "Upstream request latency.",
                )
                .buckets(UPSTREAM_BUCKETS.to_vec()),
                &["upstream"],
            )
            .unwrap(),
            head_block: IntGaugeVec::new(
                Opts::new("head_block_number", "Latest block number seen per chain."),
                &["chain_id"],
            )
            .unwrap(),
            in_flight: IntGauge::new("in_flight_requests", "Gateway requests being handled.")
                .unwrap(),
            gateway_connected: IntGauge::new(
                "gateway_connected",
                "1 while the node is joined to its gateway.",
            )
            .unwrap(),
            gateway_connects: IntCounterVec::new(
                Opts::new(
                    "gateway_connect_attempts_total",
                    "Attempts to join the gateway by outcome.",
                ),
                &["outcome"],
            )
            .unwrap(),
            requests: IntCounter::new(
                "gateway_requests_total",
                "Request streams received from the gateway.",
            )
            .unwrap(),
            cache_evictions: IntCounterVec::new(
                Opts::new(
                    "cache_evictions_total",
                    "Cache entries evicted by cause (size: the byte bound; expired).",
                ),
                &["cause"],
            )
            .unwrap(),
            finalized_block: IntGaugeVec::new(
                Opts::new(
                    "finalized_block_number",
                    "Latest finalized block number seen per chain.",
                ),
                &["chain_id"],
            )
            .unwrap(),
            reorgs: IntCounterVec::new(
                Opts::new("reorgs_total", "Chain reorganisations seen per chain."),
                &["chain_id"],
            )
            .unwrap(),
            reorg_depth: HistogramVec::new(
                HistogramOpts::new(
                    "reorg_depth_blocks",
                    "Depth of each reorganisation seen, in blocks.",
                )
                .buckets(REORG_DEPTH_BUCKETS.to_vec()),
                &["chain_id"],
            )
            .unwrap(),
            proof_verifications: IntCounterVec::new(
                Opts::new(
                    "proof_verifications_total",
                    "Merkle proof verifications by outcome.",
                ),
                &["outcome"],
            )
            .unwrap(),
            header_verification_failures: IntCounter::new(
                "header_verification_failures_total",
                "Upstream headers rejected because their hash did not match their contents.",
            )
            .unwrap(),
            build_info: IntGaugeVec::new(
                Opts::new("build_info", "Always 1; the version label says which build runs."),
                &["version"],
            )
            .unwrap(),
            registry,
        };
        let r = &m.registry;
        r.register(Box::new(m.cache_requests.clone())).unwrap();
        r.register(Box::new(m.cache_entries.clone())).unwrap();
        r.register(Box::new(m.cache_bytes.clone())).unwrap();
        r.register(Box::new(m.coalesced.clone())).unwrap();
        r.register(Box::new(m.upstream_requests.clone())).unwrap();
        r.register(Box::new(m.upstream_duration.clone())).unwrap();
        r.register(Box::new(m.head_block.clone())).unwrap();
        r.register(Box::new(m.in_flight.clone())).unwrap();
        r.register(Box::new(m.gateway_connected.clone())).unwrap();
        r.register(Box::new(m.gateway_connects.clone())).unwrap();
        r.register(Box::new(m.requests.clone())).unwrap();
        r.register(Box::new(m.cache_evictions.clone())).unwrap();
        r.register(Box::new(m.finalized_block.clone())).unwrap();
        r.register(Box::new(m.reorgs.clone())).unwrap();
        r.register(Box::new(m.reorg_depth.clone())).unwrap();
        r.register(Box::new(m.proof_verifications.clone())).unwrap();
        r.register(Box::new(m.header_verification_failures.clone()))
            .unwrap();
        r.register(Box::new(m.build_info.clone())).unwrap();
        for cause in EVICTION_CAUSES {
            m.cache_evictions.with_label_values(&[cause]);
        }
        for outcome in PROOF_OUTCOMES {
            m.proof_verifications.with_label_values(&[outcome]);
        }
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        m
    }

    /// Creates the per-chain series at zero for a configured chain.
    pub fn init_chain(&self, chain_id: u64) {
        let id = chain_id.to_string();
        self.reorgs.with_label_values(&[&id]);
        self.reorg_depth.with_label_values(&[&id]);
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding to a Vec cannot fail");
        String::from_utf8(buf).expect("exposition is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
