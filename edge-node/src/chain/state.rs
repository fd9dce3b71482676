//! The chain-state machine of one served chain: the ring of recent verified headers, the head,
//! the highest tip ever served, `finalized` and `safe`, and the smoothed block time.
//!
//! Pure: no I/O, no locks, no clocks, no metrics. Each step returns what it changed (the
//! hashes a reorg replaced, the fork point, finality moving back) and the tracker
//! ([`super::track`]) acts on that: it evicts the cache, bumps the state version, logs.
//!
//! Invariants kept here:
//! - the ring holds at most [`RING`] headers, each linking to the one below it;
//! - the served tip never goes backwards;
//! - finality only moves forward, except when a block at or below it is replaced
//!   ([`ChainState::retreat_finality`]), and is never above the head.

use std::collections::BTreeMap;

use alloy_primitives::B256;

use crate::header::Header;

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;

/// Recent headers kept; a deeper reorg replaces the whole ring.
pub const RING: u64 = 256;

/// What an upstream said about a finality tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    At(u64),
    /// `null` or an error: the chain has no such tag; depth stands in.
    Unsupported,
    /// No answer (timeout, transport): keep what we had.
    Failed,
}

/// How a new latest header relates to the current head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// It is the head already: nothing to do.
    Same,
    /// A lower block of our own chain: a rollback, or an upstream that is merely behind. Roll
    /// back only once `old_head` is really gone upstream.
    Lower { old_head: B256 },
    /// More than [`RING`] blocks above the head: the ring cannot link across the gap, so it
    /// starts again ([`ChainState::clear_ring`]).
    Beyond,
    /// Anything else: collect its segment back to the ring and apply it.
    New,
}

/// The ring blocks a segment replaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reorg {
    /// Hashes of replaced ring blocks: those at the segment's numbers with another hash
    /// (newest first), then those above the segment's head (a rollback), lowest first.
    pub replaced: Vec<B256>,
    /// The lowest replaced block number.
    pub lowest_replaced: Option<u64>,
}

impl Reorg {
    pub fn is_empty(&self) -> bool {
        self.replaced.is_empty()
    }

    pub fn depth(&self) -> u64 {
        self.replaced.len() as u64
    }

    /// The highest block both chains share; `None` when nothing (or block 0) was replaced.
    pub fn fork_point(&self) -> Option<u64> {
        self.lowest_replaced.and_then(|n| n.checked_sub(1))
    }
}

/// What [`ChainState::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The new head's number.
    pub head: u64,
    pub reorg: Reorg,
    pub finalized: Option<u64>,
    pub safe: Option<u64>,
}

/// Why a segment cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("the segment is empty")]
    Empty,
    #[error("block {number} of the segment does not link to the block below it")]
    Broken { number: u64 },
    #[error("the segment's lowest block {number} does not link to the ring")]
    Unlinked { number: u64 },
}

#[derive(Debug)]
pub struct ChainState {
    headers: BTreeMap<u64, Header>,
    head: Option<Header>,
    served_tip: u64,
    finalized: Option<u64>,
    safe: Option<u64>,
    /// Smoothed time between new heads, from header timestamps.
    block_time_ms: Option<f64>,
    /// Depth used as finality when the upstream knows no `finalized` tag.
    finality_depth: u64,
}

impl ChainState {
    pub fn new(finality_depth: u64) -> Self {
        Self {
            headers: BTreeMap::new(),
            head: None,
            served_tip: 0,
            finalized: None,
            safe: None,
            block_time_ms: None,
            finality_depth,
        }
    }

    pub fn head(&self) -> Option<&Header> {
        self.head.as_ref()
    }

    /// The highest head ever applied, once there is a head.
    pub fn served_tip(&self) -> Option<u64> {
        self.head.as_ref().map(|_| self.served_tip)
    }

    pub fn finalized(&self) -> Option<u64> {
        self.finalized
    }

    pub fn safe(&self) -> Option<u64> {
        self.safe
    }

    pub fn block_time_ms(&self) -> Option<f64> {
        self.block_time_ms
    }

