//! What both daemons (the gateway and the edge node) need around their job, written once:
//!
//! - [`config`]: the config error both validate into (naming the file and the key);
//! - [`logging`]: tracing to stderr (`RUST_LOG`, `LOG_FORMAT=json`);
//! - [`loglimit`]: rate limits for log lines others can cause;
//! - [`admin`]: the admin listener's accept loop and its plain responses;
//! - [`metrics`]: the Prometheus text exposition;
//! - [`runtime`]: the tokio runtime `worker_threads` asks for;
//! - [`shutdown`]: waiting for SIGINT or SIGTERM;
//! - [`weigh`]: what a cache entry costs, so byte bounds are memory bounds;
//! - [`unix_ms`]: wall-clock time as both sides stamp what the other reads.

pub mod admin;
pub mod config;
pub mod logging;
pub mod loglimit;
pub mod metrics;
pub mod runtime;
pub mod shutdown;
pub mod text;
pub mod weigh;

/// The hasher of the caches whose keys callers choose (a call's method and params): foldhash,
/// seeded at random per process and per cache. SipHash, the standard library's, cost ~390
/// instructions per look-up on an 80-byte key, a tenth of a batched call's whole cost;
/// foldhash costs a fifth of that. Its resistance to crafted collisions rests on the seed,
/// which a caller can neither read nor learn from answers that never depend on it.
pub type KeyHasher = foldhash::quality::RandomState;

/// Wall-clock Unix milliseconds (0 if the clock is before 1970): what one process stamps and
/// another reads (status times, Redis entries, a published block's time).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
