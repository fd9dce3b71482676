//! The request hot path pieces: parsing a single call and a batch of 50 (the one-pass scan),
//! writing a response with the caller's id spliced around a cached result, the gateway-tier
//! answer cache (key building and a hit, with the key in a reused buffer as the request path
//! looks up), and the tag test of calls that go to a node.
//!
//! `cargo bench -p gateway --bench jsonrpc`

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion};
use gateway::answers::FinalAnswers;
use gateway::front::jsonrpc::{parse_bytes, write_response, Entry, Parsed};

const CHAIN_ID: u64 = 31337;
const BLOCK_HASH: &str = "0x8c2d8b5e3f6a1d4c7b9e0f2a5d8c1b4e7a0d3f6c9b2e5a8d1c4f7b0e3a6d9c2f";
const ADDRESS: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
/// A balance as a node answers it, as the gateway keeps it.
const RESULT: &[u8] = br#""0x21e19e0c9bab2400000""#;

fn params(address: &str) -> String {
    format!(r#"["{address}",{{"blockHash":"{BLOCK_HASH}"}}]"#)
}

fn call(id: u64, address: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"eth_getBalance","params":{}}}"#,
        params(address)
    )
}

/// The `i`th of a set of distinct, well-formed addresses.
fn address(i: u64) -> String {
    format!("0x{:040x}", 0x00f3_9fd6_e51a_ad88_u64.wrapping_mul(i + 1))
}

fn assert_call(e: &Entry, want_id: &[u8]) {
    match e {
        Entry::Call {
            id: Some(id),
            method,
            params,
        } => {
            assert_eq!(&id[..], want_id);
            assert_eq!(method, "eth_getBalance");
            assert!(params.starts_with(b"[\"0x") && params.ends_with(b"\"}]"));
        }
        other => panic!("expected a call, got {other:?}"),
    }
}

fn parsing(c: &mut Criterion) {
    let single = Bytes::from(call(1, ADDRESS));
    match parse_bytes(&single, 100).unwrap() {
        Parsed::Single(e) => assert_call(&e, b"1"),
        other => panic!("expected a single call, got {other:?}"),
    }
    c.bench_function("jsonrpc/parse_single", |b| {
        b.iter(|| parse_bytes(black_box(&single), 100));
    });

    let batch = format!(
        "[{}]",
        (0..50)
            .map(|i| call(i + 1, &address(i)))
            .collect::<Vec<_>>()
            .join(",")
    );
    let batch = Bytes::from(batch);
    match parse_bytes(&batch, 100).unwrap() {
        Parsed::Batch(v) => {
            assert_eq!(v.len(), 50);
            for (i, e) in v.iter().enumerate() {
                assert_call(e, (i + 1).to_string().as_bytes());
            }
        }
        other => panic!("expected a batch, got {other:?}"),
    }
    c.bench_function("jsonrpc/parse_batch_50", |b| {
        b.iter(|| parse_bytes(black_box(&batch), 100));
    });
}

fn responding(c: &mut Criterion) {
    let id: &[u8] = b"1";
    let mut out = BytesMut::with_capacity(256);
    write_response(&mut out, id, Ok(RESULT));
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"jsonrpc":"2.0","id":1,"result":"0x21e19e0c9bab2400000"})
    );
    c.bench_function("jsonrpc/write_response", |b| {
        b.iter(|| {
            out.clear();
            write_response(&mut out, black_box(id), Ok(black_box(RESULT)));
            black_box(out.len())
        });
    });
}

fn answers(c: &mut Criterion) {
    let params = params(ADDRESS).into_bytes();
    c.bench_function("jsonrpc/answer_key", |b| {
        b.iter(|| FinalAnswers::key(black_box(CHAIN_ID), black_box("eth_getBalance"), &params));
    });

    let store = FinalAnswers::new(64 << 20, 1024);
    let key = FinalAnswers::key(CHAIN_ID, "eth_getBalance", &params);
    store.insert(key.clone(), Bytes::from_static(RESULT), 0);
    assert_eq!(store.get(&key).map(|k| k.result).as_deref(), Some(RESULT));
    c.bench_function("jsonrpc/answer_hit", |b| {
        b.iter(|| store.get(black_box(&key)));
    });
    // As the gateway-tier phase looks up: the key written into a buffer the request reuses.
    let mut scratch = Vec::new();
    c.bench_function("jsonrpc/answer_key_into_and_hit", |b| {
        b.iter(|| {
            FinalAnswers::key_into(&mut scratch, CHAIN_ID, black_box("eth_getBalance"), &params);
            store.get(&scratch)
        });
    });
}

/// The tag test every call that goes to a node takes (routing by the tip callers were shown).
fn tags(c: &mut Criterion) {
    let by_number =
        params(ADDRESS).replace(&format!(r#"{{"blockHash":"{BLOCK_HASH}"}}"#), "\"0x10\"");
    let latest = format!(r#"["{ADDRESS}","latest"]"#);
    assert!(!gateway::nodes::tip::reads_tip(
        "eth_getBalance",
        by_number.as_bytes()
    ));
    assert!(gateway::nodes::tip::reads_tip(
        "eth_getBalance",
        latest.as_bytes()
    ));
    c.bench_function("jsonrpc/reads_tip_by_number", |b| {
        b.iter(|| {
            gateway::nodes::tip::reads_tip("eth_getBalance", black_box(by_number.as_bytes()))
        });
    });
    c.bench_function("jsonrpc/reads_tip_latest", |b| {
        b.iter(|| gateway::nodes::tip::reads_tip("eth_getBalance", black_box(latest.as_bytes())));
    });
}

/// What a node must be able to answer, asked of every call that goes to a node: a state read
/// at a number finds its block element (a string scan by memchr), at a tag it needs nothing.
fn needs(c: &mut Criterion) {
    use gateway::nodes::capability::need;
    let by_number =
        params(ADDRESS).replace(&format!(r#"{{"blockHash":"{BLOCK_HASH}"}}"#), "\"0x10\"");
    assert!(need("eth_getBalance", by_number.as_bytes()).is_some());
    c.bench_function("capability/need_state_read_at_number", |b| {
        b.iter(|| need("eth_getBalance", black_box(by_number.as_bytes())));
    });
}

criterion_group!(benches, parsing, responding, answers, tags, needs);
criterion_main!(benches);
