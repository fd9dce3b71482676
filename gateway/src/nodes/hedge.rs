//! Hedged reads: when the node asked first is late with a read (past a quantile of its own
//! recent latency for that kind of call), the dispatcher asks the next node too and takes the
//! first answer. This module decides *whether* and *when*; `dispatch` runs the race.
//!
//! - Only reads are hedged, by an allow-list ([`class_of`]): a write (`eth_sendRawTransaction`),
//!   a filter (it lives on one node), a subscription or anything unknown is never sent twice.
//! - The delay is the node's own `[hedge] quantile` for the request's [`Class`] (a batch: its
//!   slowest class), from [`super::latency`], within `min_delay_ms ..= max_delay_ms`.
//! - A [`Budget`] caps hedges at `max_share` of dispatched requests, so a slow network does
//!   not double its own load.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::{Histogram, IntCounter};
use proto::msg::Call;
use tokio::time::Duration;

use super::latency::Latency;
use crate::config::HedgeConfig;
use crate::ops::metrics::Metrics;

/// Kinds of read whose latencies differ by orders of magnitude, so each has its own figures;
/// ordered from the cheapest, so a batch is hedged as its slowest call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// Answered from the node's chain state or a tiny upstream call.
    Light,
    /// Blocks, transactions and receipts.
    Blocks,
    /// Account state and execution (`eth_call`, `eth_estimateGas`, proofs).
    State,
    Logs,
    /// `trace_*`, `debug_trace*`: re-execution.
    Trace,
}

impl Class {
    pub const COUNT: usize = 5;
}

/// The class of a read that may be hedged; `None` for anything else (never hedged).
pub fn class_of(method: &str) -> Option<Class> {
    Some(match method {
        "eth_blockNumber"
        | "eth_chainId"
        | "eth_gasPrice"
        | "eth_maxPriorityFeePerGas"
        | "eth_blobBaseFee"
        | "eth_feeHistory"
        | "eth_syncing"
        | "net_version"
        | "net_listening"
        | "web3_clientVersion" => Class::Light,
        "eth_getBlockByNumber"
        | "eth_getBlockByHash"
        | "eth_getBlockReceipts"
        | "eth_getBlockTransactionCountByHash"
        | "eth_getBlockTransactionCountByNumber"
        | "eth_getTransactionByHash"
        | "eth_getTransactionByBlockHashAndIndex"
        | "eth_getTransactionByBlockNumberAndIndex"
        | "eth_getTransactionReceipt"
        | "eth_getUncleCountByBlockHash"
        | "eth_getUncleCountByBlockNumber" => Class::Blocks,
        "eth_getBalance"
        | "eth_getCode"
        | "eth_getStorageAt"
        | "eth_getTransactionCount"
        | "eth_getProof"
        | "eth_call"
        | "eth_estimateGas"
        | "eth_createAccessList" => Class::State,
        "eth_getLogs" => Class::Logs,
        "trace_block"
        | "trace_transaction"
        | "trace_call"
        | "trace_callMany"
        | "trace_filter"
        | "trace_get"
        | "trace_replayTransaction"
        | "trace_replayBlockTransactions"
        | "debug_traceTransaction"
        | "debug_traceCall"
        | "debug_traceBlockByNumber"
        | "debug_traceBlockByHash" => Class::Trace,
        _ => return None,
    })
}

/// The class of a request: its slowest call's, or `None` when any call is not a hedgeable read.
pub fn request_class(calls: &[Call]) -> Option<Class> {
    calls
        .iter()
        .map(|c| class_of(&c.method))
        .try_fold(Class::Light, |worst, c| Some(worst.max(c?)))
}

/// Tokens a quiet spell can save up: a burst of late answers after it may hedge this many
/// beyond the share.
const BURST: u64 = 10;
/// Token amounts in millionths.
const ONE: u64 = 1_000_000;

/// A lock-free token bucket: each dispatched request adds `max_share` of a token (up to
/// [`BURST`]), each hedge takes a whole one. Starts empty.
pub struct Budget {
    micro: AtomicU64,
    per_request: u64,
}

impl Budget {
    pub fn new(max_share: f64) -> Self {
        Self {
            micro: AtomicU64::new(0),
            per_request: (max_share * ONE as f64).round() as u64,
        }
    }

    /// Credits one dispatched request.
    pub fn credit(&self) {
        let _ = self
            .micro
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (t < BURST * ONE).then(|| (t + self.per_request).min(BURST * ONE))
            });
    }

    /// Takes one hedge's token; false when there is none.
    pub fn take(&self) -> bool {
        self.micro
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| t.checked_sub(ONE))
            .is_ok()
    }
}

/// What the dispatcher needs for hedging: the settings, the budget and the counters.
pub struct Hedging {
    config: HedgeConfig,
    budget: Budget,
    pub sent: IntCounter,
    /// The hedge's answer was used.
    pub won: IntCounter,
    /// The first node's answer was used after all.
    pub lost: IntCounter,
    pub budget_exhausted: IntCounter,
    delay: Histogram,
}

