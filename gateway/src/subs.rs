//! Subscriptions (`eth_subscribe`): one feed per (chain, kind, filter, residency rule), fanned
//! out to every client subscription that asked for it.
//!
//! A feed follows one node over one subscription stream ([`proto::sub`]) and keeps the blocks
//! it delivered ([`feed::Delivered`]). When that node goes away, is dropped by health, or ends
//! the stream, the feed moves to the next node and sends it those blocks: the node continues
//! after the highest one it holds, so clients see every block once, in order, with no error.
//! A block whose parent is not the last one delivered is a reorg: the feed takes back what the
//! new branch replaces (logs again with `removed: true`, geth's semantics) before sending it.
//!
//! Sending never waits on a client: each socket has a bounded queue, and a client that lets
//! it fill is disconnected ([`Subscriber::slow`]) while the others keep receiving.

mod feed;
pub mod filter;
mod shards;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use proto::sub::{LogFilter, SubKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::geo::Location;
use crate::nodes::router::Router;
use crate::ops::metrics::Metrics;

/// What a feed follows: clients asking the same share one feed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FeedKey {
    pub chain_id: u64,
    pub kind: SubKind,
    pub filter: Option<LogFilter>,
    /// The residency rule that binds the subscribers (their events come only from nodes in
    /// its regions).
    pub rule: Option<usize>,
}

/// What a socket's writer sends.
#[derive(Debug)]
pub enum Out {
    /// A response to a request, ready to send.
    Text(bytes::Bytes),
    /// A block's notifications (or a batch of pending hashes) for one subscription: its id
    /// and each `result`. One queue place per block, however many logs it has.
    Event {
        sub: Arc<str>,
        results: Arc<[Arc<str>]>,
    },
}

/// One client subscription, as its feed holds it.
pub struct Subscriber {
    pub id: Arc<str>,
    pub tx: mpsc::Sender<Out>,
    /// Fired when the client's queue is full: its socket closes with 1008.
    pub slow: CancellationToken,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubscribeError {
    #[error("this gateway follows {0} subscription feeds already (websocket.max_feeds); try again later")]
    TooManyFeeds(usize),
}

struct Feed {
    subs: Mutex<shards::Subscribers>,
    /// Subscriptions on their way in ([`Joining`]); changed under the hub lock.
    joining: AtomicUsize,
    stop: CancellationToken,
    state: tokio::sync::watch::Sender<State>,
    /// The node serving the feed now (its id).
    node: Mutex<Option<String>>,
}

/// Where a feed stands: `eth_subscribe` answers once it is ready (so the next block reaches
/// the new subscription) or refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Starting,
    Ready,
    /// Every node refused this kind; why.
    Refused(String),
}

/// Every feed of this gateway.
pub struct Hub {
    feeds: Mutex<HashMap<FeedKey, Arc<Feed>>>,
    /// Subscriptions open per tenant (by name), for the tenants' `max_subscriptions`.
    by_tenant: Mutex<HashMap<String, usize>>,
    router: Arc<Router>,
    metrics: Arc<Metrics>,
    max_feeds: usize,
    max_frame: usize,
    status_deadline: std::time::Duration,
    stop: CancellationToken,
}

