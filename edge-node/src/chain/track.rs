//! Following the upstreams: polling the head (with several upstreams, the head they agree
//! on), fetching and verifying headers and finality tags, learning hashes of old final
//! blocks, and acting on what the state machine ([`super::state`]) reports: cache evictions
//! before a new head is visible, state-version bumps, metrics and logs.

use std::sync::Arc;

use alloy_primitives::B256;
use daemon::loglimit::LogLimit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::pace::Pace;
use super::state::{Arrival, ChainState, Reorg, StateError, Tag};
use super::{Chain, FINAL_HASHES_MAX};
use crate::blockref::{parse_hex, parse_quantity};
use crate::cache::Store;
use crate::header::{self, Header};
use crate::metrics::Metrics;
use crate::upstream::{Answer, UpstreamError};

static HEADER_FETCH_LOG: LogLimit = LogLimit::new(10, 60);
static BAD_HEADER_LOG: LogLimit = LogLimit::new(10, 60);

/// An upstream this many blocks behind the highest one is not used.
pub const MAX_UPSTREAM_LAG: u64 = 3;
const LEARN_PER_POLL: usize = 8;

/// Why a new latest header could not be taken in (the poll counts as failed).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("asking whether the old head {head:#x} is still known failed")]
    HeadCheck {
        head: B256,
        #[source]
        source: UpstreamError,
    },
    #[error(
        "the upstream answered an error when asked whether the old head {head:#x} is still known"
    )]
    HeadCheckRefused { head: B256 },
    #[error("parent {hash:#x} of block {child} could not be fetched")]
    ParentMissing { child: u64, hash: B256 },
    #[error("the upstream's parent of block {child} does not link to it")]
    ParentNotLinking { child: u64 },
    #[error("the new segment could not be applied")]
    Apply(#[from] StateError),
}

