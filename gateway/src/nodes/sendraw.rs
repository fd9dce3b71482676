//! `eth_sendRawTransaction` across failovers: the same signed bytes may be re-sent to another
//! node, and a transaction that any node may already have delivered is never reported as
//! failed because the retry found it already known.

use alloy_primitives::keccak256;
use proto::msg::{Call, CallResult, Outcome};

/// Errors nodes give for a transaction they already have (geth, reth, Nethermind, anvil).
const ALREADY_KNOWN: &[&str] = &[
    "already known",
    "known transaction",
    "already imported",
    "alreadyknown",
    "transaction already exists",
];

/// Errors that mean "that nonce is used": by our first copy (mined), or by another transaction.
/// Only a lookup of the hash tells which.
const NONCE_USED: &[&str] = &["nonce too low", "nonce has already been used"];

/// What to answer for a call.
#[derive(Debug, PartialEq)]
pub enum Settled {
    Final(CallResult),
    /// Answer the hash if the chain knows the transaction, else `otherwise`.
    Confirm {
        hash: String,
        otherwise: CallResult,
    },
}

/// Final answer for call `call` given that an earlier attempt `maybe_sent` it. A retried
/// `eth_sendRawTransaction` that comes back "already known" (or "nonce too low": the first
/// copy was mined) was accepted: answer its hash, as the first node would have.
pub fn settle(call: &Call, maybe_sent: bool, r: CallResult) -> Settled {
    if !maybe_sent || call.method != "eth_sendRawTransaction" {
        return Settled::Final(r);
    }
    let Outcome::Error(err) = &r.outcome else {
        return Settled::Final(r);
    };
    let msg = String::from_utf8_lossy(err).to_ascii_lowercase();
    let Some(hash) = tx_hash(&call.params) else {
        return Settled::Final(r);
    };
    if ALREADY_KNOWN.iter().any(|k| msg.contains(k)) {
        return Settled::Final(sent(hash, &r));
    }
    if NONCE_USED.iter().any(|k| msg.contains(k)) {
        return Settled::Confirm { hash, otherwise: r };
    }
    Settled::Final(r)
}

/// The success answer for a sent transaction.
pub fn sent(hash: String, like: &CallResult) -> CallResult {
    CallResult {
        cache: like.cache,
        outcome: Outcome::Result(format!("\"{hash}\"").into()),
        final_answer: false,
        at_state: false,
    }
}

/// The hash of the signed transaction in `params` (`["0x..."]`): keccak of its bytes.
pub fn tx_hash(params: &[u8]) -> Option<String> {
    let p: Vec<String> = serde_json::from_slice(params).ok()?;
    let raw = hex_decode(p.first()?.strip_prefix("0x")?)?;
    Some(format!("{:#x}", keccak256(raw)))
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proto::msg::CacheStatus;

    fn call(method: &str) -> Call {
        Call {
            method: method.into(),
            params: Bytes::from_static(br#"["0x02f86c"]"#),
        }
    }

    fn err(msg: &str) -> CallResult {
        CallResult {
            cache: CacheStatus::Bypass,
            outcome: Outcome::Error(proto::rpc::error_object(-32000, msg)),
            final_answer: false,
            at_state: false,
        }
    }

    #[test]
    fn a_retried_known_transaction_is_a_success_with_its_hash() {
        let hash = tx_hash(br#"["0x02f86c"]"#).unwrap();
        assert_eq!(hash.len(), 66);
        let Settled::Final(got) =
            settle(&call("eth_sendRawTransaction"), true, err("already known"))
        else {
            panic!("already known is final")
        };
        assert_eq!(got.outcome, Outcome::Result(format!("\"{hash}\"").into()));
        // "nonce too low" needs the chain to confirm it was this transaction.
        let got = settle(
            &call("eth_sendRawTransaction"),
            true,
            err("nonce too low: next nonce 5"),
        );
        assert!(matches!(got, Settled::Confirm { hash: h, .. } if h == hash));
    }

    #[test]
    fn first_attempts_other_errors_and_other_methods_pass_through() {
        let e = err("already known");
        assert_eq!(
            settle(&call("eth_sendRawTransaction"), false, e.clone()),
            Settled::Final(e.clone())
        );
        let e2 = err("insufficient funds for gas");
        assert_eq!(
            settle(&call("eth_sendRawTransaction"), true, e2.clone()),
            Settled::Final(e2)
        );
        assert_eq!(
            settle(&call("eth_call"), true, e.clone()),
            Settled::Final(e)
        );
        assert_eq!(tx_hash("[\"0x\u{e9}1\"]".as_bytes()), None);
    }
}
