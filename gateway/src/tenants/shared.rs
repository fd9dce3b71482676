//! The sync task: keeps every tenant's buckets supplied, off the request path.
//!
//! With Redis, each gateway leases tokens from one bucket per tenant and limit that all
//! gateways share (a Lua script refills it at the tenant's rate and hands out what it holds),
//! and adds its daily counts to a shared counter. Requests only ever spend tokens already
//! leased, so they never wait on Redis. A gateway asks again each tick, or at once when a
//! bucket runs low. Without Redis, or while it is unreachable, each bucket refills locally at
//! this gateway's share of the rate: the rate divided by the gateways seen in the last
//! seconds (every gateway announces itself in a sorted set).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::budget::{Book, TenantBudget};
use crate::ops::metrics::Metrics;
use crate::redis_link::{open, unix_ms, REDIS_TIMEOUT};

/// Refills a shared bucket at its rate (up to one second's burst) and grants up to the tokens
/// asked for, but at most an even share of what it holds among the gateways (so a gateway that
/// asks more often does not take the whole refill; one alone still gets everything, a share at
/// a time). KEYS[1]: the bucket; ARGV: rate per second, tokens wanted, gateways sharing.
const LEASE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local peers = math.max(1, tonumber(ARGV[3]))
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil or ts == nil then
  tokens = rate
  ts = now
end
tokens = math.min(rate, tokens + math.max(0, now - ts) * rate / 1000)
local share = math.max(1, math.floor(tokens / peers))
local grant = math.max(0, math.min(want, share, math.floor(tokens)))
tokens = tokens - grant
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], 60000)
return grant
";

/// A gateway not heard from for this long no longer counts toward the shares.
const PEER_TTL_MS: u64 = 5_000;
/// Wait between attempts to reconnect.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);
/// Syncs woken by low buckets are at least this far apart (a flood over a limit would
/// otherwise sync back to back).
const MIN_GAP: Duration = Duration::from_millis(5);

static REDIS_LOG: daemon::loglimit::LogLimit = daemon::loglimit::LogLimit::new(5, 60);

/// Where limits are shared, and whether that works right now.
pub struct Shared {
    pub book: Arc<Book>,
    /// Woken by buckets that run low.
    pub wake: Notify,
    redis: Option<redis::Client>,
    prefix: String,
    /// This gateway's name in the peer set.
    id: String,
    interval: Duration,
    /// Gateways seen in Redis recently (this one included); divides rates when local.
    peers: std::sync::atomic::AtomicU64,
    up: std::sync::atomic::AtomicBool,
    /// Milliseconds since start of the last good sync (for the lag gauge and the admin API).
    last_ok: std::sync::atomic::AtomicU64,
    started: Instant,
}

impl Shared {
    pub fn new(
        redis_url: Option<&str>,
        prefix: &str,
        interval: Duration,
        expected_gateways: u32,
    ) -> Result<Self, redis::RedisError> {
        let redis = redis_url.map(redis::Client::open).transpose()?;
        Ok(Self {
            book: Arc::new(Book::new(redis.is_some())),
            wake: Notify::new(),
            redis,
            prefix: prefix.to_string(),
            id: format!("{:016x}", rand::random::<u64>()),
            interval,
            peers: u64::from(expected_gateways.max(1)).into(),
            up: false.into(),
            last_ok: 0.into(),
            started: Instant::now(),
        })
    }

    pub fn configured(&self) -> bool {
        self.redis.is_some()
    }

    /// Redis answered the last sync.
    pub fn up(&self) -> bool {
        self.up.load(Relaxed)
    }

    pub fn peers(&self) -> u64 {
        self.peers.load(Relaxed)
    }

