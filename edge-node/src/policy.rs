//! The cache policy: one table ([`RULES`]) saying, per method, how its block is found and
//! whether (and for how long) its answer may be kept; and [`plan`], which turns a call into
//! what to do with it against the current chain state.
//!
//! Block tags are resolved before keying: `latest` becomes the head's hash, `safe`/`finalized`
//! their numbers. An answer about a block at or below `finalized` is kept until evicted by size
//! and keyed by number. An answer about an unfinalized block is fetched *by that block's hash*
//! (EIP-1898, or the by-hash twin of the method) and keyed by the hash, so it can only ever be
//! the answer for that exact block; a reorg evicts every key naming a replaced hash. Anything
//! else (`pending`, writes, filters, subscriptions, `txpool_*`, blocks beyond the head) is
//! passed through and never cached.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::blockref::BlockRef;
use crate::cache;
use crate::chain::{Chain, Resolved};

/// How one method is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Same answer forever for a chain (`net_version`).
    Static,
    /// Answered from chain state: `eth_chainId`, `eth_blockNumber` (monotonic).
    Local,
    /// State read with a block parameter at this index (`latest` when absent).
    StateAt(usize),
    /// `[block, ...]` whose by-hash twin is the given method.
    ByNumber(&'static str),
    /// First parameter is a block hash: immutable.
    ByHash,
    /// Transaction lookups: cached only once the transaction's block is final.
    TxLookup,
    /// `eth_getLogs`: range capped, final ranges cached, large ranges split.
    Logs,
    /// Never cached.
    Never,
}

/// The policy table. Methods not listed are [`Rule::Never`].
pub const RULES: &[(&str, Rule)] = &[
    ("net_version", Rule::Static),
    ("eth_chainId", Rule::Local),
    ("eth_blockNumber", Rule::Local),
    ("eth_getBalance", Rule::StateAt(1)),
    ("eth_getCode", Rule::StateAt(1)),
    ("eth_getTransactionCount", Rule::StateAt(1)),
    ("eth_getStorageAt", Rule::StateAt(2)),
    ("eth_call", Rule::StateAt(1)),
    ("eth_getProof", Rule::StateAt(2)),
    ("eth_getBlockByNumber", Rule::ByNumber("eth_getBlockByHash")),
    (
        "eth_getBlockTransactionCountByNumber",
        Rule::ByNumber("eth_getBlockTransactionCountByHash"),
    ),
    (
        "eth_getTransactionByBlockNumberAndIndex",
        Rule::ByNumber("eth_getTransactionByBlockHashAndIndex"),
    ),
    (
        "eth_getBlockReceipts",
        Rule::ByNumber("eth_getBlockReceipts"),
    ),
    ("eth_getBlockByHash", Rule::ByHash),
    ("eth_getBlockTransactionCountByHash", Rule::ByHash),
    ("eth_getTransactionByBlockHashAndIndex", Rule::ByHash),
    ("eth_getUncleCountByBlockHash", Rule::ByHash),
    ("eth_getUncleByBlockHashAndIndex", Rule::ByHash),
    ("eth_getTransactionByHash", Rule::TxLookup),
    ("eth_getTransactionReceipt", Rule::TxLookup),
    ("eth_getLogs", Rule::Logs),
];

pub fn rule(method: &str) -> Rule {
    RULES
        .iter()
        .find(|(m, _)| *m == method)
        .map(|(_, r)| *r)
        .unwrap_or(Rule::Never)
}

/// Limits for `eth_getLogs`.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    pub max_range: u64,
    pub chunk: u64,
}

/// What to do with one call.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Answer this result without asking anyone.
    Local(Bytes),
    /// Cacheable: look up `key`; on a miss send `method(params)` upstream.
    Cache {
        key: Bytes,
        method: String,
        params: Bytes,
        /// Keep the answer only if it concerns a final block (transaction lookups).
        only_if_final: bool,
        /// The call as the client wrote it names only final data: the answer can never
        /// change, so the gateway may keep it too.
        final_for_client: bool,
    },
    /// `eth_getLogs` over resolved numbers: split into chunks; cache when `cache_key` is set.
    Logs {
        filter: Value,
        from: u64,
        to: u64,
        cache_key: Option<Bytes>,
        final_for_client: bool,
    },
    /// Refused here with this error object.
    Reject(Bytes),
    /// Send as is, keep nothing.
    Bypass,
}

fn hash_hex(h: &alloy_primitives::B256) -> String {
    format!("{h:#x}")
}

fn qty(n: u64) -> String {
    format!("{n:#x}")
}

/// A block parameter as sent: a tag/number string or an EIP-1898 object.
enum BlockParam {
    Ref(BlockRef),
    Hash {
        hash: String,
        require_canonical: bool,
    },
}

