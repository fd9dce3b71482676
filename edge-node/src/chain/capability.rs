//! What the node can answer for a chain, probed against its upstreams and announced with the
//! status ([`proto::msg::Capabilities`]): the oldest block whose state they hold, the method
//! namespaces they accept, and the node's own `eth_getLogs` limit.
//!
//! Any upstream may get any call, so the chain announces the least capable: the shortest
//! state window and the namespaces every upstream accepts. The state window (head − oldest)
//! is what a probe measures, so the announced oldest block follows the head between probes.
//! Until the first probe the node announces only the head's state and no namespace: a guess
//! on the safe side.

use std::sync::Arc;
use std::time::Duration;

use proto::msg::Capabilities;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Chain;
use crate::metrics::Metrics;
use crate::upstream::{Answer, UpstreamError};

/// The namespaces probed, each with a cheap harmless call: a zero hash names no transaction.
const NAMESPACES: &[(&str, &str, &str)] = &[
    ("debug", "debug_traceTransaction", ZERO_HASH),
    ("trace", "trace_transaction", ZERO_HASH),
    ("txpool", "txpool_status", "[]"),
];
const ZERO_HASH: &str = r#"["0x0000000000000000000000000000000000000000000000000000000000000000"]"#;
const ZERO_ADDRESS: &str = "0x0000000000000000000000000000000000000000";

/// A fresh probe this often, in case an upstream was replaced or pruned harder.
const REPROBE: Duration = Duration::from_secs(300);
/// After a probe that reached no upstream (or not all of them).
const RETRY: Duration = Duration::from_secs(10);
/// At most one probe this often, however often upstreams refuse state the node announced.
const MIN_GAP: Duration = Duration::from_secs(10);
/// Bounds the binary search (2^40 blocks is far beyond any chain).
const MAX_SEARCH_CALLS: u32 = 40;
/// Announced oldest block = head − window + this: the upstream prunes as the head moves,
/// and the gateway hears of it a status interval late.
const MARGIN: u64 = 2;

/// What a probe found, for the least capable upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probed {
    /// Blocks of state held below the head when probed (`None`: all of it, an archive).
    pub window: Option<u64>,
    /// Accepted namespaces, in [`NAMESPACES`] order.
    pub namespaces: Vec<String>,
}

impl Chain {
    /// What the node announces for this chain with its head at `head`.
    pub fn capabilities(&self, head: u64) -> Option<Capabilities> {
        // Nothing before the first probe: the gateway then sends this node anything, as it
        // does an older node, and the upstream answers or refuses it (announcing the head's
        // state only would refuse callers what the upstream may well hold).
        let p = self.probed.lock().clone()?;
        Some(Capabilities {
            oldest_state: oldest(p.window, head),
            namespaces: p.namespaces,
            logs_max_range: self.logs.max_range,
        })
    }

    /// An upstream refused state the node may have announced holding: probe again soon.
    pub fn state_refused(&self) {
        self.reprobe.notify_one();
    }

