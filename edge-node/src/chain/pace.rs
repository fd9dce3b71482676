//! When to ask the upstream for its head next. Blocks on most chains come at a steady pace, so
//! the next one is due one block interval after the last: the tracker polls sparsely between
//! blocks and densely in a short window around the time the next one is due, which finds a
//! new block within a few tens of milliseconds for a few extra polls per block. Chains without
//! a steady pace (a dev chain mining on demand) simply keep the sparse pace.
//!
//! Pure (instants in, durations out) so the schedule is unit-tested without a clock.

use std::collections::VecDeque;

use tokio::time::{Duration, Instant};

/// New-head arrival times kept for the interval estimate.
const ARRIVALS: usize = 9;
/// Shortest poll inside the window (protects the upstream).
const FAST_MIN: Duration = Duration::from_millis(10);
const FAST_MAX: Duration = Duration::from_millis(100);
const EARLY_MIN: Duration = Duration::from_millis(20);
const EARLY_MAX: Duration = Duration::from_millis(250);

#[derive(Debug, Default)]
pub struct Pace {
    arrivals: VecDeque<Instant>,
}

impl Pace {
    /// A new head was published at `at`.
    pub fn arrived(&mut self, at: Instant) {
        if self.arrivals.len() == ARRIVALS {
            self.arrivals.pop_front();
        }
        self.arrivals.push_back(at);
    }

    /// The median time between new heads, once four gaps are known.
    pub fn interval(&self) -> Option<Duration> {
        if self.arrivals.len() < 5 {
            return None;
        }
        let mut gaps: Vec<Duration> = self
            .arrivals
            .iter()
            .zip(self.arrivals.iter().skip(1))
            .map(|(a, b)| b.duration_since(*a))
            .collect();
        gaps.sort_unstable();
        Some(gaps[gaps.len() / 2]).filter(|g| !g.is_zero())
    }

    /// How long to wait before the next poll: `sparse` between blocks; `interval / 50`
    /// (10-100 ms) from shortly before the next block is due until shortly after. While a
    /// socket follows the head (`followed`), always `sparse`: its notification wakes the
    /// tracker, so the dense window would only cost requests.
    pub fn next_wait(&self, now: Instant, sparse: Duration, followed: bool) -> Duration {
        if followed {
            return sparse;
        }
        let (Some(interval), Some(&last)) = (self.interval(), self.arrivals.back()) else {
            return sparse;
        };
        let due = last + interval;
        let early = (interval / 10).clamp(EARLY_MIN, EARLY_MAX);
        let fast = (interval / 50).clamp(FAST_MIN, FAST_MAX);
        let opens = due.checked_sub(early).unwrap_or(due);
        if now < opens {
            // Sleep into the window, but never longer than the sparse pace.
            return opens.duration_since(now).min(sparse).max(FAST_MIN);
        }
        if now < due + 2 * early {
            return fast;
        }
        sparse
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn steady_blocks_are_polled_densely_only_around_their_due_time() {
        let t0 = Instant::now();
        let mut p = Pace::default();
        let sparse = ms(250);
        assert_eq!(p.next_wait(t0, sparse, false), sparse, "no pace known yet");
        for i in 0..6 {
            p.arrived(t0 + ms(1000 * i));
        }
        assert_eq!(p.interval(), Some(ms(1000)));
        let last = t0 + ms(5000);
        // Just after a block: the sparse pace, then into the window at due - 100 ms.
        assert_eq!(p.next_wait(last + ms(10), sparse, false), sparse);
        assert_eq!(p.next_wait(last + ms(800), sparse, false), ms(100));
        // Inside the window: 20 ms polls (1 s / 50), until 200 ms after due.
        assert_eq!(p.next_wait(last + ms(900), sparse, false), ms(20));
        assert_eq!(p.next_wait(last + ms(1150), sparse, false), ms(20));
        // A late block: back to the sparse pace.
        assert_eq!(p.next_wait(last + ms(1300), sparse, false), sparse);
        // Followed over a socket: no dense window, the socket says when the block is there.
        assert_eq!(p.next_wait(last + ms(900), sparse, true), sparse);
        assert_eq!(p.next_wait(last + ms(800), sparse, true), sparse);
    }

    #[test]
    fn the_median_ignores_a_missed_block_and_slow_chains_poll_less_densely() {
        let t0 = Instant::now();
        let mut p = Pace::default();
        for at in [0, 12_000, 24_000, 48_000, 60_000, 72_000] {
            p.arrived(t0 + ms(at));
        }
        assert_eq!(p.interval(), Some(ms(12_000)));
        let last = t0 + ms(72_000);
        // 12 s blocks: the window opens 250 ms early, polls every 100 ms.
        assert_eq!(p.next_wait(last + ms(11_760), ms(3000), false), ms(100));
        assert_eq!(p.next_wait(last + ms(11_700), ms(3000), false), ms(50));
    }
}
