//! [`Geo`]: the shared, hot-reloadable, memoised address → [`Location`] service.
//!
//! The loaded databases and the memo cache live together in one immutable `State` behind an
//! `RwLock<Arc<_>>`. A reload builds a new `State` (new files, empty cache) and swaps the
//! pointer, so a lookup racing a reload sees either the old files with the old cache or the
//! new ones with the new cache, and an answer from the old file can never be cached for the
//! new one. Lookups hold the lock only to clone the `Arc`.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::{error, info, warn};

use super::cache::MemoCache;
use super::db::{Database, DatabaseInfo};
use super::{GeoError, GeoOptions, Location};

/// Shortest poll interval the watcher accepts; shorter ones are raised to it.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Cheap to clone; all clones share the databases, cache and counters.
#[derive(Clone)]
pub struct Geo {
    inner: Arc<Inner>,
}

struct Inner {
    paths: Vec<PathBuf>,
    options: GeoOptions,
    /// `options.default_location`, shared like every answer.
    default_location: Option<Arc<Location>>,
    state: RwLock<Arc<State>>,
    /// Held for the whole of a reload, so a SIGHUP and the watcher never reload at once.
    /// Holds each file's fingerprint as of its last load attempt.
    reload: Mutex<Vec<Option<Fingerprint>>>,
    counters: Counters,
}

struct State {
    /// One per configured path, in order; a failed reload keeps the old entry.
    dbs: Vec<Arc<Database>>,
    /// `None` = known to be in no database (or to have no coordinates there).
    cache: MemoCache<Option<Arc<Location>>>,
}

#[derive(Default)]
struct Counters {
    lookups: AtomicU64,
    cache_hits: AtomicU64,
    non_public: AtomicU64,
    misses: AtomicU64,
    lookup_failures: AtomicU64,
    reloads_ok: AtomicU64,
    reload_failures: AtomicU64,
}

/// Counter snapshot, all monotonic since [`Geo::open`]. For Prometheus `_total` counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GeoStats {
    /// Calls to [`Geo::locate`].
    pub lookups: u64,
    /// Lookups answered from the memo cache.
    pub cache_hits: u64,
    /// Lookups of private, loopback, link-local and other non-public addresses.
    pub non_public: u64,
    /// Database lookups that found no usable record.
    pub misses: u64,
    /// Database lookups that failed (corrupt record). Counted once per cache fill.
    pub lookup_failures: u64,
    /// Files loaded successfully by a reload.
    pub reloads_ok: u64,
    /// Files whose reload failed; the previously loaded file kept serving.
    pub reload_failures: u64,
}

/// Whether `ip` can be in a geolocation database: not private (RFC 1918, IPv6 ULA),
/// shared/CGNAT (100.64/10), loopback, link-local, unspecified, broadcast, multicast or
/// "this network" (0/8). IPv4-mapped IPv6 is judged as IPv4.
pub fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            let shared = a == 100 && (b & 0xc0) == 64;
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_multicast()
                || shared
                || a == 0)
        }
        IpAddr::V6(v6) => {
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unique_local()
                || v6.is_unicast_link_local())
        }
    }
}

// === impl Geo ===

impl Geo {
    /// Loads one database file.
    pub fn open(path: impl AsRef<Path>, options: GeoOptions) -> Result<Geo, GeoError> {
        Self::open_many([path.as_ref()], options)
    }

    /// Loads several files, asked in order for each address. DB-IP ships IPv4 and IPv6 as
    /// separate files; IPv6 addresses skip IPv4-only files.
    pub fn open_many<I, P>(paths: I, options: GeoOptions) -> Result<Geo, GeoError>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<Path>,
    {
        let paths: Vec<PathBuf> = paths.into_iter().map(|p| p.as_ref().to_owned()).collect();
        if paths.is_empty() {
            return Err(GeoError::NoDatabase);
        }
        let mut fingerprints = Vec::with_capacity(paths.len());
        let mut dbs = Vec::with_capacity(paths.len());
        for path in &paths {
            // Stat before reading: if the file changes in between, the next poll reloads it.
            fingerprints.push(Fingerprint::of(path));
            let db = Database::open(path)?;
            log_loaded(&db, "geo database loaded");
            dbs.push(Arc::new(db));
        }
        Ok(Self::build(paths, dbs, fingerprints, options))
    }

    /// A `Geo` with no database: every address gets the default location.
    pub fn without_database(options: GeoOptions) -> Geo {
        Self::build(Vec::new(), Vec::new(), Vec::new(), options)
    }

    fn build(
        paths: Vec<PathBuf>,
        dbs: Vec<Arc<Database>>,
        fingerprints: Vec<Option<Fingerprint>>,
        options: GeoOptions,
    ) -> Geo {
        let state = State {
            dbs,
            cache: MemoCache::new(options.cache_capacity),
        };
        Geo {
            inner: Arc::new(Inner {
                paths,
                default_location: options.default_location.clone().map(Arc::new),
                options,
                state: RwLock::new(Arc::new(state)),
                reload: Mutex::new(fingerprints),
                counters: Counters::default(),
            }),
        }
    }

