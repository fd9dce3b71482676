//! WebSocket JSON-RPC and `eth_subscribe` through the gateway, against anvil's own
//! subscriptions: the same blocks, exactly once, in order, across reorgs and a killed node.

use std::time::Duration;

use serde_json::{json, Value};

use e2e::*;

fn number(v: &Value) -> u64 {
    u64::from_str_radix(v["number"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

/// Collects `n` notifications' results (or panics after `secs`).
async fn results(ws: &mut WsClient, n: usize, secs: u64) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.notification(left).await {
            Some(p) => out.push(p["result"].clone()),
            None => panic!("got {} of {n} notifications: {out:?}", out.len()),
        }
    }
    out
}

/// `newHeads` through the gateway: every block anvil mines, once, in order, with the header
/// fields anvil's own subscription sends; and plain requests on the same socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_heads_match_anvils_own_subscription() {
    let anvil = Anvil::start(&[]).await;
    let gw = start_gateway("").await;
    let _a = start_node(&gw, &NodeSpec::eu_west(&anvil.url)).await;
    let _b = start_node(&gw, &NodeSpec::at(US_EAST, &anvil.url)).await;
    wait_serving(&gw, 2).await;
    let mut through = WsClient::connect(&format!("ws://{}/", gw.http_addr)).await;
    let mut direct = WsClient::connect(&ws_url(&anvil.url)).await;
    through.subscribe(json!(["newHeads"])).await;
    direct.subscribe(json!(["newHeads"])).await;
    // Ordinary calls go through the request path on the same socket.
    let id = through.call("eth_chainId", json!([])).await;
    assert_eq!(id["result"], "0x7a69", "{id}");
    let http = Http::default();
    for _ in 0..5 {
        http.rpc(&anvil.url, "evm_mine", json!([])).await;
    }
    let ours = results(&mut through, 5, 20).await;
    let theirs = results(&mut direct, 5, 20).await;
    for (o, t) in ours.iter().zip(&theirs) {
        assert_eq!(o["hash"], t["hash"]);
        for (k, v) in o.as_object().unwrap() {
            assert_eq!(&t[k], v, "field {k} of block {}", number(o));
        }
        // And every header field geth sends that anvil sends is there.
        for k in edge_node::header::NEW_HEADS_FIELDS {
            if t.get(k).is_some() {
                assert!(
                    o.get(k).is_some(),
                    "field {k} missing from block {}",
                    number(o)
                );
            }
        }
    }
    let numbers: Vec<u64> = ours.iter().map(number).collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
    // Nothing more: each block once.
    assert!(through
        .notification(Duration::from_millis(500))
        .await
        .is_none());
    // Over HTTP, eth_subscribe says what it needs.
    let r = http
        .rpc(
            &format!("http://{}/", gw.http_addr),
            "eth_subscribe",
            json!(["newHeads"]),
        )
        .await;
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("WebSocket"),
        "{r}"
    );
}

/// The node serving a subscription is SIGKILLed mid-stream: the client's block numbers stay
/// contiguous (none missed, none repeated), with no error, and the feed is on the other node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_leaves_no_gap_in_new_heads() {
    let anvil = Anvil::start(&["--block-time", "1"]).await;
    let gw = start_gateway("").await;
    let dir = tempfile::tempdir().unwrap();
    let mut a = NodeProcess::spawn(&gw, &NodeSpec::eu_west(&anvil.url), dir.path()).await;
    let mut b = NodeProcess::spawn(&gw, &NodeSpec::at(US_EAST, &anvil.url), dir.path()).await;
    wait_serving_for(&gw, 2, 20).await;
    let mut ws = WsClient::connect(&format!("ws://{}/", gw.http_addr)).await;
    ws.subscribe(json!(["newHeads"])).await;
    let mut seen = results(&mut ws, 3, 20).await;
    let serving = gw.app.subs.serving()[0].1.clone().expect("a serving node");
    let region = gw.app.registry.get(&serving).unwrap().region.clone();
    match region.as_str() {
        "eu-west" => a.kill().await,
        _ => b.kill().await,
    }
    seen.extend(results(&mut ws, 5, 30).await);
    let numbers: Vec<u64> = seen.iter().map(number).collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "not contiguous across the kill: {numbers:?}"
    );
    for w in seen.windows(2) {
        assert_eq!(w[1]["parentHash"], w[0]["hash"]);
    }
    let now = gw.app.subs.serving()[0].1.clone().expect("a serving node");
    assert_ne!(now, serving, "the feed moved to the other node");
}

