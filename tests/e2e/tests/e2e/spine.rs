//! The spine: gateway + edge node over QUIC in front of a real anvil.

use std::time::Duration;

use serde_json::{json, Value};

use e2e::*;

const ACCT0: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

struct Stack {
    anvil: Anvil,
    proxy: CountingProxy,
    gw: gateway::Gateway,
    _node: edge_node::EdgeNode,
    url: String,
    http: Http,
}

impl Stack {
    /// The genesis block's hash, from anvil.
    async fn genesis_hash(&self) -> String {
        let genesis = self
            .http
            .rpc(
                &self.anvil.url,
                "eth_getBlockByNumber",
                json!(["0x0", false]),
            )
            .await;
        genesis["result"]["hash"].as_str().unwrap().to_string()
    }
}

async fn stack() -> Stack {
    let anvil = Anvil::start(&[]).await;
    let proxy = CountingProxy::start(&anvil.url).await;
    let gw = start_gateway("").await;
    let node = start_node(
        &gw,
        &NodeSpec {
            region: "eu-west",
            lat: 50.11,
            lon: 8.68,
            upstream: &proxy.url,
        },
    )
    .await;
    wait_serving(&gw, 1).await;
    let url = format!("http://{}/", gw.http_addr);
    Stack {
        anvil,
        proxy,
        gw,
        _node: node,
        url,
        http: Http::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_match_anvil_and_ids_are_preserved() {
    let s = stack().await;
    let ghash = s.genesis_hash().await;
    let zero_hash = format!("0x{}", "0".repeat(64));
    let table: Vec<(&str, Value)> = vec![
        ("eth_chainId", json!([])),
        ("net_version", json!([])),
        ("eth_blockNumber", json!([])),
        ("eth_getBalance", json!([ACCT0, "latest"])),
        ("eth_getBalance", json!([ACCT0, "0x0"])),
        (
            "eth_getBalance",
            json!(["0x000000000000000000000000000000000000dEaD", "latest"]),
        ),
        ("eth_getBalance", json!([ACCT0, {"blockHash": ghash}])),
        ("eth_getBalance", json!(["0xnot-an-address", "latest"])),
        ("eth_getTransactionCount", json!([ACCT0, "latest"])),
        ("eth_getCode", json!([ACCT0, "latest"])),
        ("eth_getBlockByNumber", json!(["0x0", false])),
        ("eth_getBlockByNumber", json!(["latest", true])),
        ("eth_getBlockByNumber", json!(["0x999", false])),
        ("eth_getBlockByHash", json!([ghash, false])),
        ("eth_getBlockByHash", json!([zero_hash, false])),
        // The identity precompile echoes its input.
        (
            "eth_call",
            json!([{"to": "0x0000000000000000000000000000000000000004", "data": "0x1234"}, "latest"]),
        ),
        ("eth_noSuchMethod", json!([])),
    ];
    for (i, (method, params)) in table.iter().enumerate() {
        for id in [json!(i), json!(format!("id-{i}")), Value::Null] {
            let body =
                json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
            let direct = s.http.post(&s.anvil.url, body.clone()).await.json();
            let via = s.http.post(&s.url, body.clone()).await;
            assert_eq!(via.json(), direct, "{method} {params}");
        }
    }

    // A batch: every element answered in order, under its own id.
    let batch: Vec<Value> = table
        .iter()
        .enumerate()
        .map(|(i, (m, p))| json!({"jsonrpc": "2.0", "id": format!("b{i}"), "method": m, "params": p}))
        .collect();
    let body = Value::Array(batch).to_string();
    let direct = s.http.post(&s.anvil.url, body.clone()).await.json();
    let via = s.http.post(&s.url, body).await;
    assert_eq!(
        via.header("x-cache"),
        None,
        "no per-call headers on batches"
    );
    assert_eq!(via.json(), direct);

    // Chain by name and by id.
    for path in ["anvil", "31337"] {
        let r = s
            .http
            .rpc(
                &format!("http://{}/{path}", s.gw.http_addr),
                "eth_chainId",
                json!([]),
            )
            .await;
        assert_eq!(r["result"], "0x7a69");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_requests_hit_the_cache_and_concurrent_misses_coalesce() {
    let s = stack().await;
    let ghash = s.genesis_hash().await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_getBlockByHash", "params": [ghash, false]})
        .to_string();

    let first = s.http.post(&s.url, body.clone()).await;
    assert_eq!(first.header("x-cache"), Some("MISS"));
    assert!(first.header("x-edge-node").is_some_and(|n| n.len() == 32));
    assert_eq!(first.header("x-edge-region"), Some("eu-west"));
    assert!(first.header("x-request-id").is_some());
    let upstream_before = s.proxy.calls_of("eth_getBlockByHash");
    assert_eq!(upstream_before, 1);
    for id in [json!(2), json!("x")] {
        let again = s
            .http
            .post(&s.url, json!({"jsonrpc": "2.0", "id": id, "method": "eth_getBlockByHash", "params": [ghash.to_uppercase().replace("0X", "0x"), false]}).to_string())
            .await;
        assert_eq!(again.header("x-cache"), Some("HIT"));
        assert_eq!(again.json()["id"], id);
        assert_eq!(again.json()["result"], first.json()["result"]);
    }
    assert_eq!(
        s.proxy.calls_of("eth_getBlockByHash"),
        1,
        "a hit must not reach the upstream"
    );

    // Uncacheable answers say so and do reach the upstream.
    let gp = s
        .http
        .post(
            &s.url,
            json!({"jsonrpc":"2.0","id":1,"method":"eth_gasPrice"}).to_string(),
        )
        .await;
    assert_eq!(gp.header("x-cache"), Some("BYPASS"));
    // The tip is answered from the node's own chain state.
    let bn = s
        .http
        .post(
            &s.url,
            json!({"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"}).to_string(),
        )
        .await;
    assert_eq!(bn.header("x-cache"), Some("HIT"));

    // A fresh block, then 16 identical concurrent requests for it: one upstream request.
    s.http.rpc(&s.anvil.url, "evm_mine", json!([])).await;
    let b1 = s
        .http
        .rpc(&s.anvil.url, "eth_getBlockByNumber", json!(["0x1", false]))
        .await;
    let h1 = b1["result"]["hash"].as_str().unwrap().to_string();
    let body =
        json!({"jsonrpc": "2.0", "id": 1, "method": "eth_getBlockByHash", "params": [h1, true]})
            .to_string();
    let before = s.proxy.calls_of("eth_getBlockByHash");
    let replies =
        futures::future::join_all((0..16).map(|_| s.http.post(&s.url, body.clone()))).await;
    for r in &replies {
        assert_eq!(r.json()["result"]["hash"], h1.as_str());
    }
    assert_eq!(
        s.proxy.calls_of("eth_getBlockByHash") - before,
        1,
        "identical misses coalesce"
    );

    // Errors are never cached: the same bad call reaches the upstream each time.
    let bad =
        json!({"jsonrpc":"2.0","id":1,"method":"eth_getBlockByHash","params":["0x1234", false]})
            .to_string();
    let n0 = s.proxy.calls_of("eth_getBlockByHash");
    s.http.post(&s.url, bad.clone()).await;
    s.http.post(&s.url, bad).await;
    assert_eq!(s.proxy.calls_of("eth_getBlockByHash") - n0, 2);
}

/// (what, path, content type, body, HTTP status, expected JSON-RPC code, expected id)
type BadCase<'a> = (&'a str, &'a str, Option<&'a str>, String, u16, i64, Value);

fn code(v: &Value) -> i64 {
    v["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no error code in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_exact_errors_and_changes_nothing() {
    let s = stack().await;
    let block_before =
        s.http.rpc(&s.anvil.url, "eth_blockNumber", json!([])).await["result"].clone();
    let ok_call = json!({"jsonrpc":"2.0","id":"ok","method":"eth_chainId"}).to_string();
    let huge = format!("[{}]", vec![ok_call.as_str(); 1001].join(","));

    let cases: Vec<BadCase<'_>> = vec![
        (
            "malformed JSON",
            "/",
            Some("application/json"),
            r#"{"jsonrpc":"2.0","#.into(),
            200,
            -32700,
            Value::Null,
        ),
        (
            "not JSON at all",
            "/",
            Some("application/json"),
            "hello".into(),
            200,
            -32700,
            Value::Null,
        ),
        (
            "a number",
            "/",
            Some("application/json"),
            "42".into(),
            200,
            -32600,
            Value::Null,
        ),
        (
            "empty batch",
            "/",
            Some("application/json"),
            "[]".into(),
            200,
            -32600,
            Value::Null,
        ),
        (
            "wrong jsonrpc",
            "/",
            Some("application/json"),
            r#"{"jsonrpc":"1.0","id":3,"method":"eth_chainId"}"#.into(),
            200,
            -32600,
            json!(3),
        ),
        (
            "missing method",
            "/",
            Some("application/json"),
            r#"{"jsonrpc":"2.0","id":4}"#.into(),
            200,
            -32600,
            json!(4),
        ),
        (
            "method not a string",
            "/",
            Some("application/json"),
            r#"{"jsonrpc":"2.0","id":5,"method":7}"#.into(),
            200,
            -32600,
            json!(5),
        ),
        (
            "params not structured",
            "/",
            Some("application/json"),
            r#"{"jsonrpc":"2.0","id":6,"method":"eth_chainId","params":"x"}"#.into(),
            200,
            -32600,
            json!(6),
        ),
        (
            "id of wrong type",
            "/",
            Some("application/json"),
            r#"{"jsonrpc":"2.0","id":{"a":1},"method":"eth_chainId"}"#.into(),
            200,
            -32600,
            Value::Null,
        ),
        (
            "admin method",
            "/",
            Some("application/json"),
            r#"{"jsonrpc":"2.0","id":7,"method":"anvil_mine","params":["0x5"]}"#.into(),
            200,
            -32601,
            json!(7),
        ),
        (
            "evm method",
            "/",
            Some("application/json"),
            r#"{"jsonrpc":"2.0","id":8,"method":"evm_mine"}"#.into(),
            200,
            -32601,
            json!(8),
        ),
        (
            "batch too long",
            "/",
            Some("application/json"),
            huge,
            200,
            -32005,
            Value::Null,
        ),
        (
            "wrong content type",
            "/",
            Some("text/plain"),
            ok_call.clone(),
            415,
            -32600,
            Value::Null,
        ),
        (
            "no content type",
            "/",
            None,
            ok_call.clone(),
            415,
            -32600,
            Value::Null,
        ),
        (
            "unknown chain",
            "/nope",
            Some("application/json"),
            ok_call.clone(),
            404,
            -32001,
            Value::Null,
        ),
        (
            "unknown chain id",
            "/1",
            Some("application/json"),
            ok_call.clone(),
            404,
            -32001,
            Value::Null,
        ),
    ];
    for (what, path, ct, body, status, want_code, want_id) in cases {
        let url = format!("http://{}{path}", s.gw.http_addr);
        let r = s.http.request(http::Method::POST, &url, ct, body).await;
        assert_eq!(r.status.as_u16(), status, "{what}");
        let v = r.json();
        assert_eq!(code(&v), want_code, "{what}: {v}");
        assert_eq!(v["id"], want_id, "{what}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}"
        );
        // The gateway keeps serving normal requests after each bad one.
        let ok = s.http.post(&s.url, ok_call.clone()).await.json();
        assert_eq!(ok["result"], "0x7a69", "after {what}");
    }

    // An oversize body is refused from its declared length, before it is read...
    let reply = raw_exchange(
        s.gw.http_addr,
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 6291456\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("-32005"), "{reply}");
    // ...and a chunked one (no declared length) as soon as it passes the limit.
    let mut chunked = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..6 {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    let reply = raw_exchange(s.gw.http_addr, &chunked).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    let ok = s.http.post(&s.url, ok_call.clone()).await.json();
    assert_eq!(ok["result"], "0x7a69");

    // Inside a batch each element fails on its own.
    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}, 5, {"jsonrpc":"2.0","id":2}, {"jsonrpc":"2.0","id":3,"method":"anvil_mine"}, {"jsonrpc":"2.0","method":"eth_chainId"}]"#;
    let v = s.http.post(&s.url, batch).await.json();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 4, "the notification gets no answer: {v}");
    assert_eq!(arr[0]["result"], "0x7a69");
    assert_eq!((code(&arr[1]), arr[1]["id"].clone()), (-32600, Value::Null));
    assert_eq!((code(&arr[2]), arr[2]["id"].clone()), (-32600, json!(2)));
    assert_eq!((code(&arr[3]), arr[3]["id"].clone()), (-32601, json!(3)));

    // GET on the RPC path.
    let r = s.http.get(&s.url).await;
    assert_eq!(r.status.as_u16(), 405);

    // None of it reached the chain.
    let block_after =
        s.http.rpc(&s.anvil.url, "eth_blockNumber", json!([])).await["result"].clone();
    assert_eq!(
        block_before, block_after,
        "refused admin calls must not mine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_timeout_is_named() {
    let anvil = Anvil::start(&[]).await;
    let gw = start_gateway("").await;
    let mut cfg = node_config(&gw, &NodeSpec::eu_west(&anvil.url), TOKEN);
    cfg.chains[0].upstream_timeout = Duration::from_millis(300);
    let node = edge_node::EdgeNode::start(cfg, proto::identity::Identity::generate().unwrap())
        .await
        .unwrap();
    wait_serving(&gw, 1).await;
    let http = Http::default();
    let url = format!("http://{}/", gw.http_addr);

    // A frozen upstream: anvil stopped with SIGSTOP accepts nothing and answers nothing.
    signal(anvil.pid(), "STOP");
    let r = http
        .rpc(&url, "eth_getBalance", json!([ACCT0, "latest"]))
        .await;
    signal(anvil.pid(), "CONT");
    assert_eq!(code(&r), -32603, "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("timeout") && msg.contains("300 ms"), "{msg}");
    node.shutdown().await;
    anvil.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_gets_408_and_does_not_hold_up_others() {
    let s = stack().await;
    let mut cfg = gateway_config("");
    cfg.server.body_timeout = Duration::from_millis(500);
    let gw = gateway::Gateway::start(cfg, proto::identity::Identity::generate().unwrap())
        .await
        .unwrap();
    let _node = start_node(&gw, &NodeSpec::eu_west(&s.anvil.url)).await;
    wait_serving(&gw, 1).await;
    let url = format!("http://{}/", gw.http_addr);

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stalled = tokio::net::TcpStream::connect(gw.http_addr).await.unwrap();
    stalled
        .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"jsonrpc\"")
        .await
        .unwrap();
    // Others are served while that body never completes.
    for _ in 0..5 {
        let ok = s.http.rpc(&url, "eth_chainId", json!([])).await;
        assert_eq!(ok["result"], "0x7a69");
    }
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buf))
        .await
        .expect("the gateway must answer a stalled body")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
}

/// Writes `request` on a fresh connection (ignoring a server that stops reading early) and
/// returns what the server answered.
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let request = request.to_vec();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        wr
    });
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), rd.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                if String::from_utf8_lossy(&buf).contains("}") {
                    break;
                }
            }
        }
    }
    writer.abort();
    String::from_utf8_lossy(&buf).to_string()
}