    pub fn header(&self, number: u64) -> Option<&Header> {
        self.headers.get(&number)
    }

    pub fn header_by_hash(&self, hash: &B256) -> Option<&Header> {
        self.headers.values().find(|h| h.hash == *hash)
    }

    /// What a follower that was sent `sent` (oldest first) gets next: the canonical blocks
    /// after the highest block of `sent` still canonical here, up to the head, at most `max`.
    /// Blocks of `sent` above the head are not judged (this node may be behind: the follower
    /// waits). When none of the judged ones is canonical, the blocks from the lowest of them
    /// on, so the follower sees the fork and takes back what it delivered. Never below the
    /// ring's lowest block.
    pub fn blocks_after(&self, sent: &[(u64, B256)], max: usize) -> Vec<Header> {
        let Some(head) = self.head.as_ref().map(|h| h.number) else {
            return Vec::new();
        };
        let mut judged = sent.iter().filter(|(n, _)| *n <= head).peekable();
        let Some(&&(lowest, _)) = judged.peek() else {
            return Vec::new();
        };
        let canonical = |(n, h): &&(u64, B256)| self.headers.get(n).is_some_and(|x| x.hash == *h);
        let from = match judged.filter(canonical).last() {
            Some((n, _)) => n + 1,
            None => lowest,
        };
        let from = from.max(self.headers.keys().next().copied().unwrap_or(head));
        if from > head {
            return Vec::new();
        }
        self.headers
            .range(from..=head)
            .take(max)
            .map(|(_, h)| h.clone())
            .collect()
    }

    /// How `latest` relates to the head (see [`Arrival`]).
    pub fn arrival(&self, latest: &Header) -> Arrival {
        let Some(old) = &self.head else {
            return Arrival::New;
        };
        if old.hash == latest.hash {
            return Arrival::Same;
        }
        let known = self.headers.get(&latest.number).map(|h| h.hash);
        if latest.number < old.number && known == Some(latest.hash) {
            Arrival::Lower { old_head: old.hash }
        } else if latest.number > old.number + RING {
            Arrival::Beyond
        } else {
            Arrival::New
        }
    }

    /// Forgets the ring (head and finality stay): for a head beyond [`RING`] blocks.
    pub fn clear_ring(&mut self) {
        self.headers.clear();
    }

    /// Does a new segment (newest first, each block the parent of the one before) reach far
    /// enough down? It does at block 0, at a ring block that is its lowest block's parent, at
    /// or below the ring's lowest block, when the ring is empty, or at [`RING`] blocks (a
    /// deeper reorg replaces the whole ring).
    pub fn segment_complete(&self, segment: &[Header]) -> bool {
        let Some(cur) = segment.last() else {
            return false;
        };
        if cur.number == 0 || segment.len() as u64 >= RING {
            return true;
        }
        match self.headers.get(&(cur.number - 1)) {
            Some(p) => p.hash == cur.parent_hash,
            None => self
                .headers
                .keys()
                .next()
                .is_none_or(|&lo| cur.number <= lo),
        }
    }

    /// Is `parent` the block `child` names as its parent?
    pub fn links(child: &Header, parent: &Header) -> bool {
        parent.hash == child.parent_hash && parent.number + 1 == child.number
    }

    /// The ring blocks `segment` (newest first) would replace, without changing anything.
    pub fn reorg(&self, segment: &[Header]) -> Reorg {
        let mut reorg = Reorg::default();
        let Some(latest) = segment.first() else {
            return reorg;
        };
        let mut note = |n: u64, hash: B256| {
            reorg.replaced.push(hash);
            reorg.lowest_replaced = Some(reorg.lowest_replaced.map_or(n, |lo| lo.min(n)));
        };
        for h in segment {
            if let Some(old) = self.headers.get(&h.number) {
                if old.hash != h.hash {
                    note(h.number, old.hash);
                }
            }
        }
        for (&n, old) in self.headers.range(latest.number + 1..) {
            note(n, old.hash);
        }
        reorg
    }

