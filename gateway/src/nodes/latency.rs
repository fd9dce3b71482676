//! A node's recent latency per method class: lock-free histograms the dispatcher writes after
//! each attempt and reads for the hedge delay.
//!
//! Buckets are log-spaced (four per octave of microseconds, so an estimate is at most 25 %
//! high) and every count halves each [`HALF_LIFE`], so the quantiles follow what the node does
//! now, not what it did an hour ago. Halving happens lazily, by whichever reader or writer first
//! sees the half-life pass: no task, and a quiet node's old figures fade all the same.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tokio::time::{Duration, Instant};

use super::hedge::Class;

/// Sub-buckets per octave (a power of two).
const SUB: u32 = 4;
const SUB_BITS: u32 = SUB.trailing_zeros();
/// Latencies are kept up to 2^26 µs (67 s); longer ones count in the last bucket.
const MAX_OCTAVE: u32 = 26;
const BUCKETS: usize = ((MAX_OCTAVE - 1) * SUB) as usize;
/// How fast old samples fade: a node's behaviour a few seconds ago is what predicts its next
/// answer; at 100 requests a second this keeps about a thousand samples per class.
pub const HALF_LIFE: Duration = Duration::from_secs(5);
/// Fewer (decayed) samples than this and a quantile is a guess: `None`.
pub const MIN_SAMPLES: u64 = 20;

/// Histograms of one node's recent attempts, one per [`Class`].
pub struct Latency {
    classes: [Histogram; Class::COUNT],
    born: Instant,
    /// Milliseconds after `born` of the last halving.
    halved_at: AtomicU64,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        Self {
            classes: std::array::from_fn(|_| Histogram::new()),
            born: Instant::now(),
            halved_at: AtomicU64::new(0),
        }
    }

    /// Records one attempt of class `class` that took `took`.
    pub fn record(&self, class: Class, took: Duration) {
        self.fade();
        self.classes[class as usize].record(took);
    }

    /// The `q` quantile of recent attempts of `class`; `None` with too few of them.
    pub fn quantile(&self, class: Class, q: f64) -> Option<Duration> {
        self.fade();
        self.classes[class as usize].quantile(q)
    }

    /// Halves every count once per half-life passed (one caller wins the race to do it).
    fn fade(&self) {
        let now = self.born.elapsed().as_millis() as u64;
        let last = self.halved_at.load(Ordering::Relaxed);
        let step = HALF_LIFE.as_millis() as u64;
        let halvings = (now - last.min(now)) / step;
        if halvings == 0 {
            return;
        }
        let next = last + halvings * step;
        if self
            .halved_at
            .compare_exchange(last, next, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            let shift = halvings.min(31) as u32;
            for h in &self.classes {
                h.shift(shift);
            }
        }
    }
}

struct Histogram {
    counts: [AtomicU32; BUCKETS],
}

impl Histogram {
    fn new() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }

    fn record(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket(us)].fetch_add(1, Ordering::Relaxed);
    }

    fn shift(&self, by: u32) {
        for c in &self.counts {
            // A sample recorded between the load and the store may be lost: the histogram is
            // an estimate, and a CAS loop per bucket is not worth it.
            c.store(c.load(Ordering::Relaxed) >> by, Ordering::Relaxed);
        }
    }

    /// The upper bound of the bucket holding the `q` quantile.
    fn quantile(&self, q: f64) -> Option<Duration> {
        let count = |c: &AtomicU32| u64::from(c.load(Ordering::Relaxed));
        let total: u64 = self.counts.iter().map(count).sum();
        if total < MIN_SAMPLES {
            return None;
        }
        // Nearest rank: the first bucket with at least ceil(q * total) samples at or below it
        // (a sample recorded meanwhile can only move the answer up a bucket).
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        let i = self
            .counts
            .iter()
            .position(|c| {
                seen += count(c);
                seen >= rank
            })
            .unwrap_or(BUCKETS - 1);
        Some(Duration::from_micros(upper(i)))
    }
}

/// The bucket of a latency in µs: below `SUB` one bucket per µs, then `SUB` per octave.
fn bucket(us: u64) -> usize {
    let us = us.min((1 << MAX_OCTAVE) - 1);
    if us < u64::from(SUB) {
        return us as usize;
    }
    let msb = 63 - us.leading_zeros();
    let sub = (us >> (msb - SUB_BITS)) & u64::from(SUB - 1);
    ((msb - SUB_BITS + 1) * SUB) as usize + sub as usize
}

/// The exclusive upper bound (µs) of bucket `i`.
fn upper(i: usize) -> u64 {
    let (i, sub) = (i as u64, u64::from(SUB));
    if i < sub {
        return i + 1;
    }
    let octave = i / sub - 1; // 0 for the octave starting at SUB
    (sub + i % sub + 1) << octave
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_their_values_and_are_at_most_a_quarter_wide() {
        let mut last = 0;
        for us in (0..5000).chain([65_535, 1_000_000, 1 << 25, u64::MAX]) {
            let b = bucket(us);
            assert!(b < BUCKETS, "{us}");
            assert!(b >= last, "monotonic at {us}");
            last = b;
            let capped = us.min((1 << MAX_OCTAVE) - 1);
            assert!(upper(b) > capped, "{us} below the bound of its bucket");
            if b > 0 {
                assert!(upper(b - 1) <= capped, "{us} belongs to an earlier bucket");
            }
            if capped >= 4 {
                assert!(upper(b) as f64 <= capped as f64 * 1.25 + 1.0, "{us}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_quantile_follows_the_tail() {
        let l = Latency::new();
        assert_eq!(l.quantile(Class::State, 0.95), None, "no samples yet");
        for i in 0..100u64 {
            // 96 fast answers, 4 slow ones: p95 is fast, p99 slow.
            let ms = if i % 25 == 0 { 300 } else { 2 + i % 3 };
            l.record(Class::State, Duration::from_millis(ms));
        }
        let p95 = l.quantile(Class::State, 0.95).unwrap();
        assert!(
            p95 >= Duration::from_millis(4) && p95 <= Duration::from_millis(5),
            "{p95:?}"
        );
        let p99 = l.quantile(Class::State, 0.99).unwrap();
        assert!(p99 >= Duration::from_millis(300) && p99 <= Duration::from_millis(375));
        assert_eq!(l.quantile(Class::Logs, 0.95), None, "classes are apart");
    }

    #[tokio::test(start_paused = true)]
    async fn old_samples_fade() {
        let l = Latency::new();
        for _ in 0..64 {
            l.record(Class::Light, Duration::from_millis(500));
        }
        tokio::time::advance(HALF_LIFE).await;
        // Halved once: 32 slow samples left; 1000 fast ones now make the p95.
        for _ in 0..1000 {
            l.record(Class::Light, Duration::from_millis(1));
        }
        assert!(l.quantile(Class::Light, 0.95).unwrap() <= Duration::from_millis(2));
        // Ten half-lives on, nothing is left to go by.
        tokio::time::advance(HALF_LIFE * 10).await;
        assert_eq!(l.quantile(Class::Light, 0.95), None);
    }
}
