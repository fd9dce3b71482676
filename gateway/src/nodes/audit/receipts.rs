//! Checks that need no second node: a receipt, a block's receipts or logs are checked against
//! the block they name. The node is asked for that block's header and receipts; the header
//! must hash to the block's hash (so its `receiptsRoot` is the chain's), the receipts must
//! rebuild that root and name the block's transactions in order, and the answer must be what
//! those receipts say.

use alloy_consensus::proofs::{calculate_receipt_root, calculate_transaction_root};
use alloy_consensus::{Header, ReceiptEnvelope, TxEnvelope};
use alloy_primitives::{Log, B256};
use serde_json::Value;

/// Blocks one audit fetches at most (an `eth_getLogs` answer may span many).
pub const MAX_BLOCKS: usize = 4;

/// What a check found.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Consistent,
    /// Shown wrong, and why.
    Wrong(String),
    /// Could not tell (a malformed or missing part), and why.
    Unknown(String),
}

/// Methods whose answers can be checked against their block's receipts.
pub fn checkable(method: &str) -> bool {
    matches!(
        method,
        "eth_getTransactionReceipt" | "eth_getBlockReceipts" | "eth_getLogs"
    )
}

/// The blocks (by hash) whose receipts the check of `answer` needs, at most [`MAX_BLOCKS`];
/// empty when there is nothing to check (`null`, no logs).
pub fn blocks_of(method: &str, answer: &[u8]) -> Vec<B256> {
    let Ok(v) = serde_json::from_slice::<Value>(answer) else {
        return Vec::new();
    };
    let items: Vec<&Value> = match (method, &v) {
        ("eth_getTransactionReceipt", Value::Object(_)) => vec![&v],
        (_, Value::Array(a)) => a.iter().collect(),
        _ => Vec::new(),
    };
    let mut out: Vec<B256> = Vec::new();
    for h in items.iter().filter_map(|i| hash_field(i, "blockHash")) {
        if !out.contains(&h) {
            out.push(h);
        }
        if out.len() == MAX_BLOCKS {
            break;
        }
    }
    out
}

/// A block whose receipts were checked against its header.
#[derive(Debug)]
pub struct Verified {
    pub hash: B256,
    pub receipts: Vec<Value>,
}

