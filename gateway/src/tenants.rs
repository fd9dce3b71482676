//! Tenants, API keys and limits: who a caller is ([`Tenancy::identify`]), what it may call
//! (chains, methods, browser origins), and what it may still spend ([`Tenancy::charge`]).
//!
//! - The tenants file ([`file`]) is loaded at start, and again on SIGHUP, on the admin API and
//!   when it changes on disk ([`Tenancy::watch`]). A reload swaps the whole set at once; a bad
//!   file keeps the previous set and logs why. Budgets are kept by tenant name across reloads.
//! - Keys are stored as SHA-256 hashes; a presented key is hashed and looked up. Keys are
//!   never logged.
//! - Limits are decided from local atomics ([`budget`]); the sync task ([`shared`]) keeps them
//!   supplied from Redis (shared between gateways) or locally. The request path never waits on
//!   Redis.
//! - Callers without a key are served or not (`[keyless] serve`), limited per address on each
//!   gateway (`[keyless] requests_per_second`) and by `server.max_connections_per_ip`.

pub mod budget;
pub mod file;
pub mod shared;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::front::heads::{Heads, Read};
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use prometheus::IntCounter;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::ops::metrics::Metrics;
use budget::{Book, Rates, TenantBudget};
use file::TenantsFile;
use shared::Shared;

/// The tenant label of callers without a key.
pub const KEYLESS: &str = "keyless";

/// One tenant, as the file in use sets it.
pub struct Tenant {
    pub name: String,
    /// Chain ids it may use; `None`: all.
    pub chains: Option<Vec<u64>>,
    methods_allow: Option<Vec<String>>,
    methods_deny: Vec<String>,
    /// Browser origins (lowercase); `None`: any.
    pub origins: Option<Vec<String>>,
    /// Batch limit (the gateway's when the file sets none).
    pub max_batch: usize,
    /// Subscriptions at once on this gateway (0: no limit of its own).
    pub max_subscriptions: usize,
    pub keys: usize,
    pub budget: Arc<TenantBudget>,
    calls: IntCounter,
    compute_units: IntCounter,
}

impl Tenant {
    pub fn chain_allowed(&self, chain_id: u64) -> bool {
        self.chains.as_ref().is_none_or(|c| c.contains(&chain_id))
    }

    pub fn method_allowed(&self, method: &str) -> bool {
        file::method_allowed(self.methods_allow.as_deref(), &self.methods_deny, method)
    }

    /// Whether a browser page from `origin` may read answers (an exact match, or `*`).
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.origins
            .as_ref()
            .is_none_or(|l| l.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin)))
    }
}

/// The tenants file in use.
pub struct Tenants {
    by_key: HashMap<[u8; 32], Arc<Tenant>>,
    /// Keys seen to be good, as presented: hashing a key costs more than the rest of a cache
    /// hit's checks. In memory only (never on disk or in logs), bounded by the keys in
    /// `by_key` (only good keys go in), and gone with this set at the next reload.
    known: parking_lot::RwLock<HashMap<Box<str>, Arc<Tenant>>>,
    pub list: Vec<Arc<Tenant>>,
    pub keyless_serve: bool,
    pub keyless_rps: u32,
    weights: HashMap<String, u32>,
    default_cu: u32,
}

impl Tenants {
    /// The tenant holding `key`.
    fn find(&self, key: &str) -> Option<Arc<Tenant>> {
        if let Some(t) = self.known.read().get(key) {
            return Some(t.clone());
        }
        let t = self.by_key.get(&hash_key(key))?.clone();
        let mut known = self.known.write();
        // Several spellings can only come from different keys, each of which hashes to one in
        // `by_key`: the map never outgrows the file.
        if known.len() < self.by_key.len() {
            known.insert(key.into(), t.clone());
        }
        Some(t)
    }

