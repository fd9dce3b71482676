//! The cache policy: one table ([`RULES`]) saying, per method, how its block is found and
//! whether (and for how long) its answer may be kept; and [`plan`], which turns a call into
//! what to do with it against the chain state a request sees ([`View`]).
//!
//! Params are read as raw JSON elements and checked per method (exact arity, block parameter
//! spelled the one way every upstream reads alike, see [`crate::blockref`]); a call that fails
//! a check is passed through as asked, so the upstream answers or refuses it itself. Elements
//! the node does not rewrite go upstream byte for byte (numbers never round-trip a float).
//!
//! Block tags are resolved before keying: `latest` becomes the head's hash, `safe`/`finalized`
//! their numbers. An answer about a block at or below `finalized` is kept until evicted by size
//! and keyed by number. An answer about an unfinalized block is fetched *by that block's hash*
//! (EIP-1898, or the by-hash twin of the method) and keyed by the hash, so it can only ever be
//! the answer for that exact block; a reorg evicts every key naming a replaced hash. Anything
//! else (`pending`, writes, filters, subscriptions, `txpool_*`, blocks beyond the head) is
//! passed through and never cached.

use alloy_primitives::B256;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::blockref::{block_param, is_data, is_hash, plain_str, Accepts, BlockParam, BlockRef};
use crate::cache;
use crate::chain::{Chain, Placed, Resolved, View};
use write::{hash_object, qty, quoted_hash, quoted_qty};

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
    Cache(CachePlan),
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

/// The call's params as raw elements: absent params are none; anything but an array is `None`
/// (left to the upstream).
fn elements(params: &[u8]) -> Option<Vec<&RawValue>> {
    if params.iter().all(u8::is_ascii_whitespace) {
        return Some(Vec::new());
    }
    serde_json::from_slice(params).ok()
}

/// Params rebuilt from raw elements, `at` replaced by `with`.
fn rebuild(a: &[&RawValue], at: usize, with: &str) -> Bytes {
    let mut out = String::with_capacity(64 + a.iter().map(|e| e.get().len()).sum::<usize>());
    out.push('[');
    for (i, e) in a.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(if i == at { with } else { e.get() });
    }
    out.push(']');
    Bytes::from(out)
}

fn raw_params(a: &[&RawValue]) -> Bytes {
    rebuild(a, usize::MAX, "")
}

/// Where a block parameter points, for keying and for the upstream request.
enum Pinned {
    /// Final block by number.
    Number(u64),
    /// A tip block the node resolved a tag or number to: `(number, hash)`.
    Tip(u64, B256),
    /// A block the client named by hash; `known` is where the node placed it.
    Named { hash: B256, known: Placed },
}

fn pin(chain: &Chain, view: &View, p: &BlockParam) -> Option<Pinned> {
    match p {
        BlockParam::Hash {
            hash,
            require_canonical,
            ..
        } => {
            let hash: B256 = hash.parse().ok()?;
            let known = chain.place_hash(&hash);
            // Canonicality can change; only a hash in the verified ring is known canonical.
            if *require_canonical && !matches!(known, Placed::Ring { .. }) {
                return None;
            }
            Some(Pinned::Named { hash, known })
        }
        BlockParam::Ref(r) => match chain.resolve(view, r) {
            Resolved::Final(n) => Some(Pinned::Number(n)),
            Resolved::Tip(n, h) => Some(Pinned::Tip(n, h)),
            Resolved::Unknown => None,
        },
    }
}

/// Does the client's block parameter name a block that is final (not a moving tag)?
fn names_final_block(p: &BlockParam, pinned: &Pinned) -> bool {
    match (p, pinned) {
        (BlockParam::Ref(BlockRef::Number(_) | BlockRef::Earliest), Pinned::Number(_)) => true,
        (_, Pinned::Named { known, .. }) => known.is_final(),
        _ => false,
    }
}

