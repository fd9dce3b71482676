//! The chain's feed of pending transaction hashes (`newPendingTransactions`), for the gateway's
//! subscriptions: a bounded broadcast that exists only on chains with a WebSocket upstream.
//! The upstream subscription behind it is made by one of the chain's socket followers
//! ([`super::follow`]) while the feed has receivers, and dropped a few seconds after the last
//! one goes; a refusal by the upstream closes the feed, so receivers learn it.

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::{broadcast, watch};
use tokio::time::{Duration, Instant};

/// Hashes buffered per receiver; a slower receiver skips ahead (`RecvError::Lagged`).
pub const PENDING_CAPACITY: usize = 4096;
/// After the upstream refused the subscription, new receivers are told so for this long, then
/// it is asked again.
const REFUSED_FOR: Duration = Duration::from_secs(30);
/// No follower holds the subscription.
const NO_OWNER: usize = usize::MAX;

/// Why [`super::Chain::pending_transactions`] cannot give a receiver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PendingUnavailable {
    #[error(
        "no upstream of chain {chain_id} is a WebSocket (ws:// or wss://) upstream; \
         newPendingTransactions needs one"
    )]
    NoSocket { chain_id: u64 },
    #[error("the upstream of chain {chain_id} refused newPendingTransactions: {reason}")]
    Refused { chain_id: u64, reason: String },
}

enum State {
    Open(broadcast::Sender<String>),
    Refused { reason: String, until: Instant },
}

pub(super) struct Feed {
    state: Mutex<State>,
    /// Bumped when a receiver is made and when a follower lets the subscription go, so that
    /// followers look again at once (they also look every second).
    nudge: watch::Sender<u64>,
    /// The index of the upstream whose follower holds the subscription, or [`NO_OWNER`]: at
    /// most one upstream sends the hashes, so none arrives twice.
    owner: AtomicUsize,
}

impl Feed {
    pub(super) fn new() -> Self {
        Self {
            state: Mutex::new(State::Open(broadcast::channel(PENDING_CAPACITY).0)),
            nudge: watch::Sender::new(0),
            owner: AtomicUsize::new(NO_OWNER),
        }
    }

    /// A new receiver, or why there is none.
    pub(super) fn subscribe(
        &self,
        chain_id: u64,
    ) -> Result<broadcast::Receiver<String>, PendingUnavailable> {
        let rx = {
            let mut s = self.state.lock();
            if let State::Refused { reason, until } = &*s {
                if Instant::now() < *until {
                    return Err(PendingUnavailable::Refused {
                        chain_id,
                        reason: reason.clone(),
                    });
                }
                *s = State::Open(broadcast::channel(PENDING_CAPACITY).0);
            }
            match &*s {
                State::Open(tx) => tx.subscribe(),
                State::Refused { .. } => unreachable!("reopened above"),
            }
        };
        self.nudge.send_modify(|n| *n = n.wrapping_add(1));
        Ok(rx)
    }

    /// Receivers alive now (0 while refused).
    pub(super) fn receivers(&self) -> usize {
        match &*self.state.lock() {
            State::Open(tx) => tx.receiver_count(),
            State::Refused { .. } => 0,
        }
    }

    /// Hands a hash to every receiver (none: dropped).
    pub(super) fn send(&self, hash: String) {
        if let State::Open(tx) = &*self.state.lock() {
            let _ = tx.send(hash);
        }
    }

    /// The upstream refused the subscription: the sender goes, so receivers get `Closed` once
    /// they have read what was sent.
    pub(super) fn refuse(&self, reason: String) {
        self.refuse_for(reason, REFUSED_FOR);
    }

    fn refuse_for(&self, reason: String, time: Duration) {
        *self.state.lock() = State::Refused {
            reason,
            until: Instant::now() + time,
        };
    }

    pub(super) fn nudges(&self) -> watch::Receiver<u64> {
        self.nudge.subscribe()
    }

    /// Upstream `index` takes the subscription, unless another holds it.
    pub(super) fn claim(&self, index: usize) -> Option<Claim<'_>> {
        self.owner
            .compare_exchange(NO_OWNER, index, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Claim { feed: self, index })
    }
}

/// Upstream `index` holds the feed's subscription until this is dropped; then the other
/// followers are nudged, so one of them takes over while receivers remain.
pub(super) struct Claim<'a> {
    feed: &'a Feed,
    index: usize,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let _ = self.feed.owner.compare_exchange(
            self.index,
            NO_OWNER,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.feed.nudge.send_modify(|n| *n = n.wrapping_add(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refusal_closes_receivers_and_is_told_until_it_expires() {
        let feed = Feed::new();
        let mut rx = feed.subscribe(1).unwrap();
        assert_eq!(feed.receivers(), 1);
        feed.send("0xab".into());
        feed.refuse("method not found".into());
        assert_eq!(rx.recv().await.unwrap(), "0xab");
        assert_eq!(rx.recv().await, Err(broadcast::error::RecvError::Closed));
        let err = feed.subscribe(1).unwrap_err();
        assert!(err.to_string().contains("method not found"), "{err}");
        feed.refuse_for("gone".into(), Duration::ZERO);
        let _again = feed
            .subscribe(1)
            .expect("asked again once the refusal expired");
        assert_eq!(feed.receivers(), 1);
    }

    #[test]
    fn one_follower_holds_the_subscription_at_a_time() {
        let feed = Feed::new();
        let first = feed.claim(0).expect("free");
        assert!(feed.claim(1).is_none());
        drop(first);
        assert!(feed.claim(1).is_some());
    }
}