    /// Time since the last good sync with Redis.
    pub fn lag(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ok.load(Relaxed)))
    }

    /// Runs until `stop`.
    pub async fn run(self: Arc<Self>, metrics: Arc<Metrics>, stop: CancellationToken) {
        let mut link = RedisLink {
            conn: None,
            next_connect: Instant::now(),
            next_refresh: Instant::now(),
            script: redis::Script::new(LEASE),
        };
        let mut last = Instant::now();
        let mut last_rate = (Instant::now(), Vec::<(Arc<TenantBudget>, u64)>::new());
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    // Daily counts admitted since the last sync go up before the gateway exits.
                    if let Some(c) = link.conn.as_mut() {
                        let last = self.sync(c, &link.script, true);
                        let _ = tokio::time::timeout(REDIS_TIMEOUT, last).await;
                    }
                    return;
                }
                _ = tick.tick() => {}
                _ = self.wake.notified() => {}
            }
            let now = Instant::now();
            let secs = (now - last).as_secs_f64();
            last = now;
            if !self.sync_shared(&mut link, now).await {
                let share = 1.0 / self.peers().max(1) as f64;
                for b in self.book.all() {
                    b.requests.refill(secs, share);
                    b.compute_units.refill(secs, share);
                }
            }
            self.measure(&mut last_rate);
            if let Some(m) = &metrics.redis {
                m.up.set(i64::from(self.up()));
                m.sync_lag.set(self.lag().as_secs_f64());
            }
            tokio::time::sleep(MIN_GAP).await;
        }
    }

    /// One sync with Redis (connecting first if needed); false when there is no Redis or it
    /// did not answer (the caller refills locally).
    async fn sync_shared(&self, link: &mut RedisLink, now: Instant) -> bool {
        let Some(client) = &self.redis else {
            return false;
        };
        if link.conn.is_none() && now >= link.next_connect {
            link.conn = connect(client).await;
            link.next_connect = now + RECONNECT_AFTER;
        }
        let Some(c) = link.conn.as_mut() else {
            return self.failed("cannot connect", &mut link.conn);
        };
        let refresh = now >= link.next_refresh;
        if refresh {
            link.next_refresh = now + Duration::from_secs(1);
        }
        let sync = self.sync(c, &link.script, refresh);
        match tokio::time::timeout(REDIS_TIMEOUT, sync).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => self.failed(&e.to_string(), &mut link.conn),
            Err(_) => self.failed("timed out", &mut link.conn),
        }
    }

    /// One round trip: announce this gateway, lease for low buckets, push daily counts.
    async fn sync(
        &self,
        c: &mut MultiplexedConnection,
        script: &redis::Script,
        refresh: bool,
    ) -> redis::RedisResult<()> {
        let budgets = self.book.all();
        let now_ms = unix_ms();
        let peers_key = format!("{}:gateways", self.prefix);
        let mut pipe = redis::pipe();
        pipe.zadd(&peers_key, &self.id, now_ms).ignore();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&peers_key)
            .arg("-inf")
            .arg(now_ms.saturating_sub(PEER_TTL_MS))
            .ignore();
        pipe.zcard(&peers_key);
        // What each queued command is, to read the answers back in order.
        enum Asked<'a> {
            Lease(&'a super::budget::Bucket),
            Daily(&'a TenantBudget, u32),
        }
        let mut asked = Vec::new();
        for b in &budgets {
            for (kind, bucket) in [("rps", &b.requests), ("cups", &b.compute_units)] {
                let want = bucket.want();
                if want > 0 {
                    let key = format!("{}:bucket:{}:{kind}", self.prefix, b.name);
                    pipe.cmd("EVALSHA")
                        .arg(script.get_hash())
                        .arg(1)
                        .arg(key)
                        .arg(bucket.rate())
                        .arg(want)
                        .arg(self.peers());
                    asked.push(Asked::Lease(bucket));
                }
            }
            // Daily counts go up when there are some, and every second regardless (to learn
            // what the other gateways counted), not every tick for every tenant.
            if b.daily.quota() > 0 && (b.daily.has_pending() || refresh) {
                let (day, n) = b.daily.drain();
                let key = format!("{}:daily:{}:{day}", self.prefix, b.name);
                pipe.cmd("INCRBY").arg(&key).arg(n);
                pipe.expire(&key, 2 * 86_400).ignore();
                asked.push(Asked::Daily(b, day));
            }
        }
        // On an error (or when the caller's timeout drops this future) nothing was granted,
        // and `failed` puts the daily counts in flight back.
        let answers: Vec<i64> = pipe.query_async(c).await?;
        let mut it = answers.into_iter();
        self.peers
            .store(it.next().unwrap_or(1).max(1) as u64, Relaxed);
        for (a, v) in asked.into_iter().zip(it) {
            match a {
                Asked::Lease(bucket) => bucket.grant(v.max(0)),
                Asked::Daily(b, day) => b.daily.settle(day, v.max(0) as u64),
            }
        }
        if !self.up.swap(true, Relaxed) {
            tracing::info!("Redis reachable: tenant limits are shared with the other gateways");
        }
        self.last_ok
            .store(self.started.elapsed().as_millis() as u64, Relaxed);
        Ok(())
    }

    /// Marks Redis down (logged once per outage) and drops the connection; returns false.
    fn failed(&self, why: &str, conn: &mut Option<MultiplexedConnection>) -> bool {
        *conn = None;
        for b in self.book.all() {
            b.daily.restore();
        }
        if self.up.swap(false, Relaxed) || self.last_ok.load(Relaxed) == 0 {
            if let Some(suppressed) = REDIS_LOG.allow() {
                tracing::warn!(
                    error = why,
                    peers = self.peers(),
                    suppressed,
                    "Redis unreachable: each gateway enforces its local share of tenant limits"
                );
            }
        }
        false
    }

    /// Calls per second of each tenant over the last second or so (for the admin API).
    fn measure(&self, last: &mut (Instant, Vec<(Arc<TenantBudget>, u64)>)) {
        let elapsed = last.0.elapsed();
        if elapsed < Duration::from_secs(1) {
            return;
        }
        let now: Vec<_> = self
            .book
            .all()
            .into_iter()
            .map(|b| {
                let calls = b.admitted.load(Relaxed);
                (b, calls)
            })
            .collect();
        for (b, calls) in &now {
            let before = last
                .1
                .iter()
                .find(|(p, _)| Arc::ptr_eq(p, b))
                .map_or(*calls, |(_, c)| *c);
            let rate = (calls - before) as f64 / elapsed.as_secs_f64();
            b.recent_rate.store(rate.to_bits(), Relaxed);
        }
        *last = (Instant::now(), now);
    }
}

/// The sync task's Redis connection and its timers.
struct RedisLink {
    conn: Option<MultiplexedConnection>,
    /// No reconnect before this (a down Redis is not hammered).
    next_connect: Instant,
    /// Daily totals are read back at least this often.
    next_refresh: Instant,
    script: redis::Script,
}

/// A connection with the lease script loaded (a restarted Redis has forgotten it).
async fn connect(client: &redis::Client) -> Option<MultiplexedConnection> {
    let mut c = open(client).await?;
    redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(LEASE)
        .query_async::<String>(&mut c)
        .await
        .ok()?;
    Some(c)
}