/// A cacheable call, as planned.
#[derive(Debug, Clone, PartialEq)]
pub struct CachePlan {
    /// The cache key (set by [`CachePlan::keyed`]).
    pub key: Bytes,
    /// What goes upstream on a miss: the table's method (or its by-hash twin) and the params,
    /// the block pinned.
    pub method: &'static str,
    pub params: Bytes,
    /// Keep the answer only if it concerns a final block (transaction lookups).
    pub only_if_final: bool,
    /// The call as the client wrote it names only final data: the answer can never change, so
    /// the gateway may keep it too.
    pub final_for_client: bool,
    /// A tag or number the node pinned to a tip block's hash: if the upstream no longer knows
    /// that block (a reorg the node has not seen yet), the client's method is asked with these
    /// params instead: the block's number, so every call of a request still answers at one
    /// height.
    pub fallback: Option<Bytes>,
    /// The block hash the client named, when the node could not place it: a negative answer is
    /// remembered briefly, a positive one teaches the node the block.
    pub unknown_hash: Option<B256>,
}

impl CachePlan {
    /// The plan, with its key.
    fn keyed(mut self, chain_id: u64) -> Plan {
        self.key = cache::key(chain_id, self.method, &self.params);
        Plan::Cache(self)
    }

    fn simple(method: &'static str, params: Bytes, final_for_client: bool) -> Self {
        Self {
            key: Bytes::new(),
            method,
            params,
            only_if_final: false,
            final_for_client,
            fallback: None,
            unknown_hash: None,
        }
    }
}

/// How many params a method takes (exactly), and what its block parameter accepts.
fn shape(method: &str) -> (usize, Accepts) {
    match method {
        "eth_getStorageAt" | "eth_getProof" => (3, Accepts::Any),
        "eth_getBlockByNumber"
        | "eth_getTransactionByBlockNumberAndIndex"
        | "eth_getBlockByHash"
        | "eth_getTransactionByBlockHashAndIndex"
        | "eth_getUncleByBlockHashAndIndex" => (2, Accepts::TagOrNumber),
        "eth_getBlockTransactionCountByNumber"
        | "eth_getBlockTransactionCountByHash"
        | "eth_getUncleCountByBlockHash"
        | "eth_getTransactionByHash"
        | "eth_getTransactionReceipt"
        | "eth_getLogs" => (1, Accepts::TagOrNumber),
        "eth_getBlockReceipts" => (1, Accepts::Any),
        // eth_getBalance, eth_getCode, eth_getTransactionCount, eth_call.
        _ => (2, Accepts::Any),
    }
}

/// The params of a state read before its block, checked where a wrong shape could be answered
/// wrongly (the proof checks parse the address); the rest is the upstream's to judge.
fn state_args_ok(method: &str, a: &[&RawValue]) -> bool {
    let address = || plain_str(a[0]).is_some_and(|s| is_data(s, 20));
    match method {
        "eth_call" => a[0].get().starts_with('{'),
        // The slot as the spec writes it (the proof check reads it as a 256-bit number).
        "eth_getStorageAt" => {
            address()
                && plain_str(a[1])
                    .and_then(|s| s.strip_prefix("0x"))
                    .is_some_and(|d| {
                        (1..=64).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_hexdigit())
                    })
        }
        _ => address(),
    }
}

