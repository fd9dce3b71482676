//! Answers the gateway's RPC requests: from the cache when the policy allows, otherwise from
//! the upstreams, sending identical concurrent misses upstream once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proto::msg::{CacheStatus, Call, CallResult, Outcome, RpcRequest, RpcResponse};
use proto::rpc;
use serde_json::Value;

use crate::cache::{self, Policy, Store};
use crate::chain::Chain;
use crate::metrics::Metrics;
use crate::upstream::{Answer, UpstreamError};

pub struct Service {
    pub chains: HashMap<u64, Arc<Chain>>,
    pub cache: Store,
    pub metrics: Arc<Metrics>,
}

/// Why a cacheable miss was not stored; every waiter on the same key receives it.
#[derive(Debug, Clone)]
enum NotStored {
    Answer(Answer),
    Failed(UpstreamError),
}

impl Service {
    pub async fn handle(&self, req: RpcRequest) -> RpcResponse {
        let Some(chain) = self.chains.get(&req.chain_id) else {
            let err = rpc::error_object(
                rpc::UNKNOWN_CHAIN,
                format!("chain {} is not served by this node", req.chain_id),
            );
            return RpcResponse {
                results: req
                    .calls
                    .iter()
                    .map(|_| CallResult {
                        cache: CacheStatus::Bypass,
                        outcome: Outcome::NodeError(err.clone()),
                    })
                    .collect(),
            };
        };
        let budget = Duration::from_millis(u64::from(req.budget_ms.max(1)));
        let results = if req.calls.len() == 1 {
            vec![self.call(chain, &req.calls[0], budget).await]
        } else {
            futures::future::join_all(req.calls.iter().map(|c| self.call(chain, c, budget))).await
        };
        RpcResponse { results }
    }

    async fn call(&self, chain: &Chain, call: &Call, budget: Duration) -> CallResult {
        let params: Value = if call.params.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(&call.params) {
                Ok(v) => v,
                Err(e) => {
                    return CallResult {
                        cache: CacheStatus::Bypass,
                        outcome: Outcome::Error(rpc::error_object(
                            rpc::INVALID_PARAMS,
                            format!("params are not valid JSON: {e}"),
                        )),
                    }
                }
            }
        };
        match cache::policy(&call.method, &params) {
            Policy::Bypass => {
                self.metrics
                    .cache_requests
                    .with_label_values(&["bypass"])
                    .inc();
                let outcome = to_outcome(
                    chain
                        .upstreams
                        .call(&call.method, &call.params, budget)
                        .await,
                );
                CallResult {
                    cache: CacheStatus::Bypass,
                    outcome,
                }
            }
            Policy::Immutable => {
                let key = cache::key(chain.chain_id, &call.method, &params);
                if let Some(v) = self.cache.get(&key).await {
                    self.metrics
                        .cache_requests
                        .with_label_values(&["hit"])
                        .inc();
                    return CallResult {
                        cache: CacheStatus::Hit,
                        outcome: Outcome::Result(v),
                    };
                }
                // moka runs one init per key; concurrent callers wait for it (coalescing).
                let fetch = async {
                    match chain
                        .upstreams
                        .call(&call.method, &call.params, budget)
                        .await
                    {
                        Ok(Answer::Result(r)) if cache::storable(&r) => Ok(r),
                        Ok(a) => Err(NotStored::Answer(a)),
                        Err(e) => Err(NotStored::Failed(e)),
                    }
                };
                let (status, outcome) = match self.cache.entry(key).or_try_insert_with(fetch).await
                {
                    Ok(entry) if entry.is_fresh() => {
                        (CacheStatus::Miss, Outcome::Result(entry.into_value()))
                    }
                    Ok(entry) => {
                        // Someone else's fetch answered us.
                        self.metrics.coalesced.inc();
                        (CacheStatus::Hit, Outcome::Result(entry.into_value()))
                    }
                    Err(e) => match e.as_ref() {
                        NotStored::Answer(a) => (CacheStatus::Miss, to_outcome(Ok(a.clone()))),
                        NotStored::Failed(f) => (CacheStatus::Miss, to_outcome(Err(f.clone()))),
                    },
                };
                let label = if status == CacheStatus::Hit {
                    "hit"
                } else {
                    "miss"
                };
                self.metrics
                    .cache_requests
                    .with_label_values(&[label])
                    .inc();
                CallResult {
                    cache: status,
                    outcome,
                }
            }
        }
    }
}

fn to_outcome(r: Result<Answer, UpstreamError>) -> Outcome {
    match r {
        Ok(Answer::Result(b)) => Outcome::Result(b),
        Ok(Answer::Error(b)) => Outcome::Error(b),
        // The upstream failed, not the request: the gateway may try another node.
        Err(e) => Outcome::NodeError(node_error(&e)),
    }
}

fn node_error(e: &UpstreamError) -> Bytes {
    rpc::error_object(rpc::INTERNAL_ERROR, e.to_string())
}
