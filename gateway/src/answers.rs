//! The gateway tier of the cache: answers an edge node marked final (about finalized blocks
//! named by number or hash, or static facts) are kept here too, so a repeat is answered without
//! a QUIC round trip. Only final answers are kept, so no reorg or head move can make an entry
//! wrong; the bound is in bytes.
//!
//! Keys are the chain id, method and the params exactly as the caller sent them (no
//! re-encoding on the hot path): differently spelled params just occupy separate entries.

use bytes::{BufMut, Bytes, BytesMut};

/// What an entry costs beyond its key and value bytes (moka's bookkeeping, the `Bytes`
/// handles, allocator rounding), so that `max_bytes` bounds real memory: measured as
/// resident-memory growth per entry in the load tests' soak run.
pub const ENTRY_OVERHEAD_BYTES: usize = 480;

/// Byte-bounded store of final answers.
#[derive(Clone)]
pub struct FinalAnswers {
    store: Option<moka::sync::Cache<Bytes, Bytes>>,
}

impl FinalAnswers {
    /// A cache of at most `max_bytes` (keys + values + overhead); 0 disables it.
    pub fn new(max_bytes: u64) -> Self {
        let store = (max_bytes > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|k: &Bytes, v: &Bytes| {
                    (k.len() + v.len() + ENTRY_OVERHEAD_BYTES)
                        .try_into()
                        .unwrap_or(u32::MAX)
                })
                .build()
        });
        Self { store }
    }

    pub fn key(chain_id: u64, method: &str, params: &[u8]) -> Bytes {
        let mut k = BytesMut::with_capacity(9 + method.len() + params.len());
        k.put_u64(chain_id);
        k.put_slice(method.as_bytes());
        k.put_u8(0);
        k.put_slice(params);
        k.freeze()
    }

    pub fn get(&self, key: &Bytes) -> Option<Bytes> {
        self.store.as_ref()?.get(key)
    }

    pub fn insert(&self, key: Bytes, answer: Bytes) {
        if let Some(s) = &self.store {
            s.insert(key, answer);
        }
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
    store: Option<moka::sync::Cache<Bytes, (u64, Bytes)>>,
}

impl StateAnswers {
    /// A cache of at most `max_bytes` (keys + values + overhead); 0 disables it.
    pub fn new(max_bytes: u64) -> Self {
        let store = (max_bytes > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|k: &Bytes, v: &(u64, Bytes)| {
                    (k.len() + v.1.len() + 8 + ENTRY_OVERHEAD_BYTES)
                        .try_into()
                        .unwrap_or(u32::MAX)
                })
                .build()
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
    fn bounded_and_disableable() {
        let c = FinalAnswers::new(10_000);
        for i in 0..1000u32 {
            c.insert(Bytes::from(i.to_string()), Bytes::from(vec![b'x'; 100]));
        }
        c.store.as_ref().unwrap().run_pending_tasks();
        assert!(c.usage().1 <= 10_000);
        let off = FinalAnswers::new(0);
        off.insert(Bytes::from_static(b"k"), Bytes::from_static(b"v"));
        assert_eq!(off.get(&Bytes::from_static(b"k")), None);
    }
}
