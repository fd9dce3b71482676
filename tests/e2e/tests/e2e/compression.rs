//! Compression on the wire: large answers go out gzip-encoded to callers that ask (a kept final
//! answer from its once-deflated form), byte-identical once inflated; gzip request bodies are
//! answered; a decompression bomb is refused with 413 without the memory growing by its size.

use std::io::{Read, Write};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use proto::identity::Identity;
use serde_json::{json, Value};

use e2e::*;

struct Reply {
    status: http::StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

async fn post(http: &Http, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
    let mut b = ::http::Request::post(url).header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = http
        .client
        .request(b.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

fn inflate(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// Resident memory of this process (the gateway runs in it), from /proc.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_are_gzipped_and_gzip_bodies_are_read_within_the_limit() {
    let anvil = Anvil::start(&[]).await;
    let mut cfg = gateway_config("");
    cfg.server.compress_min_bytes = 512;
    let gw = gateway::Gateway::start(cfg, Identity::generate().unwrap())
        .await
        .unwrap();
    let _node = start_node(&gw, &NodeSpec::eu_west(&anvil.url)).await;
    let http = Http::default();
    // One block holding 40 transfers: a large `eth_getBlockByNumber(.., true)` answer.
    http.rpc(&anvil.url, "evm_setAutomine", json!([false]))
        .await;
    for i in 0..40u64 {
        http.rpc(
            &anvil.url,
            "eth_sendTransaction",
            json!([{"from": "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266",
                    "to": "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
                    "value": format!("{:#x}", i + 1)}]),
        )
        .await;
    }
    http.rpc(&anvil.url, "evm_mine", json!([])).await;
    http.rpc(&anvil.url, "evm_setAutomine", json!([true])).await;
    wait_serving(&gw, 1).await;
    let url = format!("http://{}/", gw.http_addr);

    let ask = |id: u64, block: &str| {
        json!({"jsonrpc":"2.0","id":id,"method":"eth_getBlockByNumber","params":[block, true]})
            .to_string()
    };
    let plain = post(&http, &url, &[], ask(7, "0x1")).await;
    assert_eq!(plain.status, 200);
    assert!(
        plain.headers.get("content-encoding").is_none(),
        "not asked for"
    );
    let v: Value = serde_json::from_slice(&plain.body).unwrap();
    assert_eq!(v["result"]["transactions"].as_array().unwrap().len(), 40);
    let direct = http
        .rpc(&anvil.url, "eth_getBlockByNumber", json!(["0x1", true]))
        .await;
    assert_eq!(v["result"], direct["result"]);

    let zipped = post(
        &http,
        &url,
        &[("accept-encoding", "gzip, br")],
        ask(7, "0x1"),
    )
    .await;
    assert_eq!(zipped.headers.get("content-encoding").unwrap(), "gzip");
    assert_eq!(zipped.headers.get("vary").unwrap(), "accept-encoding");
    assert_eq!(
        inflate(&zipped.body),
        plain.body.to_vec(),
        "byte-identical once inflated"
    );
    println!(
        "eth_getBlockByNumber with 40 transactions: {} bytes plain, {} gzip ({:.1}x)",
        plain.body.len(),
        zipped.body.len(),
        plain.body.len() as f64 / zipped.body.len() as f64
    );
    assert!(zipped.body.len() * 3 < plain.body.len());

    // A final answer the gateway keeps (genesis, by number), sent from its once-deflated
    // form: still byte-identical to the plain answer, with this caller's id.
    let first = post(&http, &url, &[], ask(1, "0x0")).await;
    assert!(
        first.body.len() >= 512,
        "genesis is large enough: {}",
        first.body.len()
    );
    let kept = post(&http, &url, &[("accept-encoding", "gzip")], ask(99, "0x0")).await;
    assert_eq!(kept.headers.get("x-cache-tier").unwrap(), "gateway");
    assert_eq!(kept.headers.get("content-encoding").unwrap(), "gzip");
    let want =
        String::from_utf8(first.body.to_vec())
            .unwrap()
            .replacen("\"id\":1,", "\"id\":99,", 1);
    assert_eq!(String::from_utf8(inflate(&kept.body)).unwrap(), want);

    // Small answers are not compressed.
    let small = post(
        &http,
        &url,
        &[("accept-encoding", "gzip")],
        json!({"jsonrpc":"2.0","id":1,"method":"eth_chainId"}).to_string(),
    )
    .await;
    assert!(small.headers.get("content-encoding").is_none());

    // A gzip request body is answered.
    let req = json!({"jsonrpc":"2.0","id":5,"method":"eth_chainId"}).to_string();
    let r = post(
        &http,
        &url,
        &[("content-encoding", "gzip")],
        gzip(req.as_bytes()),
    )
    .await;
    assert_eq!(r.status, 200);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["result"], "0x7a69");
    // Other codings and broken gzip: refused clearly.
    let r = post(&http, &url, &[("content-encoding", "br")], req.clone()).await;
    assert_eq!(r.status, 415);
    let r = post(&http, &url, &[("content-encoding", "gzip")], req.clone()).await;
    assert_eq!(r.status, 400);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"]["code"], -32700);

    // A bomb: 256 MB of spaces in about 250 kB, against the 5 MB body limit.
    let bomb = gzip(&vec![b' '; 256 << 20]);
    assert!(bomb.len() < 400_000, "{}", bomb.len());
    let before = rss_bytes();
    let r = post(&http, &url, &[("content-encoding", "gzip")], bomb).await;
    let grew = rss_bytes().saturating_sub(before);
    assert_eq!(r.status, 413);
    // Inflated whole, the body alone would be 256 MB; other tests share this process, so the
    // bound leaves them room.
    assert!(grew < 160 << 20, "memory grew by {} MB", grew >> 20);
    // And the gateway still serves.
    let v = http.rpc(&url, "eth_chainId", json!([])).await;
    assert_eq!(v["result"], "0x7a69");
}
