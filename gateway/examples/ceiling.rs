//! The ceiling of the load tests (`loadtests/run.sh`, target `ceiling`): the cheapest HTTP/1.1
//! JSON-RPC server hyper allows, on one thread like the measured gateway (`worker_threads = 1`):
//! a tokio current-thread runtime. It reads each request's whole body and answers one fixed
//! result (anvil's genesis balance of its first dev account, what workloads 1a and 1b ask for),
//! keep-alive on, `TCP_NODELAY` on. No parsing, no routing, no cache, no node: whatever an HTTP
//! gateway does on this machine, it cannot answer faster than this, so the gateway's cache hits
//! are reported as a share of it.
//!
//! ```sh
//! cargo build --release --example ceiling && target/release/examples/ceiling 127.0.0.1:28558
//! ```

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{body::Incoming, header, server::conn::http1, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

// The same allocator as the daemons, so the ceiling is no handicap of ours.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const ANSWER: &[u8] = br#"{"jsonrpc":"2.0","id":1,"result":"0x21e19e0c9bab2400000"}"#;

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    req.into_body().collect().await?;
    let mut res = Response::new(Full::new(Bytes::from_static(ANSWER)));
    let json = header::HeaderValue::from_static("application/json");
    res.headers_mut().insert(header::CONTENT_TYPE, json);
    Ok(res)
}

fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .context("usage: ceiling LISTEN_ADDRESS")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(&addr)
            .await
            .with_context(|| format!("bind {addr}"))?;
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, most likely: let some connections close first.
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service_fn(answer))
                    .await;
            });
        }
    })
}