impl Hub {
    pub fn new(
        config: &Config,
        router: Arc<Router>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Self {
        Self {
            feeds: Mutex::default(),
            by_tenant: Mutex::default(),
            router,
            metrics,
            max_feeds: config.websocket.max_feeds,
            max_frame: config.quic.max_frame_bytes,
            status_deadline: config.quic.status_deadline,
            stop,
        }
    }

    /// Joins the feed for `key`, starting it (from nodes ranked for `anchor`, the first
    /// subscriber's location) if none runs. The feed keeps running for the [`Joining`] until it
    /// is attached (once the client has its subscription id) or dropped.
    pub fn join(
        self: &Arc<Self>,
        key: FeedKey,
        anchor: Option<Location>,
    ) -> Result<(Joining, tokio::sync::watch::Receiver<State>), SubscribeError> {
        let mut feeds = self.feeds.lock();
        let feed = match feeds.get(&key) {
            Some(f) => f.clone(),
            None => {
                if feeds.len() >= self.max_feeds {
                    return Err(SubscribeError::TooManyFeeds(self.max_feeds));
                }
                let f = Arc::new(Feed {
                    subs: Mutex::default(),
                    joining: AtomicUsize::new(0),
                    stop: self.stop.child_token(),
                    state: tokio::sync::watch::Sender::new(State::Starting),
                    node: Mutex::default(),
                });
                feeds.insert(key.clone(), f.clone());
                self.metrics.ws.feeds.inc();
                tokio::spawn(feed::run(self.clone(), key.clone(), f.clone(), anchor));
                f
            }
        };
        feed.joining.fetch_add(1, Ordering::Relaxed);
        let state = feed.state.subscribe();
        Ok((
            Joining {
                hub: self.clone(),
                key,
                feed: Some(feed),
            },
            state,
        ))
    }

    /// Adds `sub` to the feed it joined: it gets every block from now on.
    pub fn attach(&self, mut joining: Joining, sub: Subscriber) {
        let feed = joining.feed.take().expect("attached once");
        let _feeds = self.feeds.lock();
        feed.subs.lock().push(sub);
        feed.joining.fetch_sub(1, Ordering::Relaxed);
        self.metrics
            .ws
            .subscriptions
            .with_label_values(&[joining.key.kind.as_str()])
            .inc();
    }

    /// Removes subscription `id` from `key`'s feed; the feed stops with its last subscriber.
    pub fn unsubscribe(&self, key: &FeedKey, id: &str) -> bool {
        let mut feeds = self.feeds.lock();
        let Some(feed) = feeds.get(key).cloned() else {
            return false;
        };
        let removed = feed.subs.lock().remove(id);
        if removed {
            self.metrics
                .ws
                .subscriptions
                .with_label_values(&[key.kind.as_str()])
                .dec();
        }
        self.stop_if_unused(&mut feeds, key, &feed);
        removed
    }

    /// Stops and forgets a feed that nobody holds or is joining (hub lock held).
    fn stop_if_unused(
        &self,
        feeds: &mut HashMap<FeedKey, Arc<Feed>>,
        key: &FeedKey,
        feed: &Arc<Feed>,
    ) {
        let unused = feed.subs.lock().is_empty() && feed.joining.load(Ordering::Relaxed) == 0;
        let current = feeds.get(key).is_some_and(|f| Arc::ptr_eq(f, feed));
        if unused && current {
            feed.stop.cancel();
            feeds.remove(key);
            self.metrics.ws.feeds.dec();
        }
    }

    /// Takes one of `tenant`'s subscriptions, if it has one left (`max` 0: no limit).
    pub fn take_tenant_slot(&self, tenant: &str, max: usize) -> bool {
        let mut m = self.by_tenant.lock();
        let n = m.entry(tenant.to_string()).or_default();
        if max > 0 && *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    /// Gives a subscription of `tenant` back.
    pub fn release_tenant_slot(&self, tenant: &str) {
        let mut m = self.by_tenant.lock();
        if let Some(n) = m.get_mut(tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(tenant);
            }
        }
    }

    /// Each feed and the node serving it now (`None` while it looks for one).
    pub fn serving(&self) -> Vec<(FeedKey, Option<String>)> {
        let feeds = self.feeds.lock();
        feeds
            .iter()
            .map(|(k, f)| (k.clone(), f.node.lock().clone()))
            .collect()
    }

    /// Feeds and subscriptions now, for the status page.
    pub fn summary(&self) -> Summary {
        let feeds = self.feeds.lock();
        let mut s = Summary {
            feeds: feeds.len(),
            ..Summary::default()
        };
        for (k, f) in feeds.iter() {
            let n = f.subs.lock().len();
            s.subscriptions += n;
            *s.by_kind.entry(k.kind.as_str()).or_default() += n;
            if let Some(node) = f.node.lock().clone() {
                *s.feeds_by_node.entry(node).or_default() += 1;
            }
        }
        s
    }
}

/// A subscription on its way into a feed ([`Hub::join`]); dropped unattached, it leaves
/// (and the feed stops if nobody else holds it).
pub struct Joining {
    hub: Arc<Hub>,
    key: FeedKey,
    feed: Option<Arc<Feed>>,
}

impl Drop for Joining {
    fn drop(&mut self) {
        if let Some(feed) = self.feed.take() {
            let mut feeds = self.hub.feeds.lock();
            feed.joining.fetch_sub(1, Ordering::Relaxed);
            self.hub.stop_if_unused(&mut feeds, &self.key, &feed);
        }
    }
}

/// What the status page shows of the subscriptions.
#[derive(Debug, Default, serde::Serialize)]
pub struct Summary {
    pub feeds: usize,
    pub subscriptions: usize,
    pub by_kind: std::collections::BTreeMap<&'static str, usize>,
    /// Feeds each node serves now, by node id.
    pub feeds_by_node: std::collections::BTreeMap<String, usize>,
}

/// A new subscription id: 128 random bits, as geth's are.
pub fn new_id() -> Arc<str> {
    format!("0x{:032x}", rand::random::<u128>()).into()
}
