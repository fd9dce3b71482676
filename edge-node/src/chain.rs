//! Light-client chain state per served chain: the chain id the upstreams really serve, a ring
//! of recent verified headers (number, hash, parent, state root, timestamp), the head, the
//! `safe` and `finalized` numbers, and reorg detection.
//!
//! Invariants:
//! - every header in the ring verified (hash = keccak(rlp(header))) and links to its parent;
//! - the served tip (`eth_blockNumber`) never goes backwards;
//! - when the ring learns that a block was replaced, every cached answer naming that block's
//!   hash is evicted before the new head is published.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy_primitives::B256;
use parking_lot::Mutex;
use proto::msg::ChainStatus;
use tokio_util::sync::CancellationToken;

use crate::cache::Store;
use crate::header::{self, Header};
use crate::metrics::Metrics;
use crate::upstream::{Answer, Upstreams};

/// Recent headers kept; deeper reorgs reset the ring.
pub const RING: u64 = 256;
/// Polls per expected block: a few requests per block, not per second per method.
const POLLS_PER_BLOCK: u32 = 4;
const MIN_POLL: Duration = Duration::from_millis(50);
/// An upstream this many blocks behind the highest one is not used.
pub const MAX_UPSTREAM_LAG: u64 = 3;

#[derive(Debug, Default)]
struct State {
    reported_chain_id: Option<u64>,
    headers: BTreeMap<u64, Header>,
    head: Option<Header>,
    served_tip: u64,
    finalized: Option<u64>,
    safe: Option<u64>,
    /// Smoothed time between new heads, from header timestamps.
    block_time_ms: Option<f64>,
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

/// One served chain: its upstreams and tracked state.
pub struct Chain {
    pub chain_id: u64,
    pub upstreams: Upstreams,
    /// Upper bound of the head poll interval; the actual pace follows the block time.
    max_poll: Duration,
    /// Depth used as finality when the upstream knows no `finalized` tag.
    pub finality_depth: u64,
    /// Answer state reads from verified proofs (see [`crate::proof`]).
    pub verify_state: bool,
    state: Mutex<State>,
    /// Hashes of canonical blocks at or below finalized that are older than the ring, learned
    /// in the background (bounded), so by-hash answers about them count as final too.
    final_hashes: Mutex<std::collections::HashSet<B256>>,
    /// Hashes asked about that the node could not place yet (bounded queue).
    to_learn: Mutex<Vec<B256>>,
    /// Bumped, under the state lock, at every change readers can see (publish of a new head,
    /// reorg, rollback, finality, a cleared ring): answers planned and sent under one version
    /// hold for exactly that state, which the gateway is told about (`Head`).
    version: tokio::sync::watch::Sender<u64>,
}

/// Bounds of the learned-hash set and the queue feeding it.
const FINAL_HASHES_MAX: usize = 65_536;
const TO_LEARN_MAX: usize = 256;
const LEARN_PER_POLL: usize = 8;

impl Chain {
    pub fn new(cfg: &crate::config::ChainConfig, upstreams: Upstreams) -> Self {
        Self {
            chain_id: cfg.chain_id,
            upstreams,
            max_poll: Duration::from_millis(cfg.head_poll_ms),
            finality_depth: cfg.finality_depth,
            verify_state: cfg.verify_state,
            state: Mutex::new(State::default()),
            final_hashes: Mutex::new(Default::default()),
            to_learn: Mutex::new(Vec::new()),
            version: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The chain-state version: 0 until the first head is published, then +1 per publish.
    pub fn state_version(&self) -> u64 {
        *self.version.borrow()
    }

    /// Called with the state lock held after every change readers can see, so that an answer
    /// planned before the change and sent after it never carries one version.
    fn bump_version(&self) {
        self.version.send_modify(|v| *v += 1);
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
        for h in headers {
            s.served_tip = s.served_tip.max(h.number);
            s.head = Some(h.clone());
            s.headers.insert(h.number, h);
        }
        s.finalized = Some(finalized);
        s.safe = Some(finalized);
        self.bump_version();
    }

    pub fn upstream_healthy(&self) -> bool {
        self.state.lock().healthy
    }

    pub fn head(&self) -> Option<Header> {
        self.state.lock().head.clone()
    }

    pub fn finalized(&self) -> Option<u64> {
        self.state.lock().finalized
    }

    pub fn reported_chain_id(&self) -> Option<u64> {
        self.state.lock().reported_chain_id
    }

    /// The tip served to clients: the highest head ever published, so it never goes back.
    pub fn served_tip(&self) -> Option<u64> {
        let s = self.state.lock();
        s.head.as_ref().map(|_| s.served_tip)
    }

    /// The current poll interval: a quarter of the observed block time, within bounds.
    pub fn poll_interval(&self) -> Duration {
        let bt = self.state.lock().block_time_ms;
        match bt {
            Some(ms) => Duration::from_millis((ms / f64::from(POLLS_PER_BLOCK)) as u64)
                .clamp(MIN_POLL, self.max_poll),
            None => self.max_poll,
        }
    }

    /// Resolves a block tag or number (already parsed from params).
    pub fn resolve(&self, tag: &BlockRef) -> Resolved {
        let s = self.state.lock();
        let Some(head) = &s.head else {
            return Resolved::Unknown;
        };
        let number = match tag {
            BlockRef::Latest => head.number,
            BlockRef::Finalized => match s.finalized {
                Some(f) => f,
                None => return Resolved::Unknown,
            },
            BlockRef::Safe => match s.safe.or(s.finalized) {
                Some(n) => n,
                None => return Resolved::Unknown,
            },
            BlockRef::Earliest => 0,
            BlockRef::Number(n) => *n,
            BlockRef::Pending => return Resolved::Unknown,
        };
        if number > head.number {
            return Resolved::Unknown;
        }
        if s.finalized.is_some_and(|f| number <= f) {
            return Resolved::Final(number);
        }
        match s.headers.get(&number) {
            Some(h) => Resolved::Tip(number, h.hash),
            None => Resolved::Unknown,
        }
    }

    /// Is `hash` a canonical block at or below finalized (so answers about it never change)?
    /// An unknown hash is queued to be looked up in the background; until then: no.
    pub fn is_final_hash(&self, hash: &B256) -> bool {
        {
            let s = self.state.lock();
            if let Some(h) = s.headers.values().find(|h| h.hash == *hash) {
                return s.finalized.is_some_and(|f| h.number <= f);
            }
        }
        if self.final_hashes.lock().contains(hash) {
            return true;
        }
        let mut q = self.to_learn.lock();
        if q.len() < TO_LEARN_MAX && !q.contains(hash) {
            q.push(*hash);
        }
        false
    }

    /// Looks up a few queued hashes: a block at or below finalized whose hash is also the
    /// canonical one at its number is remembered as final.
    async fn learn_hashes(&self, metrics: &Metrics) {
        let batch: Vec<B256> = {
            let mut q = self.to_learn.lock();
            let n = q.len().min(LEARN_PER_POLL);
            q.drain(..n).collect()
        };
        for hash in batch {
            let params = format!(r#"["{hash:#x}",false]"#);
            let Some(h) = self
                .fetch_header(params.as_bytes(), "eth_getBlockByHash", metrics)
                .await
            else {
                continue;
            };
            if h.hash != hash || self.finalized().is_none_or(|f| h.number > f) {
                continue;
            }
            let params = format!(r#"["{:#x}",false]"#, h.number);
            let canonical = self
                .fetch_header(params.as_bytes(), "eth_getBlockByNumber", metrics)
                .await;
            if canonical.is_some_and(|c| c.hash == hash) {
                let mut set = self.final_hashes.lock();
                if set.len() >= FINAL_HASHES_MAX {
                    set.clear();
                }
                set.insert(hash);
            }
        }
    }

    /// Is `hash` a block the node knows to be canonical (or finalized and so forever)?
    pub fn header_by_hash(&self, hash: &B256) -> Option<Header> {
        let s = self.state.lock();
        s.headers.values().find(|h| h.hash == *hash).cloned()
    }

    pub fn header_by_number(&self, n: u64) -> Option<Header> {
        self.state.lock().headers.get(&n).cloned()
    }

    /// The status line for the gateway. Error rate covers the probes since the last report.
    pub fn status(&self) -> ChainStatus {
        let mut s = self.state.lock();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let error_rate = if s.probes == 0 {
            0.0
        } else {
            f64::from(s.failures) / f64::from(s.probes)
        };
        s.probes = 0;
        s.failures = 0;
        let (number, hash, ts) = s
            .head
            .as_ref()
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
            finalized_number: s.finalized,
            upstream_healthy: s.healthy,
            error_rate,
        }
    }

    /// Follows the upstream head until `stop` fires.
    pub async fn track(
        self: Arc<Self>,
        metrics: Arc<Metrics>,
        cache: Store,
        stop: CancellationToken,
    ) {
        loop {
            let ok = self.poll(&metrics, &cache).await;
            if ok {
                self.learn_hashes(&metrics).await;
            }
            {
                let mut s = self.state.lock();
                s.probes += 1;
                s.fail_streak = if ok { 0 } else { s.fail_streak + 1 };
                if !ok {
                    s.failures += 1;
                }
                let healthy = ok || (s.healthy && s.fail_streak < 2);
                if s.healthy != healthy {
                    tracing::info!(chain_id = self.chain_id, healthy, "upstream health changed");
                }
                s.healthy = healthy;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.poll_interval()) => {}
            }
        }
    }

    /// One poll: learn the chain id once, then the latest header, reconcile, and refresh the
    /// finality tags when the head moved.
    pub async fn poll(&self, metrics: &Metrics, cache: &Store) -> bool {
        let budget = self.upstreams.timeout();
        if self.state.lock().reported_chain_id.is_none() {
            match self.upstreams.call("eth_chainId", b"[]", budget).await {
                Ok(Answer::Result(r)) => {
                    let id = parse_quantity(&r);
                    if id != Some(self.chain_id) {
                        tracing::error!(
                            configured = self.chain_id,
                            reported = ?id,
                            "upstream serves a different chain than configured"
                        );
                    }
                    self.state.lock().reported_chain_id = id;
                }
                other => {
                    tracing::warn!(chain_id = self.chain_id, answer = ?other, "eth_chainId probe failed");
                    return false;
                }
            }
        }
        let latest = if self.upstreams.len() == 1 {
            self.fetch_header(br#"["latest",false]"#, "eth_getBlockByNumber", metrics)
                .await
        } else {
            self.agreed_head(metrics).await
        };
        let Some(latest) = latest else {
            return false;
        };
        let moved = match self.ingest(latest, metrics, cache).await {
            Ok(moved) => moved,
            Err(()) => return false,
        };
        if moved {
            if let Some(h) = self.head() {
                metrics
                    .head_block
                    .with_label_values(&[&self.chain_id.to_string()])
                    .set(h.number as i64);
            }
        }
        true
    }

    /// With several upstreams: the highest block they agree on. Each upstream's latest header
    /// is fetched and verified; upstreams more than [`MAX_UPSTREAM_LAG`] blocks behind the
    /// highest are marked lagging; the rest are asked for their block at the lowest of their
    /// heads, and any whose hash there differs from the majority is marked as on another fork.
    /// Marked upstreams go last in every rotation until they recover.
    async fn agreed_head(&self, metrics: &Metrics) -> Option<Header> {
        let n = self.upstreams.len();
        let heads = futures::future::join_all((0..n).map(|i| {
            self.fetch_header_from(i, br#"["latest",false]"#, "eth_getBlockByNumber", metrics)
        }))
        .await;
        let top = heads.iter().flatten().map(|h| h.number).max()?;
        let mut live = Vec::new();
        for (i, h) in heads.into_iter().enumerate() {
            match h {
                Some(h) if h.number + MAX_UPSTREAM_LAG >= top => live.push((i, h)),
                Some(h) => {
                    tracing::warn!(chain_id = self.chain_id, upstream = %self.upstreams.label(i), behind = top - h.number, "upstream lagging; not used");
                    self.upstreams.mark_faulty(i);
                }
                None => self.upstreams.mark_faulty(i),
            }
        }
        let low = live.iter().map(|(_, h)| h.number).min()?;
        let at_low = format!(r#"["{low:#x}",false]"#);
        let mut votes: Vec<(Header, Vec<usize>)> = Vec::new();
        for (i, h) in live {
            let h = if h.number == low {
                Some(h)
            } else {
                self.fetch_header_from(i, at_low.as_bytes(), "eth_getBlockByNumber", metrics)
                    .await
            };
            let Some(h) = h else {
                self.upstreams.mark_faulty(i);
                continue;
            };
            match votes.iter_mut().find(|(v, _)| v.hash == h.hash) {
                Some((_, who)) => who.push(i),
                None => votes.push((h, vec![i])),
            }
        }
        votes.sort_by_key(|(_, who)| std::cmp::Reverse(who.len()));
        let (agreed, _) = votes.first()?.clone();
        for (h, who) in votes.iter().skip(1) {
            for &i in who {
                tracing::warn!(chain_id = self.chain_id, upstream = %self.upstreams.label(i), number = h.number, "upstream on a different fork; not used");
                self.upstreams.mark_faulty(i);
            }
        }
        Some(agreed)
    }

    async fn fetch_header_from(
        &self,
        i: usize,
        params: &[u8],
        method: &str,
        metrics: &Metrics,
    ) -> Option<Header> {
        let answer = self
            .upstreams
            .call_on(i, method, params, self.upstreams.timeout())
            .await;
        self.verified_header(answer, method, metrics)
    }

    async fn fetch_header(&self, params: &[u8], method: &str, metrics: &Metrics) -> Option<Header> {
        let answer = self
            .upstreams
            .call(method, params, self.upstreams.timeout())
            .await;
        self.verified_header(answer, method, metrics)
    }

    fn verified_header(
        &self,
        answer: Result<Answer, crate::upstream::UpstreamError>,
        method: &str,
        metrics: &Metrics,
    ) -> Option<Header> {
        match answer {
            Ok(Answer::Result(r)) if &r[..] != b"null" => match header::verify(&r) {
                Ok(h) => Some(h),
                Err(e) => {
                    metrics.header_verification_failures.inc();
                    tracing::error!(chain_id = self.chain_id, error = %e, "upstream sent a header that does not verify");
                    None
                }
            },
            other => {
                tracing::warn!(chain_id = self.chain_id, %method, answer = ?other, "header fetch failed");
                None
            }
        }
    }

    /// Adds a new latest header: extends the ring, or walks back to the common ancestor on a
    /// reorg (evicting what the replaced blocks answered). `Ok(true)` when the head changed.
    async fn ingest(&self, latest: Header, metrics: &Metrics, cache: &Store) -> Result<bool, ()> {
        let old_head = self.head();
        if old_head.as_ref().is_some_and(|h| h.hash == latest.hash) {
            return Ok(false);
        }
        if let Some(old) = &old_head {
            let known = self
                .state
                .lock()
                .headers
                .get(&latest.number)
                .map(|h| h.hash);
            if latest.number < old.number && known == Some(latest.hash) {
                // A lower head on our own chain: either a rollback, or an upstream (backend)
                // that is merely behind. Roll back only once our head is really gone.
                let params = format!(r#"["{:#x}",false]"#, old.hash);
                match self
                    .upstreams
                    .call(
                        "eth_getBlockByHash",
                        params.as_bytes(),
                        self.upstreams.timeout(),
                    )
                    .await
                {
                    Ok(Answer::Result(r)) if &r[..] == b"null" => {}
                    Ok(Answer::Result(_)) => return Ok(false),
                    _ => return Err(()),
                }
            }
            // Far behind: the ring cannot link across the gap; start it again from `latest`.
            if latest.number > old.number + RING {
                let mut st = self.state.lock();
                st.headers.clear();
                self.bump_version();
            }
        }
        // Collect the new canonical segment back to a block the ring already agrees with.
        let mut segment = vec![latest.clone()];
        loop {
            let cur = segment.last().expect("segment starts non-empty");
            if cur.number == 0 {
                break;
            }
            let known_parent = self.state.lock().headers.get(&(cur.number - 1)).cloned();
            match known_parent {
                Some(p) if p.hash == cur.parent_hash => break,
                None if self.state.lock().headers.is_empty() => break,
                None if segment.len() as u64 >= RING => break,
                None if self
                    .state
                    .lock()
                    .headers
                    .keys()
                    .next()
                    .is_some_and(|&lo| cur.number <= lo) =>
                {
                    break
                }
                _ => {}
            }
            if segment.len() as u64 >= RING {
                break;
            }
            let params = format!(r#"["{:#x}",false]"#, cur.parent_hash);
            let parent = self
                .fetch_header(params.as_bytes(), "eth_getBlockByHash", metrics)
                .await
                .ok_or(())?;
            if parent.hash != cur.parent_hash || parent.number + 1 != cur.number {
                tracing::error!(chain_id = self.chain_id, "upstream parent does not link");
                return Err(());
            }
            segment.push(parent);
        }

        // Apply: drop replaced blocks (including any above the new head, e.g. a rollback),
        // evict their answers, then publish.
        let mut replaced: Vec<B256> = Vec::new();
        let mut lowest_replaced = u64::MAX;
        let old_finalized;
        {
            let s = self.state.lock();
            old_finalized = s.finalized;
            for h in &segment {
                if let Some(old) = s.headers.get(&h.number) {
                    if old.hash != h.hash {
                        replaced.push(old.hash);
                        lowest_replaced = lowest_replaced.min(h.number);
                    }
                }
            }
            for (&n, old) in s.headers.range(latest.number + 1..) {
                replaced.push(old.hash);
                lowest_replaced = lowest_replaced.min(n);
            }
        }
        if old_finalized.is_some_and(|f| lowest_replaced <= f) {
            // "Final" blocks were replaced (a dev chain rolled back, or finality was wrong):
            // answers keyed by number cannot be told apart, so drop this chain's whole cache.
            self.final_hashes.lock().clear();
            let prefix = format!("{}|", self.chain_id);
            let _ = cache.invalidate_entries_if(move |k, _| k.starts_with(prefix.as_bytes()));
            tracing::error!(
                chain_id = self.chain_id,
                block = lowest_replaced,
                finalized = ?old_finalized,
                "a block at or below finalized was replaced; the chain's cache was dropped"
            );
            let mut st = self.state.lock();
            st.finalized = Some(lowest_replaced.saturating_sub(1).min(latest.number));
            self.bump_version();
            drop(st);
        }
        if !replaced.is_empty() {
            let depth = replaced.len() as u64;
            let needles: Vec<String> = replaced.iter().map(|h| format!("{h:#x}")).collect();
            // Evict before the new head is visible, so no request can pair the new head with
            // an answer about a replaced block.
            let _ = cache.invalidate_entries_if(move |k, _| {
                let k = String::from_utf8_lossy(k);
                needles.iter().any(|n| k.contains(n.as_str()))
            });
            metrics
                .reorgs
                .with_label_values(&[&self.chain_id.to_string()])
                .inc();
            metrics
                .reorg_depth
                .with_label_values(&[&self.chain_id.to_string()])
                .observe(depth as f64);
            tracing::warn!(
                chain_id = self.chain_id,
                depth,
                new_head = latest.number,
                "reorg: replaced blocks evicted from the cache"
            );
        }
        // Finality tags are fetched before the new head is published, so a reader never pairs
        // the new head with the previous head's `finalized`.
        let (fin, safe) = self.fetch_tags(latest.number).await;
        let mut s = self.state.lock();
        s.headers.retain(|&n, _| n <= latest.number);
        for h in segment {
            s.headers.insert(h.number, h);
        }
        while s.headers.len() as u64 > RING {
            let lo = *s.headers.keys().next().expect("non-empty");
            s.headers.remove(&lo);
        }
        if let Some(old) = &old_head {
            if latest.number > old.number && latest.timestamp > old.timestamp {
                let per_block = (latest.timestamp - old.timestamp) as f64 * 1000.0
                    / (latest.number - old.number) as f64;
                s.block_time_ms = Some(match s.block_time_ms {
                    Some(prev) => prev * 0.7 + per_block * 0.3,
                    None => per_block,
                });
            }
        }
        let head = latest.number;
        s.served_tip = s.served_tip.max(head);
        s.head = Some(latest);
        // Finality only moves forward, and never above the head (a rollback lowers the head).
        // Depth stands in only for an upstream that has no `finalized` tag; when the tag could
        // not be fetched, the previous value stays.
        let f = match fin {
            Tag::At(n) => Some(n),
            Tag::Unsupported => Some(head.saturating_sub(self.finality_depth)),
            Tag::Failed => None,
        };
        if let Some(f) = f {
            s.finalized = Some(s.finalized.map_or(f, |old| old.max(f)));
        }
        s.finalized = s.finalized.map(|f| f.min(head));
        let fin_now = s.finalized.unwrap_or(0);
        let safe = match safe {
            Tag::At(n) => n,
            _ => fin_now,
        };
        s.safe = Some(safe.max(fin_now).min(head));
        self.bump_version();
        Ok(true)
    }

    /// The upstream's `finalized` and `safe` blocks, asked at once.
    async fn fetch_tags(&self, head: u64) -> (Tag, Tag) {
        let (fin, safe) = futures::join!(self.tag_number("finalized"), self.tag_number("safe"));
        let clamp = |t: Tag| match t {
            Tag::At(n) => Tag::At(n.min(head)),
            other => other,
        };
        (clamp(fin), clamp(safe))
    }

    async fn tag_number(&self, tag: &str) -> Tag {
        let params = format!(r#"["{tag}",false]"#);
        match self
            .upstreams
            .call(
                "eth_getBlockByNumber",
                params.as_bytes(),
                self.upstreams.timeout(),
            )
            .await
        {
            Ok(Answer::Result(r)) => serde_json::from_slice::<serde_json::Value>(&r)
                .ok()
                .and_then(|v| parse_hex(v.get("number")?.as_str()?))
                .map_or(Tag::Unsupported, Tag::At),
            // An error answer: the upstream does not know the tag (pre-merge or a dev chain).
            Ok(Answer::Error(_)) => Tag::Unsupported,
            Err(_) => Tag::Failed,
        }
    }
}

/// What an upstream said about a finality tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    At(u64),
    /// `null` or an error: the chain has no such tag; depth stands in.
    Unsupported,
    /// No answer (timeout, transport): keep what we had.
    Failed,
}

/// A block parameter as a client wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockRef {
    Latest,
    Safe,
    Finalized,
    Earliest,
    Pending,
    Number(u64),
}

impl BlockRef {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "latest" => Self::Latest,
            "safe" => Self::Safe,
            "finalized" => Self::Finalized,
            "earliest" => Self::Earliest,
            "pending" => Self::Pending,
            n => Self::Number(parse_hex(n)?),
        })
    }
}

/// Parses a JSON quantity string such as `"0x7a69"`.
pub fn parse_quantity(raw: &[u8]) -> Option<u64> {
    let s: String = serde_json::from_slice(raw).ok()?;
    parse_hex(&s)
}

pub fn parse_hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quantities_and_block_refs() {
        assert_eq!(parse_quantity(b"\"0x7a69\""), Some(31337));
        assert_eq!(parse_quantity(b"\"7a69\""), None);
        assert_eq!(BlockRef::parse("0x10"), Some(BlockRef::Number(16)));
        assert_eq!(BlockRef::parse("latest"), Some(BlockRef::Latest));
        assert_eq!(BlockRef::parse("bogus"), None);
    }
}