/// viem (`watchBlocks`, `watchContractEvent`), ethers v6 (`on("block")`, a contract event) and
/// web3.py (`newHeads`, `logs`) subscribe through the gateway and directly to anvil over the
/// same blocks: the same block hashes and the same logs, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_see_what_anvil_sends() {
    let anvil = Anvil::start(&[]).await;
    let gw = start_gateway("").await;
    let _a = start_node(&gw, &NodeSpec::eu_west(&anvil.url)).await;
    let _b = start_node(&gw, &NodeSpec::at(US_EAST, &anvil.url)).await;
    wait_serving(&gw, 2).await;
    let root = repo_root();
    let python = root.join(".deps/venv/bin/python");
    assert!(
        root.join("tests/clients/node_modules/ethers").exists() && python.exists(),
        "clients missing: run scripts/deps.sh"
    );
    let through = format!("ws://{}/", gw.http_addr);
    let direct = ws_url(&anvil.url);
    let env = [
        ("GATEWAY_WS", through.as_str()),
        ("DIRECT_WS", direct.as_str()),
        ("BLOCKS", "5"),
    ];
    let node = std::path::Path::new("node");
    // One after another: each script drives anvil's mining.
    for (program, script, says) in [
        (node, "viem-subscribe.mjs", "viem subscribe OK"),
        (node, "ethers-subscribe.mjs", "ethers subscribe OK"),
        (
            python.as_path(),
            "web3py_subscribe.py",
            "web3.py subscribe OK",
        ),
    ] {
        let out = run_client(program, script, &anvil.url, &env).await;
        assert!(out.contains(says), "{out}");
    }
}

/// anvil's first dev account (unlocked: `eth_sendTransaction` works).
const DEV0: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";
/// The event topic the test contract logs with (any 32 bytes do: it is in the code).
const TOPIC0: &str = "0x1111111111111111111111111111111111111111111111111111111111111111";

/// Deploys a contract that logs `LOG2(data = calldata word 0, TOPIC0, caller)` on every call
/// (hand-assembled, as in tests/clients/subscribe-common.mjs); its address.
async fn deploy_logger(http: &Http, anvil: &str) -> String {
    let runtime = format!("600035600052337f{}60206000a200", &TOPIC0[2..]);
    deploy(http, anvil, &format!("0x602e80600b6000396000f3{runtime}")).await
}

/// Deploys a contract that logs its whole calldata (`LOG2(calldata, TOPIC0, caller)`).
async fn deploy_big_logger(http: &Http, anvil: &str) -> String {
    // CALLDATASIZE 0 0 CALLDATACOPY; CALLER PUSH32 topic0 CALLDATASIZE 0 LOG2; STOP: 45 bytes.
    let runtime = format!("366000600037337f{}366000a200", &TOPIC0[2..]);
    deploy(http, anvil, &format!("0x602d80600b6000396000f3{runtime}")).await
}