impl Chain {
    /// Follows the upstream head until `stop` fires.
    pub async fn track(
        self: Arc<Self>,
        metrics: Arc<Metrics>,
        cache: Store,
        stop: CancellationToken,
    ) {
        let mut revealed = self.ahead.subscribe();
        // A socket coming up or going down changes the pace: poll at once and pace anew.
        let mut followers = self.followers.subscribe();
        let mut pace = Pace::default();
        // Start of the last poll that found no new head: a new head waited at most this long.
        let mut last_miss: Option<Instant> = None;
        loop {
            let pending = *revealed.borrow_and_update();
            let started = Instant::now();
            let polled = self.poll(&metrics, &cache).await;
            self.settle_reveal(pending);
            match polled {
                Some(true) => {
                    let now = Instant::now();
                    pace.arrived(now);
                    if let Some(miss) = last_miss.take() {
                        metrics
                            .head_delay
                            .with_label_values(&[&self.chain_id.to_string()])
                            .observe((now - miss).as_secs_f64());
                    }
                }
                Some(false) => last_miss = Some(started),
                None => {}
            }
            if polled.is_some() {
                self.learn_hashes(&metrics).await;
            }
            self.record_probe(polled.is_some());
            // An answer (or a socket's `newHeads`) that revealed a block beyond the head cuts
            // the wait short.
            followers.borrow_and_update();
            let wait = pace.next_wait(Instant::now(), self.poll_interval(), self.followed());
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = revealed.wait_for(|&a| a != 0) => {}
                _ = followers.changed() => {}
            }
        }
    }

    /// Counts a poll for the error rate; two failures in a row mark the upstream down.
    fn record_probe(&self, ok: bool) {
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

    /// One poll: learn the chain id once, then the latest header, reconcile, and refresh the
    /// finality tags when the head moved. `Some(moved)`, or `None` when the poll failed.
    pub async fn poll(&self, metrics: &Metrics, cache: &Store) -> Option<bool> {
        if self.state.lock().reported_chain_id.is_none() && !self.learn_chain_id().await {
            return None;
        }
        let latest = if self.upstreams.len() == 1 {
            self.fetch_header(br#"["latest",false]"#, "eth_getBlockByNumber", metrics)
                .await
        } else {
            self.agreed_head(metrics).await
        };
        let latest = latest?;
        let moved = match self.ingest(latest, metrics, cache).await {
            Ok(moved) => moved,
            Err(e) => {
                tracing::debug!(chain_id = self.chain_id, error = %e, "new head not taken in");
                return None;
            }
        };
        if moved {
            if let Some(h) = self.head() {
                metrics
                    .head_block
                    .with_label_values(&[&self.chain_id.to_string()])
                    .set(h.number as i64);
            }
        }
        Some(moved)
    }

    /// Asks the upstreams which chain they serve; `false` when they did not say.
    async fn learn_chain_id(&self) -> bool {
        let budget = self.upstreams.timeout();
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
                true
            }
            other => {
                tracing::warn!(chain_id = self.chain_id, answer = ?other, "eth_chainId probe failed");
                false
            }
        }
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
        answer: Result<Answer, UpstreamError>,
        method: &str,
        metrics: &Metrics,
    ) -> Option<Header> {
        match answer {
            Ok(Answer::Result(r)) if &r[..] != b"null" => match header::verify(&r) {
                Ok(h) => Some(h),
                Err(e) => {
                    metrics.header_verification_failures.inc();
                    if let Some(suppressed) = BAD_HEADER_LOG.allow() {
                        tracing::error!(chain_id = self.chain_id, error = %e, suppressed, "upstream sent a header that does not verify");
                    }
                    None
                }
            },
            other => {
                // Also reached for hashes callers named: limited, so callers cannot fill the log.
                if let Some(suppressed) = HEADER_FETCH_LOG.allow() {
                    tracing::warn!(chain_id = self.chain_id, %method, answer = ?other, suppressed, "header fetch failed");
                }
                None
            }
        }
    }

    /// Adds a new latest header: extends the ring, or walks back to the common ancestor on a
    /// reorg (evicting what the replaced blocks answered). `Ok(true)` when the head changed.
    async fn ingest(
        &self,
        latest: Header,
        metrics: &Metrics,
        cache: &Store,
    ) -> Result<bool, IngestError> {
        let arrival = self.state.lock().chain.arrival(&latest);
        match arrival {
            Arrival::Same => return Ok(false),
            Arrival::Lower { old_head } => {
                if !self.head_gone(old_head).await? {
                    return Ok(false);
                }
            }
            Arrival::Beyond => {
                let mut st = self.state.lock();
                st.chain.clear_ring();
                self.bump_version();
            }
            Arrival::New => {}
        }
        let segment = self.collect_segment(latest, metrics).await?;
        let head = segment[0].number;
        let (reorg, finality_broken, old_finalized) = {
            let s = self.state.lock();
            let reorg = s.chain.reorg(&segment);
            let broken = s.chain.finality_broken(&reorg);
            (reorg, broken, s.chain.finalized())
        };
        if finality_broken {
            self.drop_chain_cache(&reorg, head, old_finalized, cache);
        }
        if !reorg.is_empty() {
            self.evict_replaced(&reorg, head, metrics, cache);
        }
        // Finality tags are fetched before the new head is published, so a reader never pairs
        // the new head with the previous head's `finalized`.
        let (fin, safe) = self.fetch_tags(head).await;
        let mut s = self.state.lock();
        // Cannot fail here: the walk above checked every link, and only this tracker task
        // changes the ring. Evicting first is safe either way (it only costs misses).
        s.chain.apply(segment, fin, safe)?;
        self.bump_version();
        Ok(true)
    }

    /// A lower head on our own chain is either a rollback, or an upstream (backend) that is
    /// merely behind: is our head really gone upstream?
    async fn head_gone(&self, head: B256) -> Result<bool, IngestError> {
        let params = format!(r#"["{head:#x}",false]"#);
        let answer = self
            .upstreams
            .call(
                "eth_getBlockByHash",
                params.as_bytes(),
                self.upstreams.timeout(),
            )
            .await;
        match answer {
            Ok(Answer::Result(r)) => Ok(&r[..] == b"null"),
            Ok(Answer::Error(_)) => Err(IngestError::HeadCheckRefused { head }),
            Err(source) => Err(IngestError::HeadCheck { head, source }),
        }
    }

    /// The new canonical segment, newest first, back to a block the ring already agrees with
    /// (see [`ChainState::segment_complete`]).
    async fn collect_segment(
        &self,
        latest: Header,
        metrics: &Metrics,
    ) -> Result<Vec<Header>, IngestError> {
        let mut segment = vec![latest];
        while !self.state.lock().chain.segment_complete(&segment) {
            let cur = segment.last().expect("segment starts non-empty");
            let params = format!(r#"["{:#x}",false]"#, cur.parent_hash);
            let parent = self
                .fetch_header(params.as_bytes(), "eth_getBlockByHash", metrics)
                .await
                .ok_or(IngestError::ParentMissing {
                    child: cur.number,
                    hash: cur.parent_hash,
                })?;
            if !ChainState::links(cur, &parent) {
                tracing::error!(chain_id = self.chain_id, "upstream parent does not link");
                return Err(IngestError::ParentNotLinking { child: cur.number });
            }
            segment.push(parent);
        }
        Ok(segment)
    }

    /// "Final" blocks were replaced (a dev chain rolled back, or finality was wrong): answers
    /// keyed by number cannot be told apart, so the chain's whole cache goes, then finality
    /// moves back below the replaced blocks.
    fn drop_chain_cache(&self, reorg: &Reorg, head: u64, old: Option<u64>, cache: &Store) {
        self.final_hashes.lock().clear();
        let prefix = format!("{}|", self.chain_id);
        let _ = cache.invalidate_entries_if(move |k, _| k.starts_with(prefix.as_bytes()));
        tracing::error!(
            chain_id = self.chain_id,
            block = reorg.lowest_replaced,
            finalized = ?old,
            "a block at or below finalized was replaced; the chain's cache was dropped"
        );
        let mut st = self.state.lock();
        st.chain.retreat_finality(reorg, head);
        self.bump_version();
    }

    /// Evicts every cached answer naming a replaced block, before the new head is visible, so
    /// no request can pair the new head with an answer about a replaced block.
    fn evict_replaced(&self, reorg: &Reorg, head: u64, metrics: &Metrics, cache: &Store) {
        let needles: Vec<String> = reorg.replaced.iter().map(|h| format!("{h:#x}")).collect();
        let _ = cache.invalidate_entries_if(move |k, _| {
            let k = String::from_utf8_lossy(k);
            needles.iter().any(|n| k.contains(n.as_str()))
        });
        let label = self.chain_id.to_string();
        metrics.reorgs.with_label_values(&[&label]).inc();
        metrics
            .reorg_depth
            .with_label_values(&[&label])
            .observe(reorg.depth() as f64);
        tracing::warn!(
            chain_id = self.chain_id,
            depth = reorg.depth(),
            fork_point = reorg.fork_point(),
            new_head = head,
            "reorg: replaced blocks evicted from the cache"
        );
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