/// Decides what to do with `method(params)` given the chain state as `view` saw it. Calls
/// whose params are not spelled the one way every upstream reads alike are passed through
/// as asked (see [`crate::blockref`]): the upstream's answer, or its refusal, is theirs.
pub fn plan(chain: &Chain, view: &View, method: &str, params: &[u8], logs: LogLimits) -> Plan {
    let chain_id = chain.chain_id;
    let rule = rule(method);
    if rule == Rule::Never {
        return Plan::Bypass;
    }
    let Some(a) = elements(params) else {
        return Plan::Bypass;
    };
    let (arity, accepts) = shape(method);
    match rule {
        Rule::Never => Plan::Bypass,
        Rule::Static | Rule::Local if !a.is_empty() => Plan::Bypass,
        Rule::Static => {
            CachePlan::simple("net_version", Bytes::from_static(b"[]"), true).keyed(chain_id)
        }
        Rule::Local => {
            let answer = match method {
                "eth_chainId" => chain.reported_chain_id(),
                _ => view.served_tip,
            };
            match answer {
                Some(a) => Plan::Local(Bytes::from(quoted_qty(a))),
                None => Plan::Bypass,
            }
        }
        _ if a.len() != arity => Plan::Bypass,
        Rule::StateAt(i) => plan_state_read(chain, view, method, &a, (i, accepts)),
        Rule::ByNumber(twin) => {
            let Some(bp) = block_param(a[0], accepts) else {
                return Plan::Bypass;
            };
            let Some(pinned) = pin(chain, view, &bp) else {
                return Plan::Bypass;
            };
            let final_for_client = names_final_block(&bp, &pinned);
            let method = rule_name(method);
            let c = match pinned {
                Pinned::Number(n) => {
                    CachePlan::simple(method, rebuild(&a, 0, &quoted_qty(n)), final_for_client)
                }
                Pinned::Tip(n, h) => CachePlan {
                    fallback: Some(rebuild(&a, 0, &quoted_qty(n))),
                    ..CachePlan::simple(twin, rebuild(&a, 0, &quoted_hash(&h)), false)
                },
                Pinned::Named { hash, known } => CachePlan {
                    unknown_hash: known.is_unknown().then_some(hash),
                    ..CachePlan::simple(method, raw_params(&a), final_for_client)
                },
            };
            c.keyed(chain_id)
        }
        Rule::ByHash => {
            let Some(hash) = plain_str(a[0]).filter(|h| is_hash(h)) else {
                return Plan::Bypass;
            };
            let Ok(hash) = hash.parse::<B256>() else {
                return Plan::Bypass;
            };
            let known = chain.place_hash(&hash);
            CachePlan {
                unknown_hash: known.is_unknown().then_some(hash),
                ..CachePlan::simple(rule_name(method), raw_params(&a), known.is_final())
            }
            .keyed(chain_id)
        }
        Rule::TxLookup => match plain_str(a[0]) {
            Some(h) if is_hash(h) => CachePlan {
                only_if_final: true,
                ..CachePlan::simple(rule_name(method), raw_params(&a), false)
            }
            .keyed(chain_id),
            _ => Plan::Bypass,
        },
        Rule::Logs => plan_logs(chain, view, a[0], logs),
    }
}

/// A state read (`eth_getBalance`, `eth_call`, ...) whose block parameter is element `i`.
fn plan_state_read(
    chain: &Chain,
    view: &View,
    method: &str,
    a: &[&RawValue],
    (i, accepts): (usize, Accepts),
) -> Plan {
    if !state_args_ok(method, a) {
        return Plan::Bypass;
    }
    let Some(bp) = block_param(a[i], accepts) else {
        return Plan::Bypass;
    };
    let Some(pinned) = pin(chain, view, &bp) else {
        return Plan::Bypass;
    };
    let final_for_client = names_final_block(&bp, &pinned);
    let method = rule_name(method);
    let (params, fallback, unknown_hash) = match pinned {
        Pinned::Number(n) => (rebuild(a, i, &quoted_qty(n)), None, None),
        Pinned::Tip(n, h) => (
            rebuild(a, i, &hash_object(&h)),
            Some(rebuild(a, i, &quoted_qty(n))),
            None,
        ),
        Pinned::Named { hash, known } => (raw_params(a), None, known.is_unknown().then_some(hash)),
    };
    CachePlan {
        fallback,
        unknown_hash,
        ..CachePlan::simple(method, params, final_for_client)
    }
    .keyed(chain.chain_id)
}

/// The table's own spelling of a method (a `&'static str` for the plan).
fn rule_name(method: &str) -> &'static str {
    RULES
        .iter()
        .find(|(m, _)| *m == method)
        .map_or("", |(m, _)| m)
}

