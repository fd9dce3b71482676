//! Answers the gateway's RPC requests: locally or from the cache when the policy
//! ([`crate::policy`]) allows, otherwise from the upstreams, sending identical concurrent misses
//! upstream once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::B256;
use bytes::Bytes;
use proto::msg::{CacheStatus, Call, CallResult, Outcome, RpcRequest, RpcResponse};
use proto::rpc;
use serde_json::Value;

use crate::cache::{self, Store};
use crate::chain::{Chain, View};
use crate::metrics::Metrics;
use crate::policy::{self, CachePlan, Plan};
use crate::upstream::{Answer, UpstreamError};
use crate::{logs, proof};

/// Calls of one batch answered at once.
pub const BATCH_PARALLELISM: usize = 32;

/// The longest a request waits for the node to catch up with a block an answer revealed.
const REVEAL_WAIT: Duration = Duration::from_millis(500);
/// Negative answers about unknown block hashes: how many bytes of them, and for how long at
/// most (they also lapse at the next chain state, when the hash may have become a new block).
const NEGATIVES_MAX_BYTES: u64 = 8 << 20;
const NEGATIVE_TTL: Duration = Duration::from_secs(10);

pub struct Service {
    pub chains: HashMap<u64, Arc<Chain>>,
    pub cache: Store,
    pub metrics: Arc<Metrics>,
    /// Recent `null`/error answers to calls naming a block hash the node could not place,
    /// with the chain-state version they were asked under: a flood of unknown hashes costs one
    /// upstream call per distinct question, not one per request.
    negatives: moka::future::Cache<Bytes, (u64, Outcome), daemon::KeyHasher>,
}

/// Why a cacheable miss was not stored; every waiter on the same key receives it.
#[derive(Debug, Clone)]
enum NotStored {
    Answer(Answer),
    Failed(UpstreamError),
}

impl Service {
    pub fn new(chains: HashMap<u64, Arc<Chain>>, cache: Store, metrics: Arc<Metrics>) -> Self {
        Self {
            chains,
            cache,
            metrics,
            negatives: moka::future::Cache::builder()
                .max_capacity(NEGATIVES_MAX_BYTES)
                // Keys hold whole params (an `eth_call` can carry a megabyte): bound bytes.
                .weigher(|k: &Bytes, (_, o): &(u64, Outcome)| {
                    let answer = match o {
                        Outcome::Result(b) | Outcome::Error(b) | Outcome::NodeError(b) => b.len(),
                    };
                    daemon::weigh::weight(k.len(), answer, 8)
                })
                .time_to_live(NEGATIVE_TTL)
                .build_with_hasher(daemon::KeyHasher::default()),
        }
    }

    /// A negative answer to this question, if one was given under the current chain state.
    async fn remembered_negative(&self, chain: &Chain, key: &Bytes) -> Option<Outcome> {
        let (version, outcome) = self.negatives.get(key).await?;
        (version == chain.state_version()).then_some(outcome)
    }

    /// What an answer teaches the chain state: a transaction lookup showing a block beyond the
    /// head (read your writes), or a hash the node could not place turning out to exist.
    fn learn(&self, chain: &Chain, o: &Outcome, tx_lookup: bool, unknown: Option<B256>) {
        let Outcome::Result(r) = o else { return };
        if !tx_lookup && unknown.is_none() || !cache::storable(r) {
            return;
        }
        let number = policy::block_number_in(r);
        match unknown {
            Some(hash) => chain.heard_of(hash, number),
            None => {
                if let Some(n) = number {
                    chain.reveal(n);
                }
            }
        }
    }

