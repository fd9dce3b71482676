//! WebSocket and subscription metrics: open sockets, subscriptions and feeds, events sent,
//! slow consumers, and the delay from a node publishing a block to the gateway sending it.

use daemon::metrics::Families;
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use proto::sub::SubKind;

/// From the node's publish to the gateway handing the event to its sockets: a loopback hop is
/// about a millisecond, a continent a hundred.
const DELAY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Why a feed moved to another node (`gateway_ws_feed_moves_total{reason}`).
pub const MOVE_REASONS: &[&str] = &["node_gone", "node_unhealthy", "stream_ended", "refused"];

pub struct SubFamilies {
    pub connections: IntGauge,
    pub subscriptions: IntGaugeVec,
    pub feeds: IntGauge,
    pub events_sent: IntCounterVec,
    pub slow_consumers: IntCounter,
    pub event_delay: Histogram,
    pub feed_moves: IntCounterVec,
    /// Messages clients sent, by what became of them (request, subscribe, unsubscribe,
    /// refused).
    pub messages: IntCounterVec,
}

const KINDS: [SubKind; 3] = [
    SubKind::NewHeads,
    SubKind::Logs,
    SubKind::NewPendingTransactions,
];

impl SubFamilies {
    pub fn new(f: &Families<'_>) -> Self {
        let m = Self {
            connections: f.gauge("ws_connections", "Open JSON-RPC WebSocket connections."),
            subscriptions: f.gauge_vec(
                "ws_subscriptions",
                "Active eth_subscribe subscriptions by kind.",
                &["kind"],
            ),
            feeds: f.gauge(
                "ws_feeds",
                "Subscription feeds followed from nodes (one stream per chain, kind and filter, shared by every client that asked for it).",
            ),
            events_sent: f.counter_vec(
                "ws_events_sent_total",
                "Subscription notifications queued to clients, by kind.",
                &["kind"],
            ),
            slow_consumers: f.counter(
                "ws_slow_consumer_disconnects_total",
                "Sockets closed because the client let its send buffer fill (close code 1008).",
            ),
            event_delay: f
                .histogram_vec(
                    "ws_event_delay_seconds",
                    "From a node publishing a block to the gateway sending its event to clients (node and gateway clocks).",
                    DELAY_BUCKETS,
                    &[],
                )
                .with_label_values::<&str>(&[]),
            feed_moves: f.counter_vec(
                "ws_feed_moves_total",
                "Feeds moved to another node, resumed after the last block delivered, by reason.",
                &["reason"],
            ),
            messages: f.counter_vec(
                "ws_messages_total",
                "Messages clients sent on WebSockets, by what became of them.",
                &["result"],
            ),
        };
        for k in KINDS {
            m.subscriptions.with_label_values(&[k.as_str()]);
            m.events_sent.with_label_values(&[k.as_str()]);
        }
        for r in MOVE_REASONS {
            m.feed_moves.with_label_values(&[r]);
        }
        m
    }
}