fn signal(pid: u32, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    // A stop is delivered asynchronously: wait until the process really is stopped (state T),
    // so that no request slips through before it.
    if sig == "STOP" {
        for _ in 0..200 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('T'))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("process {pid} did not stop");
    }
}

/// Runs a real client script against `rpc_url`; panics with its output unless it succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_read_send_and_wait_through_the_gateway() {
    let anvil = Anvil::start(&["--block-time", "1"]).await;
    let gw = start_gateway("").await;
    let _node = start_node(&gw, &NodeSpec::eu_west(&anvil.url)).await;
    wait_serving(&gw, 1).await;
    let url = format!("http://{}/", gw.http_addr);

    let root = repo_root();
    assert!(
        root.join("tests/clients/node_modules/viem").exists(),
        "viem is not installed: run scripts/deps.sh"
    );
    let out = run_client(std::path::Path::new("node"), "viem-transfer.mjs", &url, &[]).await;
    assert!(out.contains("viem client OK"), "{out}");
    let python = root.join(".deps/venv/bin/python");
    assert!(python.exists(), "web3.py venv missing: run scripts/deps.sh");
    let out = run_client(&python, "web3py_transfer.py", &url, &[]).await;
    assert!(out.contains("web3.py client OK"), "{out}");
}

/// Requests naming block hashes no chain has: at most one upstream call per distinct question
/// (the negative answer is remembered while the chain state is the same), the answers are the
/// upstream's own, and a 32-byte hash with leading zeros is a hash, never a block number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_hash_floods_cost_one_upstream_call_per_hash() {
    let s = stack().await;
    let acct = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";
    let hashes: Vec<String> = (1..=20u8)
        .map(|i| format!("0x{}{:02x}", "00".repeat(31), i))
        .collect();
    let questions: Vec<(&str, Value)> = hashes
        .iter()
        .flat_map(|h| {
            [
                ("eth_getBlockByHash", json!([h, false])),
                ("eth_getBalance", json!([acct, {"blockHash": h}])),
                ("eth_getBlockReceipts", json!([h])),
            ]
        })
        .collect();
    let methods = [
        "eth_getBlockByHash",
        "eth_getBalance",
        "eth_getBlockReceipts",
    ];
    let before: Vec<usize> = methods.iter().map(|m| s.proxy.calls_of(m)).collect();
    // What anvil says to each, asked directly.
    let mut want = Vec::new();
    for (m, p) in &questions {
        want.push(s.http.rpc(&s.anvil.url, m, p.clone()).await);
    }
    // Ten rounds through the gateway, each as one concurrent burst.
    for round in 0..10 {
        let replies = futures::future::join_all(
            questions
                .iter()
                .map(|(m, p)| s.http.rpc(&s.url, m, p.clone())),
        )
        .await;
        for ((q, got), want) in questions.iter().zip(&replies).zip(&want) {
            assert_eq!(
                got.get("result"),
                want.get("result"),
                "round {round}: {q:?}"
            );
            assert_eq!(
                got.get("error").map(|e| &e["code"]),
                want.get("error").map(|e| &e["code"]),
                "round {round}: {q:?}: {got} vs anvil {want}"
            );
        }
    }
    for (m, b) in methods.iter().zip(before) {
        let upstream = s.proxy.calls_of(m) - b;
        // The direct questions above bypass the counting proxy: these are the node's alone.
        assert!(
            upstream <= hashes.len(),
            "{m}: {upstream} upstream calls for {} hashes",
            hashes.len()
        );
    }
    // The leading-zero hash is no block number: block 0 exists, hash 0x00..01 does not.
    let r = s
        .http
        .rpc(&s.url, "eth_getBlockReceipts", json!([hashes[0]]))
        .await;
    assert_eq!(r["result"], Value::Null, "{r}");
}