    /// Where `ip` is. Non-public addresses, addresses no database knows, and records without
    /// coordinates get [`GeoOptions::default_location`]. Shared: a lookup is on every
    /// request's path, and a shared answer is one reference count instead of two strings.
    pub fn locate(&self, ip: IpAddr) -> Option<Arc<Location>> {
        let c = &self.inner.counters;
        c.lookups.fetch_add(1, Ordering::Relaxed);
        let ip = ip.to_canonical();
        if !is_public(ip) {
            c.non_public.fetch_add(1, Ordering::Relaxed);
            return self.default_location();
        }
        let state = Arc::clone(&self.inner.state.read());
        let found = match state.cache.get(&ip) {
            Some(found) => {
                c.cache_hits.fetch_add(1, Ordering::Relaxed);
                found
            }
            None => {
                let found = self.lookup_uncached(&state, ip);
                state.cache.insert(ip, found.clone());
                found
            }
        };
        found.or_else(|| self.default_location())
    }

    fn lookup_uncached(&self, state: &State, ip: IpAddr) -> Option<Arc<Location>> {
        let c = &self.inner.counters;
        for db in state.dbs.iter().filter(|db| db.covers(ip)) {
            match db.lookup(ip) {
                Ok(Some(location)) => return Some(Arc::new(location)),
                Ok(None) => {}
                Err(e) => {
                    let n = c.lookup_failures.fetch_add(1, Ordering::Relaxed) + 1;
                    // Log the 1st, 2nd, 4th, 8th... failure: visible, but a corrupt region
                    // hit by every request cannot flood the log.
                    if n.is_power_of_two() {
                        warn!(path = %db.path().display(), %ip, error = %e, failures = n,
                            "geo lookup failed");
                    }
                }
            }
        }
        c.misses.fetch_add(1, Ordering::Relaxed);
        None
    }

    fn default_location(&self) -> Option<Arc<Location>> {
        self.inner.default_location.clone()
    }

    /// Re-reads every file now (the binary calls this on SIGHUP). Blocking: from async code
    /// use [`reload_async`](Self::reload_async). Files that fail to load keep their previous
    /// version serving; the first such error is returned, all are logged and counted.
    pub fn reload(&self) -> Result<(), GeoError> {
        self.reload_files(true).map(|_| ())
    }

    /// [`reload`](Self::reload) on the blocking thread pool.
    pub async fn reload_async(&self) -> Result<(), GeoError> {
        let geo = self.clone();
        match tokio::task::spawn_blocking(move || geo.reload()).await {
            Ok(result) => result,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }

    /// Reloads the files whose size, mtime (or inode) changed since they were last loaded.
    /// `Ok(true)` if a new file is now serving. A file that failed to load is not retried
    /// until it changes again.
    pub fn reload_if_changed(&self) -> Result<bool, GeoError> {
        self.reload_files(false)
    }

    fn reload_files(&self, force: bool) -> Result<bool, GeoError> {
        let c = &self.inner.counters;
        let mut fingerprints = self.inner.reload.lock();
        let current = Arc::clone(&self.inner.state.read());
        let mut dbs = current.dbs.clone();
        let mut replaced = 0;
        let mut first_error = None;
        for (i, path) in self.inner.paths.iter().enumerate() {
            let fingerprint = Fingerprint::of(path);
            if !force && fingerprint == fingerprints[i] {
                continue;
            }
            fingerprints[i] = fingerprint;
            match Database::open(path) {
                Ok(db) => {
                    log_loaded(&db, "geo database reloaded");
                    dbs[i] = Arc::new(db);
                    replaced += 1;
                    c.reloads_ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    error!(path = %path.display(), error = %e,
                        "geo database reload failed; the previously loaded file keeps serving");
                    c.reload_failures.fetch_add(1, Ordering::Relaxed);
                    first_error.get_or_insert(e);
                }
            }
        }
        if replaced > 0 {
            let fresh = Arc::new(State {
                dbs,
                cache: MemoCache::new(self.inner.options.cache_capacity),
            });
            let old = std::mem::replace(&mut *self.inner.state.write(), fresh);
            // Usually the last reference: free the old file and cache here, not on a request.
            drop((old, current));
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(replaced > 0),
        }
    }

    /// Polls the files every `interval` (at least 10 ms) and reloads changed ones, until the
    /// returned handle is shut down or dropped. Must be called inside a tokio runtime.
    pub fn spawn_watcher(&self, interval: Duration) -> WatcherHandle {
        let interval = interval.max(MIN_POLL_INTERVAL);
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let geo = self.clone();
        let task = tokio::spawn(async move {
            let start = tokio::time::Instant::now() + interval;
            let mut ticker = tokio::time::interval_at(start, interval);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    // Fires on an explicit stop and when the handle is dropped.
                    _ = &mut stop_rx => break,
                    _ = ticker.tick() => {
                        let geo = geo.clone();
                        // Reading a 60 MB file is blocking work. Errors are logged and
                        // counted inside; there is nothing more to do with them here.
                        let polled =
                            tokio::task::spawn_blocking(move || geo.reload_if_changed()).await;
                        if let Err(e) = polled {
                            error!(error = %e, "geo database watcher poll panicked");
                        }
                    }
                }
            }
        });
        WatcherHandle {
            stop: stop_tx,
            task,
        }
    }

    /// The files currently serving, in lookup order.
    pub fn databases(&self) -> Vec<DatabaseInfo> {
        let state = Arc::clone(&self.inner.state.read());
        state.dbs.iter().map(|db| db.info()).collect()
    }

    /// Entries in the memo cache now.
    pub fn cached_entries(&self) -> usize {
        self.inner.state.read().cache.len()
    }

    pub fn stats(&self) -> GeoStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        GeoStats {
            lookups: get(&c.lookups),
            cache_hits: get(&c.cache_hits),
            non_public: get(&c.non_public),
            misses: get(&c.misses),
            lookup_failures: get(&c.lookup_failures),
            reloads_ok: get(&c.reloads_ok),
            reload_failures: get(&c.reload_failures),
        }
    }

    pub fn lookups(&self) -> u64 {
        self.inner.counters.lookups.load(Ordering::Relaxed)
    }

    pub fn lookup_failures(&self) -> u64 {
        self.inner.counters.lookup_failures.load(Ordering::Relaxed)
    }

    pub fn reloads_ok(&self) -> u64 {
        self.inner.counters.reloads_ok.load(Ordering::Relaxed)
    }

    pub fn reload_failures(&self) -> u64 {
        self.inner.counters.reload_failures.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Geo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not derived: the reader's Debug would print the whole database buffer.
        f.debug_struct("Geo")
            .field("paths", &self.inner.paths)
            .field("options", &self.inner.options)
            .field("stats", &self.stats())
            .finish()
    }
}