    /// The compute units a call to `method` costs.
    pub fn cost(&self, method: &str) -> u32 {
        self.weights.get(method).copied().unwrap_or(self.default_cu)
    }

    /// No file: everyone keyless, nothing limited.
    fn open() -> Self {
        let (weights, default_cu) = file::weights(&Default::default());
        Self {
            by_key: HashMap::new(),
            known: Default::default(),
            list: Vec::new(),
            keyless_serve: true,
            keyless_rps: 0,
            weights,
            default_cu,
        }
    }
}

/// Why a request is refused before its calls are looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No key, and keyless callers are not served (401).
    KeyRequired,
    /// A key that no tenant holds (401).
    BadKey,
    /// Two different keys in one request (401).
    ConflictingKeys,
    /// The tenant may not use this chain (403).
    Chain,
    /// A browser page from an origin the tenant does not allow (403).
    Origin,
}

impl Denied {
    pub fn reason(self) -> &'static str {
        match self {
            Denied::KeyRequired => "key_required",
            Denied::BadKey => "bad_key",
            Denied::ConflictingKeys => "conflicting_keys",
            Denied::Chain => "chain_not_allowed",
            Denied::Origin => "origin_not_allowed",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Denied::KeyRequired => {
                "an API key is required (in the URL, x-api-key or Authorization: Bearer)"
            }
            Denied::BadKey => "unknown or revoked API key",
            Denied::ConflictingKeys => "the request carries two different API keys",
            Denied::Chain => "this API key may not use this chain",
            Denied::Origin => "this API key may not be used from this origin",
        }
    }

    /// 401 for who the caller is, 403 for what it may do.
    pub fn status(self) -> http::StatusCode {
        match self {
            Denied::KeyRequired | Denied::BadKey | Denied::ConflictingKeys => {
                http::StatusCode::UNAUTHORIZED
            }
            Denied::Chain | Denied::Origin => http::StatusCode::FORBIDDEN,
        }
    }
}

/// The limit a call was refused over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Requests,
    ComputeUnits,
    Daily,
    MaxBatch,
    AddressRequests,
}

impl Limit {
    pub fn label(self) -> &'static str {
        match self {
            Limit::Requests => "requests_per_second",
            Limit::ComputeUnits => "compute_units_per_second",
            Limit::Daily => "daily_quota",
            Limit::MaxBatch => "max_batch",
            Limit::AddressRequests => "address_requests_per_second",
        }
    }
}

/// A call refused over a limit, and when to try again (whole seconds, for `Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub limit: Limit,
    pub retry_after: u64,
}

/// Tenants, the limits' state and the reload machinery; one per gateway.
pub struct Tenancy {
    current: ArcSwap<Tenants>,
    file: Option<PathBuf>,
    chains: Vec<(String, u64)>,
    max_batch: usize,
    pub shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    /// The file as last loaded (modified time and length), to notice changes; held while a
    /// reload runs, so reloads (watcher, SIGHUP, admin API) never overtake each other.
    stamp: Mutex<Option<(SystemTime, u64)>>,
    /// Per caller address, for keyless callers (bounded; idle entries expire).
    addresses: moka::sync::Cache<IpAddr, Arc<Mutex<(f64, Instant)>>>,
    keyless_calls: IntCounter,
}

/// Callers tracked per address at most (a flood of addresses evicts the idlest).
const MAX_ADDRESSES: u64 = 100_000;