async fn deploy(http: &Http, anvil: &str, init: &str) -> String {
    let tx = http
        .rpc(
            anvil,
            "eth_sendTransaction",
            json!([{"from": DEV0, "data": init}]),
        )
        .await;
    let hash = tx["result"].as_str().expect("deploy tx").to_string();
    // Anvil mines it at once, but may answer the receipt a moment later.
    for _ in 0..100 {
        let receipt = http
            .rpc(anvil, "eth_getTransactionReceipt", json!([hash]))
            .await;
        if let Some(a) = receipt["result"]["contractAddress"].as_str() {
            return a.to_string();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no receipt for the deploy transaction {hash}")
}

/// Waits until `chain` has followed the upstream to block `n`.
async fn wait_head(chain: &edge_node::Chain, n: u64) {
    for _ in 0..250 {
        if chain.head().is_some_and(|h| h.number >= n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the node never reached block {n}");
}

fn word(n: u64) -> String {
    format!("0x{n:064x}")
}

/// A reorg made with `anvil_reorg`: the `logs` subscription sends the replaced blocks' logs
/// again with `removed: true` (oldest first), then the new branch's; `newHeads` sends the
/// new branch, whose hashes are anvil's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_takes_logs_back_then_sends_the_new_branch() {
    let anvil = Anvil::start(&[]).await;
    let gw = start_gateway("").await;
    let _a = start_node(&gw, &NodeSpec::eu_west(&anvil.url)).await;
    wait_serving(&gw, 1).await;
    let http = Http::default();
    let contract = deploy_logger(&http, &anvil.url).await;
    let url = format!("ws://{}/", gw.http_addr);
    let mut logs = WsClient::connect(&url).await;
    let mut heads = WsClient::connect(&url).await;
    logs.subscribe(json!(["logs", {"address": contract, "topics": [TOPIC0]}]))
        .await;
    // Once the node has seen the deploy block, so the heads counted start after it.
    wait_head(chain_of(&_a), 1).await;
    heads.subscribe(json!(["newHeads"])).await;
    for n in [1, 2] {
        http.rpc(
            &anvil.url,
            "eth_sendTransaction",
            json!([{"from": DEV0, "to": contract, "data": word(n)}]),
        )
        .await;
    }
    let before = results(&mut logs, 2, 20).await;
    let old_heads = results(&mut heads, 2, 20).await;
    assert_eq!(before[0]["data"], word(1));
    assert_eq!(before[1]["data"], word(2));
    assert_eq!(before[0]["removed"], false);
    // Replace both blocks: the new first one carries a call logging 3.
    let tx = json!([[{"from": DEV0, "to": contract, "data": word(3)}, 0]]);
    let r = http.rpc(&anvil.url, "anvil_reorg", json!([2, tx])).await;
    assert!(r.get("error").is_none(), "{r}");
    let after = results(&mut logs, 3, 20).await;
    for (i, old) in before.iter().enumerate() {
        assert_eq!(after[i]["removed"], true, "{}", after[i]);
        assert_eq!(after[i]["transactionHash"], old["transactionHash"]);
        assert_eq!(after[i]["blockHash"], old["blockHash"]);
    }
    assert_eq!(after[2]["removed"], false);
    assert_eq!(after[2]["data"], word(3));
    // The new log is anvil's, as eth_getLogs now tells it.
    let now = http
        .rpc(
            &anvil.url,
            "eth_getLogs",
            json!([{"address": contract, "fromBlock": "0x0", "toBlock": "latest"}]),
        )
        .await;
    let last = now["result"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(after[2]["blockHash"], last["blockHash"]);
    assert_eq!(after[2]["transactionHash"], last["transactionHash"]);
    // newHeads: the new branch at the same heights, with anvil's hashes.
    let new_heads = results(&mut heads, 2, 20).await;
    for (old, new) in old_heads.iter().zip(&new_heads) {
        assert_eq!(number(old), number(new));
        assert_ne!(old["hash"], new["hash"]);
        let canonical = http
            .rpc(
                &anvil.url,
                "eth_getBlockByNumber",
                json!([new["number"], false]),
            )
            .await;
        assert_eq!(canonical["result"]["hash"], new["hash"]);
    }
}

/// A client that stops reading is disconnected with 1008 once its send buffer fills, while
/// another client on the same feed keeps receiving every block on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_and_others_keep_receiving() {
    let anvil = Anvil::start(&[]).await;
    let gw = start_gateway_with("[websocket]\nsend_buffer_messages = 4\n").await;
    let _a = start_node(&gw, &NodeSpec::eu_west(&anvil.url)).await;
    wait_serving(&gw, 1).await;
    let http = Http::default();
    let contract = deploy_big_logger(&http, &anvil.url).await;
    let url = format!("ws://{}/", gw.http_addr);
    let filter = json!(["logs", {"address": contract}]);
    let mut stalled = WsClient::connect_small(&url, 4096).await;
    stalled.subscribe(filter.clone()).await;
    let mut reader = WsClient::connect(&url).await;
    reader.subscribe(filter).await;
    // 20 blocks of 20 logs of 16 KiB each (about 13 MB of JSON) fill the stalled client's small
    // socket buffers, then its queue of 4 blocks; the reader, with the same queue, takes each
    // block's 20 logs at once (a block is one place in the queue, however many logs it has).
    http.rpc(&anvil.url, "evm_setAutomine", json!([false]))
        .await;
    let mut code = None;
    for block in 0..20u64 {
        for i in 0..20 {
            let data = format!("{}{}", word(block * 100 + i), "ab".repeat(16 * 1024 - 32));
            http.rpc(
                &anvil.url,
                "eth_sendTransaction",
                json!([{"from": DEV0, "to": contract, "data": data, "gas": "0x1000000"}]),
            )
            .await;
        }
        http.rpc(&anvil.url, "evm_mine", json!([])).await;
        // The reader gets each block's logs before the next block is mined.
        let got = results(&mut reader, 20, 10).await;
        let last = got[19]["data"].as_str().unwrap();
        assert!(last.starts_with(&word(block * 100 + 19)), "block {block}");
        if code.is_none() && gw.app.metrics.ws.slow_consumers.get() == 1 {
            // Cut off: reading again, it gets what its socket held, then the close frame.
            code = Some(stalled.close_code(Duration::from_secs(10)).await);
        }
    }
    assert_eq!(
        gw.app.metrics.ws.slow_consumers.get(),
        1,
        "only the stalled client was cut off"
    );
    assert_eq!(code, Some(Some(1008)), "closed with 1008");
}

/// `newPendingTransactions` where the node's upstream is a WebSocket (`ws://` upstream):
/// the hashes of transactions entering anvil's pool; where it is not, `eth_subscribe` says
/// why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_transactions_come_from_a_socket_upstream_or_a_clear_error() {
    let anvil = Anvil::start(&["--no-mining"]).await;
    let http_only = start_gateway("").await;
    let _h = start_node(&http_only, &NodeSpec::eu_west(&anvil.url)).await;
    let gw = start_gateway("").await;
    let _w = start_node(&gw, &NodeSpec::eu_west(&ws_url(&anvil.url))).await;
    wait_serving(&http_only, 1).await;
    wait_serving(&gw, 1).await;
    let mut refused = WsClient::connect(&format!("ws://{}/", http_only.http_addr)).await;
    let r = refused
        .call("eth_subscribe", json!(["newPendingTransactions"]))
        .await;
    let msg = r["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("newPendingTransactions needs one"), "{r}");
    let mut ws = WsClient::connect(&format!("ws://{}/", gw.http_addr)).await;
    ws.subscribe(json!(["newPendingTransactions"])).await;
    let http = Http::default();
    let mut sent = Vec::new();
    for n in 0..3 {
        let tx = http
            .rpc(
                &anvil.url,
                "eth_sendTransaction",
                json!([{"from": DEV0, "to": DEV0, "value": format!("{:#x}", n + 1)}]),
            )
            .await;
        sent.push(tx["result"].clone());
    }
    let got = results(&mut ws, 3, 10).await;
    assert_eq!(got, sent);
}

/// Connects once the gateway has let go of an earlier socket of this address (within 2 s).
async fn connect_when_free(url: &str) -> WsClient {
    for _ in 0..40 {
        if let Ok(ws) = WsClient::try_connect(url).await {
            return ws;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no WebSocket place for this address came free");
}

/// A socket's limits: sockets per address, subscriptions per connection and per tenant, the
/// key checked at the upgrade, message size (1009), the idle timeout when pongs stop (1001), and graceful close
/// at shutdown (1001); each refusal names the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_keep_their_limits() {
    let anvil = Anvil::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenants.toml");
    let key = "ws-test-key-1";
    std::fs::write(
        &file,
        format!(
            "[[tenants]]\nname = \"capped\"\nkey_sha256 = [\"{}\"]\nmax_subscriptions = 3\n",
            gateway::tenants::hash_key_hex(key)
        ),
    )
    .unwrap();
    let gw = start_gateway_with(&format!(
        "[tenants]\nfile = {:?}\n[websocket]\nmax_subscriptions_per_connection = 2\n\
         max_message_bytes = 2048\nping_interval_ms = 200\nidle_timeout_ms = 700\n\
         max_connections_per_ip = 3\n",
        file.display().to_string()
    ))
    .await;
    let _a = start_node(&gw, &NodeSpec::eu_west(&anvil.url)).await;
    wait_serving(&gw, 1).await;
    let base = format!("ws://{}", gw.http_addr);
    // Per connection.
    let mut ws = WsClient::connect(&format!("{base}/")).await;
    ws.subscribe(json!(["newHeads"])).await;
    let second = ws.subscribe(json!(["logs", {}])).await;
    let third = ws.call("eth_subscribe", json!(["newHeads"])).await;
    assert!(
        third["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 subscriptions per connection"),
        "{third}"
    );
    // Unsubscribing frees a place; an unknown id is geth's error.
    assert_eq!(
        ws.call("eth_unsubscribe", json!([second])).await["result"],
        true
    );
    let again = ws.call("eth_unsubscribe", json!([second])).await;
    assert_eq!(again["error"]["message"], "subscription not found");
    ws.subscribe(json!(["newHeads"])).await;
    // Per tenant, over all its sockets (the key in the URL, as for HTTP).
    let mut t1 = WsClient::connect(&format!("{base}/v1/{key}")).await;
    let mut t2 = WsClient::connect(&format!("{base}/v1/{key}")).await;
    // Three sockets from this address: a fourth is refused (429) before any upgrade.
    let fourth = WsClient::try_connect(&format!("{base}/")).await.err();
    assert!(
        fourth.as_deref().unwrap_or_default().contains("429"),
        "{fourth:?}"
    );
    t1.subscribe(json!(["newHeads"])).await;
    t1.subscribe(json!(["newHeads"])).await;
    t2.subscribe(json!(["newHeads"])).await;
    let over = t2.call("eth_subscribe", json!(["newHeads"])).await;
    assert!(
        over["error"]["message"]
            .as_str()
            .unwrap()
            .contains("3 subscriptions for capped"),
        "{over}"
    );
    drop(t1); // Its two places come back once the gateway sees it gone.
    let mut freed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if t2
            .call("eth_subscribe", json!(["newHeads"]))
            .await
            .get("result")
            .is_some()
        {
            freed = true;
            break;
        }
    }
    assert!(
        freed,
        "a closed socket gives its tenant's subscriptions back"
    );
    // A bad key is refused at the upgrade, as over HTTP.
    let bad = tokio_tungstenite::connect_async(format!("{base}/v1/not-a-key")).await;
    assert!(bad.is_err(), "the upgrade of a bad key is refused");
    // A message over the limit closes the socket with 1009.
    let mut big = connect_when_free(&format!("{base}/")).await;
    let body = json!([{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":["x".repeat(4096)]}]);
    big.send_text(&body.to_string()).await;
    assert_eq!(big.close_code(Duration::from_secs(5)).await, Some(1009));
    // A client that stops answering pings is closed at the idle timeout (1001).
    let mut quiet = connect_when_free(&format!("{base}/")).await.into_inner();
    // Holding the socket without reading it: this client answers pings only when it reads.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let code = loop {
        use futures::StreamExt;
        match tokio::time::timeout(Duration::from_secs(5), quiet.next()).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f))))) => {
                break Some((u16::from(f.code), f.reason.to_string()));
            }
            Ok(Some(Ok(_))) => continue,
            _ => break None,
        }
    };
    assert_eq!(
        code,
        Some((1001, "idle timeout".to_string())),
        "closed as idle"
    );
    // Shutdown closes every socket with 1001 (going away).
    gw.shutdown().await;
    assert_eq!(ws.close_code(Duration::from_secs(5)).await, Some(1001));
}
