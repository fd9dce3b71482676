//! Gateway metrics: one registry, every family prefixed `gateway_`, bounded labels only
//! (configured chain names, a fixed set of method names, fixed outcome/reason names, node ids
//! and regions of joined nodes, which are bounded by `quic.max_nodes`, and ISO country codes).
//!
//! [`nodes`] holds the per-node gauges that are rebuilt from the node registry at each scrape;
//! [`geo`] the geo database reload counters, copied from the geo service's stats at each scrape;
//! [`tenants`] the tenants' families and the Redis gauges; [`cache`] the gateway cache tiers'
//! gauges; [`audit`] audits and ejections; [`hedge`] hedged reads; [`subs`] WebSockets.

pub mod audit;
pub mod cache;
pub mod geo;
pub mod hedge;
pub mod nodes;
pub mod subs;
pub mod tenants;

use daemon::metrics::Families;
use prometheus::{
    Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry,
};

/// From sub-millisecond cache hits to multi-second misses and timeouts.
const REQUEST_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Methods reported by name; everything else is `other`, keeping the label set bounded.
pub(crate) const KNOWN_METHODS: &[&str] = &[
    "eth_blockNumber",
    "eth_call",
    "eth_chainId",
    "eth_estimateGas",
    "eth_feeHistory",
    "eth_gasPrice",
    "eth_getBalance",
    "eth_getBlockByHash",
    "eth_getBlockByNumber",
    "eth_getBlockReceipts",
    "eth_getCode",
    "eth_getLogs",
    "eth_getProof",
    "eth_getStorageAt",
    "eth_getTransactionByHash",
    "eth_getTransactionCount",
    "eth_getTransactionReceipt",
    "eth_maxPriorityFeePerGas",
    "eth_sendRawTransaction",
    "eth_syncing",
    "net_version",
    "web3_clientVersion",
];

/// One chain's hot-path series, resolved once at start: `with_label_values` hashes the labels
/// and takes a lock on every call, and a gateway-tier hit would otherwise do that five times.
pub struct ChainSeries {
    pub requests_ok: IntCounter,
    pub requests_error: IntCounter,
    pub duration_single: Histogram,
    pub duration_batch: Histogram,
    /// `cache_results_total{tier="gateway"}`: every call looked up in the gateway tier.
    pub gateway_hit: IntCounter,
    pub gateway_miss: IntCounter,
    /// `rpc_calls_total{cache="hit",outcome="result"}` per [`KNOWN_METHODS`] entry, then `other`:
    /// the gateway tier's, resolved at start. Kept apart from `node_calls` on purpose: through
    /// that table's `OnceLock` a hit cost ~40 instructions more (callgrind, batch of 50: +1.3 %).
    gateway_hit_calls: Vec<IntCounter>,
    /// `cache_results_total{tier="edge"}` by the node's cache status (hit, miss, bypass).
    edge_results: [IntCounter; 3],
    /// `rpc_calls_total` for calls a node answered: per [`KNOWN_METHODS`] entry (then `other`),
    /// cache status and outcome, made on first use.
    node_calls: Vec<std::sync::OnceLock<IntCounter>>,
    calls_vec: IntCounterVec,
    /// `requests_by_country_total` per two-letter code (26 * 26 slots, made on first use), then
    /// `unknown`: an array index instead of a label lookup per request.
    by_country: Vec<std::sync::OnceLock<IntCounter>>,
    by_country_vec: IntCounterVec,
    chain: String,
}

/// The `cache` label values of `rpc_calls_total` and `result` of `cache_results_total`, by
/// [`proto::msg::CacheStatus`] discriminant.
const CACHE_LABELS: [&str; 3] = ["hit", "miss", "bypass"];

/// The `outcome` label of `rpc_calls_total` for an answered call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Result = 0,
    RpcError = 1,
    NodeError = 2,
}

impl CallOutcome {
    pub const LABELS: [&str; 3] = ["result", "rpc_error", "node_error"];

