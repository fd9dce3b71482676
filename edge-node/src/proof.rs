//! Verified state reads (opt-in per chain, `verify_state = true`), the way Helios does it:
//! `eth_getBalance`, `eth_getTransactionCount`, `eth_getCode` and `eth_getStorageAt` are
//! answered from `eth_getProof` at the resolved block, checked against that block's state root
//! from the verified header ring. A proof that does not verify is an upstream fault: the node
//! counts it, marks the upstream, and tries the next one; if none verifies the call fails with
//! a clear error instead of passing on an unproven answer.

use std::time::Duration;

use alloy_primitives::{keccak256, Address, Bytes as ABytes, B256, U256};
use alloy_trie::{
    proof::verify_proof, proof::ProofVerificationError, Nibbles, TrieAccount, EMPTY_ROOT_HASH,
    KECCAK_EMPTY,
};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use crate::blockref::{is_hash, parse_hex};
use crate::chain::Chain;
use crate::header;
use crate::metrics::Metrics;
use crate::upstream::{Answer, UpstreamError};

pub fn verifiable(method: &str) -> bool {
    matches!(
        method,
        "eth_getBalance" | "eth_getTransactionCount" | "eth_getCode" | "eth_getStorageAt"
    )
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountProof {
    balance: U256,
    nonce: U256,
    code_hash: B256,
    storage_hash: B256,
    account_proof: Vec<ABytes>,
    #[serde(default)]
    storage_proof: Vec<StorageProof>,
}

#[derive(Debug, Deserialize)]
struct StorageProof {
    key: U256,
    value: U256,
    proof: Vec<ABytes>,
}

/// Why a proof was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error("malformed eth_getProof answer: {0}")]
    Malformed(String),
    #[error("malformed eth_getProof answer: {0}")]
    Json(#[source] serde_json::Error),
    #[error("account proof does not match the state root: {0}")]
    Account(#[source] ProofVerificationError),
    #[error("storage proof does not match the storage root: {0}")]
    Storage(#[source] ProofVerificationError),
    #[error("code does not hash to the proven code hash")]
    Code,
}

static BAD_PROOF_LOG: daemon::loglimit::LogLimit = daemon::loglimit::LogLimit::new(10, 60);

/// Answers one pinned call (params as built by the policy: `[address, (slot,) block]`).
pub async fn answer(
    chain: &Chain,
    method: &str,
    pinned: &[u8],
    budget: Duration,
    metrics: &Metrics,
) -> Result<Answer, UpstreamError> {
    let params: Vec<Value> =
        serde_json::from_slice(pinned).map_err(|e| UpstreamError::BadResponse(e.to_string()))?;
    let address: Address = params
        .first()
        .and_then(Value::as_str)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| UpstreamError::BadResponse("bad address".into()))?;
    let block = params.last().cloned().unwrap_or(Value::Null);
    let slot: Option<B256> = if method == "eth_getStorageAt" {
        let raw = params.get(1).and_then(Value::as_str).unwrap_or("0x0");
        let v: U256 = raw
            .parse()
            .map_err(|_| UpstreamError::BadResponse(format!("bad storage slot {raw}")))?;
        Some(B256::from(v))
    } else {
        None
    };
    let root = state_root(chain, &block, budget, metrics).await?;
    let slots: Vec<String> = slot.iter().map(|s| format!("{s:#x}")).collect();
    let proof_params = serde_json::to_vec(&serde_json::json!([address, slots, block]))
        .expect("JSON values serialise");

    let mut last = String::from("no upstream answered");
    for i in chain.upstreams.trust_order() {
        let raw = match chain
            .upstreams
            .call_on(i, "eth_getProof", &proof_params, budget)
            .await?
        {
            Answer::Result(r) => r,
            err @ Answer::Error(_) => return Ok(err),
        };
        let checked = match check(&raw, root, address, slot) {
            Ok(p) => finish(chain, i, method, &address, &block, p, budget).await,
            Err(e) => Err(e),
        };
        match checked {
            Ok(answer) => {
                metrics
                    .proof_verifications
                    .with_label_values(&["verified"])
                    .inc();
                return Ok(Answer::Result(answer));
            }
            Err(ProofErrorOr::Upstream(e)) => return Err(e),
            Err(ProofErrorOr::Proof(e)) => {
                metrics
                    .proof_verifications
                    .with_label_values(&["failed"])
                    .inc();
                chain.upstreams.mark_faulty(i);
                // Once per read a caller asks for: limited, so callers cannot fill the log.
                if let Some(suppressed) = BAD_PROOF_LOG.allow() {
                    tracing::error!(
                        chain_id = chain.chain_id,
                        upstream = %chain.upstreams.label(i),
                        error = %e,
                        suppressed,
                        "upstream state proof failed verification"
                    );
                }
                last = e.to_string();
            }
        }
    }
    Err(UpstreamError::BadResponse(format!(
        "no upstream gave a state proof that verifies against the block's state root ({last})"
    )))
}

enum ProofErrorOr {
    Proof(ProofError),
    Upstream(UpstreamError),
}

impl From<ProofError> for ProofErrorOr {
    fn from(e: ProofError) -> Self {
        ProofErrorOr::Proof(e)
    }
}

/// Verifies an `eth_getProof` answer against `root` (and the slot against the account's
/// storage root). Returns the proven account and storage value.
fn check(
    raw: &[u8],
    root: B256,
    address: Address,
    slot: Option<B256>,
) -> Result<(AccountProof, Option<U256>), ProofErrorOr> {
    let p: AccountProof = serde_json::from_slice(raw).map_err(ProofError::Json)?;
    let nonce: u64 = p
        .nonce
        .try_into()
        .map_err(|_| ProofError::Malformed("nonce out of range".into()))?;
    // geth reports an absent account's hashes as zero rather than the empty-trie/empty-code
    // hashes; both mean "none".
    let storage_root = if p.storage_hash.is_zero() {
        EMPTY_ROOT_HASH
    } else {
        p.storage_hash
    };
    let code_hash = if p.code_hash.is_zero() {
        KECCAK_EMPTY
    } else {
        p.code_hash
    };
    let account = TrieAccount::new(nonce, p.balance, storage_root, code_hash);
    let empty = nonce == 0
        && p.balance.is_zero()
        && storage_root == EMPTY_ROOT_HASH
        && code_hash == KECCAK_EMPTY;
    // An empty account is proven absent from the trie.
    let expected = (!empty).then(|| alloy_rlp::encode(account));
    verify_proof(
        root,
        Nibbles::unpack(keccak256(address)),
        expected,
        &p.account_proof,
    )
    .map_err(ProofError::Account)?;
    let value = match slot {
        None => None,
        Some(slot) => {
            let sp = p
                .storage_proof
                .iter()
                .find(|s| B256::from(s.key) == slot)
                .ok_or_else(|| ProofError::Malformed("no proof for the slot".into()))?;
            let expected = (!sp.value.is_zero()).then(|| alloy_rlp::encode(sp.value));
            verify_proof(
                storage_root,
                Nibbles::unpack(keccak256(slot)),
                expected,
                &sp.proof,
            )
            .map_err(ProofError::Storage)?;
            Some(sp.value)
        }
    };
    Ok((p, value))
}

/// Turns a proven account into the answer the client asked for, formatted as a node would.
async fn finish(
    chain: &Chain,
    upstream: usize,
    method: &str,
    address: &Address,
    block: &Value,
    (p, value): (AccountProof, Option<U256>),
    budget: Duration,
) -> Result<Bytes, ProofErrorOr> {
    let s = match method {
        "eth_getBalance" => format!("\"{:#x}\"", p.balance),
        "eth_getTransactionCount" => format!("\"{:#x}\"", p.nonce),
        "eth_getStorageAt" => format!("\"{:#x}\"", B256::from(value.unwrap_or_default())),
        "eth_getCode" => {
            let params = serde_json::to_vec(&serde_json::json!([address, block]))
                .expect("JSON values serialise");
            let code = match chain
                .upstreams
                .call_on(upstream, "eth_getCode", &params, budget)
                .await
                .map_err(ProofErrorOr::Upstream)?
            {
                Answer::Result(r) => r,
                Answer::Error(e) => {
                    return Err(ProofErrorOr::Upstream(UpstreamError::BadResponse(
                        String::from_utf8_lossy(&e).into(),
                    )))
                }
            };
            let hex: String = serde_json::from_slice(&code).map_err(ProofError::Json)?;
            let bytes: ABytes = hex
                .parse()
                .map_err(|_| ProofError::Malformed("code".into()))?;
            let code_hash = if p.code_hash.is_zero() {
                KECCAK_EMPTY
            } else {
                p.code_hash
            };
            if keccak256(&bytes) != code_hash {
                return Err(ProofError::Code.into());
            }
            return Ok(code);
        }
        other => return Err(ProofError::Malformed(format!("{other} is not verifiable")).into()),
    };
    Ok(Bytes::from(s))
}

/// The verified state root of the block named by a pinned block parameter.
async fn state_root(
    chain: &Chain,
    block: &Value,
    budget: Duration,
    metrics: &Metrics,
) -> Result<B256, UpstreamError> {
    // A block named by hash: an EIP-1898 object, or the 32-byte string a client wrote.
    let by_hash = match block {
        Value::Object(o) => o.get("blockHash").and_then(Value::as_str),
        Value::String(s) if is_hash(s) => Some(s.as_str()),
        _ => None,
    };
    let (known, method, params, want_hash, want_number) = match block {
        _ if by_hash.is_some() => {
            let h: B256 = by_hash
                .and_then(|h| h.parse().ok())
                .ok_or_else(|| UpstreamError::BadResponse("bad block hash".into()))?;
            (
                chain.header_by_hash(&h),
                "eth_getBlockByHash",
                format!(r#"["{h:#x}",false]"#),
                Some(h),
                None,
            )
        }
        Value::String(n) => {
            let num = parse_hex(n).ok_or_else(|| UpstreamError::BadResponse("bad block".into()))?;
            (
                chain.header_by_number(num),
                "eth_getBlockByNumber",
                format!(r#"["{n}",false]"#),
                None,
                Some(num),
            )
        }
        _ => return Err(UpstreamError::BadResponse("unpinned block".into())),
    };
    if let Some(h) = known {
        return Ok(h.state_root);
    }
    // Outside the ring (an older final block): fetch its header and verify it first.
    match chain
        .upstreams
        .call(method, params.as_bytes(), budget)
        .await?
    {
        Answer::Result(r) => match header::verify(&r) {
            // The header must also be the block asked for, not any self-consistent one.
            Ok(h)
                if want_hash.is_some_and(|w| w != h.hash)
                    || want_number.is_some_and(|w| w != h.number) =>
            {
                metrics.header_verification_failures.inc();
                Err(UpstreamError::BadResponse(format!(
                    "header for a state proof is block {} {:#x}, not the one asked for",
                    h.number, h.hash
                )))
            }
            Ok(h) => Ok(h.state_root),
            Err(e) => {
                metrics.header_verification_failures.inc();
                Err(UpstreamError::BadResponse(format!(
                    "header for a state proof: {e}"
                )))
            }
        },
        Answer::Error(e) => Err(UpstreamError::BadResponse(
            String::from_utf8_lossy(&e).into(),
        )),
    }
}
