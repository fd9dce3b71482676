//! Verified block headers: a header from an upstream is accepted only when its hash is the
//! keccak of its RLP encoding (all fork fields, via alloy-consensus), so an upstream cannot
//! alter header fields (state root, number, parent) without it showing.

use alloy_consensus::Header as ConsensusHeader;
use alloy_primitives::B256;
use bytes::Bytes;
use serde::Deserialize;

/// What the node keeps of a verified header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub number: u64,
    pub hash: B256,
    pub parent_hash: B256,
    pub state_root: B256,
    pub timestamp: u64,
    /// The logs bloom is all zeros: the block has no logs.
    pub no_logs: bool,
    /// The header as `newHeads` sends it: the hashed fields only (re-serialised from what was
    /// verified, so nothing unverified passes through) and `hash`, as geth names them.
    pub rpc: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("not a block object: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("block {number}: claimed hash {claimed} but the header hashes to {computed}")]
    HashMismatch {
        number: u64,
        claimed: B256,
        computed: B256,
    },
}

#[derive(Deserialize)]
struct WithHash {
    hash: B256,
}

/// Parses an RPC block object (`eth_getBlockBy*` result) and verifies its hash.
pub fn verify(raw: &[u8]) -> Result<Header, HeaderError> {
    let claimed: WithHash = serde_json::from_slice(raw).map_err(HeaderError::Malformed)?;
    let h: ConsensusHeader = serde_json::from_slice(raw).map_err(HeaderError::Malformed)?;
    let computed = h.hash_slow();
    if computed != claimed.hash {
        return Err(HeaderError::HashMismatch {
            number: h.number,
            claimed: claimed.hash,
            computed,
        });
    }
    Ok(Header {
        number: h.number,
        hash: computed,
        parent_hash: h.parent_hash,
        state_root: h.state_root,
        timestamp: h.timestamp,
        no_logs: h.logs_bloom.is_zero(),
        rpc: rpc_form(&h, &computed),
    })
}

/// The fields of geth's `newHeads` header (`RPCMarshalHeader`, through Prague): what
/// [`Header::rpc`] holds, fork fields when the block has them.
pub const NEW_HEADS_FIELDS: [&str; 22] = [
    "hash",
    "parentHash",
    "sha3Uncles",
    "miner",
    "stateRoot",
    "transactionsRoot",
    "receiptsRoot",
    "logsBloom",
    "difficulty",
    "number",
    "gasLimit",
    "gasUsed",
    "timestamp",
    "extraData",
    "mixHash",
    "nonce",
    "baseFeePerGas",
    "withdrawalsRoot",
    "blobGasUsed",
    "excessBlobGas",
    "parentBeaconBlockRoot",
    "requestsHash",
];

/// `{"hash":…,` then the consensus header's own serde form (camelCase, quantities in hex,
/// `sha3Uncles`, `miner`; fork fields only when present).
fn rpc_form(h: &ConsensusHeader, hash: &B256) -> Bytes {
    let fields = serde_json::to_vec(h).expect("a header serialises");
    let mut out = Vec::with_capacity(fields.len() + 80);
    out.extend_from_slice(format!("{{\"hash\":\"{hash:#x}\"").as_bytes());
    if fields.len() > 2 {
        out.push(b',');
    }
    out.extend_from_slice(&fields[1..]);
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real anvil (Prague rules) genesis block.
    const ANVIL_GENESIS: &str = r#"{"hash":"0xb16475cea69521c4da72a5e8ecb93a8d04fe28ccb90d2c39c569c626037f3373","parentHash":"0x0000000000000000000000000000000000000000000000000000000000000000","sha3Uncles":"0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347","miner":"0x0000000000000000000000000000000000000000","stateRoot":"0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421","transactionsRoot":"0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421","receiptsRoot":"0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421","logsBloom":"0x00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000","difficulty":"0x0","number":"0x0","gasLimit":"0x1c9c380","gasUsed":"0x0","timestamp":"0x6b07ae38","extraData":"0x","mixHash":"0x0000000000000000000000000000000000000000000000000000000000000000","nonce":"0x0000000000000000","baseFeePerGas":"0x3b9aca00","withdrawalsRoot":"0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421","blobGasUsed":"0x0","excessBlobGas":"0x0","parentBeaconBlockRoot":"0x0000000000000000000000000000000000000000000000000000000000000000","requestsHash":"0xe3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","totalDifficulty":"0x0","size":"0x267","uncles":[],"transactions":[],"withdrawals":[]}"#;

    #[test]
    fn real_anvil_header_verifies() {
        let h = verify(ANVIL_GENESIS.as_bytes()).unwrap();
        assert_eq!(h.number, 0);
        assert_eq!(h.timestamp, 0x6b07ae38);
        // The newHeads form: the hashed fields as the upstream named them, and the hash.
        let rpc: serde_json::Value = serde_json::from_slice(&h.rpc).unwrap();
        let full: serde_json::Value = serde_json::from_str(ANVIL_GENESIS).unwrap();
        for key in NEW_HEADS_FIELDS {
            assert_eq!(rpc[key], full[key], "{key}");
        }
        assert!(rpc.get("transactions").is_none() && rpc.get("size").is_none());
    }

    #[test]
    fn any_altered_field_is_caught() {
        for (from, to) in [
            ("\"stateRoot\":\"0x56", "\"stateRoot\":\"0x57"),
            (
                "\"timestamp\":\"0x6b07ae38\"",
                "\"timestamp\":\"0x6b07ae39\"",
            ),
            (
                "\"baseFeePerGas\":\"0x3b9aca00\"",
                "\"baseFeePerGas\":\"0x3b9aca01\"",
            ),
            ("\"requestsHash\":\"0xe3", "\"requestsHash\":\"0xe4"),
        ] {
            let forged = ANVIL_GENESIS.replacen(from, to, 1);
            assert_ne!(forged, ANVIL_GENESIS);
            assert!(
                matches!(
                    verify(forged.as_bytes()),
                    Err(HeaderError::HashMismatch { .. })
                ),
                "{from}"
            );
        }
        assert!(matches!(verify(b"null"), Err(HeaderError::Malformed(_))));
    }
}

#[cfg(test)]
mod mainnet {
    use super::*;

    /// Real mainnet headers, one per fork (see tests/fixtures/README.md for their sources).
    #[test]
    fn mainnet_headers_of_every_fork_verify() {
        let text = include_str!("../tests/fixtures/mainnet-headers.json");
        let all: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).unwrap();
        let forks: Vec<&str> = all.keys().map(String::as_str).collect();
        for fork in ["london", "shanghai", "cancun", "prague"] {
            assert!(forks.contains(&fork), "fixture for {fork} missing");
        }
        for (fork, block) in &all {
            let raw = block.to_string();
            let h = verify(raw.as_bytes()).unwrap_or_else(|e| panic!("{fork}: {e}"));
            assert_eq!(format!("{:#x}", h.hash), block["hash"].as_str().unwrap());
            // And one flipped bit in the state root is caught.
            let mut forged = block.clone();
            let sr = forged["stateRoot"].as_str().unwrap().to_string();
            let flipped = format!("{}{}", &sr[..65], if sr.ends_with('0') { '1' } else { '0' });
            forged["stateRoot"] = serde_json::Value::String(flipped);
            assert!(verify(forged.to_string().as_bytes()).is_err(), "{fork}");
        }
    }
}
