//! What checking a key and the limits costs on every request: identifying the caller (hash and
//! look up a key, or none), and charging a single call and a batch of 50 to a tenant's budgets
//! and to a keyless address's.
//!
//! `cargo bench -p gateway --bench tenants`

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use gateway::config::Config;
use gateway::ops::metrics::Metrics;
use gateway::tenants::{hash_key_hex, Tenancy};
use http::HeaderMap;

const KEY: &str = "bench-key-0123456789";

/// A tenancy whose file has 1000 tenants; the one benchmarked has limits far above what the
/// bench spends (so every charge is admitted, the common case), and keyless callers have a
/// per-address limit just as high.
fn tenancy(dir: &std::path::Path) -> Tenancy {
    let mut file = String::from("[keyless]\nrequests_per_second = 1000000000\n");
    for i in 0..1000 {
        let key = if i == 500 {
            KEY.to_string()
        } else {
            format!("other-{i}")
        };
        file.push_str(&format!(
            "[[tenants]]\nname = \"t{i}\"\nkey_sha256 = [\"{}\"]\nrequests_per_second = 1000000000\ncompute_units_per_second = 1000000000\ndaily_quota = 1000000000000\n",
            hash_key_hex(&key)
        ));
    }
    let path = dir.join("tenants.toml");
    std::fs::write(&path, file).unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[quic]\nlisten = \"127.0.0.1:0\"\nkey_file = \"k\"\njoin_tokens = [\"0123456789\"]\n[[chains]]\nname = \"anvil\"\nchain_id = 31337\n[tenants]\nfile = {:?}\n",
        path.display().to_string()
    );
    let config = Config::parse(&text, "bench.toml").unwrap();
    Tenancy::load(&config, Arc::new(Metrics::new())).unwrap()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let t = tenancy(dir.path());
    let set = t.current_full();
    let mut with_key = HeaderMap::new();
    with_key.insert("x-api-key", KEY.parse().unwrap());
    let none = HeaderMap::new();
    let addr: IpAddr = "81.2.69.142".parse().unwrap();
    let tenant = t.identify(&set, None, &with_key).unwrap().unwrap();

    c.bench_function("identify/keyless", |b| {
        b.iter(|| black_box(t.identify(&set, None, black_box(&none)).unwrap()));
    });
    c.bench_function("identify/x-api-key", |b| {
        b.iter(|| black_box(t.identify(&set, None, black_box(&with_key)).unwrap()));
    });
    c.bench_function("identify/url-key", |b| {
        b.iter(|| black_box(t.identify(&set, Some(black_box(KEY)), &none).unwrap()));
    });
    let one: &'static [u32] = vec![set.cost("eth_getBalance")].leak();
    let fifty: &'static [u32] = vec![set.cost("eth_getBalance"); 50].leak();
    // No sync task runs here: the buckets are topped up every 1000 charges (a sliver of the
    // time measured), as the task would.
    let charge = |costs: &'static [u32]| {
        let (t, set, tenant) = (&t, &set, &tenant);
        move |b: &mut criterion::Bencher<'_>| {
            b.iter_custom(|iters| {
                let start = std::time::Instant::now();
                for i in 0..iters {
                    if i % 1000 == 0 {
                        tenant.budget.requests.refill(1.0, 1.0);
                        tenant.budget.compute_units.refill(1.0, 1.0);
                    }
                    let refused = t.charge(set, Some(tenant), addr, black_box(costs));
                    assert!(refused.is_empty(), "{refused:?}");
                }
                start.elapsed()
            });
        }
    };
    c.bench_function("charge/tenant-single", charge(one));
    c.bench_function("charge/tenant-batch-50", charge(fifty));
    c.bench_function("charge/keyless-address-single", |b| {
        b.iter(|| assert!(t.charge(&set, None, addr, black_box(one)).is_empty()));
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