    /// Probes once the chain has a head, then every [`REPROBE`] and after refusals (at most
    /// every [`MIN_GAP`]), until `stop` fires. Keeps `edge_oldest_state_block` current.
    pub async fn probe_capabilities(
        self: Arc<Self>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) {
        let mut state = self.watch_state();
        let gauge = metrics
            .oldest_state_block
            .with_label_values(&[&self.chain_id.to_string()]);
        loop {
            let started = Instant::now();
            let next = match self.head() {
                Some(head) => match self.probe(head.number).await {
                    true => started + REPROBE,
                    false => started + RETRY,
                },
                None => started + RETRY, // no head yet: the state watch wakes us first
            };
            loop {
                if let Some(c) = self.head().and_then(|h| self.capabilities(h.number)) {
                    gauge.set(c.oldest_state as i64);
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(next) => break,
                    _ = self.reprobe.notified() => {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep_until(started + MIN_GAP) => break,
                        }
                    }
                    changed = state.changed() => {
                        // The first head starts the first probe.
                        if changed.is_ok() && self.probed.lock().is_none() && self.head().is_some() {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Probes every upstream at `head`; keeps (and logs, when it changed) what the least
    /// capable of those that answered can do. True when every upstream answered.
    async fn probe(&self, head: u64) -> bool {
        let mut found: Option<Probed> = None;
        let mut complete = true;
        for i in 0..self.upstreams.len() {
            match self.probe_upstream(i, head).await {
                Ok(p) => {
                    found = Some(match found {
                        None => p,
                        Some(f) => least(f, p),
                    });
                }
                Err(e) => {
                    complete = false;
                    tracing::debug!(chain_id = self.chain_id, upstream = self.upstreams.label(i), error = %e, "capability probe failed");
                }
            }
        }
        let Some(found) = found else { return false };
        let mut probed = self.probed.lock();
        if probed.as_ref() != Some(&found) {
            tracing::info!(
                chain_id = self.chain_id,
                oldest_state = oldest(found.window, head),
                archive = found.window.is_none(),
                namespaces = ?found.namespaces,
                "upstream capabilities probed"
            );
            *probed = Some(found);
        }
        complete
    }

    async fn probe_upstream(&self, i: usize, head: u64) -> Result<Probed, UpstreamError> {
        let window = self.oldest_state_on(i, head).await?.map(|o| head - o);
        let mut namespaces = Vec::new();
        for (ns, method, params) in NAMESPACES {
            let accepted = match self
                .upstreams
                .call_on(i, method, params.as_bytes(), self.upstreams.timeout())
                .await
            {
                Ok(Answer::Result(_)) => true,
                Ok(Answer::Error(e)) => !method_missing(&e),
                Err(UpstreamError::Status(404 | 405)) => false,
                Err(e) => return Err(e),
            };
            if accepted {
                namespaces.push(ns.to_string());
            }
        }
        Ok(Probed { window, namespaces })
    }

    /// The oldest block whose state upstream `i` holds (`None`: all, an archive), by a
    /// binary search over balance reads (state at the head is assumed to answer).
    async fn oldest_state_on(&self, i: usize, head: u64) -> Result<Option<u64>, UpstreamError> {
        // Block 1, not genesis: some full nodes keep the genesis state but nothing after it.
        let probe_from = head.min(1);
        if self.state_held(i, probe_from).await? {
            return Ok(None);
        }
        // An upstream behind the node's head cannot show where its history starts.
        if !self.state_held(i, head).await? {
            return Err(UpstreamError::BadResponse(format!(
                "no state at the head (block {head})"
            )));
        }
        // `bad` is known missing, `good` known held.
        let (mut bad, mut good) = (probe_from, head);
        for _ in 0..MAX_SEARCH_CALLS {
            if good - bad <= 1 {
                break;
            }
            let mid = bad + (good - bad) / 2;
            match self.state_held(i, mid).await? {
                true => good = mid,
                false => bad = mid,
            }
        }
        Ok(Some(good))
    }

    async fn state_held(&self, i: usize, block: u64) -> Result<bool, UpstreamError> {
        let params = format!(r#"["{ZERO_ADDRESS}","{block:#x}"]"#);
        let budget = self.upstreams.timeout();
        let answer = self
            .upstreams
            .call_on(i, "eth_getBalance", params.as_bytes(), budget)
            .await?;
        // Only a missing-state error says "not held": any other (a rate limit, an internal
        // error) fails the probe, and the last result stands.
        match answer {
            Answer::Result(_) => Ok(true),
            Answer::Error(e) if state_missing(&e) => Ok(false),
            Answer::Error(e) => Err(UpstreamError::BadResponse(
                String::from_utf8_lossy(&e).into_owned(),
            )),
        }
    }
}

/// The oldest block held with a `window` of state below `head`.
fn oldest(window: Option<u64>, head: u64) -> u64 {
    match window {
        None => 0,
        Some(w) => head.saturating_sub(w).saturating_add(MARGIN).min(head),
    }
}

/// The capabilities both `a` and `b` have.
fn least(a: Probed, b: Probed) -> Probed {
    let window = match (a.window, b.window) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) | (None, x) => x,
    };
    let namespaces = a
        .namespaces
        .into_iter()
        .filter(|n| b.namespaces.contains(n))
        .collect();
    Probed { window, namespaces }
}

/// Does an upstream's error object say the method is not there (rather than that the call
/// failed)? JSON-RPC's -32601, EIP-1474's -32004, and the wording providers use.
fn method_missing(error: &[u8]) -> bool {
    let Ok(e) = serde_json::from_slice::<serde_json::Value>(error) else {
        return false;
    };
    if matches!(e["code"].as_i64(), Some(-32601 | -32004)) {
        return true;
    }
    let m = e["message"].as_str().unwrap_or("").to_ascii_lowercase();
    [
        "method not found",
        "does not exist",
        "not supported",
        "unsupported method",
        "is not available",
    ]
    .iter()
    .any(|k| m.contains(k))
}

/// Does an upstream's error to a state read say it does not hold that block's state (geth:
/// "missing trie node", "historical state … is not available", "header not found"; others
/// say "state … unavailable" or "pruned")?
pub fn state_missing(error: &[u8]) -> bool {
    let m = String::from_utf8_lossy(error).to_ascii_lowercase();
    m.contains("missing trie node")
        || m.contains("header not found")
        || m.contains("pruned")
        || (m.contains("state") && (m.contains("not available") || m.contains("unavailable")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_announced_oldest_block_follows_the_head_with_a_margin() {
        assert_eq!(oldest(None, 1000), 0);
        assert_eq!(oldest(Some(128), 1000), 874);
        assert_eq!(oldest(Some(128), 1010), 884);
        // A window shorter than the margin: only the head.
        assert_eq!(oldest(Some(1), 1000), 1000);
        assert_eq!(oldest(Some(5000), 1000), 2);
    }

    #[test]
    fn several_upstreams_announce_the_least_capable() {
        let p = |window, ns: &[&str]| Probed {
            window,
            namespaces: ns.iter().map(|s| s.to_string()).collect(),
        };
        let both = least(
            p(None, &["debug", "trace"]),
            p(Some(128), &["trace", "txpool"]),
        );
        assert_eq!(both, p(Some(128), &["trace"]));
        assert_eq!(least(p(None, &[]), p(None, &["debug"])), p(None, &[]));
        assert_eq!(least(p(Some(64), &[]), p(Some(128), &[])).window, Some(64));
    }

    #[test]
    fn missing_methods_are_told_from_failed_calls() {
        for missing in [
            r#"{"code":-32601,"message":"the method trace_transaction does not exist/is not available"}"#,
            r#"{"code":-32000,"message":"Method not found"}"#,
            r#"{"code":-32004,"message":"method not supported"}"#,
            r#"{"code":-32600,"message":"Unsupported method: debug_traceTransaction"}"#,
        ] {
            assert!(method_missing(missing.as_bytes()), "{missing}");
        }
        for there in [
            r#"{"code":-32000,"message":"transaction not found"}"#,
            r#"{"code":-32000,"message":"genesis is not traceable"}"#,
            "not json",
        ] {
            assert!(!method_missing(there.as_bytes()), "{there}");
        }
    }

    #[test]
    fn refused_state_is_recognised() {
        for missing in [
            r#"{"code":-32000,"message":"missing trie node 1a2b (path ) <nil>"}"#,
            r#"{"code":-32000,"message":"historical state 0xabc is not available"}"#,
            r#"{"code":-32000,"message":"header not found"}"#,
            r#"{"code":-32000,"message":"World state unavailable for block 12"}"#,
        ] {
            assert!(state_missing(missing.as_bytes()), "{missing}");
        }
        assert!(!state_missing(
            br#"{"code":3,"message":"execution reverted"}"#
        ));
    }
}
