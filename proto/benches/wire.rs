//! The gateway <-> node wire format: framing, the binary `RpcRequest` (one call and 50)
//! and `RpcResponse` layouts, each way, and the request stream's batches (32 tagged answers
//! written into one buffer, and read back with `FrameReader`).
//!
//! `cargo bench -p proto --bench wire`

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion};
use proto::frame::{decode_one, encode, FrameReader, FrameType};
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
        // The gateway holds the calls already: it used to clone them into a request to encode
        // it, and now writes them into the frame where they are.
        let held = &req.calls;
        c.bench_function(&format!("{enc_name}_cloning_held_calls"), |b| {
            b.iter(|| {
                RpcRequest {
                    chain_id: req.chain_id,
                    request_id: req.request_id.clone(),
                    budget_ms: req.budget_ms,
                    min_head: req.min_head,
                    calls: black_box(held).to_vec(),
                }
                .encode()
            });
        });
        c.bench_function(&format!("{enc_name}_from_held_calls"), |b| {
            b.iter(|| {
                RpcRequest::encode_parts(
                    req.chain_id,
                    &req.request_id,
                    req.budget_ms,
                    req.min_head,
                    black_box(held).iter(),
                )
            });
        });
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

/// What the request stream's writer and reader do per batch: 32 answers tagged into one
/// buffer (one write), and the 32 frames taken back out of it.
fn stream_batches(c: &mut Criterion) {
    let answer = RpcResponse {
        results: vec![CallResult {
            cache: CacheStatus::Hit,
            final_answer: true,
            at_state: false,
            outcome: Outcome::Result(Bytes::from_static(br#""0x21e19e0c9bab2400000""#)),
        }],
        state_version: Some(7),
    }
    .encode();
    let tagged = |out: &mut BytesMut| {
        out.clear();
        for tag in 0..32u64 {
            proto::msg::put_tagged(out, FrameType::TaggedResponse, tag, &answer);
        }
    };
    let mut out = BytesMut::new();
    tagged(&mut out);
    let batch = out.clone().freeze();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let read_all = |data: &[u8]| {
        rt.block_on(async {
            let mut r = FrameReader::new(DEFAULT_MAX_FRAME_BYTES);
            let mut data = data;
            let mut n = 0;
            while let Some(f) = r.next(&mut data).await.unwrap() {
                n += f.payload.len();
            }
            n
        })
    };
    assert_eq!(read_all(&batch), 32 * (answer.len() - 5 + 8));

    c.bench_function("wire/stream_write_32_answers", |b| {
        b.iter(|| tagged(black_box(&mut out)));
    });
    c.bench_function("wire/stream_read_32_answers", |b| {
        b.iter(|| read_all(black_box(&batch)));
    });
}

criterion_group!(benches, framing, requests, responses, stream_batches);
criterion_main!(benches);
