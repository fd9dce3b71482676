//! The gateway tier of the cache: answers an edge node marked final (about finalized blocks
//! named by number or hash, or static facts) are kept here too, so a repeat is answered without
//! a QUIC round trip. Only final answers are kept, so no reorg or head move can make an entry
//! wrong; the bound is in bytes (an entry weighs its key, its value and the measured
//! per-entry overhead, [`daemon::weigh`]).
//!
//! Keys are the chain id, method and the params exactly as the caller sent them (no
//! re-encoding on the hot path): differently spelled params just occupy separate entries.
//!
//! [`Tiers`] holds both parts and owns the rule for what each keeps ([`Tiers::remember`]).

use bytes::{BufMut, Bytes, BytesMut};
use daemon::weigh::weight;
use proto::msg::CacheStatus;

use crate::front::compress::Deflated;

/// The gateway's two cache tiers, and what each keeps of a node's answer.
pub struct Tiers {
    /// Final answers (`[cache] max_bytes`).
    pub finals: FinalAnswers,
    /// Answers tied to a node's announced chain state (`[cache] tip_max_bytes`).
    pub tips: StateAnswers,
}

/// A node's answer to one call, as the tiers see it.
pub struct Offered<'a> {
    pub chain_id: u64,
    pub method: &'a str,
    pub params: &'a [u8],
    /// The call's key in the final tier ([`FinalAnswers::key`]); none for a call that can
    /// never have a final answer (a read at a moving tag).
    pub key: Option<&'a Bytes>,
    pub result: &'a Bytes,
    pub cache: CacheStatus,
    /// The node flagged the answer final.
    pub final_answer: bool,
    /// The node session and chain-state version the answer holds for, if it is tied to one.
    pub tied: Option<(u64, u64)>,
    /// The answering node's origin ([`crate::nodes::registry::Node::origin`]), so its kept
    /// answers can be dropped if it is ejected.
    pub source: u64,
}

impl Tiers {
    /// `compress_min`: kept final answers of at least this size are also kept deflated
    /// ([`Deflated`]); 0: never.
    pub fn new(max_bytes: u64, tip_max_bytes: u64, compress_min: usize) -> Self {
        Self {
            finals: FinalAnswers::new(max_bytes, compress_min),
            tips: StateAnswers::new(tip_max_bytes),
        }
    }

    /// Keeps a node's answer where it may be repeated from. Kept answers are copied out of the
    /// response frame, which may be far larger (a batch with a big answer): a slice would keep
    /// the whole frame alive.
    pub fn remember(&self, a: Offered<'_>) {
        match (a.final_answer, a.tied) {
            (true, _) => {
                if let Some(key) = a.key.filter(|_| self.finals.enabled()) {
                    self.finals
                        .insert(key.clone(), Bytes::copy_from_slice(a.result), a.source);
                }
            }
            // Only an answer the node's own cache already had: a question asked twice under
            // this state. One-off questions (most `latest` misses) would cost an insert each
            // and never be asked again.
            (false, Some((session, version)))
                if a.cache == CacheStatus::Hit && self.tips.enabled() =>
            {
                self.tips.insert(
                    StateAnswers::key(session, a.chain_id, a.method, a.params),
                    version,
                    Bytes::copy_from_slice(a.result),
                );
            }
            _ => {}
        }
    }

    /// Drops every answer a node gave: the final ones it was the source of (`origin`) and the
    /// tip ones of its `session`. Rare (an ejection), so a scan. Returns how many were dropped.
    pub fn forget_node(&self, origin: u64, session: u64) -> u64 {
        let mut dropped = 0;
        if let Some(s) = &self.finals.store {
            for (k, v) in s.iter() {
                if v.source == origin {
                    s.invalidate(&*k);
                    dropped += 1;
                }
            }
        }
        if let Some(s) = &self.tips.store {
            let prefix = session.to_be_bytes();
            for (k, _) in s.iter() {
                if k.starts_with(&prefix) {
                    s.invalidate(&*k);
                    dropped += 1;
                }
            }
        }
        dropped
    }
}

/// A kept final answer: the result, and for a large one, the result deflated once so that
/// gzip responses made of it cost no compression.
#[derive(Debug, Clone)]
pub struct Kept {
    pub result: Bytes,
    pub deflated: Option<Deflated>,
    /// The origin of the node that gave it.
    pub source: u64,
}

/// Byte-bounded store of final answers.
#[derive(Clone)]
pub struct FinalAnswers {
    store: Option<moka::sync::Cache<Bytes, Kept, daemon::KeyHasher>>,
    compress_min: usize,
}