    pub fn as_str(self) -> &'static str {
        Self::LABELS[self as usize]
    }
}

fn method_index(method: &str) -> usize {
    KNOWN_METHODS
        .iter()
        .position(|m| *m == method)
        .unwrap_or(KNOWN_METHODS.len())
}

impl ChainSeries {
    /// Counts a call the gateway tier answered.
    pub fn gateway_hit_call(&self, method: &str) {
        self.gateway_hit_calls[method_index(method)].inc();
    }

    /// Counts a call answered past the gateway tier (`rpc_calls_total`), and when a node
    /// answered it (`by_node`), its `cache_results_total` in the edge tier.
    pub fn node_call(
        &self,
        method: &str,
        cache: proto::msg::CacheStatus,
        outcome: CallOutcome,
        by_node: bool,
    ) {
        let (m, c, o) = (method_index(method), cache as usize, outcome as usize);
        if by_node {
            self.edge_results[c].inc();
        }
        self.node_calls[(m * 3 + c) * 3 + o]
            .get_or_init(|| {
                let method = KNOWN_METHODS.get(m).copied().unwrap_or("other");
                self.calls_vec.with_label_values(&[
                    &self.chain,
                    method,
                    CACHE_LABELS[c],
                    outcome.as_str(),
                ])
            })
            .inc();
    }

    /// Counts a request from a caller in `country` (an ISO code; anything else is `unknown`).
    pub fn request_from(&self, country: Option<&str>) {
        let label = country_label(country);
        let slot = match label.as_bytes() {
            [a, b] => usize::from(a - b'A') * 26 + usize::from(b - b'A'),
            _ => 26 * 26,
        };
        self.by_country[slot]
            .get_or_init(|| self.by_country_vec.with_label_values(&[&self.chain, label]))
            .inc();
    }
}

/// A caller's country as a bounded label: an ISO 3166-1 alpha-2 code, else `unknown`.
pub fn country_label(country: Option<&str>) -> &str {
    match country {
        Some(c) if c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()) => c,
        _ => "unknown",
    }
}

/// QUIC connection events (`gateway_quic_connection_events_total{event}`): a handshake, then
/// how the session ended.
pub const QUIC_EVENTS: &[&str] = &[
    "handshake_ok",
    "handshake_failed",
    "join_refused",
    "join_timeout",
    "closed",
    "silent",
    "lost",
    "protocol_error",
];

