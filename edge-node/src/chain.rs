//! Light-client chain state per served chain: the chain id the upstreams really serve, the
//! tracked state (see [`state`]: a ring of recent verified headers, the head, `safe` and
//! `finalized`), upstream health, and the answers readers ask of it (block parameters
//! resolved, hashes known final, the status line for the gateway).
//!
//! The state machine is pure ([`state`]); following the upstreams and acting on what the
//! machine reports (evicting the cache, bumping the state version) is [`track`]'s. Upstreams
//! configured as `ws://`/`wss://` are also followed over their WebSocket ([`follow`]): a
//! `newHeads` notification only wakes the tracker, which fetches and verifies as always, and
//! the same socket carries the pending-transaction feed ([`pending`]).
//!
//! Invariants:
//! - every header in the ring verified (hash = keccak(rlp(header))) and links to its parent;
//! - the served tip (`eth_blockNumber`) never goes backwards;
//! - when the ring learns that a block was replaced, every cached answer naming that block's
//!   hash is evicted before the new head is published.

mod capability;
mod follow;
mod pace;
mod pending;
pub(crate) mod state;
mod track;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alloy_primitives::B256;
use parking_lot::Mutex;
use proto::msg::ChainStatus;

use crate::blockref::BlockRef;
use crate::header::Header;
use crate::policy::LogLimits;
use crate::upstream::Upstreams;

pub use capability::state_missing;
pub use pending::{PendingUnavailable, PENDING_CAPACITY};

/// Polls per expected block: a few requests per block, not per second per method.
const POLLS_PER_BLOCK: u32 = 4;
const MIN_POLL: Duration = Duration::from_millis(50);

/// Bounds of the learned-hash set and the queue feeding it.
const FINAL_HASHES_MAX: usize = 65_536;
const TO_LEARN_MAX: usize = 256;

/// Everything behind the one state lock.
#[derive(Debug)]
struct State {
    reported_chain_id: Option<u64>,
    chain: state::ChainState,
    healthy: bool,
    /// Failed polls in a row; one failure alone does not mark the upstream down.
    fail_streak: u32,
    probes: u32,
    failures: u32,
}

/// A block parameter resolved against the chain state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// At or below the finalized block: the answer can never change.
    Final(u64),
    /// A known unfinalized block: the answer holds while this hash stays canonical.
    Tip(u64, B256),
    /// Beyond the head, `pending`, or not known: never cached.
    Unknown,
}

/// Where a block hash a client named stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// In the verified ring (so canonical); `final_` when at or below finalized.
    Ring { final_: bool },
    /// An older canonical block at or below finalized, learned in the background.
    LearnedFinal,
    /// Not known to the node: maybe a new block it has not seen, an old one, or none at all.
    Unknown,
}

impl Placed {
    pub fn is_final(self) -> bool {
        matches!(self, Placed::Ring { final_: true } | Placed::LearnedFinal)
    }

    pub fn is_unknown(self) -> bool {
        self == Placed::Unknown
    }
}

/// The chain state as one request sees it (see [`Chain::view`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// The head's number and hash.
    pub head: Option<(u64, B256)>,
    pub finalized: Option<u64>,
    /// `safe`, or `finalized` where the upstream has no `safe`.
    pub safe: Option<u64>,
    /// What `eth_blockNumber` answers: the highest head ever published.
    pub served_tip: Option<u64>,
    /// The state version this view is of (read under the same lock, so an answer planned from
    /// the view holds for exactly this version).
    pub version: u64,
}

