//! Node choice per request: ranking over 10, 100 and 10,000 nodes (goal: under 10 µs at
//! 10,000), cold (a caller cell not yet memoised: a full scan) and warm; and the whole
//! per-request cost of locating a caller and choosing its node.
//!
//! `cargo bench -p gateway --bench routing`

use std::hint::black_box;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use gateway::config::RoutingConfig;
use gateway::geo::{client_ip, Geo, GeoOptions, Location, TrustedProxies};
use gateway::nodes::router::{Routable, Table, Target};
use http::{HeaderMap, HeaderValue};

#[derive(Clone)]
struct Fake(Arc<AtomicU32>);

impl Routable for Fake {
    fn load(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
    fn usable(&self) -> bool {
        true
    }
}

/// `n` nodes spread over the globe deterministically, with some load.
fn table(n: usize) -> Table<Fake> {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let targets = (0..n)
        .map(|i| Target {
            item: Fake(Arc::new(AtomicU32::new((next() % 8) as u32))),
            lat: (next() % 140) as f64 - 60.0,
            lon: (next() % 360) as f64 - 180.0,
            region: format!("r{}", i % 20),
            base_ms: (next() % 50) as f64 / 10.0,
            plausible: true,
        })
        .collect();
    Table::new(targets)
}

fn london() -> Location {
    Location {
        lat: 51.5,
        lon: -0.12,
        country: Some("GB".into()),
        continent: Some("EU".into()),
    }
}

fn rank(c: &mut Criterion) {
    let cfg = RoutingConfig::default();
    let mut g = c.benchmark_group("rank");
    for n in [10usize, 100, 10_000] {
        let t = table(n);
        let caller = london();
        assert!(!t.rank(&cfg, Some(&caller), None).is_empty());
        g.bench_with_input(BenchmarkId::new("warm", n), &n, |b, _| {
            b.iter(|| t.rank(&cfg, black_box(Some(&caller)), None));
        });
        // The full scan the first caller from a cell pays (once per cell per interval).
        g.bench_with_input(BenchmarkId::new("cold_cell_scan", n), &n, |b, _| {
            b.iter(|| t.scan(&cfg, black_box(Some(&caller)), None));
        });
    }
    g.finish();
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Client address from X-Forwarded-For, memoised geolocation, and ranking 100 nodes.
fn per_request(c: &mut Criterion) {
    let geo = Geo::open(fixture("geoip2-city.mmdb"), GeoOptions::default()).unwrap();
    let trusted = TrustedProxies::parse(["127.0.0.0/8"]).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", HeaderValue::from_static("81.2.69.142"));
    let peer: IpAddr = "127.0.0.1".parse().unwrap();
    let t = table(100);
    let cfg = RoutingConfig::default();
    assert!(geo.locate(client_ip(peer, &headers, &trusted)).is_some());
    c.bench_function("per_request/locate_and_rank_100", |b| {
        b.iter(|| {
            let ip = client_ip(black_box(peer), black_box(&headers), &trusted);
            let loc = geo.locate(ip);
            t.rank(&cfg, loc.as_deref(), None)
        });
    });
}

criterion_group!(benches, rank, per_request);
criterion_main!(benches);