/// Failover reasons (`gateway_failovers_total{reason}`), created at zero so that rates and alerts
/// see a series before the first failover.
pub const FAILOVER_REASONS: &[&str] = &[
    "node_gone",
    "timeout",
    "stream_error",
    "protocol_error",
    "node_error",
];

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub calls: IntCounterVec,
    pub rejected: IntCounterVec,
    pub failovers: IntCounterVec,
    pub node_joins: IntCounterVec,
    pub nodes_joined: IntGauge,
    pub http_connections: IntGauge,
    /// `http_connections_closed_total{reason}`: connections the gateway closed on its own.
    pub http_connections_closed: IntCounterVec,
    pub health_transitions: IntCounterVec,
    pub implausible_nodes_total: IntCounter,
    pub geo_lookups: IntCounterVec,
    /// `geo_lookups` by result (found, default, unknown), resolved once.
    pub geo_found: IntCounter,
    pub geo_default: IntCounter,
    pub geo_unknown: IntCounter,
    pub requests_by_country: IntCounterVec,
    pub cache_results: IntCounterVec,
    pub quic_events: IntCounterVec,
    pub build_info: IntGaugeVec,
    /// The gateway's cache tiers, read at each scrape.
    pub answers: cache::AnswerGauges,
    pub nodes: nodes::NodeGauges,
    pub geo_reloads: geo::GeoReloads,
    pub tenants: tenants::TenantFamilies,
    pub ws: subs::SubFamilies,
    pub audit: audit::AuditFamilies,
    pub hedge: hedge::HedgeFamilies,
    /// Present when the gateway shares through Redis.
    pub redis: Option<tenants::RedisGauges>,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("gateway".into()), None).expect("valid prefix");
        let f = Families(&registry);
        let geo_lookups = f.counter_vec(
            "geo_lookups_total",
            "Caller geolocations by result (found, default, unknown).",
            &["result"],
        );
        let m = Self {
            requests: f.counter_vec(
                "http_requests_total",
                "JSON-RPC HTTP requests by chain and outcome.",
                &["chain", "outcome"],
            ),
            request_duration: f.histogram_vec(
                "http_request_duration_seconds",
                "Time from request received to response ready.",
                REQUEST_BUCKETS,
                &["chain", "kind"],
            ),
            calls: f.counter_vec(
                "rpc_calls_total",
                "JSON-RPC calls (batch elements count one each) by method, cache result and outcome.",
                &["chain", "method", "cache", "outcome"],
            ),
            rejected: f.counter_vec(
                "rejected_requests_total",
                "Requests or calls refused before reaching a node, by reason.",
                &["reason"],
            ),
            failovers: f.counter_vec(
                "failovers_total",
                "Attempts moved to another node, by reason.",
                &["reason"],
            ),
            node_joins: f.counter_vec(
                "node_joins_total",
                "Node join attempts by outcome.",
                &["outcome"],
            ),
            nodes_joined: f.gauge("nodes_joined", "Edge nodes currently joined."),
            http_connections: f.gauge(
                "http_open_connections",
                "Client HTTP connections currently open.",
            ),
            http_connections_closed: f.counter_vec(
                "http_connections_closed_total",
                "Client HTTP connections the gateway closed, by reason (header_timeout: no first request in time; idle_timeout: no next request in time; shed: idle the longest when the listener was full).",
                &["reason"],
            ),
            health_transitions: f.counter_vec(
                "node_health_transitions_total",
                "Node health flips (per chain) by new state.",
                &["state"],
            ),
            implausible_nodes_total: f.counter(
                "node_location_implausible_total",
                "Times a node was flagged for claiming a location farther than its RTT allows.",
            ),
            geo_found: geo_lookups.with_label_values(&["found"]),
            geo_default: geo_lookups.with_label_values(&["default"]),
            geo_unknown: geo_lookups.with_label_values(&["unknown"]),
            geo_lookups,
            requests_by_country: f.counter_vec(
                "requests_by_country_total",
                "JSON-RPC HTTP requests by chain and caller country (ISO code, or unknown).",
                &["chain", "country"],
            ),
            cache_results: f.counter_vec(
                "cache_results_total",
                "Calls by cache tier (edge: a node's cache; gateway: the gateway's own) and result (hit, miss, bypass).",
                &["chain", "tier", "result"],
            ),
            quic_events: f.counter_vec(
                "quic_connection_events_total",
                "Node QUIC connections: handshakes and how sessions ended.",
                &["event"],
            ),
            build_info: f.build_info(env!("CARGO_PKG_VERSION")),
            answers: cache::AnswerGauges::new(&f),
            nodes: nodes::NodeGauges::new(&f),
            geo_reloads: geo::GeoReloads::new(&f),
            tenants: tenants::TenantFamilies::new(&f),
            ws: subs::SubFamilies::new(&f),
            audit: audit::AuditFamilies::new(&f),
            hedge: hedge::HedgeFamilies::new(&f),
            redis: None,
            registry,
        };
        m.precreate();
        m
    }

    /// Series that alerts and rates need before their first event exist at zero.
    fn precreate(&self) {
        for e in QUIC_EVENTS {
            self.quic_events.with_label_values(&[e]);
        }
        for r in FAILOVER_REASONS {
            self.failovers.with_label_values(&[r]);
        }
        for c in crate::front::conns::Closed::REASONS {
            self.http_connections_closed.with_label_values(&[c.label()]);
        }
    }

    /// Adds the Redis gauges (only a gateway that shares through Redis exports them).
    pub fn add_redis(&mut self) {
        self.redis = Some(tenants::RedisGauges::new(&self.registry));
    }

    /// Resolves one chain's hot-path series (see [`ChainSeries`]).
    pub fn chain_series(&self, chain: &str) -> ChainSeries {
        ChainSeries {
            requests_ok: self.requests.with_label_values(&[chain, "ok"]),
            requests_error: self.requests.with_label_values(&[chain, "error"]),
            duration_single: self.request_duration.with_label_values(&[chain, "single"]),
            duration_batch: self.request_duration.with_label_values(&[chain, "batch"]),
            gateway_hit: self
                .cache_results
                .with_label_values(&[chain, "gateway", "hit"]),
            gateway_miss: self
                .cache_results
                .with_label_values(&[chain, "gateway", "miss"]),
            gateway_hit_calls: KNOWN_METHODS
                .iter()
                .chain(["other"].iter())
                .map(|m| self.calls.with_label_values(&[chain, m, "hit", "result"]))
                .collect(),
            edge_results: CACHE_LABELS
                .map(|r| self.cache_results.with_label_values(&[chain, "edge", r])),
            node_calls: (0..(KNOWN_METHODS.len() + 1) * 3 * 3)
                .map(|_| std::sync::OnceLock::new())
                .collect(),
            calls_vec: self.calls.clone(),
            by_country: (0..=26 * 26).map(|_| std::sync::OnceLock::new()).collect(),
            by_country_vec: self.requests_by_country.clone(),
            chain: chain.to_string(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_series_count_into_the_labelled_families() {
        let m = Metrics::new();
        let s = m.chain_series("main");
        s.request_from(Some("GB"));
        s.request_from(Some("GB"));
        s.request_from(Some("ZZ"));
        s.request_from(Some("gb")); // not an ISO code as the databases spell them
        s.request_from(None);
        s.gateway_hit_call("eth_getBalance");
        s.gateway_hit_call("eth_madeUp");
        s.requests_ok.inc();
        let by = |country: &str| {
            m.requests_by_country
                .with_label_values(&["main", country])
                .get()
        };
        assert_eq!((by("GB"), by("ZZ"), by("unknown")), (2, 1, 2));
        let calls = |method: &str| {
            m.calls
                .with_label_values(&["main", method, "hit", "result"])
                .get()
        };
        assert_eq!((calls("eth_getBalance"), calls("other")), (1, 1));
        use proto::msg::CacheStatus::{Bypass, Hit, Miss};
        s.node_call("eth_getBalance", Hit, CallOutcome::Result, true);
        s.node_call("eth_getBalance", Miss, CallOutcome::Result, true);
        s.node_call("eth_getBalance", Miss, CallOutcome::Result, true);
        s.node_call("eth_madeUp", Bypass, CallOutcome::NodeError, true);
        s.node_call("eth_call", Miss, CallOutcome::RpcError, true);
        // Refused before any node answered: a call, no edge-tier look-up.
        s.node_call("eth_call", Miss, CallOutcome::NodeError, false);
        let call = |method: &str, cache: &str, outcome: &str| {
            m.calls
                .with_label_values(&["main", method, cache, outcome])
                .get()
        };
        // A node's hit counts in the same series as the gateway tier's (one label spelling).
        assert_eq!(call("eth_getBalance", "hit", "result"), 2);
        assert_eq!(call("eth_getBalance", "miss", "result"), 2);
        assert_eq!(call("other", "bypass", "node_error"), 1);
        assert_eq!(call("eth_call", "miss", "rpc_error"), 1);
        assert_eq!(call("eth_call", "miss", "result"), 0);
        assert_eq!(call("eth_call", "miss", "node_error"), 1);
        let edge = |r: &str| {
            m.cache_results
                .with_label_values(&["main", "edge", r])
                .get()
        };
        assert_eq!((edge("hit"), edge("miss"), edge("bypass")), (1, 3, 1));
        assert_eq!(m.requests.with_label_values(&["main", "ok"]).get(), 1);
    }
}
