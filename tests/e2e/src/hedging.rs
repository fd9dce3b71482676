//! The slow-node workload of the hedging test and bench (`examples/hedge.rs`): two edge nodes
//! in front of one anvil, the one nearer the caller behind a [`SlowUpstream`], and reads of
//! distinct accounts' balances (each a miss in every cache, so the upstream's delay is felt)
//! from a caller in London, whom geo routing sends to the slow node first.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use edge_node::EdgeNode;
use gateway::Gateway;
use serde_json::json;

use crate::{
    geo_section, post_as, start_gateway_with, start_node, wait_serving, Anvil, Http, NodeSpec,
    SlowUpstream, EU_WEST, US_EAST,
};

/// The caller: London, nearer the slow node (Frankfurt) than the fast one (Virginia).
pub const LONDON: &str = "81.2.69.142";

/// anvil behind two upstreams: `slow` (the nearer node's) and `fast` (never delayed; it only
/// counts transactions).
pub struct SlowNodes {
    pub anvil: Anvil,
    pub slow: SlowUpstream,
    pub fast: SlowUpstream,
}

impl SlowNodes {
    /// The slow upstream holds every `every`th balance read (and every transaction) `delay`.
    pub async fn start(every: usize, delay: Duration) -> Self {
        let anvil = Anvil::start(&[]).await;
        let slow = SlowUpstream::start(&anvil.url, every, delay).await;
        let fast = SlowUpstream::start(&anvil.url, 0, delay).await;
        Self { anvil, slow, fast }
    }

    /// A gateway with `tables` (such as a `[hedge]` table) and both nodes joined and serving.
    pub async fn stack(&self, tables: &str) -> (Gateway, [EdgeNode; 2]) {
        // anvil mines only on demand: a fresh block, or after a minute the head is too old for
        // `[health] max_head_age_ms` and no node would serve.
        Http::default()
            .rpc(&self.anvil.url, "evm_mine", json!([]))
            .await;
        let gw = start_gateway_with(&format!("{}\n{tables}", geo_section(""))).await;
        let eu = start_node(&gw, &NodeSpec::at(EU_WEST, &self.slow.url)).await;
        let us = start_node(&gw, &NodeSpec::at(US_EAST, &self.fast.url)).await;
        wait_serving(&gw, 2).await;
        (gw, [eu, us])
    }
}

/// What a run of reads took.
pub struct ReadRun {
    /// Per read, sorted.
    pub latencies: Vec<Duration>,
    /// Reads by the region that answered (`x-edge-region`).
    pub by_region: HashMap<String, usize>,
    /// Reads that failed (transport, HTTP or JSON-RPC error).
    pub errors: usize,
}

impl ReadRun {
    /// Nearest-rank quantile.
    pub fn quantile(&self, q: f64) -> Duration {
        let n = self.latencies.len();
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.latencies[rank - 1]
    }
}

/// Sends `n` `eth_getBalance` reads of distinct accounts (numbered from `first`) to the
/// gateway at `url` as the London caller, `workers` at a time.
pub async fn read_balances(url: &str, n: u64, first: u64, workers: u64) -> ReadRun {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let url = url.to_string();
        tasks.spawn(async move {
            let http = Http::default();
            let mut out = Vec::new();
            for i in (w..n).step_by(workers as usize) {
                let account = format!("0x{:040x}", first + i);
                let body = json!({"jsonrpc": "2.0", "id": i, "method": "eth_getBalance",
                    "params": [account, "latest"]});
                let t = Instant::now();
                let reply = post_as(&http, &url, LONDON, body.to_string()).await;
                let took = t.elapsed();
                let region = reply.ok().filter(|r| {
                    r.status == 200 && r.json().get("result").is_some_and(|v| v.is_string())
                });
                let region = region.map(|r| r.header("x-edge-region").unwrap_or("").to_string());
                out.push((took, region));
            }
            out
        });
    }
    let mut run = ReadRun {
        latencies: Vec::new(),
        by_region: HashMap::new(),
        errors: 0,
    };
    for (took, region) in tasks.join_all().await.into_iter().flatten() {
        run.latencies.push(took);
        match region {
            Some(r) => *run.by_region.entry(r).or_default() += 1,
            None => run.errors += 1,
        }
    }
    run.latencies.sort();
    run
}
