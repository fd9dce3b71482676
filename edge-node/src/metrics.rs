//! Edge-node metrics: one registry, every family prefixed `edge_`, bounded labels only
//! (configured upstream `host:port`, chain ids, fixed outcome names).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Upstream round trips run from ~100 µs (loopback) to the timeout.
const UPSTREAM_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

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
        m
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
