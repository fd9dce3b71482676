//! What a tenant may still spend, decided on the request path from local atomics only. Tokens
//! come into a [`Bucket`] from the sync task ([`super::shared`]): leased from the bucket all
//! gateways share in Redis, or refilled locally at this gateway's share of the rate when there
//! is no Redis (or it is unreachable).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use parking_lot::Mutex;

/// Tokens are kept in thousandths, so local refills of fractions of a token add up.
const MILLI: i64 = 1000;

/// A token bucket for one limit of one tenant (requests or compute units per second).
pub struct Bucket {
    /// Tokens per second (the limit); 0: no limit.
    rate: AtomicU32,
    /// Tokens this gateway may spend now, in thousandths.
    milli: AtomicI64,
    /// Set when the bucket ran low, until the sync task has topped it up.
    low: AtomicBool,
    /// Set by every spend, cleared by the sync task: a bucket nobody uses is not leased for.
    used: AtomicBool,
    /// The most tokens a refused take wanted (a batch, an expensive call): the next lease asks
    /// for at least that many, so a take larger than the usual lease can pass.
    wanted: AtomicI64,
}

impl Bucket {
    fn new(rate: u32, start: i64) -> Self {
        Self {
            rate: AtomicU32::new(rate),
            milli: AtomicI64::new(start * MILLI),
            low: AtomicBool::new(false),
            used: AtomicBool::new(false),
            wanted: AtomicI64::new(0),
        }
    }

    pub fn rate(&self) -> u32 {
        self.rate.load(Relaxed)
    }

    /// Whole tokens available here now.
    pub fn available(&self) -> i64 {
        self.milli.load(Relaxed) / MILLI
    }

    /// Takes `n` tokens if there are that many. A bucket running low asks the sync task (via
    /// `wake`) for more at once instead of waiting for its next tick.
    pub fn take(&self, n: u64, wake: &dyn Fn()) -> bool {
        if self.rate() == 0 {
            return true;
        }
        self.used.store(true, Relaxed);
        let need = n as i64 * MILLI;
        let ok = self
            .milli
            .fetch_update(Relaxed, Relaxed, |v| (v >= need).then_some(v - need))
            .is_ok();
        if !ok {
            self.wanted.fetch_max(n as i64, Relaxed);
        }
        let left = self.milli.load(Relaxed);
        if left < self.chunk() * MILLI / 2 && !self.low.swap(true, Relaxed) {
            wake();
        }
        ok
    }

    /// Returns tokens taken for a call that was then refused by another limit.
    pub fn give_back(&self, n: u64) {
        if self.rate() > 0 {
            self.milli.fetch_add(n as i64 * MILLI, Relaxed);
        }
    }

    /// What one lease asks for: about a tenth of a second's worth (at least one token).
    pub fn chunk(&self) -> i64 {
        (i64::from(self.rate()) / 10).max(1)
    }

    /// Most tokens held here: two leases (so a gateway never sits on much of the shared rate).
    fn lease_cap(&self) -> i64 {
        2 * self.chunk()
    }

    /// How many tokens to lease now (0: none needed): only for a bucket in use that is low,
    /// up to two leases, or what the largest refused take needed (at most one second's rate).
    pub fn want(&self) -> i64 {
        let used = self.used.swap(false, Relaxed);
        let wanted = self.wanted.swap(0, Relaxed);
        let have = self.available();
        if self.rate() == 0 || !(used || self.low.load(Relaxed)) {
            return 0;
        }
        let target = self.lease_cap().max(wanted).min(i64::from(self.rate()));
        if have >= self.chunk() && have >= wanted {
            return 0;
        }
        (target - have).max(0)
    }

    /// Adds tokens leased from the shared bucket. A bucket granted nothing stays low (the
    /// next tick asks again; a flood does not wake the sync task on every refusal).
    pub fn grant(&self, n: i64) {
        if n > 0 {
            self.milli.fetch_add(n * MILLI, Relaxed);
            self.low.store(false, Relaxed);
        }
    }

    /// Local refill: `share` of the rate for `secs`, up to `share` of a second's burst.
    pub fn refill(&self, secs: f64, share: f64) {
        let rate = f64::from(self.rate());
        let cap = (rate * share * MILLI as f64).max(MILLI as f64) as i64;
        let add = (rate * share * secs * MILLI as f64) as i64;
        let _ = self
            .milli
            .fetch_update(Relaxed, Relaxed, |v| Some(v.max((v + add).min(cap))));
        self.low.store(false, Relaxed);
    }

