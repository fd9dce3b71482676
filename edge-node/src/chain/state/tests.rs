//! The state machine on hand-made headers (they need not hash-verify: the machine takes
//! headers the tracker already verified).

use super::fixtures::*;
use super::*;

fn ring_numbers(s: &ChainState) -> Vec<u64> {
    s.headers.keys().copied().collect()
}

#[test]
fn linear_extension_replaces_nothing() {
    let mut s = chain(10, 5);
    let next = segment(11, 11, 0, 0);
    assert_eq!(s.arrival(&next[0]), Arrival::New);
    assert!(s.segment_complete(&next));
    let a = s.apply(next, Tag::At(6), Tag::At(8)).unwrap();
    assert_eq!(a.head, 11);
    assert!(a.reorg.is_empty());
    assert_eq!(a.reorg.fork_point(), None);
    assert_eq!((a.finalized, a.safe), (Some(6), Some(8)));
    assert_eq!(s.served_tip(), Some(11));
    assert_eq!(s.arrival(s.head().unwrap()), Arrival::Same);
    // 12 s apart in the headers: the block time is learned.
    assert_eq!(s.block_time_ms(), Some(12_000.0));
}

#[test]
fn one_block_reorg_replaces_the_head() {
    let mut s = chain(10, 5);
    let other = segment(10, 10, 1, 0);
    assert_eq!(s.arrival(&other[0]), Arrival::New);
    let a = s.apply(other, Tag::At(5), Tag::Failed).unwrap();
    assert_eq!(a.reorg.replaced, vec![hash(10, 0)]);
    assert_eq!(a.reorg.fork_point(), Some(9));
    assert_eq!(s.header(10).unwrap().hash, hash(10, 1));
    assert_eq!(s.header_by_hash(&hash(10, 0)), None);
}

#[test]
fn multi_block_reorg_names_every_replaced_hash_and_the_fork_point() {
    let mut s = chain(20, 10);
    let fork = segment(16, 22, 1, 0);
    // Walking back one block at a time: incomplete until it meets the ring's block 15.
    assert!(!s.segment_complete(&fork[..3]));
    assert!(s.segment_complete(&fork));
    let preview = s.reorg(&fork);
    let a = s.apply(fork, Tag::At(10), Tag::Failed).unwrap();
    assert_eq!(a.reorg, preview);
    let want: Vec<B256> = (16..=20).rev().map(|n| hash(n, 0)).collect();
    assert_eq!(a.reorg.replaced, want);
    assert_eq!(a.reorg.depth(), 5);
    assert_eq!(a.reorg.lowest_replaced, Some(16));
    assert_eq!(a.reorg.fork_point(), Some(15));
    assert_eq!(a.head, 22);
    assert_eq!(s.header(15).unwrap().hash, hash(15, 0));
    assert_eq!(s.header(16).unwrap().hash, hash(16, 1));
}

/// A reorg deeper than the ring: the walk stops at [`RING`] blocks without linking, and the
/// segment replaces the whole ring; old-fork blocks below it are trimmed away.
#[test]
fn deep_reorg_past_the_ring_replaces_the_whole_ring() {
    let top = RING + 9;
    let mut s = chain(top, 0);
    assert_eq!(ring_numbers(&s).len() as u64, RING);
    assert_eq!(s.header(9), None);
    let fork = segment(20, RING + 19, 1, 1);
    assert!(!s.segment_complete(&fork[..RING as usize - 1]));
    assert!(s.segment_complete(&fork));
    let a = s.apply(fork, Tag::Failed, Tag::Failed).unwrap();
    assert_eq!(a.reorg.depth(), top - 20 + 1);
    assert_eq!(a.reorg.lowest_replaced, Some(20));
    assert_eq!(ring_numbers(&s), (20..=RING + 19).collect::<Vec<_>>());
    assert!((20..=RING + 19).all(|n| s.header(n).unwrap().hash == hash(n, 1)));
}

/// A head more than [`RING`] blocks ahead: the tracker clears the ring, and then the new head
/// alone is a complete segment.
#[test]
fn head_beyond_the_ring_starts_it_again() {
    let mut s = chain(10, 5);
    let far = segment(RING + 11, RING + 11, 0, 0);
    assert_eq!(s.arrival(&far[0]), Arrival::Beyond);
    assert!(!s.segment_complete(&far));
    s.clear_ring();
    assert!(s.segment_complete(&far));
    let a = s.apply(far, Tag::Failed, Tag::Failed).unwrap();
    assert!(a.reorg.is_empty());
    assert_eq!(ring_numbers(&s), vec![RING + 11]);
    assert_eq!(a.finalized, Some(5));
}

#[test]
fn rollback_to_a_lower_head_on_the_same_chain() {
    let mut s = chain(20, 10);
    let lower = segment(15, 15, 0, 0);
    assert_eq!(
        s.arrival(&lower[0]),
        Arrival::Lower {
            old_head: hash(20, 0)
        }
    );
    assert!(s.segment_complete(&lower));
    let a = s.apply(lower, Tag::At(10), Tag::At(20)).unwrap();
    let want: Vec<B256> = (16..=20).map(|n| hash(n, 0)).collect();
    assert_eq!(a.reorg.replaced, want);
    assert_eq!(a.reorg.fork_point(), Some(15));
    assert_eq!(a.head, 15);
    assert_eq!(ring_numbers(&s), (0..=15).collect::<Vec<_>>());
    // The served tip never goes back; `safe` is held to the head.
    assert_eq!(s.served_tip(), Some(20));
    assert_eq!(a.safe, Some(15));
}