    /// Does `reorg` replace a block at or below `finalized`?
    pub fn finality_broken(&self, reorg: &Reorg) -> bool {
        reorg
            .lowest_replaced
            .is_some_and(|lo| self.finalized.is_some_and(|f| lo <= f))
    }

    /// Finality moving backwards: when `reorg` replaced a block at or below `finalized`,
    /// `finalized` drops to just below it (and not above `head`). Returns the new value.
    pub fn retreat_finality(&mut self, reorg: &Reorg, head: u64) -> Option<u64> {
        if !self.finality_broken(reorg) {
            return None;
        }
        let lo = reorg.lowest_replaced?;
        let f = lo.saturating_sub(1).min(head);
        self.finalized = Some(f);
        Some(f)
    }

    /// Makes `segment` (newest first; see [`Self::segment_complete`]) the new head: drops the
    /// blocks it replaces (including any above its head, e.g. a rollback), trims the ring to
    /// [`RING`], and moves finality with the upstream's tags (already clamped to the head).
    pub fn apply(
        &mut self,
        segment: Vec<Header>,
        fin: Tag,
        safe: Tag,
    ) -> Result<Applied, StateError> {
        check_segment(&segment)?;
        if !self.segment_complete(&segment) {
            let low = segment.last().expect("checked non-empty");
            return Err(StateError::Unlinked { number: low.number });
        }
        let reorg = self.reorg(&segment);
        let latest = segment[0].clone();
        self.headers.retain(|&n, _| n <= latest.number);
        for h in segment {
            self.headers.insert(h.number, h);
        }
        while self.headers.len() as u64 > RING {
            self.headers.pop_first();
        }
        self.observe_block_time(&latest);
        let head = latest.number;
        self.served_tip = self.served_tip.max(head);
        self.head = Some(latest);
        self.update_finality(head, fin, safe);
        Ok(Applied {
            head,
            reorg,
            finalized: self.finalized,
            safe: self.safe,
        })
    }

    fn observe_block_time(&mut self, latest: &Header) {
        let Some(old) = &self.head else { return };
        if latest.number > old.number && latest.timestamp > old.timestamp {
            let per_block = (latest.timestamp - old.timestamp) as f64 * 1000.0
                / (latest.number - old.number) as f64;
            self.block_time_ms = Some(match self.block_time_ms {
                Some(prev) => prev * 0.7 + per_block * 0.3,
                None => per_block,
            });
        }
    }

    /// Finality only moves forward, and never above the head (a rollback lowers the head).
    /// Depth stands in only for an upstream that has no `finalized` tag; when the tag could
    /// not be fetched, the previous value stays.
    fn update_finality(&mut self, head: u64, fin: Tag, safe: Tag) {
        let f = match fin {
            Tag::At(n) => Some(n),
            Tag::Unsupported => Some(head.saturating_sub(self.finality_depth)),
            Tag::Failed => None,
        };
        if let Some(f) = f {
            self.finalized = Some(self.finalized.map_or(f, |old| old.max(f)));
        }
        self.finalized = self.finalized.map(|f| f.min(head));
        let fin_now = self.finalized.unwrap_or(0);
        let safe = match safe {
            Tag::At(n) => n,
            _ => fin_now,
        };
        self.safe = Some(safe.max(fin_now).min(head));
    }

    /// Test support: these headers (the last is the head) and finality, as if applied.
    #[cfg(test)]
    pub(crate) fn seed(&mut self, headers: Vec<Header>, finalized: u64) {
        for h in headers {
            self.served_tip = self.served_tip.max(h.number);
            self.head = Some(h.clone());
            self.headers.insert(h.number, h);
        }
        self.finalized = Some(finalized);
        self.safe = Some(finalized);
    }
}

/// A segment is non-empty and each block is the child of the next.
fn check_segment(segment: &[Header]) -> Result<(), StateError> {
    if segment.is_empty() {
        return Err(StateError::Empty);
    }
    match segment
        .windows(2)
        .find(|w| !ChainState::links(&w[0], &w[1]))
    {
        Some(w) => Err(StateError::Broken {
            number: w[0].number,
        }),
        None => Ok(()),
    }
}