impl FinalAnswers {
    /// A cache of at most `max_bytes` (keys + values + overhead); 0 disables it. Answers of
    /// at least `compress_min` bytes are kept deflated too (0: none).
    pub fn new(max_bytes: u64, compress_min: usize) -> Self {
        let store = (max_bytes > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|k: &Bytes, v: &Kept| {
                    let deflated = v.deflated.as_ref().map_or(0, Deflated::size);
                    weight(k.len(), v.result.len() + deflated, 0)
                })
                .build_with_hasher(daemon::KeyHasher::default())
        });
        Self {
            store,
            compress_min,
        }
    }

    pub fn key(chain_id: u64, method: &str, params: &[u8]) -> Bytes {
        let mut k = Vec::new();
        Self::key_into(&mut k, chain_id, method, params);
        k.into()
    }

    /// [`Self::key`], written into `out` (cleared first): a look-up needs no key of its own,
    /// so a hit allocates nothing for it.
    pub fn key_into(out: &mut Vec<u8>, chain_id: u64, method: &str, params: &[u8]) {
        out.clear();
        out.reserve(9 + method.len() + params.len());
        out.put_u64(chain_id);
        out.put_slice(method.as_bytes());
        out.put_u8(0);
        out.put_slice(params);
    }

    pub fn get(&self, key: &[u8]) -> Option<Kept> {
        self.store.as_ref()?.get(key)
    }

    /// False when configured off (`max_bytes = 0`): nothing to look up, key or copy.
    pub fn enabled(&self) -> bool {
        self.store.is_some()
    }

    /// Keeps `answer`, given by the node of origin `source` (deflating it once, when large).
    pub fn insert(&self, key: Bytes, answer: Bytes, source: u64) {
        if let Some(s) = &self.store {
            let deflated = (self.compress_min > 0 && answer.len() >= self.compress_min)
                .then(|| Deflated::new(&answer));
            s.insert(
                key,
                Kept {
                    result: answer,
                    deflated,
                    source,
                },
            );
        }
    }

    /// Drops one kept answer (shown wrong by an audit); true if it was kept.
    pub fn remove(&self, key: &Bytes) -> bool {
        self.store.as_ref().is_some_and(|s| s.remove(key).is_some())
    }

    /// (entries, weighted bytes)
    pub fn usage(&self) -> (u64, u64) {
        self.store
            .as_ref()
            .map_or((0, 0), |s| (s.entry_count(), s.weighted_size()))
    }
}

/// Answers a node tied to its current chain state (a `latest` read, the block number),
/// repeated from the gateway only while the node's last announced state version is the one
/// the answer was computed under: the node announces every new version (`Head` frame) the
/// moment it publishes it, so this tier adds no staleness beyond that message's trip. Kept per
/// node session, so a caller always gets the state of the node routing picked for them, and a
/// restarted node (whose versions start again) never meets its old answers.
#[derive(Clone)]
pub struct StateAnswers {
    store: Option<moka::sync::Cache<Bytes, (u64, Bytes), daemon::KeyHasher>>,
}