fn log_loaded(db: &Database, message: &'static str) {
    let info = db.info();
    info!(path = %info.path.display(), database_type = %info.database_type,
        ip_version = info.ip_version, build_epoch = info.build_epoch, "{message}");
}

// === impl WatcherHandle ===

/// Stops the watcher task from [`Geo::spawn_watcher`]; dropping it stops the task too.
#[must_use = "dropping the handle stops the watcher"]
pub struct WatcherHandle {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl WatcherHandle {
    /// Stops polling and waits for an in-progress reload to finish.
    pub async fn shutdown(self) {
        let WatcherHandle { stop, task } = self;
        let _ = stop.send(());
        if let Err(e) = task.await {
            if e.is_panic() {
                error!(error = %e, "geo database watcher panicked");
            }
        }
    }
}

impl fmt::Debug for WatcherHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatcherHandle")
            .field("finished", &self.task.is_finished())
            .finish()
    }
}

// === impl Fingerprint ===

/// What identifies a version of a file without reading it. The inode catches an atomic
/// rename of a same-sized file within the filesystem's mtime granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl Fingerprint {
    /// `None` when the file cannot be stat'ed (e.g. mid-replacement); that counts as a change.
    fn of(path: &Path) -> Option<Fingerprint> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Some(Fingerprint {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_and_non_public_addresses() {
        let non_public = [
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "169.254.1.1",
            "172.16.0.1",
            "192.168.1.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
        ];
        for ip in non_public {
            assert!(!is_public(ip.parse().unwrap()), "{ip} should not be public");
        }
        let public = [
            "1.1.1.1",
            "8.8.8.8",
            "81.2.69.142",
            "100.128.0.1",
            "172.32.0.1",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
        ];
        for ip in public {
            assert!(is_public(ip.parse().unwrap()), "{ip} should be public");
        }
    }

    #[test]
    fn without_database_answers_default() {
        let default = Location {
            lat: 50.0,
            lon: 8.0,
            country: Some("DE".into()),
            continent: Some("EU".into()),
        };
        let geo = Geo::without_database(GeoOptions {
            default_location: Some(default.clone()),
            ..GeoOptions::default()
        });
        assert_eq!(
            geo.locate("8.8.8.8".parse().unwrap()).as_deref(),
            Some(&default)
        );
        assert!(geo.databases().is_empty());
        assert!(!geo.reload_if_changed().unwrap());
        assert_eq!(geo.stats().misses, 1);
    }

    #[test]
    fn open_without_paths_is_an_error() {
        let err = Geo::open_many(Vec::<PathBuf>::new(), GeoOptions::default()).unwrap_err();
        assert!(matches!(err, GeoError::NoDatabase));
    }
}
