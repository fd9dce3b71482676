//! Hand-made header chains for tests (they need not hash-verify: the state machine takes
//! headers the tracker already verified).

use alloy_primitives::B256;

use super::{ChainState, Tag};
use crate::header::Header;

/// Block `n` of fork `fork`.
pub(crate) fn hash(n: u64, fork: u8) -> B256 {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&n.to_be_bytes());
    b[31] = fork;
    B256::from(b)
}

/// Blocks `lo..=hi` of `fork`, newest first; block `lo`'s parent is on fork `base`.
pub(crate) fn segment(lo: u64, hi: u64, fork: u8, base: u8) -> Vec<Header> {
    (lo..=hi)
        .rev()
        .map(|n| Header {
            number: n,
            hash: hash(n, fork),
            parent_hash: match n {
                0 => B256::ZERO,
                n if n == lo => hash(n - 1, base),
                n => hash(n - 1, fork),
            },
            state_root: B256::ZERO,
            timestamp: 1_000 + 12 * n,
            no_logs: true,
            rpc: bytes::Bytes::new(),
        })
        .collect()
}

/// Blocks `0..=head` of fork 0, finalized at `finalized`.
pub(crate) fn chain(head: u64, finalized: u64) -> ChainState {
    let mut s = ChainState::new(64);
    s.apply(segment(0, head, 0, 0), Tag::At(finalized), Tag::Failed)
        .unwrap();
    s
}
