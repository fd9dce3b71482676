//! Per-chain state the node reports to the gateway: the chain id its upstreams really serve,
//! the head they are at, and whether they answer.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use proto::msg::ChainStatus;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::upstream::{Answer, Upstreams};

#[derive(Debug, Clone, Default)]
pub struct Head {
    pub number: u64,
    pub hash: String,
    pub timestamp: u64,
}

#[derive(Debug, Default)]
struct State {
    reported_chain_id: Option<u64>,
    head: Option<Head>,
    healthy: bool,
    probes: u32,
    failures: u32,
}

/// One served chain: its upstreams and tracked state.
pub struct Chain {
    pub chain_id: u64,
    pub upstreams: Upstreams,
    poll: Duration,
    state: Mutex<State>,
}

impl Chain {
    pub fn new(chain_id: u64, upstreams: Upstreams, poll: Duration) -> Self {
        Self {
            chain_id,
            upstreams,
            poll,
            state: Mutex::new(State::default()),
        }
    }

    pub fn upstream_healthy(&self) -> bool {
        self.state.lock().healthy
    }

    pub fn head(&self) -> Option<Head> {
        self.state.lock().head.clone()
    }

    /// The status line for the gateway. Error rate covers the probes since the last report.
    pub fn status(&self) -> ChainStatus {
        let mut s = self.state.lock();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let error_rate = if s.probes == 0 {
            0.0
        } else {
            f64::from(s.failures) / f64::from(s.probes)
        };
        s.probes = 0;
        s.failures = 0;
        let head = s.head.clone().unwrap_or_default();
        ChainStatus {
            // Until the upstream has said, report the configured id; a mismatch shows once known.
            chain_id: s.reported_chain_id.unwrap_or(self.chain_id),
            head_number: head.number,
            head_hash: head.hash,
            head_age_ms: if head.timestamp == 0 {
                u64::MAX
            } else {
                now_ms.saturating_sub(head.timestamp * 1000)
            },
            finalized_number: None,
            upstream_healthy: s.healthy,
            error_rate,
        }
    }

    /// Polls the upstreams until `stop` fires.
    pub async fn track(self: Arc<Self>, metrics: Arc<Metrics>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let ok = self.probe(&metrics).await;
            let mut s = self.state.lock();
            s.probes += 1;
            if !ok {
                s.failures += 1;
            }
            if s.healthy != ok {
                tracing::info!(
                    chain_id = self.chain_id,
                    healthy = ok,
                    "upstream health changed"
                );
            }
            s.healthy = ok;
        }
    }

    async fn probe(&self, metrics: &Metrics) -> bool {
        let budget = self.upstreams.timeout();
        if self.state.lock().reported_chain_id.is_none() {
            match self.upstreams.call("eth_chainId", b"[]", budget).await {
                Ok(Answer::Result(r)) => {
                    let id = parse_quantity(&r);
                    if id != Some(self.chain_id) {
                        tracing::error!(
                            configured = self.chain_id,
                            reported = ?id,
                            "upstream serves a different chain than configured"
                        );
                    }
                    self.state.lock().reported_chain_id = id;
                }
                other => {
                    tracing::warn!(chain_id = self.chain_id, answer = ?other, "eth_chainId probe failed");
                    return false;
                }
            }
        }
        match self
            .upstreams
            .call("eth_getBlockByNumber", br#"["latest",false]"#, budget)
            .await
        {
            Ok(Answer::Result(r)) => match parse_head(&r) {
                Some(head) => {
                    metrics
                        .head_block
                        .with_label_values(&[&self.chain_id.to_string()])
                        .set(head.number as i64);
                    self.state.lock().head = Some(head);
                    true
                }
                None => false,
            },
            other => {
                tracing::warn!(chain_id = self.chain_id, answer = ?other, "head probe failed");
                false
            }
        }
    }
}

/// Parses a JSON quantity string such as `"0x7a69"`.
pub fn parse_quantity(raw: &[u8]) -> Option<u64> {
    let s: String = serde_json::from_slice(raw).ok()?;
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

fn parse_head(raw: &[u8]) -> Option<Head> {
    let v: Value = serde_json::from_slice(raw).ok()?;
    let q = |k: &str| -> Option<u64> {
        u64::from_str_radix(v.get(k)?.as_str()?.strip_prefix("0x")?, 16).ok()
    };
    Some(Head {
        number: q("number")?,
        hash: v.get("hash")?.as_str()?.to_string(),
        timestamp: q("timestamp")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quantities_and_heads() {
        assert_eq!(parse_quantity(b"\"0x7a69\""), Some(31337));
        assert_eq!(parse_quantity(b"\"7a69\""), None);
        let h = parse_head(br#"{"number":"0x10","hash":"0xab","timestamp":"0x5"}"#).unwrap();
        assert_eq!((h.number, h.hash.as_str(), h.timestamp), (16, "0xab", 5));
        assert!(parse_head(b"null").is_none());
    }
}