impl Tenancy {
    /// Loads the tenants file named in `config` (none: everyone keyless and unlimited).
    pub fn load(config: &Config, metrics: Arc<Metrics>) -> Result<Self, ConfigError> {
        let t = &config.tenants;
        let shared = Shared::new(
            t.redis_url.as_deref(),
            &t.redis_prefix,
            t.sync_interval,
            t.expected_gateways,
        )
        .map_err(|e| ConfigError::invalid("config", "tenants.redis_url", e.to_string()))?;
        let this = Self {
            current: ArcSwap::from_pointee(Tenants::open()),
            file: t.file.clone(),
            chains: config
                .chains
                .iter()
                .map(|c| (c.name.clone(), c.chain_id))
                .collect(),
            max_batch: config.server.max_batch,
            shared: Arc::new(shared),
            keyless_calls: metrics.tenants.calls.with_label_values(&[KEYLESS]),
            metrics,
            stamp: Mutex::new(None),
            addresses: moka::sync::Cache::builder()
                .max_capacity(MAX_ADDRESSES)
                .time_to_idle(Duration::from_secs(10))
                .build(),
        };
        this.reload()?;
        Ok(this)
    }

    /// The set in use.
    pub fn current(&self) -> arc_swap::Guard<Arc<Tenants>> {
        self.current.load()
    }

    /// The set in use, held for a whole request (across its awaits).
    pub fn current_full(&self) -> Arc<Tenants> {
        self.current.load_full()
    }

    /// Reads, checks and swaps in the tenants file; on error the set in use stays.
    pub fn reload(&self) -> Result<usize, ConfigError> {
        let Some(path) = &self.file else {
            return Ok(0);
        };
        let mut held = self.stamp.lock();
        let stamp = stamp_of(path);
        let name = path.display().to_string();
        let loaded = daemon::config::read(path).and_then(|text| {
            let f: TenantsFile = daemon::config::parse_toml(&text, &name)?;
            let cx = file::Context {
                chains: &self.chains,
                max_batch: self.max_batch,
            };
            f.check(&cx)
                .map_err(|e| ConfigError::invalid(&name, e.key, e.problem))?;
            Ok(f)
        });
        *held = stamp;
        match loaded {
            Ok(f) => {
                let tenants = self.build(f);
                let n = tenants.list.len();
                self.current.store(Arc::new(tenants));
                self.metrics
                    .tenants
                    .reloads
                    .with_label_values(&["ok"])
                    .inc();
                self.metrics.tenants.configured.set(n as i64);
                Ok(n)
            }
            Err(e) => {
                self.metrics
                    .tenants
                    .reloads
                    .with_label_values(&["error"])
                    .inc();
                Err(e)
            }
        }
    }

    fn build(&self, f: TenantsFile) -> Tenants {
        let (weights, default_cu) = file::weights(&f.compute_units);
        let mut by_key = HashMap::new();
        let mut list = Vec::new();
        let book: &Book = &self.shared.book;
        for t in f.tenants {
            let rates = Rates {
                requests_per_second: t.requests_per_second,
                compute_units_per_second: t.compute_units_per_second,
                daily_quota: t.daily_quota,
            };
            let tenant = Arc::new(Tenant {
                chains: t.chains.map(|c| {
                    c.iter()
                        .filter_map(|k| file::chain_id(&self.chains, k))
                        .collect()
                }),
                methods_allow: t.methods_allow,
                methods_deny: t.methods_deny,
                origins: t
                    .origins
                    .map(|o| o.iter().map(|s| s.to_ascii_lowercase()).collect()),
                max_batch: if t.max_batch == 0 {
                    self.max_batch
                } else {
                    t.max_batch
                },
                max_subscriptions: t.max_subscriptions,
                keys: t.key_sha256.len(),
                budget: book.budget(&t.name, rates),
                calls: self.metrics.tenants.calls.with_label_values(&[&t.name]),
                compute_units: self
                    .metrics
                    .tenants
                    .compute_units
                    .with_label_values(&[&t.name]),
                name: t.name,
            });
            for k in &t.key_sha256 {
                let hash = file::parse_hash(k).expect("checked");
                by_key.insert(hash, tenant.clone());
            }
            list.push(tenant);
        }
        let names: HashSet<&str> = list.iter().map(|t| t.name.as_str()).collect();
        book.retain(&names);
        Tenants {
            by_key,
            known: Default::default(),
            list,
            keyless_serve: f.keyless.serve,
            keyless_rps: f.keyless.requests_per_second,
            weights,
            default_cu,
        }
    }