fn block_param(v: Option<&Value>) -> Option<BlockParam> {
    match v {
        None | Some(Value::Null) => Some(BlockParam::Ref(BlockRef::Latest)),
        Some(Value::String(s)) => BlockRef::parse(s).map(BlockParam::Ref),
        Some(Value::Object(o)) => {
            if let Some(Value::String(h)) = o.get("blockHash") {
                return is_hash(h).then(|| BlockParam::Hash {
                    hash: h.to_ascii_lowercase(),
                    require_canonical: o
                        .get("requireCanonical")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                });
            }
            match o.get("blockNumber") {
                Some(Value::String(s)) => BlockRef::parse(s).map(BlockParam::Ref),
                _ => None,
            }
        }
        _ => None,
    }
}

pub fn is_hash(s: &str) -> bool {
    s.len() == 66 && s.starts_with("0x") && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Where a block parameter points, for keying and for the upstream request.
enum Pinned {
    /// Final block by number: `(key form, upstream form)` are both the number.
    Number(u64),
    /// A specific block by hash (tip block, or an explicit hash).
    Hash(String),
}

fn pin(chain: &Chain, p: &BlockParam) -> Option<Pinned> {
    match p {
        BlockParam::Hash {
            hash,
            require_canonical,
        } => {
            if *require_canonical {
                // Canonicality can change; only a hash in the verified ring is known canonical.
                let b: alloy_primitives::B256 = hash.parse().ok()?;
                chain.header_by_hash(&b)?;
            }
            Some(Pinned::Hash(hash.clone()))
        }
        BlockParam::Ref(r) => match chain.resolve(r) {
            Resolved::Final(n) => Some(Pinned::Number(n)),
            Resolved::Tip(_, h) => Some(Pinned::Hash(hash_hex(&h))),
            Resolved::Unknown => None,
        },
    }
}

fn cache_plan(
    chain_id: u64,
    method: &str,
    params: Value,
    only_if_final: bool,
    final_for_client: bool,
) -> Plan {
    let key = cache::key(chain_id, method, &params);
    Plan::Cache {
        key,
        method: method.to_string(),
        params: Bytes::from(params.to_string()),
        only_if_final,
        final_for_client,
    }
}

/// Does the client's block parameter name a block that is final (not a moving tag)?
fn names_final_block(chain: &Chain, p: &BlockParam, pinned: &Pinned) -> bool {
    match (p, pinned) {
        (BlockParam::Ref(BlockRef::Number(_) | BlockRef::Earliest), Pinned::Number(_)) => true,
        (BlockParam::Hash { hash, .. }, _) => is_final_hash(chain, hash),
        _ => false,
    }
}

fn is_final_hash(chain: &Chain, hash: &str) -> bool {
    let Ok(h) = hash.parse::<alloy_primitives::B256>() else {
        return false;
    };
    chain.is_final_hash(&h)
}

/// Decides what to do with `method(params)` given the chain state.
pub fn plan(chain: &Chain, method: &str, params: &Value, logs: LogLimits) -> Plan {
    let chain_id = chain.chain_id;
    let arr = params.as_array();
    match rule(method) {
        Rule::Never => Plan::Bypass,
        Rule::Static => cache_plan(chain_id, method, json!([]), false, true),
        Rule::Local => {
            let answer = match method {
                "eth_chainId" => chain.reported_chain_id().map(qty),
                _ => chain.served_tip().map(qty),
            };
            match answer {
                Some(a) => Plan::Local(Bytes::from(format!("\"{a}\""))),
                None => Plan::Bypass,
            }
        }
        Rule::StateAt(i) => {
            let Some(a) = arr else { return Plan::Bypass };
            // Extra parameters (e.g. eth_call state overrides) change the answer: pass through.
            if a.len() > i + 1 || a.len() < i {
                return Plan::Bypass;
            }
            let Some(bp) = block_param(a.get(i)) else {
                return Plan::Bypass;
            };
            let Some(pinned) = pin(chain, &bp) else {
                return Plan::Bypass;
            };
            let fin = names_final_block(chain, &bp, &pinned);
            let mut p = a[..i].to_vec();
            p.push(match pinned {
                Pinned::Number(n) => Value::String(qty(n)),
                Pinned::Hash(h) => json!({ "blockHash": h }),
            });
            cache_plan(chain_id, method, Value::Array(p), false, fin)
        }
        Rule::ByNumber(twin) => {
            let Some(a) = arr.filter(|a| !a.is_empty()) else {
                return Plan::Bypass;
            };
            let Some(bp) = block_param(a.first()) else {
                return Plan::Bypass;
            };
            let Some(pinned) = pin(chain, &bp) else {
                return Plan::Bypass;
            };
            let fin = names_final_block(chain, &bp, &pinned);
            let mut p = a.clone();
            match pinned {
                Pinned::Number(n) => {
                    p[0] = Value::String(qty(n));
                    cache_plan(chain_id, method, Value::Array(p), false, fin)
                }
                Pinned::Hash(h) => {
                    p[0] = Value::String(h);
                    cache_plan(chain_id, twin, Value::Array(p), false, fin)
                }
            }
        }
        Rule::ByHash => match arr.and_then(|a| a.first()) {
            Some(Value::String(h)) if is_hash(h) => cache_plan(
                chain_id,
                method,
                params.clone(),
                false,
                is_final_hash(chain, h),
            ),
            _ => Plan::Bypass,
        },
        Rule::TxLookup => match arr.and_then(|a| a.first()) {
            Some(Value::String(h)) if is_hash(h) && arr.is_some_and(|a| a.len() == 1) => {
                cache_plan(chain_id, method, params.clone(), true, false)
            }
            _ => Plan::Bypass,
        },
        Rule::Logs => plan_logs(chain, params, logs),
    }
}

fn plan_logs(chain: &Chain, params: &Value, limits: LogLimits) -> Plan {
    let Some(filter) = params
        .as_array()
        .filter(|a| a.len() == 1)
        .and_then(|a| a[0].as_object())
    else {
        return Plan::Bypass;
    };
    if let Some(Value::String(h)) = filter.get("blockHash") {
        if is_hash(h) && !filter.contains_key("fromBlock") && !filter.contains_key("toBlock") {
            let fin = is_final_hash(chain, h);
            return cache_plan(chain.chain_id, "eth_getLogs", params.clone(), false, fin);
        }
        return Plan::Bypass;
    }
    let resolve = |k: &str| -> Option<Resolved> {
        let r = match filter.get(k) {
            None | Some(Value::Null) => BlockRef::Latest,
            Some(Value::String(s)) => BlockRef::parse(s)?,
            _ => return None,
        };
        Some(chain.resolve(&r))
    };
    let num = |r: Resolved| match r {
        Resolved::Final(n) | Resolved::Tip(n, _) => Some(n),
        Resolved::Unknown => None,
    };
    let (Some(from_r), Some(to_r)) = (resolve("fromBlock"), resolve("toBlock")) else {
        return Plan::Bypass;
    };
    let (Some(from), Some(to)) = (num(from_r), num(to_r)) else {
        return Plan::Bypass;
    };
    if to < from {
        return Plan::Bypass;
    }
    let span = to - from + 1;
    if span > limits.max_range {
        return Plan::Reject(proto::rpc::error_object(
            proto::rpc::LIMIT_EXCEEDED,
            format!(
                "eth_getLogs block range too large: {span} blocks, the limit is {}",
                limits.max_range
            ),
        ));
    }
    let mut f = Value::Object(filter.clone());
    f["fromBlock"] = Value::String(qty(from));
    f["toBlock"] = Value::String(qty(to));
    let cache_key = matches!(to_r, Resolved::Final(_)).then(|| {
        cache::key(
            chain.chain_id,
            "eth_getLogs",
            &Value::Array(vec![f.clone()]),
        )
    });
    // Final for the client only when it named both ends by number (tags move).
    let numbered = |k: &str| {
        matches!(filter.get(k), Some(Value::String(s))
            if matches!(BlockRef::parse(s), Some(BlockRef::Number(_) | BlockRef::Earliest)))
    };
    Plan::Logs {
        filter: f,
        from,
        to,
        final_for_client: cache_key.is_some() && numbered("fromBlock") && numbered("toBlock"),
        cache_key,
    }
}

/// Splits `[from, to]` into chunks of at most `chunk` blocks.
pub fn chunks(from: u64, to: u64, chunk: u64) -> Vec<(u64, u64)> {
    let chunk = chunk.max(1);
    let mut out = Vec::new();
    let mut lo = from;
    while lo <= to {
        let hi = lo.saturating_add(chunk - 1).min(to);
        out.push((lo, hi));
        if hi == u64::MAX {
            break;
        }
        lo = hi + 1;
    }
    out
}

/// Does a transaction lookup answer concern a block at or below `finalized`?
pub fn tx_is_final(result: &[u8], finalized: Option<u64>) -> bool {
    let Some(f) = finalized else { return false };
    serde_json::from_slice::<Value>(result)
        .ok()
        .and_then(|v| {
            v.get("blockNumber")?
                .as_str()
                .and_then(crate::blockref::parse_hex)
        })
        .is_some_and(|n| n <= f)
}

#[cfg(test)]
mod tests;
