//! A feed's subscribers, in shards that fan out in parallel, found by id in O(1).
//!
//! One shard per [`SHARD`] subscribers, each behind its own lock: a block's events go to the
//! shards from tasks of their own, so the sends (each wakes the socket's writer) spread over
//! the runtime's workers, and a socket leaving never scans the others.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::Subscriber;

/// Subscribers per shard: a shard's sends take a few milliseconds.
pub const SHARD: usize = 512;

pub type Shard = Arc<Mutex<Vec<Subscriber>>>;

#[derive(Default)]
pub struct Subscribers {
    shards: Vec<Shard>,
    /// Where each subscription is: shard, index in it.
    at: HashMap<Arc<str>, (usize, usize)>,
}

impl Subscribers {
    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// Adds to the first shard with room (shards fill back up as subscribers leave).
    pub fn push(&mut self, sub: Subscriber) {
        let i = match self.shards.iter().position(|s| s.lock().len() < SHARD) {
            Some(i) => i,
            None => {
                self.shards.push(Shard::default());
                self.shards.len() - 1
            }
        };
        let mut shard = self.shards[i].lock();
        self.at.insert(sub.id.clone(), (i, shard.len()));
        shard.push(sub);
    }

    /// Removes subscription `id`; false if it is not here.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some((i, j)) = self.at.remove(id) else {
            return false;
        };
        let mut shard = self.shards[i].lock();
        shard.swap_remove(j);
        if let Some(moved) = shard.get(j) {
            self.at.insert(moved.id.clone(), (i, j));
        }
        true
    }

    /// The shards, to fan out over (cheap: one `Arc` each).
    pub fn shards(&self) -> Vec<Shard> {
        self.shards.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    fn sub(id: &str) -> Subscriber {
        let (tx, _) = tokio::sync::mpsc::channel(1);
        Subscriber {
            id: id.into(),
            tx,
            slow: CancellationToken::new(),
        }
    }

    #[test]
    fn removal_keeps_every_other_subscriber_findable() {
        let mut s = Subscribers::default();
        let n = 2 * SHARD + 7;
        for i in 0..n {
            s.push(sub(&i.to_string()));
        }
        assert_eq!((s.len(), s.shards().len()), (n, 3));
        for i in (0..n).step_by(3) {
            assert!(s.remove(&i.to_string()));
            assert!(!s.remove(&i.to_string()));
        }
        let left: usize = s.shards().iter().map(|sh| sh.lock().len()).sum();
        assert_eq!(left, s.len());
        for i in (0..n).filter(|i| i % 3 != 0) {
            assert!(s.remove(&i.to_string()), "{i}");
        }
        assert!(s.is_empty());
        // Places freed are used again before a new shard is made.
        s.push(sub("x"));
        assert_eq!(s.shards().len(), 3);
    }
}
