//! The chain tip as callers have seen it, per chain: the highest head (and finalized block)
//! any healthy node has announced, raised further by block numbers in answers (a receipt
//! for block N, `eth_blockNumber` = N).
//!
//! Invariant: what one caller has been shown, no caller is later shown less of. The request
//! path enforces it with the mark: `eth_blockNumber` never answers below it, a read of a
//! moving tag goes first to nodes that have reached it, and the node serving it is told the
//! mark, so it catches up before answering if it must (see `edge_node`'s read-your-writes).

use std::sync::atomic::{AtomicU64, Ordering};

/// Blocks an answer may show beyond the highest head any node announced: a receipt fetched
/// upstream can be a block or two ahead of every node's head, never far ahead. A node that
/// answers with a block far beyond that is not believed (it would move every caller's tip).
pub const ANSWER_SLACK: u64 = 8;

/// Health checks in a row with every live node below the mark before the mark follows them
/// down: the chain itself went back (a dev chain's revert, a rollback). Nodes that are merely a
/// block behind catch up within milliseconds; two seconds of all of them below is no lag.
pub const FOLLOW_DOWN_AFTER: u32 = 8;

#[derive(Debug, Default)]
struct Mark {
    /// Health checks in a row that found every live node below `shown`.
    below: std::sync::atomic::AtomicU32,
    /// Highest head announced by a healthy node (from `Head` frames and status reports),
    /// plus one: 0 until a node announced one (block 0 is a head too).
    announced: AtomicU64,
    /// Highest head shown to anyone: `announced`, or a block an answer showed.
    shown: AtomicU64,
    finalized: AtomicU64,
}

/// The per-chain marks (0: nothing known yet).
#[derive(Debug, Default)]
pub struct Marks {
    chains: foldhash::HashMap<u64, Mark>,
}

impl Marks {
    pub fn new(chain_ids: impl IntoIterator<Item = u64>) -> Self {
        Self {
            chains: chain_ids
                .into_iter()
                .map(|c| (c, Mark::default()))
                .collect(),
        }
    }

    /// A healthy node announced this head (and finalized block, when it said).
    pub fn announced(&self, chain_id: u64, head: u64, finalized: Option<u64>) {
        let Some(m) = self.chains.get(&chain_id) else {
            return;
        };
        m.announced
            .fetch_max(head.saturating_add(1), Ordering::AcqRel);
        m.shown.fetch_max(head, Ordering::AcqRel);
        if let Some(f) = finalized {
            m.finalized.fetch_max(f.min(head), Ordering::AcqRel);
        }
    }

    /// An answer showed block `n` exists; believed up to [`ANSWER_SLACK`] past the heads the
    /// nodes announced.
    pub fn shown(&self, chain_id: u64, n: u64) {
        let Some(m) = self.chains.get(&chain_id) else {
            return;
        };
        let Some(announced) = m.announced.load(Ordering::Acquire).checked_sub(1) else {
            return;
        };
        if n <= announced.saturating_add(ANSWER_SLACK) {
            m.shown.fetch_max(n, Ordering::AcqRel);
        }
    }

    /// Called each health interval with the best head live nodes report for the chain: when
    /// the mark has stayed above all of them for [`FOLLOW_DOWN_AFTER`] checks, the chain went
    /// back, and the mark follows it down (else every tag read would keep asking nodes to
    /// catch up with a block that no longer exists).
    pub fn follow(&self, chain_id: u64, best: u64) {
        let Some(m) = self.chains.get(&chain_id) else {
            return;
        };
        if best >= m.shown.load(Ordering::Acquire) {
            m.below.store(0, Ordering::Relaxed);
            return;
        }
        if m.below.fetch_add(1, Ordering::Relaxed) + 1 >= FOLLOW_DOWN_AFTER {
            m.below.store(0, Ordering::Relaxed);
            m.shown.store(best, Ordering::Release);
            m.announced.store(best + 1, Ordering::Release);
            m.finalized.fetch_min(best, Ordering::AcqRel);
            tracing::warn!(chain_id, best, "every node is below the tip callers were shown; the chain went back, and so does the mark");
        }
    }

