//! One JSON-RPC call through `Upstreams` to a loopback HTTP/1.1 server that answers with anvil's
//! exact bytes (status line, headers and body of an `eth_getBalance`): what the node pays
//! around every cache miss, its socket's system calls included. Client and server share one
//! current-thread runtime, as on a one-thread node.
//!
//! `cargo bench -p edge-node --bench upstream`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion};
use edge_node::metrics::Metrics;
use edge_node::upstream::{Answer, Upstreams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const PARAMS: &[u8] = br#"["0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266","latest"]"#;
const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nvary: origin, access-control-request-method, access-control-request-headers\r\naccess-control-allow-origin: *\r\ncontent-length: 57\r\ndate: Thu, 03 Dec 2026 07:44:11 GMT\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"0x21e19e0c9bab2400000\"}";

/// Answers every request on every connection with [`ANSWER`].
async fn serve(listener: TcpListener) {
    loop {
        let (mut io, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(4096);
            loop {
                let mut headers = [httparse::EMPTY_HEADER; 16];
                let mut req = httparse::Request::new(&mut headers);
                let Ok(httparse::Status::Complete(head)) = req.parse(&buf) else {
                    if io.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                        return;
                    }
                    continue;
                };
                let len: usize = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                    .unwrap_or(0);
                while buf.len() < head + len {
                    if io.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                        return;
                    }
                }
                let _ = buf.split_to(head + len);
                if io.write_all(ANSWER).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn upstream_call(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let url: http::Uri = format!("http://{}/", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    rt.spawn(serve(listener));
    let ups = Upstreams::new(&[url], Duration::from_secs(5), Arc::new(Metrics::new()));
    let budget = Duration::from_secs(5);
    let first = rt.block_on(ups.call("eth_getBalance", PARAMS, budget));
    assert_eq!(
        first.unwrap(),
        Answer::Result(bytes::Bytes::from_static(b"\"0x21e19e0c9bab2400000\""))
    );
    c.bench_function("upstream/call_plain_http", |b| {
        b.iter(|| rt.block_on(ups.call("eth_getBalance", black_box(PARAMS), budget)));
    });
}

criterion_group!(benches, upstream_call);
criterion_main!(benches);
