//! The lean HTTP/1.1 server's per-request work (`gateway::front::h1`): a request read from its
//! bytes (head parsed, the headers the request path reads found, body built) as a load tool and
//! as a browser send it, then with those headers read as the request path reads them
//! (`front::heads`), and an answer's head and body encoded for one write.
//!
//! `cargo bench -p gateway --bench http1`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use gateway::front::h1;
use gateway::front::heads::{Heads, Read};
use gateway::front::respond::{json, names};
use http::{header, HeaderValue, StatusCode};

const BODY: &str = r#"{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266","0x0"]}"#;

fn request(headers: &str) -> Bytes {
    Bytes::from(format!(
        "POST / HTTP/1.1\r\n{headers}content-length: {}\r\n\r\n{BODY}",
        BODY.len()
    ))
}

fn bench(c: &mut Criterion) {
    // What wrk sends in loadtests/run.sh.
    let wrk = request(
        "Host: 127.0.0.1:28546\r\nContent-Type: application/json\r\nX-Forwarded-For: 81.2.69.142\r\n",
    );
    // What a browser's fetch() from a dApp page sends.
    let browser = request(
        "Host: rpc.example.org\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0\r\n\
         Accept: */*\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br, zstd\r\n\
         Referer: https://app.example.org/\r\nContent-Type: application/json\r\nOrigin: https://app.example.org\r\n\
         Sec-Fetch-Dest: empty\r\nSec-Fetch-Mode: cors\r\nSec-Fetch-Site: same-site\r\nConnection: keep-alive\r\n",
    );
    for (name, bytes) in [("wrk", &wrk), ("browser", &browser)] {
        assert!(h1::request(bytes, 1 << 20).is_some(), "{name}");
        c.bench_function(&format!("h1 request ({name})"), |b| {
            b.iter(|| h1::request(black_box(bytes), 1 << 20));
        });
        c.bench_function(&format!("h1 request and its header reads ({name})"), |b| {
            b.iter(|| {
                let req = h1::request(black_box(bytes), 1 << 20).expect("served here");
                let h = Heads::Few(&req.body().heads);
                // Each read the request path makes, in its order (`front::entry`).
                let found = [
                    Read::Origin,
                    Read::XApiKey,
                    Read::Authorization,
                    Read::ContentType,
                    Read::ContentEncoding,
                    Read::AcceptEncoding,
                ]
                .into_iter()
                .filter_map(|r| h.get(r))
                .count();
                let last_hop = h.get_all(Read::XForwardedFor).next_back().map(<[u8]>::len);
                (found, last_hop)
            });
        });
    }
    let answer = || {
        let mut r = json(
            StatusCode::OK,
            Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"result":"0x21e19e0c9bab2400000"}"#),
        );
        let h = r.headers_mut();
        h.insert(names::X_CACHE, HeaderValue::from_static("HIT"));
        h.insert(names::X_CACHE_TIER, HeaderValue::from_static("gateway"));
        h.insert(
            names::X_REQUEST_ID,
            HeaderValue::from_static("0123456789abcdef"),
        );
        h.insert(names::X_GATEWAY, HeaderValue::from_static("gw-1"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        r
    };
    let mut out = Vec::with_capacity(1024);
    c.bench_function("h1 encode (a gateway-tier hit)", |b| {
        b.iter_batched(
            answer,
            |r| {
                out.clear();
                black_box(h1::encode(r, false, &mut out));
            },
            criterion::BatchSize::SmallInput,
        );
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