    /// The highest head shown to anyone (0 before any).
    pub fn head(&self, chain_id: u64) -> u64 {
        self.chains
            .get(&chain_id)
            .map_or(0, |m| m.shown.load(Ordering::Acquire))
    }

    pub fn finalized(&self, chain_id: u64) -> u64 {
        self.chains
            .get(&chain_id)
            .map_or(0, |m| m.finalized.load(Ordering::Acquire))
    }
}

/// Does a call read at a moving tag (so the mark applies to it)? `eth_blockNumber`, a
/// `latest`/`safe`/`finalized`/`pending` parameter, or `eth_getLogs` (its bounds default to
/// `latest`). A cheap scan of the raw params: a false positive only orders nodes.
pub fn reads_tip(method: &str, params: &[u8]) -> bool {
    method == "eth_blockNumber"
        || method == "eth_getLogs"
        || quotes_any(params, &[b"latest", b"safe", b"finalized", b"pending"])
}

/// Does a call read at `safe` or `finalized` (so the finalized mark applies too)?
pub fn reads_finalized(params: &[u8]) -> bool {
    quotes_any(params, &[b"safe", b"finalized"])
}

/// Does `params` hold one of `words` (none empty) in quotes (`"latest"`)? One pass, looking
/// only after each quote, instead of one pass per word; a quote followed by no word's first
/// letter (an address, a hash, a key) costs a byte comparison per word, not a string one.
fn quotes_any(params: &[u8], words: &[&[u8]]) -> bool {
    debug_assert!(words.iter().all(|w| !w.is_empty()));
    let mut rest = params;
    while let Some(at) = memchr::memchr(b'"', rest) {
        rest = &rest[at + 1..];
        let Some(&first) = rest.first() else {
            return false;
        };
        let quoted = |w: &&[u8]| {
            w.first() == Some(&first) && rest.starts_with(w) && rest.get(w.len()) == Some(&b'"')
        };
        if words.iter().any(quoted) {
            return true;
        }
    }
    false
}

/// The block number of a quantity answer (`"0x1a"`).
pub fn quantity(result: &[u8]) -> Option<u64> {
    let s = result.strip_prefix(b"\"0x")?.strip_suffix(b"\"")?;
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok()
}