    fn set_rate(&self, rate: u32) {
        self.rate.store(rate, Relaxed);
    }
}

/// Calls per UTC day: the total the gateways agreed on at the last sync, plus what this
/// gateway admitted since.
pub struct Daily {
    quota: AtomicU64,
    day: AtomicU32,
    /// The shared total for `day` at the last sync (or what this gateway counted alone).
    seen: AtomicU64,
    /// Admitted here and not yet added to the shared total.
    pending: AtomicU64,
    /// Sent to Redis by a sync that has not answered yet (counted until it does).
    inflight: AtomicU64,
}

impl Daily {
    fn new(quota: u64) -> Self {
        Self {
            quota: AtomicU64::new(quota),
            day: AtomicU32::new(utc_day()),
            seen: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            inflight: AtomicU64::new(0),
        }
    }

    pub fn quota(&self) -> u64 {
        self.quota.load(Relaxed)
    }

    /// Calls counted for today.
    pub fn used(&self) -> u64 {
        self.roll();
        self.seen.load(Relaxed) + self.inflight.load(Relaxed) + self.pending.load(Relaxed)
    }

    pub fn take(&self, n: u64) -> bool {
        let quota = self.quota();
        if quota == 0 {
            return true;
        }
        self.roll();
        let seen = self.seen.load(Relaxed) + self.inflight.load(Relaxed);
        self.pending
            .fetch_update(Relaxed, Relaxed, |p| {
                (seen + p + n <= quota).then_some(p + n)
            })
            .is_ok()
    }

    pub fn give_back(&self, n: u64) {
        if self.quota() > 0 {
            let _ = self
                .pending
                .fetch_update(Relaxed, Relaxed, |p| Some(p.saturating_sub(n)));
        }
    }

    /// A new day starts from nothing.
    fn roll(&self) {
        let today = utc_day();
        let day = self.day.load(Relaxed);
        if day != today
            && self
                .day
                .compare_exchange(day, today, Relaxed, Relaxed)
                .is_ok()
        {
            self.seen.store(0, Relaxed);
            self.pending.store(0, Relaxed);
            self.inflight.store(0, Relaxed);
        }
    }

    pub fn has_pending(&self) -> bool {
        self.pending.load(Relaxed) > 0
    }

    /// For the sync task: the day and what to add to the shared total (in flight until the
    /// sync settles or fails).
    pub fn drain(&self) -> (u32, u64) {
        self.roll();
        let n = self.pending.swap(0, Relaxed);
        self.inflight.fetch_add(n, Relaxed);
        (self.day.load(Relaxed), n)
    }

    /// The sync's answer: the shared total for `day`, which now includes what was in flight.
    pub fn settle(&self, day: u32, total: u64) {
        if self.day.load(Relaxed) == day {
            self.seen.store(total, Relaxed);
            self.inflight.store(0, Relaxed);
        }
    }

    /// The sync failed or timed out: what was in flight counts here again (sent next time).
    pub fn restore(&self) {
        let n = self.inflight.swap(0, Relaxed);
        self.pending.fetch_add(n, Relaxed);
    }
}

/// Days since 1970-01-01 (UTC).
pub fn utc_day() -> u32 {
    (unix_secs() / 86_400) as u32
}

/// Seconds until the next UTC midnight (what a caller over its daily quota waits).
pub fn secs_to_midnight() -> u64 {
    86_400 - unix_secs() % 86_400
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One tenant's budgets. Kept across reloads by name, so a reload never resets what a tenant
/// has spent.
pub struct TenantBudget {
    pub name: String,
    pub requests: Bucket,
    pub compute_units: Bucket,
    pub daily: Daily,
    /// Calls admitted per second (an `f64`'s bits), measured by the sync task.
    pub recent_rate: AtomicU64,
    /// Calls and compute units admitted, and calls refused over a limit, since start.
    pub admitted: AtomicU64,
    pub admitted_cu: AtomicU64,
    pub refused: AtomicU64,
}

/// The limits of one tenant, as the file sets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    pub requests_per_second: u32,
    pub compute_units_per_second: u32,
    pub daily_quota: u64,
}

/// Every tenant budget, by name; the sync task walks it.
#[derive(Default)]
pub struct Book {
    budgets: Mutex<HashMap<String, Arc<TenantBudget>>>,
    /// Whether buckets start with one lease (shared) or a full second's burst (local).
    shared: bool,
}