/// One served chain: its upstreams and tracked state.
pub struct Chain {
    pub chain_id: u64,
    pub upstreams: Upstreams,
    /// Upper bound of the head poll interval; the actual pace follows the block time.
    max_poll: Duration,
    /// Answer state reads from verified proofs (see [`crate::proof`]).
    pub verify_state: bool,
    /// This chain's `eth_getLogs` limits.
    pub logs: LogLimits,
    state: Mutex<State>,
    /// Hashes of canonical blocks at or below finalized that are older than the ring, learned
    /// in the background (bounded), so by-hash answers about them count as final too.
    final_hashes: Mutex<HashSet<B256>>,
    /// Hashes asked about that the node could not place yet (bounded queue).
    to_learn: Mutex<Vec<B256>>,
    /// Bumped, under the state lock, at every change readers can see (publish of a new head,
    /// reorg, rollback, finality, a cleared ring): answers planned and sent under one version
    /// hold for exactly that state, which the gateway is told about (`Head`).
    version: tokio::sync::watch::Sender<u64>,
    /// A block number an upstream answer showed beyond the head, until the next poll (0: none).
    ahead: tokio::sync::watch::Sender<u64>,
    /// When `version` last moved (Unix ms), for the subscription delay the gateway measures.
    published_ms: AtomicU64,
    /// Each recent block's logs, fetched once for every `logs` subscription.
    pub block_logs: crate::subs::BlockLogs,
    /// The upstreams followed over a WebSocket: index in `upstreams`, `ws(s)://` URL.
    sockets: Vec<(usize, http::Uri)>,
    /// How many of them have a live `newHeads` subscription now. While any has, the tracker
    /// polls only at `max_poll` (a safety net); a change wakes it.
    followers: tokio::sync::watch::Sender<u32>,
    /// Pending transaction hashes; only on chains with a WebSocket upstream.
    pending: Option<pending::Feed>,
    /// What the last capability probe found ([`capability`]); `None` before the first.
    probed: Mutex<Option<capability::Probed>>,
    /// Wakes the capability prober early: an upstream refused state.
    reprobe: tokio::sync::Notify,
}

impl Chain {
    pub fn new(cfg: &crate::config::ChainConfig, upstreams: Upstreams) -> Self {
        Self {
            chain_id: cfg.chain_id,
            upstreams,
            max_poll: cfg.head_poll,
            verify_state: cfg.verify_state,
            logs: LogLimits {
                max_range: cfg.logs_max_range,
                chunk: cfg.logs_chunk_blocks,
            },
            state: Mutex::new(State {
                reported_chain_id: None,
                chain: state::ChainState::new(cfg.finality_depth),
                healthy: false,
                fail_streak: 0,
                probes: 0,
                failures: 0,
            }),
            final_hashes: Mutex::new(HashSet::new()),
            to_learn: Mutex::new(Vec::new()),
            version: tokio::sync::watch::Sender::new(0),
            ahead: tokio::sync::watch::Sender::new(0),
            published_ms: AtomicU64::new(0),
            block_logs: crate::subs::BlockLogs::new(),
            pending: (!cfg.socket_urls().is_empty()).then(pending::Feed::new),
            sockets: cfg.socket_urls(),
            followers: tokio::sync::watch::Sender::new(0),
            probed: Mutex::new(None),
            reprobe: tokio::sync::Notify::new(),
        }
    }

    /// The upstreams followed over a WebSocket (index in [`Self::upstreams`], `ws(s)://`
    /// URL): one [`Self::follow`] task each.
    pub fn sockets(&self) -> &[(usize, http::Uri)] {
        &self.sockets
    }

    /// Is the head followed over a live WebSocket subscription now?
    pub fn followed(&self) -> bool {
        *self.followers.borrow() > 0
    }

    /// A receiver of the hashes (`"0x…"`, as the upstream sent them) of transactions entering
    /// an upstream's pool, for `eth_subscribe("newPendingTransactions")`. The upstream
    /// subscription exists while receivers do (made on the first, dropped a few seconds after
    /// the last) and is made again after a reconnect; hashes sent while no socket is up are
    /// missed. The channel is bounded ([`PENDING_CAPACITY`]): a slow receiver gets
    /// `RecvError::Lagged`. `RecvError::Closed` means the upstream refused the subscription
    /// (logged); asking again then returns [`PendingUnavailable::Refused`] for a while.
    pub fn pending_transactions(
        &self,
    ) -> Result<tokio::sync::broadcast::Receiver<String>, PendingUnavailable> {
        match &self.pending {
            Some(feed) => feed.subscribe(self.chain_id),
            None => Err(PendingUnavailable::NoSocket {
                chain_id: self.chain_id,
            }),
        }
    }