/// The `blockNumber` of a transaction or receipt answer, found without parsing the whole of
/// it (receipts can be large; a receipt's logs repeat the same number).
pub fn block_number_of(result: &[u8]) -> Option<u64> {
    const FIELD: &[u8] = b"\"blockNumber\"";
    let at = result.windows(FIELD.len()).position(|w| w == FIELD)? + FIELD.len();
    let rest = &result[at..];
    let rest = &rest[rest.iter().position(|b| !b.is_ascii_whitespace())?..];
    let rest = rest.strip_prefix(b":")?;
    let rest = &rest[rest.iter().position(|b| !b.is_ascii_whitespace())?..];
    let end = rest.iter().skip(1).position(|&b| b == b'"')? + 2;
    quantity(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first-letter filter finds what comparing every word after every quote finds.
    #[test]
    fn quotes_any_agrees_with_comparing_every_word() {
        let words: &[&[u8]] = &[b"latest", b"safe", b"finalized", b"pending"];
        let every = |params: &[u8]| {
            (0..params.len()).any(|i| {
                params[i] == b'"'
                    && words.iter().any(|w| {
                        params[i + 1..].starts_with(w) && params.get(i + 1 + w.len()) == Some(&b'"')
                    })
            })
        };
        for p in [
            r#"["0xab",{"blockHash":"0x1"}]"#,
            r#"["0xab","latest"]"#,
            r#"["0xab","safe"]"#,
            r#"["safety","pend","finalize","latest "]"#,
            r#"["", "", "s"]"#,
            r#"[{"to":"0x1","data":"0x"},"finalized"]"#,
            r#"["latest"#,
            r#"""#,
            "",
            r#"["p","pending"]"#,
        ] {
            assert_eq!(quotes_any(p.as_bytes(), words), every(p.as_bytes()), "{p}");
        }
    }

    #[test]
    fn tags_are_found_only_whole_and_quoted() {
        let p = |s: &str| s.as_bytes().to_vec();
        assert!(reads_tip("eth_getBalance", &p(r#"["0xab","latest"]"#)));
        assert!(reads_tip("eth_call", &p(r#"[{"to":"0x1"}, "pending"]"#)));
        assert!(reads_tip("eth_blockNumber", b""));
        assert!(reads_tip("eth_getLogs", &p(r#"[{"fromBlock":"0x1"}]"#)));
        assert!(!reads_tip("eth_getBalance", &p(r#"["0xab","0x10"]"#)));
        assert!(!reads_tip(
            "eth_getBalance",
            &p(r#"["latestx","x-latest"]"#)
        ));
        assert!(!reads_tip(
            "eth_getBalance",
            &p(r#"["0xab",{"blockHash":"0x1"}]"#)
        ));
        assert!(reads_finalized(&p(r#"["0xab","finalized"]"#)));
        assert!(reads_finalized(&p(r#"["0xab","safe"]"#)));
        assert!(!reads_finalized(&p(r#"["0xab","latest"]"#)));
        assert!(!reads_finalized(&p(r#"["safe"#)));
    }

    #[test]
    fn marks_rise_only_and_answers_are_bounded() {
        let m = Marks::new([1]);
        assert_eq!(m.head(1), 0);
        // Before any node announced a head, answers are not believed.
        m.shown(1, 5);
        assert_eq!(m.head(1), 0);
        m.announced(1, 0, None);
        m.shown(1, 3);
        assert_eq!(m.head(1), 3, "a genesis head counts");
        m.announced(1, 10, Some(4));
        m.announced(1, 9, Some(3));
        assert_eq!((m.head(1), m.finalized(1)), (10, 4));
        m.shown(1, 11);
        assert_eq!(m.head(1), 11);
        m.shown(1, 10 + ANSWER_SLACK + 1);
        assert_eq!(m.head(1), 11, "far beyond every node: not believed");
        m.shown(1, 7);
        assert_eq!(m.head(1), 11);
        // A chain that went back: the mark follows only after every node stayed below it.
        for _ in 0..FOLLOW_DOWN_AFTER - 1 {
            m.follow(1, 5);
        }
        assert_eq!(m.head(1), 11);
        m.follow(1, 11);
        for _ in 0..FOLLOW_DOWN_AFTER {
            m.follow(1, 5);
        }
        assert_eq!((m.head(1), m.finalized(1)), (5, 4));
        // Unknown chains are ignored.
        m.announced(2, 100, None);
        assert_eq!(m.head(2), 0);
    }

    #[test]
    fn tip_reads_and_numbers_are_found() {
        assert!(reads_tip("eth_blockNumber", b""));
        assert!(reads_tip("eth_getBalance", br#"["0xaa","latest"]"#));
        assert!(reads_tip("eth_call", br#"[{"to":"0xaa"},"finalized"]"#));
        assert!(!reads_tip("eth_getBalance", br#"["0xaa","0x5"]"#));
        assert!(reads_finalized(br#"["0xaa","safe"]"#));
        assert!(!reads_finalized(br#"["0xaa","latest"]"#));
        assert_eq!(quantity(b"\"0x1a\""), Some(26));
        assert_eq!(quantity(b"\"1a\""), None);
        assert_eq!(
            block_number_of(br#"{"blockHash":"0xab","blockNumber" : "0x2a","logs":[]}"#),
            Some(42)
        );
        assert_eq!(block_number_of(b"null"), None);
        assert_eq!(block_number_of(br#"{"blockNumber":null}"#), None);
    }
}
