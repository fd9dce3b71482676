//! Caller location: who is calling, and where on Earth they are.
//!
//! This module owns three steps the router needs before it can pick the nearest edge node:
//!
//! 1. [`client_ip`] — the caller's address. It is the socket peer unless that peer is a trusted
//!    proxy, in which case `X-Forwarded-For` / `Forwarded` are walked from the right, never
//!    trusting what the client itself wrote.
//! 2. [`Geo::locate`] — address → [`Location`] from a MaxMind DB file (GeoIP2/GeoLite2 City or
//!    DB-IP Lite flat schema), memoised in a bounded cache, reloaded in place when the file
//!    changes. Non-public and unknown addresses get the configured default location.
//! 3. [`haversine_km`] — great-circle distance between two coordinates.
//!
//! Invariants: a bad database file never replaces a working one; no lookup panics or blocks on
//! I/O; a client cannot choose its own address by writing headers unless every hop it claims to
//! have passed is a configured trusted proxy.

mod cache;
mod client_ip;
mod continent;
mod db;
mod distance;
mod forwarded;
mod handle;
mod verify;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use client_ip::{
    client_ip, HeaderPolicy, HeaderPolicyParseError, TrustedProxies, X_FORWARDED_FOR,
};
pub use continent::continent_of;
pub use db::DatabaseInfo;
pub use distance::haversine_km;
pub use handle::{is_public, Geo, GeoStats, WatcherHandle};

/// Default memo cache size: enough for the distinct callers of a busy hour, about 10 MB.
pub const DEFAULT_CACHE_CAPACITY: usize = 100_000;

/// Default interval between checks of the database files' mtime and size.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(30);

/// Where a caller is. Coordinates are WGS84 degrees; codes are upper-case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
    /// ISO 3166-1 alpha-2 country code, e.g. `GB`.
    #[serde(default)]
    pub country: Option<String>,
    /// Two-letter continent code as MaxMind uses them: `AF AN AS EU NA OC SA`.
    #[serde(default)]
    pub continent: Option<String>,
}

impl Location {
    /// The coordinate pair in the form [`haversine_km`] takes.
    pub fn coords(&self) -> (f64, f64) {
        (self.lat, self.lon)
    }
}

/// How a [`Geo`] behaves; the database paths are given to [`Geo::open`].
#[derive(Debug, Clone)]
pub struct GeoOptions {
    /// Memo cache entries; 0 disables memoisation.
    pub cache_capacity: usize,
    /// Answer for private, loopback, link-local, unspecified and unknown addresses.
    /// `None` means such callers have no location.
    pub default_location: Option<Location>,
}

impl Default for GeoOptions {
    fn default() -> Self {
        Self {
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            default_location: None,
        }
    }
}

/// Why a database could not be opened or reloaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("no geo database file was given")]
    NoDatabase,
    #[error("cannot read geo database {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("geo database {} is not a valid MaxMind DB file: {source}", .path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: maxminddb::MaxMindDbError,
    },
    #[error("geo database {} is corrupt: {reason}", .path.display())]
    Corrupt { path: PathBuf, reason: String },
}

impl GeoError {
    /// The file this error is about, if any.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            GeoError::NoDatabase => None,
            GeoError::Read { path, .. }
            | GeoError::Invalid { path, .. }
            | GeoError::Corrupt { path, .. } => Some(path),
        }
    }
}
