//! Per-call work on the edge node before the cache is consulted: splitting the params the
//! gateway forwarded into raw elements (no value tree, numbers untouched), and building the
//! cache key (minified, hex lower-cased) for `eth_getBalance` at a block hash.
//!
//! `policy::plan` is not measured here: it needs a `Chain` whose head has been learned from
//! live upstreams. Its block parameter is: `blockref::block_param` on an EIP-1898 object as
//! clients write it (compact: read without a parse) and spaced (the serde parse).
//!
//! `cargo bench -p edge-node --bench cache`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use edge_node::cache::key;
use serde_json::value::RawValue;

const PARAMS: &[u8] = br#"["0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",{"blockHash":"0x8c2d8b5e3f6a1d4c7b9e0f2a5d8c1b4e7a0d3f6c9b2e5a8d1c4f7b0e3a6d9c2f"}]"#;

fn cache_keys(c: &mut Criterion) {
    let elements: Vec<&RawValue> = serde_json::from_slice(PARAMS).unwrap();
    assert_eq!(elements.len(), 2);
    c.bench_function("cache/params_split", |b| {
        b.iter(|| serde_json::from_slice::<Vec<&RawValue>>(black_box(PARAMS)));
    });

    let k = key(31337, "eth_getBalance", PARAMS);
    assert_eq!(
        &k[..],
        br#"31337|eth_getBalance|["0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266",{"blockHash":"0x8c2d8b5e3f6a1d4c7b9e0f2a5d8c1b4e7a0d3f6c9b2e5a8d1c4f7b0e3a6d9c2f"}]"#
    );
    c.bench_function("cache/key_balance_by_hash", |b| {
        b.iter(|| {
            key(
                black_box(31337),
                black_box("eth_getBalance"),
                black_box(PARAMS),
            )
        });
    });
}

fn block_params(c: &mut Criterion) {
    use edge_node::blockref::{block_param, Accepts, BlockParam};
    let hash = "0x8c2d8b5e3f6a1d4c7b9e0f2a5d8c1b4e7a0d3f6c9b2e5a8d1c4f7b0e3a6d9c2f";
    for (name, text) in [
        ("compact", format!(r#"{{"blockHash":"{hash}"}}"#)),
        ("spaced", format!(r#"{{ "blockHash": "{hash}" }}"#)),
    ] {
        let raw = RawValue::from_string(text).unwrap();
        assert!(matches!(
            block_param(&raw, Accepts::Any),
            Some(BlockParam::Hash { object: true, .. })
        ));
        c.bench_function(&format!("blockref/eip1898_{name}"), |b| {
            b.iter(|| block_param(black_box(&raw), Accepts::Any));
        });
    }
}

criterion_group!(benches, cache_keys, block_params);
criterion_main!(benches);