impl Hedging {
    pub fn new(config: &HedgeConfig, metrics: &Metrics) -> Self {
        let outcome = |o: &str| metrics.hedge.outcomes.with_label_values(&[o]);
        Self {
            config: config.clone(),
            budget: Budget::new(config.max_share),
            sent: outcome("sent"),
            won: outcome("won"),
            lost: outcome("lost"),
            budget_exhausted: outcome("budget_exhausted"),
            delay: metrics.hedge.delay.clone(),
        }
    }

    /// Called once per dispatched request: credits the budget, and says whether the request
    /// may be hedged.
    pub fn admit(&self, class: Option<Class>) -> bool {
        if !self.config.enabled {
            return false;
        }
        self.budget.credit();
        class.is_some()
    }

    /// How long a node (with these recent latencies) may take with a request of `class`
    /// before the next node is asked too.
    pub fn delay(&self, latency: &Latency, class: Class) -> Duration {
        let c = &self.config;
        latency
            .quantile(class, c.quantile)
            .unwrap_or(c.max_delay)
            .clamp(c.min_delay, c.max_delay)
    }

    /// Takes a token for one hedge after `delay`, counting the outcome; false: no token.
    pub fn spend(&self, delay: Duration) -> bool {
        if self.budget.take() {
            self.sent.inc();
            self.delay.observe(delay.as_secs_f64());
            true
        } else {
            self.budget_exhausted.inc();
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls(methods: &[&str]) -> Vec<Call> {
        methods
            .iter()
            .map(|m| Call {
                method: (*m).into(),
                params: "[]".into(),
            })
            .collect()
    }

    #[test]
    fn only_reads_are_hedged() {
        for never in [
            "eth_sendRawTransaction",
            "eth_sendTransaction",
            "eth_newFilter",
            "eth_newBlockFilter",
            "eth_newPendingTransactionFilter",
            "eth_getFilterChanges",
            "eth_getFilterLogs",
            "eth_uninstallFilter",
            "eth_subscribe",
            "eth_unsubscribe",
            "personal_sign",
            "admin_peers",
            "anvil_mine",
            "trace_rawTransaction",
            "eth_madeUp",
        ] {
            assert_eq!(class_of(never), None, "{never}");
        }
        assert_eq!(class_of("eth_getBalance"), Some(Class::State));
        assert_eq!(class_of("eth_getLogs"), Some(Class::Logs));
        assert_eq!(class_of("debug_traceTransaction"), Some(Class::Trace));
    }

    #[test]
    fn a_batch_is_hedged_as_its_slowest_read_and_never_with_a_write() {
        let c = |m: &[&str]| request_class(&calls(m));
        assert_eq!(c(&["eth_chainId"]), Some(Class::Light));
        assert_eq!(
            c(&["eth_chainId", "eth_getLogs", "eth_call"]),
            Some(Class::Logs)
        );
        assert_eq!(c(&["eth_getBalance", "eth_sendRawTransaction"]), None);
        assert_eq!(c(&["eth_getFilterChanges", "eth_blockNumber"]), None);
    }

    #[test]
    fn the_budget_holds_hedges_to_their_share() {
        let b = Budget::new(0.1);
        assert!(!b.take(), "starts empty");
        let mut hedged = 0;
        for _ in 0..1000 {
            b.credit();
            if b.take() {
                hedged += 1;
            }
        }
        assert_eq!(hedged, 100);
        // A quiet spell saves up at most BURST tokens.
        for _ in 0..10_000 {
            b.credit();
        }
        let burst = std::iter::from_fn(|| b.take().then_some(())).count();
        assert_eq!(burst as u64, BURST);
    }

    #[tokio::test(start_paused = true)]
    async fn the_delay_is_the_nodes_quantile_within_bounds() {
        let config = HedgeConfig {
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(500),
            ..HedgeConfig::default()
        };
        let h = Hedging::new(&config, &Metrics::new());
        let latency = Latency::new();
        let delay = |l: &Latency, class| h.delay(l, class);
        assert_eq!(delay(&latency, Class::State), config.max_delay, "unknown");
        for _ in 0..100 {
            latency.record(Class::State, Duration::from_millis(40));
            latency.record(Class::Light, Duration::from_micros(300));
        }
        let d = delay(&latency, Class::State);
        assert!(d >= Duration::from_millis(40) && d <= Duration::from_millis(50));
        assert_eq!(delay(&latency, Class::Light), config.min_delay);
        assert!(!h.spend(d), "no token before any request");
        assert!(h.admit(Some(Class::State)));
        assert!(!h.admit(None));
        assert_eq!(h.budget_exhausted.get(), 1);
    }
}