    /// Who is calling: the tenant whose key the request presents (in the URL, `x-api-key` or
    /// `Authorization: Bearer`), or `None` for a keyless caller that may be served.
    pub fn identify<'a>(
        &self,
        tenants: &Tenants,
        url_key: Option<&str>,
        headers: impl Into<Heads<'a>>,
    ) -> Result<Option<Arc<Tenant>>, Denied> {
        match presented_key(url_key, headers.into())? {
            None if tenants.keyless_serve => Ok(None),
            None => Err(Denied::KeyRequired),
            Some(key) => tenants.find(key).map(Some).ok_or(Denied::BadKey),
        }
    }

    /// Spends the budget of calls costing `cus` compute units each (in call order) for the
    /// tenant (or the keyless caller at `addr`); returns the refused calls' indices. All at
    /// once when the budget allows, else call by call.
    pub fn charge(
        &self,
        tenants: &Tenants,
        tenant: Option<&Tenant>,
        addr: IpAddr,
        cus: &[u32],
    ) -> Vec<(usize, Refusal)> {
        let n = cus.len() as u64;
        let total: u64 = cus.iter().map(|c| u64::from(*c)).sum();
        let mut refused = Vec::new();
        match tenant {
            Some(t) => {
                let b = &t.budget;
                if self.spend(b, n, total).is_err() {
                    for (i, cu) in cus.iter().enumerate() {
                        if let Err(r) = self.spend(b, 1, u64::from(*cu)) {
                            refused.push((i, r));
                        }
                    }
                }
                let admitted = n - refused.len() as u64;
                let cu: u64 = total - refused.iter().map(|(i, _)| u64::from(cus[*i])).sum::<u64>();
                t.calls.inc_by(admitted);
                t.compute_units.inc_by(cu);
                b.admitted.fetch_add(admitted, Relaxed);
                b.admitted_cu.fetch_add(cu, Relaxed);
                b.refused.fetch_add(refused.len() as u64, Relaxed);
                self.count_refused(&t.name, &refused);
            }
            None => {
                if tenants.keyless_rps > 0 {
                    let rate = f64::from(tenants.keyless_rps);
                    let bucket = self
                        .addresses
                        .get_with(crate::front::conns::per_ip_key(addr), || {
                            Arc::new(Mutex::new((rate, Instant::now())))
                        });
                    let mut b = bucket.lock();
                    let now = Instant::now();
                    b.0 = (b.0 + (now - b.1).as_secs_f64() * rate).min(rate);
                    b.1 = now;
                    let allowed = (b.0.max(0.0) as u64).min(n);
                    b.0 -= allowed as f64;
                    let refusal = Refusal {
                        limit: Limit::AddressRequests,
                        retry_after: 1,
                    };
                    refused.extend((allowed as usize..cus.len()).map(|i| (i, refusal)));
                }
                self.count_keyless(n - refused.len() as u64);
                self.count_refused(KEYLESS, &refused);
            }
        }
        refused
    }

    /// Counts calls admitted from keyless callers (compute units are counted for tenants only).
    pub fn count_keyless(&self, calls: u64) {
        self.keyless_calls.inc_by(calls);
    }

    /// Counts a batch refused as a whole for being over the tenant's `max_batch`.
    pub fn count_batch_refused(&self, tenant: &str) {
        self.metrics
            .tenants
            .limited
            .with_label_values(&[tenant, Limit::MaxBatch.label()])
            .inc();
    }

    fn count_refused(&self, tenant: &str, refused: &[(usize, Refusal)]) {
        let mut by = [0u64; 5];
        for (_, r) in refused {
            by[r.limit as usize] += 1;
        }
        for (i, n) in by.into_iter().enumerate().filter(|(_, n)| *n > 0) {
            let limit = [
                Limit::Requests,
                Limit::ComputeUnits,
                Limit::Daily,
                Limit::MaxBatch,
                Limit::AddressRequests,
            ][i];
            self.metrics
                .tenants
                .limited
                .with_label_values(&[tenant, limit.label()])
                .inc_by(n);
        }
    }

    /// Takes `n` calls and `cu` compute units from every budget, or nothing.
    fn spend(&self, b: &TenantBudget, n: u64, cu: u64) -> Result<(), Refusal> {
        let wake = || self.shared.wake.notify_one();
        let per_second = |rate: u32, amount: u64| (amount.div_ceil(u64::from(rate).max(1))).max(1);
        if !b.requests.take(n, &wake) {
            return Err(Refusal {
                limit: Limit::Requests,
                retry_after: per_second(b.requests.rate(), n),
            });
        }
        if !b.compute_units.take(cu, &wake) {
            b.requests.give_back(n);
            return Err(Refusal {
                limit: Limit::ComputeUnits,
                retry_after: per_second(b.compute_units.rate(), cu),
            });
        }
        if !b.daily.take(n) {
            b.requests.give_back(n);
            b.compute_units.give_back(cu);
            return Err(Refusal {
                limit: Limit::Daily,
                retry_after: budget::secs_to_midnight(),
            });
        }
        Ok(())
    }

    /// Reloads when the file changes on disk, until `stop`.
    pub async fn watch(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        let Some(path) = self.file.clone() else {
            return;
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A change is loaded once the file has looked the same for one tick: a file being
        // rewritten in place may be read empty or cut short (and an empty file is valid).
        let mut seen = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = stamp_of(&path);
            let changed = now.is_some() && now != *self.stamp.lock();
            if changed && now == seen {
                let _ = self.reload_off_runtime("file changed").await;
            }
            seen = now;
        }
    }

    /// Reloads and logs the outcome (`why`: what asked for it).
    /// [`Self::reload_logged`] on the blocking pool: reading and checking a large file must not
    /// hold up requests (on one worker thread, the default on two cores, it would hold all).
    pub async fn reload_off_runtime(
        self: &Arc<Self>,
        why: &'static str,
    ) -> Result<usize, ConfigError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.reload_logged(why))
            .await
            .unwrap_or_else(|e| {
                Err(ConfigError::invalid(
                    "tenants",
                    "file",
                    format!("reload task failed: {e}"),
                ))
            })
    }

    pub fn reload_logged(&self, why: &str) -> Result<usize, ConfigError> {
        let r = self.reload();
        match &r {
            Ok(n) => tracing::info!(tenants = n, trigger = why, "tenants file reloaded"),
            Err(e) => tracing::error!(
                error = %e,
                trigger = why,
                "tenants file not reloaded; the previous tenants stay in use"
            ),
        }
        r
    }
}

/// The file's modified time and length (a change to either is a change).
fn stamp_of(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// SHA-256 of a key, as the tenants file stores it.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// [`hash_key`] as the 64 hex digits the tenants file takes.
pub fn hash_key_hex(key: &str) -> String {
    hash_key(key).iter().map(|b| format!("{b:02x}")).collect()
}

/// The key a request presents, if any; two different ones are refused.
fn presented_key<'a>(url: Option<&'a str>, h: Heads<'a>) -> Result<Option<&'a str>, Denied> {
    let header = h.get_str(Read::XApiKey);
    let bearer = h.get_str(Read::Authorization).and_then(|v| {
        let (scheme, rest) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then_some(rest)
    });
    let mut key: Option<&str> = None;
    let given = [url, header, bearer].into_iter().flatten().map(str::trim);
    for k in given.filter(|k| !k.is_empty()) {
        match key {
            None => key = Some(k),
            Some(p) if p == k => {}
            Some(_) => return Err(Denied::ConflictingKeys),
        }
    }
    Ok(key)
}

#[cfg(test)]
mod tests;
