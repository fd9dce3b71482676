//! A bounded memo cache keyed by IP address.
//!
//! Each shard keeps two generations: new entries go into `hot`; when `hot` is full it becomes
//! `cold` and the old `cold` is dropped, and a hit in `cold` moves the entry back to `hot`.
//! That approximates LRU with O(1) work and no per-entry bookkeeping, and bounds memory to
//! the configured capacity. Shards keep two request threads from queueing on one lock.
//! Keys are hashed with a per-process random seed: callers pick their addresses, and an
//! unseeded hash would let them aim every entry at one bucket.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;

use parking_lot::Mutex;

/// Shards at most; more buys nothing on the few cores a gateway runs on.
const MAX_SHARDS: usize = 16;
/// Entries per shard below which fewer shards are used, so small caches stay exact.
const MIN_SHARD_CAPACITY: usize = 1024;

pub(crate) struct MemoCache<V> {
    shards: Box<[Mutex<Generations<V>>]>,
    /// Entries in `hot` that trigger a generation flip.
    generation_capacity: usize,
    hasher: RandomState,
}

struct Generations<V> {
    hot: HashMap<IpAddr, V>,
    cold: HashMap<IpAddr, V>,
}

impl<V: Clone> MemoCache<V> {
    /// A cache holding at most `capacity` entries; 0 disables it.
    pub(crate) fn new(capacity: usize) -> Self {
        if capacity == 0 {
            return Self {
                shards: Box::new([]),
                generation_capacity: 0,
                hasher: RandomState::new(),
            };
        }
        let shard_count = (capacity / MIN_SHARD_CAPACITY)
            .clamp(1, MAX_SHARDS)
            .next_power_of_two()
            .min(MAX_SHARDS);
        let per_shard = capacity / shard_count;
        // `hot` flips as soon as it reaches this size, so a shard holds at most
        // 2 * generation_capacity - 1 <= per_shard entries.
        let generation_capacity = per_shard.div_ceil(2);
        let shards = (0..shard_count)
            .map(|_| {
                Mutex::new(Generations {
                    hot: HashMap::new(),
                    cold: HashMap::new(),
                })
            })
            .collect();
        Self {
            shards,
            generation_capacity,
            hasher: RandomState::new(),
        }
    }

    pub(crate) fn get(&self, key: &IpAddr) -> Option<V> {
        let mut shard = self.shard(key)?.lock();
        if let Some(value) = shard.hot.get(key) {
            return Some(value.clone());
        }
        let value = shard.cold.remove(key)?;
        shard.insert_hot(*key, value.clone(), self.generation_capacity);
        Some(value)
    }

    pub(crate) fn insert(&self, key: IpAddr, value: V) {
        if let Some(shard) = self.shard(&key) {
            shard
                .lock()
                .insert_hot(key, value, self.generation_capacity);
        }
    }

    /// Entries held now (a hit promoted from `cold` is counted once).
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock();
                s.hot.len() + s.cold.len()
            })
            .sum()
    }

    fn shard(&self, key: &IpAddr) -> Option<&Mutex<Generations<V>>> {
        if self.shards.is_empty() {
            return None;
        }
        // The shard count is a power of two.
        let index = self.hasher.hash_one(key) as usize & (self.shards.len() - 1);
        Some(&self.shards[index])
    }
}

impl<V> Generations<V> {
    fn insert_hot(&mut self, key: IpAddr, value: V, generation_capacity: usize) {
        self.cold.remove(&key);
        self.hot.insert(key, value);
        if self.hot.len() >= generation_capacity {
            // Reuse the old cold map's allocation for the next hot generation.
            std::mem::swap(&mut self.hot, &mut self.cold);
            self.hot.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn stays_within_capacity() {
        for capacity in [1, 2, 3, 10, 1000, 5000, 100_000] {
            let cache = MemoCache::new(capacity);
            for n in 0..(capacity as u32 * 3 + 10) {
                cache.insert(ip(n), n);
                assert!(
                    cache.len() <= capacity,
                    "capacity {capacity}: {}",
                    cache.len()
                );
            }
            assert!(cache.len() > 0);
        }
    }

    #[test]
    fn recent_entries_survive() {
        let cache = MemoCache::new(100);
        for n in 0..1000 {
            cache.insert(ip(n), n);
        }
        assert_eq!(cache.get(&ip(999)), Some(999));
        assert_eq!(cache.get(&ip(0)), None);
    }

    #[test]
    fn hits_are_promoted() {
        let cache = MemoCache::new(10); // one shard, generations of 5
        cache.insert(ip(1), 1);
        for n in 100..105 {
            cache.insert(ip(n), n); // flips: ip(1) is now cold
        }
        assert_eq!(cache.get(&ip(1)), Some(1)); // back to hot
        for n in 200..204 {
            cache.insert(ip(n), n);
        }
        assert_eq!(
            cache.get(&ip(1)),
            Some(1),
            "promoted entry survives one more flip"
        );
    }

    #[test]
    fn zero_capacity_disables() {
        let cache = MemoCache::new(0);
        cache.insert(ip(1), 1);
        assert_eq!(cache.get(&ip(1)), None);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn overwrite_keeps_one_entry() {
        let cache = MemoCache::new(10);
        cache.insert(ip(1), 1);
        cache.insert(ip(1), 2);
        assert_eq!(cache.get(&ip(1)), Some(2));
        assert_eq!(cache.len(), 1);
    }
}