    pub async fn handle(&self, req: RpcRequest) -> RpcResponse {
        let Some(chain) = self.chains.get(&req.chain_id) else {
            let err = rpc::error_object(
                rpc::UNKNOWN_CHAIN,
                format!("chain {} is not served by this node", req.chain_id),
            );
            return RpcResponse {
                state_version: None,
                results: req
                    .calls
                    .iter()
                    .map(|_| CallResult::node_error(err.clone()))
                    .collect(),
            };
        };
        let budget = Duration::from_millis(u64::from(req.budget_ms.max(1)));
        // Read your writes: an answer (here, or one the gateway passed on as `min_head`)
        // revealed a block beyond the head; the tracker is fetching it. Tags resolve only once
        // it has (or has given up), and then once for the whole request, so a batch answers
        // at one block.
        if req.min_head > 0 {
            chain.reveal(req.min_head);
        }
        if chain.behind_revealed() {
            chain.caught_up(budget.min(REVEAL_WAIT)).await;
        }
        let view = chain.view();
        let view = &view;
        let results = if req.calls.len() == 1 {
            vec![self.call_at_state(chain, view, &req.calls[0], budget).await]
        } else {
            // A large batch works through its calls a bounded number at a time, in order, so
            // one request cannot open hundreds of upstream requests at once.
            let permits = tokio::sync::Semaphore::new(BATCH_PARALLELISM);
            futures::future::join_all(req.calls.iter().map(|c| async {
                let _permit = permits
                    .acquire()
                    .await
                    .expect("the semaphore is never closed");
                self.call_at_state(chain, view, c, budget).await
            }))
            .await
        };
        // An answer is tied to the state only if no new state was published between its
        // planning and now: then it holds for exactly the version this response names.
        let now = chain.state_version();
        let results = results
            .into_iter()
            .map(|(mut r, planned_at)| {
                r.at_state &= planned_at == now && now != 0;
                r
            })
            .collect();
        // Always named: it also tells the gateway of a new state that may overtake its `Head`.
        RpcResponse {
            results,
            state_version: Some(now).filter(|&v| v != 0),
        }
    }