/// Checks the node's header and receipts of block `hash` (`eth_getBlockByHash(hash, false)`
/// and `eth_getBlockReceipts(hash)` answers).
pub fn verify_block(hash: B256, block: &[u8], receipts: &[u8]) -> Result<Verified, Verdict> {
    let header: Header = serde_json::from_slice(block)
        .map_err(|e| Verdict::Unknown(format!("block {hash}: {e}")))?;
    let computed = header.hash_slow();
    // Unknown, not wrong: a chain whose headers alloy does not model (a rollup, a new fork
    // field) hashes differently here, and its receiptsRoot cannot be relied on either way.
    if computed != hash {
        return Err(Verdict::Unknown(format!(
            "the header given for block {hash} hashes to {computed}"
        )));
    }
    let body: Value = serde_json::from_slice(block).unwrap_or(Value::Null);
    let txs = transactions(hash, &header, &body["transactions"])?;
    let list: Vec<Value> = serde_json::from_slice(receipts)
        .map_err(|e| Verdict::Unknown(format!("receipts of block {hash}: {e}")))?;
    let envelopes = list
        .iter()
        .map(|r| serde_json::from_value::<ReceiptEnvelope<Log>>(r.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Verdict::Unknown(format!("receipts of block {hash}: {e}")))?;
    let root = calculate_receipt_root(&envelopes);
    if root != header.receipts_root {
        return Err(Verdict::Wrong(format!(
            "the receipts given for block {hash} build root {root}, not its receiptsRoot {}",
            header.receipts_root
        )));
    }
    if txs.len() != list.len() {
        return Err(Verdict::Wrong(format!(
            "block {hash} holds {} transactions but {} receipts were given",
            txs.len(),
            list.len()
        )));
    }
    for (i, (r, tx)) in list.iter().zip(&txs).enumerate() {
        if hash_field(r, "transactionHash") != Some(*tx) || hash_field(r, "blockHash") != Some(hash)
        {
            return Err(Verdict::Wrong(format!(
                "receipt {i} of block {hash} does not name its transaction {tx} in that block"
            )));
        }
    }
    Ok(Verified {
        hash,
        receipts: list,
    })
}

/// The block's transaction hashes. Given whole (`eth_getBlockByHash(hash, true)`), the
/// transactions must rebuild the header's `transactionsRoot` and hash to what they claim, so
/// a receipt's transaction is proven included; a transaction type alloy does not model (an L2
/// deposit) leaves only the hashes to go by.
fn transactions(hash: B256, header: &Header, txs: &Value) -> Result<Vec<B256>, Verdict> {
    let list = txs.as_array().map(Vec::as_slice).unwrap_or_default();
    let claimed: Vec<B256> = list
        .iter()
        .filter_map(|t| t.as_str().or_else(|| t["hash"].as_str())?.parse().ok())
        .collect();
    if claimed.len() != list.len() {
        return Err(Verdict::Unknown(format!(
            "transactions of block {hash} unreadable"
        )));
    }
    let Ok(envelopes) = list
        .iter()
        .map(|t| serde_json::from_value::<TxEnvelope>(t.clone()))
        .collect::<Result<Vec<_>, _>>()
    else {
        return Ok(claimed);
    };
    let root = calculate_transaction_root(&envelopes);
    if root != header.transactions_root {
        return Err(Verdict::Wrong(format!(
            "the transactions given for block {hash} build root {root}, not its transactionsRoot {}",
            header.transactions_root
        )));
    }
    if let Some((i, _)) = envelopes
        .iter()
        .zip(&claimed)
        .enumerate()
        .find(|(_, (e, h))| e.tx_hash() != *h)
    {
        return Err(Verdict::Wrong(format!(
            "transaction {i} of block {hash} does not hash to the hash given for it"
        )));
    }
    Ok(claimed)
}

/// Checks `answer` against the verified receipts of the blocks it names.
pub fn check_answer(method: &str, answer: &[u8], blocks: &[Verified]) -> Verdict {
    let Ok(v) = serde_json::from_slice::<Value>(answer) else {
        return Verdict::Unknown("the answer is not JSON".into());
    };
    let block = |item: &Value| {
        let h = hash_field(item, "blockHash")?;
        blocks.iter().find(|b| b.hash == h)
    };
    match method {
        "eth_getTransactionReceipt" => {
            let Some(b) = block(&v) else {
                return Verdict::Unknown("its block was not checked".into());
            };
            let i = quantity(&v["transactionIndex"]).unwrap_or(u64::MAX) as usize;
            match b.receipts.get(i) {
                Some(r) if same_receipt(r, &v) => Verdict::Consistent,
                _ => Verdict::Wrong(format!(
                    "the receipt differs from receipt {i} of block {}, which its receiptsRoot commits to",
                    b.hash
                )),
            }
        }
        "eth_getBlockReceipts" => match (v.as_array(), v.get(0).and_then(block)) {
            (Some(a), Some(b))
                if a.len() == b.receipts.len()
                    && a.iter().zip(&b.receipts).all(|(x, y)| same_receipt(x, y)) =>
            {
                Verdict::Consistent
            }
            (Some(_), Some(b)) => Verdict::Wrong(format!(
                "the receipts differ from those block {}'s receiptsRoot commits to",
                b.hash
            )),
            _ => Verdict::Unknown("its block was not checked".into()),
        },
        _ => check_logs(&v, blocks),
    }
}

/// Each log of a checked block must be, at its `logIndex`, a log of that block's receipts.
fn check_logs(v: &Value, blocks: &[Verified]) -> Verdict {
    let Some(logs) = v.as_array() else {
        return Verdict::Unknown("the answer is not a list of logs".into());
    };
    for log in logs {
        let Some(b) =
            hash_field(log, "blockHash").and_then(|h| blocks.iter().find(|b| b.hash == h))
        else {
            continue;
        };
        let index = quantity(&log["logIndex"]);
        let found = b
            .receipts
            .iter()
            .filter_map(|r| r["logs"].as_array())
            .flatten()
            .find(|l| quantity(&l["logIndex"]) == index);
        if !found.is_some_and(|l| same_log(l, log)) {
            return Verdict::Wrong(format!(
                "log {} of block {} is not that log of its receipts",
                log["logIndex"], b.hash
            ));
        }
    }
    Verdict::Consistent
}

/// Receipts compared on what the receipts root commits to, and where they say they are.
fn same_receipt(a: &Value, b: &Value) -> bool {
    const FIELDS: [&str; 6] = [
        "status",
        "cumulativeGasUsed",
        "logsBloom",
        "transactionHash",
        "blockHash",
        "transactionIndex",
    ];
    let logs = |v: &Value| v["logs"].as_array().cloned().unwrap_or_default();
    FIELDS.iter().all(|f| same(&a[f], &b[f]))
        && quantity(&a["type"]).unwrap_or(0) == quantity(&b["type"]).unwrap_or(0)
        && logs(a).len() == logs(b).len()
        && logs(a)
            .iter()
            .zip(logs(b).iter())
            .all(|(x, y)| same_log(x, y))
}

fn same_log(a: &Value, b: &Value) -> bool {
    ["address", "topics", "data", "logIndex", "transactionHash"]
        .iter()
        .all(|f| same(&a[*f], &b[*f]))
}

/// Equal up to the case of hex strings.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.eq_ignore_ascii_case(y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        _ => a == b,
    }
}

fn hash_field(v: &Value, key: &str) -> Option<B256> {
    v.get(key)?.as_str()?.parse().ok()
}

fn quantity(v: &Value) -> Option<u64> {
    u64::from_str_radix(v.as_str()?.strip_prefix("0x")?, 16).ok()
}

#[cfg(test)]
mod tests;