/// A log filter: known keys only, each once; block bounds as strings.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Filter<'a> {
    #[serde(rename = "fromBlock", borrow, default)]
    from_block: Option<&'a RawValue>,
    #[serde(rename = "toBlock", borrow, default)]
    to_block: Option<&'a RawValue>,
    #[serde(rename = "blockHash", borrow, default)]
    block_hash: Option<&'a RawValue>,
    // Named only so that they are known keys; the filter is passed on as written.
    #[serde(rename = "address", borrow, default)]
    _address: Option<&'a RawValue>,
    #[serde(rename = "topics", borrow, default)]
    _topics: Option<&'a RawValue>,
}

/// Addresses and topics are strings, `null` or arrays of them: no numbers to round-trip.
fn no_numbers(v: &Value) -> bool {
    match v {
        Value::Number(_) => false,
        Value::Array(a) => a.iter().all(no_numbers),
        Value::Object(o) => o.values().all(no_numbers),
        _ => true,
    }
}

fn plan_logs(chain: &Chain, view: &View, raw: &RawValue, limits: LogLimits) -> Plan {
    let Ok(f) = serde_json::from_str::<Filter<'_>>(raw.get()) else {
        return Plan::Bypass;
    };
    let Ok(filter) = serde_json::from_str::<Value>(raw.get()) else {
        return Plan::Bypass;
    };
    if !no_numbers(&filter) {
        return Plan::Bypass;
    }
    if let Some(h) = f.block_hash {
        let Some(hash) = plain_str(h).filter(|h| is_hash(h)) else {
            return Plan::Bypass;
        };
        if f.from_block.is_some() || f.to_block.is_some() {
            return Plan::Bypass;
        }
        let Ok(hash) = hash.parse::<B256>() else {
            return Plan::Bypass;
        };
        let known = chain.place_hash(&hash);
        let params = Bytes::from(format!("[{}]", raw.get()));
        return CachePlan {
            unknown_hash: known.is_unknown().then_some(hash),
            ..CachePlan::simple("eth_getLogs", params, known.is_final())
        }
        .keyed(chain.chain_id);
    }
    // Absent bounds mean `latest` (the spec's default); a present one must be well spelled.
    let bound = |b: Option<&RawValue>| -> Option<(BlockRef, Resolved)> {
        let r = match b {
            None => BlockRef::Latest,
            Some(raw) => BlockRef::parse(plain_str(raw)?)?,
        };
        Some((r, chain.resolve(view, &r)))
    };
    let (Some((from_ref, from_r)), Some((to_ref, to_r))) = (bound(f.from_block), bound(f.to_block))
    else {
        return Plan::Bypass;
    };
    let num = |r: Resolved| match r {
        Resolved::Final(n) | Resolved::Tip(n, _) => Some(n),
        Resolved::Unknown => None,
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
    let mut f = filter;
    f["fromBlock"] = Value::String(qty(from));
    f["toBlock"] = Value::String(qty(to));
    let cache_key = matches!(to_r, Resolved::Final(_)).then(|| {
        cache::key(
            chain.chain_id,
            "eth_getLogs",
            Value::Array(vec![f.clone()]).to_string().as_bytes(),
        )
    });
    // Final for the client only when it named both ends by number (tags move).
    let numbered = |r: BlockRef| matches!(r, BlockRef::Number(_) | BlockRef::Earliest);
    Plan::Logs {
        filter: f,
        from,
        to,
        final_for_client: cache_key.is_some() && numbered(from_ref) && numbered(to_ref),
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

/// The block an answer is about: `blockNumber` (transactions, receipts, the first log of a
/// list) or `number` (a block).
pub fn block_number_in(result: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Numbered {
        #[serde(rename = "blockNumber", default)]
        block_number: Option<String>,
        #[serde(default)]
        number: Option<String>,
    }
    let n: Numbered = match result.first() {
        Some(b'[') => serde_json::from_slice::<Vec<Numbered>>(result)
            .ok()?
            .into_iter()
            .next()?,
        _ => serde_json::from_slice(result).ok()?,
    };
    n.block_number
        .or(n.number)
        .and_then(|s| crate::blockref::parse_hex(&s))
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

mod write;

#[cfg(test)]
mod tests;
