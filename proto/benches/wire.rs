//! The gateway <-> node wire format: framing, and the binary `RpcRequest` (one call and 50)
//! and `RpcResponse` layouts, each way.
//!
//! `cargo bench -p proto --bench wire`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use proto::frame::{decode_one, encode, FrameType};
use proto::msg::{CacheStatus, Call, CallResult, Outcome, RpcRequest, RpcResponse};
use proto::DEFAULT_MAX_FRAME_BYTES;

const BLOCK_HASH: &str = "0x8c2d8b5e3f6a1d4c7b9e0f2a5d8c1b4e7a0d3f6c9b2e5a8d1c4f7b0e3a6d9c2f";

fn balance_call(address: &str) -> Call {
    Call {
        method: "eth_getBalance".into(),
        params: Bytes::from(format!(r#"["{address}",{{"blockHash":"{BLOCK_HASH}"}}]"#)),
    }
}

fn request(n: u64) -> RpcRequest {
    RpcRequest {
        chain_id: 31337,
        request_id: "01JBX7Q2V9K3M4N5P6R7S8T9VW".into(),
        budget_ms: 10_000,
        min_head: 0,
        calls: (0..n)
            .map(|i| {
                balance_call(&format!(
                    "0x{:040x}",
                    0x00f3_9fd6_e51a_ad88_u64.wrapping_mul(i + 1)
                ))
            })
            .collect(),
    }
}

fn framing(c: &mut Criterion) {
    let payload = request(1).encode().slice(5..);
    let frame = encode(FrameType::RpcRequest, &payload);
    let back = decode_one(frame.clone(), DEFAULT_MAX_FRAME_BYTES).unwrap();
    assert_eq!(back.ty, FrameType::RpcRequest);
    assert_eq!(back.payload, payload);

    c.bench_function("wire/frame_encode", |b| {
        b.iter(|| encode(FrameType::RpcRequest, black_box(&payload)));
    });
    c.bench_function("wire/frame_decode", |b| {
        b.iter(|| decode_one(black_box(frame.clone()), DEFAULT_MAX_FRAME_BYTES));
    });
}

fn requests(c: &mut Criterion) {
    for (n, enc_name, dec_name) in [
        (1, "wire/request_encode", "wire/request_decode"),
        (50, "wire/request_encode_50", "wire/request_decode_50"),
    ] {
        let req = request(n);
        let frame = req.encode();
        let payload = decode_one(frame, DEFAULT_MAX_FRAME_BYTES)
            .unwrap()
            .expect(FrameType::RpcRequest)
            .unwrap();
        assert_eq!(RpcRequest::decode(payload.clone()).unwrap(), req);

        c.bench_function(enc_name, |b| b.iter(|| black_box(&req).encode()));
        c.bench_function(dec_name, |b| {
            b.iter(|| RpcRequest::decode(black_box(payload.clone())));
        });
    }
}

fn responses(c: &mut Criterion) {
    let resp = RpcResponse {
        results: vec![CallResult {
            cache: CacheStatus::Hit,
            final_answer: true,
            at_state: false,
            outcome: Outcome::Result(Bytes::from_static(br#""0x21e19e0c9bab2400000""#)),
        }],
        state_version: None,
    };
    let payload = decode_one(resp.encode(), DEFAULT_MAX_FRAME_BYTES)
        .unwrap()
        .expect(FrameType::RpcResponse)
        .unwrap();
    assert_eq!(RpcResponse::decode(payload.clone()).unwrap(), resp);

    c.bench_function("wire/response_encode", |b| {
        b.iter(|| black_box(&resp).encode());
    });
    c.bench_function("wire/response_decode", |b| {
        b.iter(|| RpcResponse::decode(black_box(payload.clone())));
    });
}

criterion_group!(benches, framing, requests, responses);
criterion_main!(benches);