#[test]
fn finality_moves_back_only_when_a_final_block_is_replaced() {
    let mut s = chain(20, 18);
    let fork = segment(16, 21, 1, 0);
    let reorg = s.reorg(&fork);
    assert!(s.finality_broken(&reorg));
    assert_eq!(s.retreat_finality(&reorg, 21), Some(15));
    assert_eq!(s.finalized(), Some(15));
    // The upstream's lower tag does not pull it further back; a higher one moves it on.
    let a = s.apply(fork, Tag::At(12), Tag::Failed).unwrap();
    assert_eq!(a.finalized, Some(15));
    let a = s
        .apply(segment(22, 22, 1, 1), Tag::At(19), Tag::Failed)
        .unwrap();
    assert_eq!(a.finalized, Some(19));
    // Not broken: nothing to retreat.
    let calm = s.reorg(&segment(23, 23, 1, 1));
    assert!(!s.finality_broken(&calm));
    assert_eq!(s.retreat_finality(&calm, 23), None);
}

#[test]
fn finality_tags_failed_and_unsupported() {
    let mut s = chain(100, 30);
    let a = s
        .apply(segment(101, 101, 0, 0), Tag::Failed, Tag::Failed)
        .unwrap();
    assert_eq!((a.finalized, a.safe), (Some(30), Some(30)));
    // No `finalized` tag upstream: depth (64) stands in.
    let a = s
        .apply(segment(102, 102, 0, 0), Tag::Unsupported, Tag::Unsupported)
        .unwrap();
    assert_eq!((a.finalized, a.safe), (Some(38), Some(38)));
}

#[test]
fn segments_that_do_not_link_are_refused_and_change_nothing() {
    let mut s = chain(20, 10);
    assert_eq!(
        s.apply(Vec::new(), Tag::Failed, Tag::Failed),
        Err(StateError::Empty)
    );
    let mut broken = segment(18, 21, 1, 0);
    broken[1].parent_hash = hash(18, 7);
    assert_eq!(
        s.apply(broken, Tag::Failed, Tag::Failed),
        Err(StateError::Broken { number: 20 })
    );
    // Links inside, but its lowest block's parent is not the ring's block 17.
    let dangling = segment(18, 21, 1, 1);
    assert!(!s.segment_complete(&dangling));
    assert_eq!(
        s.apply(dangling, Tag::Failed, Tag::Failed),
        Err(StateError::Unlinked { number: 18 })
    );
    assert_eq!(s.head().unwrap().hash, hash(20, 0));
    assert_eq!(ring_numbers(&s), (0..=20).collect::<Vec<_>>());
    assert!(!ChainState::links(
        &segment(5, 5, 0, 0)[0],
        &segment(3, 3, 0, 0)[0]
    ));
}

#[test]
fn followers_get_the_blocks_after_what_they_were_sent() {
    let mut s = chain(10, 2);
    let sent = |v: &[(u64, u8)]| v.iter().map(|&(n, f)| (n, hash(n, f))).collect::<Vec<_>>();
    let numbers = |hs: Vec<Header>| hs.iter().map(|h| (h.number, h.hash)).collect::<Vec<_>>();
    // Up to date: nothing; behind: the rest, in order.
    assert!(s.blocks_after(&sent(&[(9, 0), (10, 0)]), 100).is_empty());
    assert_eq!(
        numbers(s.blocks_after(&sent(&[(7, 0), (8, 0)]), 100)),
        sent(&[(9, 0), (10, 0)])
    );
    assert_eq!(s.blocks_after(&sent(&[(7, 0)]), 1).len(), 1);
    // Ahead of this node (it is behind the one the follower came from): wait.
    assert!(s.blocks_after(&sent(&[(11, 0), (12, 0)]), 100).is_empty());
    // Block 10 delivered on a branch this node does not have: resume after the highest
    // canonical block, so the follower sees 10 again with another parent... of fork 0.
    assert_eq!(
        numbers(s.blocks_after(&sent(&[(9, 0), (10, 7)]), 100)),
        sent(&[(10, 0)])
    );
    // A reorg here: 9 and 10 replaced by fork 1.
    s.apply(segment(9, 10, 1, 0), Tag::At(2), Tag::Failed)
        .unwrap();
    assert_eq!(
        numbers(s.blocks_after(&sent(&[(8, 0), (9, 0), (10, 0)]), 100)),
        sent(&[(9, 1), (10, 1)])
    );
    // None of what was sent is canonical: from the lowest judged block on.
    assert_eq!(
        numbers(s.blocks_after(&sent(&[(9, 5), (10, 5)]), 100)),
        sent(&[(9, 1), (10, 1)])
    );
    // Nothing sent yet, or no head: nothing (a new follower starts after the head).
    assert!(s.blocks_after(&[], 100).is_empty());
    assert!(ChainState::new(64)
        .blocks_after(&sent(&[(1, 0)]), 100)
        .is_empty());
}