impl StateAnswers {
    /// A cache of at most `max_bytes` (keys + values + overhead); 0 disables it.
    pub fn new(max_bytes: u64) -> Self {
        let store = (max_bytes > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|k: &Bytes, v: &(u64, Bytes)| weight(k.len(), v.1.len(), 8))
                .build_with_hasher(daemon::KeyHasher::default())
        });
        Self { store }
    }

    pub fn enabled(&self) -> bool {
        self.store.is_some()
    }

    /// `FinalAnswers::key` prefixed by the node's session (`registry::Node::session`).
    pub fn key(session: u64, chain_id: u64, method: &str, params: &[u8]) -> Bytes {
        let mut k = BytesMut::with_capacity(17 + method.len() + params.len());
        k.put_u64(session);
        k.put_u64(chain_id);
        k.put_slice(method.as_bytes());
        k.put_u8(0);
        k.put_slice(params);
        k.freeze()
    }

    /// The answer, if it was computed under `current` (the node's last announced version).
    pub fn get(&self, key: &Bytes, current: u64) -> Option<Bytes> {
        match self.store.as_ref()?.get(key) {
            Some((v, answer)) if v == current && current != 0 => Some(answer),
            _ => None,
        }
    }

    pub fn insert(&self, key: Bytes, version: u64, answer: Bytes) {
        if let Some(s) = &self.store {
            s.insert(key, (version, answer));
        }
    }

    /// (entries, weighted bytes)
    pub fn usage(&self) -> (u64, u64) {
        self.store
            .as_ref()
            .map_or((0, 0), |s| (s.entry_count(), s.weighted_size()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_chains_methods_and_params() {
        let a = FinalAnswers::key(1, "eth_getBlockByNumber", br#"["0x1",false]"#);
        assert_ne!(
            a,
            FinalAnswers::key(2, "eth_getBlockByNumber", br#"["0x1",false]"#)
        );
        assert_ne!(
            a,
            FinalAnswers::key(1, "eth_getBlockByNumbe", br#"r["0x1",false]"#)
        );
        assert_ne!(
            a,
            FinalAnswers::key(1, "eth_getBlockByNumber", br#"["0x1",true]"#)
        );
    }

    #[test]
    fn state_answers_hold_only_for_their_version() {
        let c = StateAnswers::new(1 << 20);
        let k = StateAnswers::key(1, 1, "eth_blockNumber", b"[]");
        assert_ne!(k, StateAnswers::key(2, 1, "eth_blockNumber", b"[]"));
        c.insert(k.clone(), 7, Bytes::from_static(b"\"0x10\""));
        assert_eq!(c.get(&k, 7).as_deref(), Some(&b"\"0x10\""[..]));
        assert_eq!(c.get(&k, 8), None, "the node moved on");
        assert_eq!(c.get(&k, 6), None);
        // Version 0 means the node has announced nothing yet.
        c.insert(k.clone(), 0, Bytes::from_static(b"\"0x0\""));
        assert_eq!(c.get(&k, 0), None);
        assert!(!StateAnswers::new(0).enabled());
    }

    #[test]
    fn final_answers_are_kept_and_tied_ones_only_after_a_node_hit() {
        let t = Tiers::new(1 << 20, 1 << 20, 1024);
        let key = FinalAnswers::key(1, "eth_getBalance", b"[]");
        let result = Bytes::from_static(b"\"0x1\"");
        let offer = |final_answer, tied, cache| Offered {
            chain_id: 1,
            method: "eth_getBalance",
            params: b"[]",
            key: Some(&key),
            result: &result,
            cache,
            final_answer,
            tied,
            source: 5,
        };
        let tip_key = StateAnswers::key(9, 1, "eth_getBalance", b"[]");
        t.remember(offer(false, Some((9, 3)), CacheStatus::Miss));
        assert_eq!(t.tips.get(&tip_key, 3), None, "a one-off miss is not kept");
        t.remember(offer(false, None, CacheStatus::Hit));
        assert!(t.finals.get(&key).is_none(), "untied, not final: nowhere");
        t.remember(offer(false, Some((9, 3)), CacheStatus::Hit));
        assert_eq!(t.tips.get(&tip_key, 3), Some(result.clone()));
        assert!(t.finals.get(&key).is_none());
        t.remember(offer(true, None, CacheStatus::Miss));
        let kept = t.finals.get(&key).expect("kept");
        assert_eq!(kept.result, result);
        assert!(kept.deflated.is_none(), "small answers are not deflated");
        // A call without a final key (a read at a moving tag) is never kept as final, whatever
        // the node said.
        let untied = Offered {
            key: None,
            ..offer(true, None, CacheStatus::Miss)
        };
        t.finals.remove(&key);
        t.remember(untied);
        assert!(t.finals.get(&key).is_none(), "no key, not kept");
        t.remember(offer(true, None, CacheStatus::Miss));
        // An ejected node's answers go, in both tiers; others' stay.
        let other = FinalAnswers::key(1, "eth_getCode", b"[]");
        t.finals.insert(other.clone(), result.clone(), 6);
        assert_eq!(t.forget_node(5, 9), 2);
        assert!(t.finals.get(&key).is_none());
        assert_eq!(t.tips.get(&tip_key, 3), None);
        assert!(t.finals.get(&other).is_some());
    }

    #[test]
    fn bounded_and_disableable() {
        let c = FinalAnswers::new(10_000, 1024);
        for i in 0..1000u32 {
            c.insert(Bytes::from(i.to_string()), Bytes::from(vec![b'x'; 100]), 0);
        }
        c.store.as_ref().unwrap().run_pending_tasks();
        assert!(c.usage().1 <= 10_000);
        let off = FinalAnswers::new(0, 1024);
        assert!(!off.enabled() && c.enabled());
        off.insert(Bytes::from_static(b"k"), Bytes::from_static(b"v"), 0);
        assert!(off.get(&Bytes::from_static(b"k")).is_none());
        // A large answer is kept deflated too, and weighs both.
        let big = FinalAnswers::new(1 << 20, 1024);
        big.insert(Bytes::from_static(b"k"), Bytes::from(vec![b'x'; 4096]), 0);
        assert!(big
            .get(&Bytes::from_static(b"k"))
            .unwrap()
            .deflated
            .is_some());
    }
}