    /// [`Self::call`], with the chain-state version it was planned under (the view's).
    async fn call_at_state(
        &self,
        chain: &Chain,
        view: &View,
        call: &Call,
        budget: Duration,
    ) -> (CallResult, u64) {
        let r = self.call(chain, view, call, budget).await;
        // The gateway routes state reads by the state the node announced: an upstream that
        // refuses one may hold less than the last probe found.
        if let Outcome::Error(e) = &r.outcome {
            // Not a revert (code 3, whose text is the contract's), and only a read at a block
            // the node has (a block past the head is "not found" anywhere).
            if let policy::Rule::StateAt(at) = policy::rule(&call.method) {
                if !e.starts_with(br#"{"code":3,"#)
                    && crate::chain::state_missing(e)
                    && held_block(&call.params, at, view.head.map(|(n, _)| n))
                {
                    chain.state_refused();
                }
            }
        }
        (r, view.version)
    }

    async fn call(&self, chain: &Chain, view: &View, call: &Call, budget: Duration) -> CallResult {
        let count = |label: &str| self.count(label);
        match policy::plan(chain, view, &call.method, &call.params, chain.logs) {
            Plan::Local(answer) => {
                count("hit");
                // The chain id never changes; the tip does, with the chain state.
                let chain_id = call.method == "eth_chainId";
                CallResult {
                    final_answer: chain_id,
                    at_state: !chain_id,
                    ..CallResult::hit(Outcome::Result(answer))
                }
            }
            Plan::Reject(err) => {
                count("bypass");
                CallResult::bypass(Outcome::Error(err))
            }
            Plan::Bypass => {
                count("bypass");
                CallResult::bypass(Box::pin(as_asked(chain, call, budget)).await)
            }
            Plan::Cache(plan) => self.through_cache(chain, view, call, plan, budget).await,
            Plan::Logs {
                filter,
                from,
                to,
                cache_key,
                final_for_client,
            } => {
                self.logs(
                    chain,
                    &filter,
                    (from, to),
                    cache_key,
                    final_for_client,
                    budget,
                )
                .await
            }
        }
    }

    /// A cacheable call: a remembered negative answer, the cache (one upstream request per
    /// key), what the answer teaches the chain state, and the fallback at the pinned number.
    ///
    /// Every upstream call below is boxed: those futures are large, and unboxed they would
    /// make every call's future (cache hits included) as large, and as costly to move.
    async fn through_cache(
        &self,
        chain: &Chain,
        view: &View,
        call: &Call,
        plan: CachePlan,
        budget: Duration,
    ) -> CallResult {
        let CachePlan {
            key,
            method,
            params: pinned,
            only_if_final,
            final_for_client,
            fallback,
            unknown_hash,
        } = plan;
        // Not while catching up with a revealed block: that block may be this hash.
        if unknown_hash.is_some() && !chain.behind_revealed() {
            if let Some(remembered) = self.remembered_negative(chain, &key).await {
                self.count("negative");
                return CallResult::hit(remembered);
            }
        }
        let planned_at = view.version;
        let verified = chain.verify_state && proof::verifiable(method);
        let fetch = async {
            let answer = if verified {
                Box::pin(proof::answer(chain, method, &pinned, budget, &self.metrics)).await
            } else {
                Box::pin(chain.upstreams.call(method, &pinned, budget)).await
            };
            keep_if(answer, |r| {
                cache::storable(r) && (!only_if_final || policy::tx_is_final(r, chain.finalized()))
            })
        };
        let mut result = self.cached(key.clone(), fetch).await;
        self.learn(chain, &result.outcome, only_if_final, unknown_hash);
        if unknown_hash.is_some() && block_gone(&result.outcome) {
            self.negatives
                .insert(key, (planned_at, result.outcome.clone()))
                .await;
        }
        result.final_answer = match &result.outcome {
            Outcome::Result(r) if only_if_final => policy::tx_is_final(r, chain.finalized()),
            Outcome::Result(_) => final_for_client,
            _ => false,
        };
        // Not final but cacheable here: it holds for the chain state it was planned
        // under (its block named by hash, the tags resolved against this head).
        result.at_state = !result.final_answer
            && !only_if_final
            && matches!(&result.outcome, Outcome::Result(r) if cache::storable(r));
        // A tag pinned to a tip block's hash can race a reorg the node has not seen
        // yet: the upstream no longer knows that block. Ask the client's method at the
        // block's number instead (the same height as the rest of the request). Never
        // for verified reads: an unproven answer must not slip in this way.
        if let Some(params) = fallback.filter(|_| !verified) {
            if block_gone(&result.outcome) {
                let asked = Box::pin(chain.upstreams.call(&call.method, &params, budget)).await;
                result = CallResult::bypass(to_outcome(asked));
            }
        }
        result
    }

    /// Counts a call by cache result.
    fn count(&self, label: &str) {
        self.metrics
            .cache_requests
            .with_label_values(&[label])
            .inc();
    }

    /// An `eth_getLogs` call over `from..=to`: through the cache when it has a key (the range
    /// is final), else sent upstream (in chunks) and kept nowhere.
    async fn logs(
        &self,
        chain: &Chain,
        filter: &Value,
        (from, to): (u64, u64),
        cache_key: Option<Bytes>,
        final_for_client: bool,
        budget: Duration,
    ) -> CallResult {
        let fetch = async {
            let answer = Box::pin(logs::fetch(
                chain,
                filter,
                from,
                to,
                chain.logs.chunk,
                budget,
            ))
            .await;
            keep_if(answer, |_| true)
        };
        match cache_key {
            Some(key) => {
                let mut r = self.cached(key, fetch).await;
                r.final_answer = final_for_client && matches!(r.outcome, Outcome::Result(_));
                r
            }
            None => {
                self.count("bypass");
                let outcome = match fetch.await {
                    Ok(r) => Outcome::Result(r),
                    Err(NotStored::Answer(a)) => to_outcome(Ok(a)),
                    Err(NotStored::Failed(e)) => to_outcome(Err(e)),
                };
                CallResult::bypass(outcome)
            }
        }
    }

    /// Looks `key` up; on a miss runs `fetch` once however many callers wait for the same key
    /// (moka runs one init per key), keeping its answer only when `fetch` says so.
    async fn cached(
        &self,
        key: Bytes,
        fetch: impl std::future::Future<Output = Result<Bytes, NotStored>>,
    ) -> CallResult {
        if let Some(v) = self.cache.get(&key).await {
            self.count("hit");
            return CallResult::hit(Outcome::Result(v));
        }
        let (status, outcome) = match self.cache.entry(key).or_try_insert_with(fetch).await {
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
        self.count(label);
        CallResult::of(status, outcome)
    }
}

/// Short constructors for the node's results: neither final nor tied to the state unless a
/// caller says so (struct update syntax).
trait CallResultExt {
    fn of(cache: CacheStatus, outcome: Outcome) -> Self;
    fn hit(outcome: Outcome) -> Self;
    fn bypass(outcome: Outcome) -> Self;
    /// The node could not answer (the gateway may try another node).
    fn node_error(err: Bytes) -> Self;
}

impl CallResultExt for CallResult {
    fn of(cache: CacheStatus, outcome: Outcome) -> Self {
        CallResult {
            cache,
            outcome,
            final_answer: false,
            at_state: false,
        }
    }

    fn hit(outcome: Outcome) -> Self {
        Self::of(CacheStatus::Hit, outcome)
    }

    fn bypass(outcome: Outcome) -> Self {
        Self::of(CacheStatus::Bypass, outcome)
    }

    fn node_error(err: Bytes) -> Self {
        Self::bypass(Outcome::NodeError(err))
    }
}

/// The call sent upstream as the client put it.
async fn as_asked(chain: &Chain, call: &Call, budget: Duration) -> Outcome {
    to_outcome(
        chain
            .upstreams
            .call(&call.method, &call.params, budget)
            .await,
    )
}

/// An upstream answer for the cache: a result that passes `keep`, or why it is not stored.
fn keep_if(
    answer: Result<Answer, UpstreamError>,
    keep: impl FnOnce(&Bytes) -> bool,
) -> Result<Bytes, NotStored> {
    match answer {
        Ok(Answer::Result(r)) if keep(&r) => Ok(r),
        Ok(a) => Err(NotStored::Answer(a)),
        Err(e) => Err(NotStored::Failed(e)),
    }
}

/// Does an answer to a block-pinned call say the upstream does not (or no longer) know the block?
fn block_gone(o: &Outcome) -> bool {
    match o {
        Outcome::Result(r) => &r[..] == b"null",
        Outcome::Error(e) => {
            let m = String::from_utf8_lossy(e).to_ascii_lowercase();
            ["not found", "unknown block", "missing", "does not exist"]
                .iter()
                .any(|k| m.contains(k))
        }
        Outcome::NodeError(_) => false,
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

/// The block parameter (at `at`) is a number at or below `head`: a block whose state the node
/// may have announced holding (a tag, a hash or a block past the head says nothing of that).
fn held_block(params: &[u8], at: usize, head: Option<u64>) -> bool {
    let Ok(v) = serde_json::from_slice::<Vec<Value>>(params) else {
        return false;
    };
    let n = v
        .get(at)
        .and_then(|b| b.as_str().or_else(|| b["blockNumber"].as_str()))
        .and_then(crate::blockref::parse_hex);
    matches!((n, head), (Some(n), Some(h)) if n <= h)
}

#[cfg(test)]
mod tests {
    use super::held_block;

    #[test]
    fn only_a_refusal_at_a_held_block_number_calls_for_a_new_probe() {
        let head = Some(100);
        assert!(held_block(br#"["0xabc","0x10"]"#, 1, head));
        assert!(held_block(br#"["0xabc",{"blockNumber":"0x64"}]"#, 1, head));
        assert!(
            !held_block(br#"["0xabc","0x65"]"#, 1, head),
            "past the head"
        );
        assert!(!held_block(br#"["0xabc","latest"]"#, 1, head));
        assert!(!held_block(br#"["0xabc",{"blockHash":"0x01"}]"#, 1, head));
        assert!(!held_block(br#"["0xabc","0x10"]"#, 1, None), "no head yet");
    }
}