    /// The chain-state version: 0 until the first head is published, then +1 per publish.
    pub fn state_version(&self) -> u64 {
        *self.version.borrow()
    }

    /// Called with the state lock held after every change readers can see, so that an answer
    /// planned before the change and sent after it never carries one version.
    fn bump_version(&self) {
        self.published_ms.store(unix_ms(), Ordering::Relaxed);
        self.version.send_modify(|v| *v += 1);
    }

    /// When the current chain state was published (Unix ms; 0: not yet).
    pub fn published_ms(&self) -> u64 {
        self.published_ms.load(Ordering::Relaxed)
    }

    /// The canonical blocks a subscriber that was sent `sent` (oldest first) gets next (see
    /// [`state::ChainState::blocks_after`]).
    pub fn blocks_after(&self, sent: &[(u64, B256)], max: usize) -> Vec<Header> {
        self.state.lock().chain.blocks_after(sent, max)
    }

    /// Wakes on every publish (see [`Self::state_version`]).
    pub fn watch_state(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Test support: a chain state with these headers (the last is the head) and finality.
    #[cfg(test)]
    pub(crate) fn seed(&self, headers: Vec<Header>, finalized: u64, chain_id: u64) {
        let mut s = self.state.lock();
        s.reported_chain_id = Some(chain_id);
        s.chain.seed(headers, finalized);
        self.bump_version();
    }

    pub fn upstream_healthy(&self) -> bool {
        self.state.lock().healthy
    }

    pub fn head(&self) -> Option<Header> {
        self.state.lock().chain.head().cloned()
    }

    pub fn finalized(&self) -> Option<u64> {
        self.state.lock().chain.finalized()
    }

    pub fn reported_chain_id(&self) -> Option<u64> {
        self.state.lock().reported_chain_id
    }

    /// The tip served to clients: the highest head ever published, so it never goes back.
    pub fn served_tip(&self) -> Option<u64> {
        self.state.lock().chain.served_tip()
    }

    /// The current poll interval: a quarter of the observed block time, within bounds; while
    /// a socket follows the head ([`Self::followed`]), the configured `head_poll_ms`: new
    /// blocks wake the tracker then, and the poll is only a safety net.
    pub fn poll_interval(&self) -> Duration {
        if self.followed() {
            return self.max_poll;
        }
        let bt = self.state.lock().chain.block_time_ms();
        match bt {
            Some(ms) => Duration::from_millis((ms / f64::from(POLLS_PER_BLOCK)) as u64)
                .clamp(MIN_POLL, self.max_poll),
            None => self.max_poll,
        }
    }

    /// The state one request's block tags resolve against, read once so that every call of a
    /// batch answers at the same block.
    pub fn view(&self) -> View {
        let s = self.state.lock();
        let c = &s.chain;
        View {
            head: c.head().map(|h| (h.number, h.hash)),
            finalized: c.finalized(),
            safe: c.safe().or(c.finalized()),
            served_tip: c.served_tip(),
            // Bumped only with the state lock held: consistent with what was read above.
            version: *self.version.borrow(),
        }
    }

    /// Resolves a block tag or number against `view`.
    pub fn resolve(&self, view: &View, tag: &BlockRef) -> Resolved {
        let Some((head, head_hash)) = view.head else {
            return Resolved::Unknown;
        };
        let number = match tag {
            BlockRef::Latest => head,
            BlockRef::Finalized => match view.finalized {
                Some(f) => f,
                None => return Resolved::Unknown,
            },
            BlockRef::Safe => match view.safe {
                Some(n) => n,
                None => return Resolved::Unknown,
            },
            BlockRef::Earliest => 0,
            BlockRef::Number(n) => *n,
            BlockRef::Pending => return Resolved::Unknown,
        };
        if number > head {
            return Resolved::Unknown;
        }
        if view.finalized.is_some_and(|f| number <= f) {
            return Resolved::Final(number);
        }
        if number == head {
            return Resolved::Tip(number, head_hash);
        }
        match self.state.lock().chain.header(number) {
            Some(h) => Resolved::Tip(number, h.hash),
            None => Resolved::Unknown,
        }
    }

    /// Where the node places a block hash a client named.
    pub fn place_hash(&self, hash: &B256) -> Placed {
        {
            let s = self.state.lock();
            if let Some(h) = s.chain.header_by_hash(hash) {
                let fin = s.chain.finalized().is_some_and(|f| h.number <= f);
                return Placed::Ring { final_: fin };
            }
        }
        if self.final_hashes.lock().contains(hash) {
            return Placed::LearnedFinal;
        }
        Placed::Unknown
    }

    /// An upstream answered about `hash`, which the node could not place: learn whether it is
    /// an old final block (in the background, bounded), and if it is newer than the head, catch
    /// up at once ([`Self::reveal`]). `number` is the block's, when the answer showed it.
    pub fn heard_of(&self, hash: B256, number: Option<u64>) {
        if let Some(n) = number {
            self.reveal(n);
            if self.finalized().is_none_or(|f| n > f) {
                return; // Not final (yet): nothing to learn.
            }
        }
        let mut q = self.to_learn.lock();
        if q.len() < TO_LEARN_MAX && !q.contains(&hash) {
            q.push(hash);
        }
    }

    /// An answer showed that block `number` exists upstream. Beyond the head, the tracker
    /// polls at once and reads wait for it ([`Self::caught_up`]): a client that saw a receipt
    /// for block N never reads `latest` below N afterwards.
    pub fn reveal(&self, number: u64) {
        let behind = self
            .state
            .lock()
            .chain
            .head()
            .is_some_and(|h| h.number < number);
        if behind {
            self.ahead.send_if_modified(|a| {
                let raise = number > *a;
                *a = (*a).max(number);
                raise
            });
        }
    }

    /// Waits (at most `limit`) until the tracker has caught up with a block an answer revealed;
    /// returns at once when none is pending.
    pub async fn caught_up(&self, limit: Duration) {
        let mut rx = self.ahead.subscribe();
        if *rx.borrow_and_update() == 0 {
            return;
        }
        let _ = tokio::time::timeout(limit, rx.wait_for(|&a| a == 0)).await;
    }

    /// Is a revealed block pending (see [`Self::reveal`])?
    pub fn behind_revealed(&self) -> bool {
        *self.ahead.borrow() != 0
    }

    /// After a poll: readers stop waiting once the head reached what was revealed, or once a
    /// poll that started after the reveal (`pending` then) still did not see it (with several
    /// upstreams the head is the one they agree on, which may trail one of them).
    fn settle_reveal(&self, pending: u64) {
        let head = self.head().map(|h| h.number);
        self.ahead.send_if_modified(|a| {
            let done = *a != 0 && (head.is_some_and(|h| h >= *a) || *a == pending);
            if done {
                *a = 0;
            }
            done
        });
    }

    /// Is `hash` a block the node knows to be canonical (or finalized and so forever)?
    pub fn header_by_hash(&self, hash: &B256) -> Option<Header> {
        self.state.lock().chain.header_by_hash(hash).cloned()
    }

    pub fn header_by_number(&self, n: u64) -> Option<Header> {
        self.state.lock().chain.header(n).cloned()
    }

    /// The status line for the gateway. Error rate covers the probes since the last report.
    pub fn status(&self) -> ChainStatus {
        let mut s = self.state.lock();
        let now_ms = unix_ms();
        let error_rate = if s.probes == 0 {
            0.0
        } else {
            f64::from(s.failures) / f64::from(s.probes)
        };
        s.probes = 0;
        s.failures = 0;
        let (number, hash, ts) = s
            .chain
            .head()
            .map(|h| (h.number, format!("{:#x}", h.hash), h.timestamp))
            .unwrap_or((0, String::new(), 0));
        ChainStatus {
            // Until the upstream has said, report the configured id; a mismatch shows once known.
            chain_id: s.reported_chain_id.unwrap_or(self.chain_id),
            head_number: number,
            head_hash: hash,
            head_age_ms: if ts == 0 {
                u64::MAX
            } else {
                now_ms.saturating_sub(ts * 1000)
            },
            finalized_number: s.chain.finalized(),
            upstream_healthy: s.healthy,
            error_rate,
            capabilities: self.capabilities(number),
        }
    }
}

pub use daemon::unix_ms;