impl Book {
    pub fn new(shared: bool) -> Self {
        Self {
            budgets: Mutex::default(),
            shared,
        }
    }

    /// The budget of `name` with `rates` (kept, with the new rates, if it exists).
    pub fn budget(&self, name: &str, rates: Rates) -> Arc<TenantBudget> {
        let mut all = self.budgets.lock();
        let start = |rate: u32| match self.shared {
            true => (i64::from(rate) / 10).max(1),
            false => i64::from(rate),
        };
        if let Some(b) = all.get(name) {
            for (bucket, rate) in [
                (&b.requests, rates.requests_per_second),
                (&b.compute_units, rates.compute_units_per_second),
            ] {
                // A limit that was off starts as a new one would, not empty.
                if bucket.rate() == 0 && rate > 0 {
                    bucket.milli.store(start(rate) * MILLI, Relaxed);
                }
                bucket.set_rate(rate);
            }
            b.daily.quota.store(rates.daily_quota, Relaxed);
            return b.clone();
        }
        let b = Arc::new(TenantBudget {
            name: name.to_string(),
            requests: Bucket::new(rates.requests_per_second, start(rates.requests_per_second)),
            compute_units: Bucket::new(
                rates.compute_units_per_second,
                start(rates.compute_units_per_second),
            ),
            daily: Daily::new(rates.daily_quota),
            recent_rate: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            admitted_cu: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        all.insert(name.to_string(), b.clone());
        b
    }

    /// Drops the budgets of tenants no longer in the file.
    pub fn retain(&self, names: &std::collections::HashSet<&str>) {
        self.budgets
            .lock()
            .retain(|n, _| names.contains(n.as_str()));
    }

    pub fn all(&self) -> Vec<Arc<TenantBudget>> {
        self.budgets.lock().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_bucket_refuses_over_its_rate_and_refills_at_its_share() {
        let b = Bucket::new(10, 10);
        let woke = std::cell::Cell::new(0);
        let wake = || woke.set(woke.get() + 1);
        assert!(b.take(10, &wake));
        assert!(!b.take(1, &wake));
        assert_eq!(woke.get(), 1, "asked for more once, not per refusal");
        b.refill(0.5, 1.0);
        assert_eq!(b.available(), 5);
        b.refill(10.0, 0.5);
        assert_eq!(b.available(), 5, "capped at the share of one second");
        assert!(
            Bucket::new(0, 0).take(1_000_000, &wake),
            "rate 0 is no limit"
        );
    }

    #[test]
    fn leases_are_asked_for_only_by_buckets_in_use_and_low() {
        let b = Bucket::new(100, 10);
        assert_eq!(b.want(), 0, "unused");
        assert!(b.take(8, &|| ()));
        assert_eq!(b.want(), 18, "low and used: up to two leases");
        b.grant(0);
        assert!(!b.take(5, &|| ()), "nothing granted");
        assert_eq!(b.want(), 18, "still low: asked again");
        b.grant(18);
        assert_eq!(b.want(), 0);
        // A take larger than two leases is leased for (up to the rate).
        assert!(!b.take(60, &|| ()));
        assert_eq!(b.want(), 40);
        b.grant(40);
        assert!(b.take(60, &|| ()));
    }

    #[test]
    fn the_daily_quota_counts_shared_and_pending_calls() {
        let d = Daily::new(10);
        assert!(d.take(6));
        let (day, sent) = d.drain();
        assert_eq!(sent, 6);
        d.settle(day, 9); // another gateway counted 3
        assert!(d.take(1));
        assert!(!d.take(1));
        assert_eq!(d.used(), 10);
        let (_, sent) = d.drain();
        assert_eq!((sent, d.used()), (1, 10), "in flight still counts");
        assert!(!d.take(1));
        d.restore();
        assert_eq!(d.used(), 10, "a failed sync keeps the count");
        assert!(d.has_pending());
    }

    #[test]
    fn budgets_survive_a_reload_with_new_rates() {
        let book = Book::new(false);
        let r = |rps| Rates {
            requests_per_second: rps,
            compute_units_per_second: 0,
            daily_quota: 0,
        };
        let a = book.budget("a", r(5));
        assert!(a.requests.take(5, &|| ()));
        let again = book.budget("a", r(50));
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(again.requests.rate(), 50);
        assert!(!again.requests.take(1, &|| ()), "spent stays spent");
        book.retain(&std::collections::HashSet::new());
        assert!(book.all().is_empty());
    }
}
