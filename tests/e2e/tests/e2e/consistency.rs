//! One consistent chain for every caller: clients read their own writes, and the tip never
//! goes backwards, not even while the nearest node is killed and restarted under load.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use e2e::*;

const LONDON: &str = "81.2.69.142";

/// Send a transfer, wait for its receipt, then read the tip, a balance and a nonce at `latest`:
/// never older than the receipt's block, 50 rounds with each client. Anvil mines each
/// transaction at once, and the node polls its head every 200 ms: the receipt (fetched by hash)
/// is always ahead of the node's head, the worst case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_read_their_own_writes() {
    let anvil = Anvil::start(&[]).await;
    let gw = start_gateway("").await;
    let _node = start_node(&gw, &NodeSpec::eu_west(&anvil.url)).await;
    wait_serving(&gw, 1).await;
    let url = format!("http://{}/", gw.http_addr);
    let root = repo_root();
    let python = root.join(".deps/venv/bin/python");
    assert!(python.exists(), "web3.py venv missing: run scripts/deps.sh");
    let out = run_client(&python, "web3py_transfer.py", &url, &[("RYW_ROUNDS", "50")]).await;
    assert!(
        out.contains("web3.py read-your-writes OK: 50 rounds"),
        "{out}"
    );
    let out = run_client(
        std::path::Path::new("node"),
        "viem-transfer.mjs",
        &url,
        &[("RYW_ROUNDS", "50")],
    )
    .await;
    assert!(out.contains("viem read-your-writes OK: 50 rounds"), "{out}");
}

/// One batch of `eth_blockNumber` calls as a caller at `ip`: the numbers, in order.
async fn block_numbers(http: &Http, url: &str, ip: &str, body: &Bytes) -> Result<Vec<u64>, String> {
    let reply = post_as(http, url, ip, body.clone()).await?;
    let v: Value = serde_json::from_slice(&reply.body).map_err(|e| e.to_string())?;
    let arr = v
        .as_array()
        .ok_or_else(|| format!("not a batch answer: {v}"))?;
    arr.iter()
        .map(|r| {
            r["result"]
                .as_str()
                .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
                .ok_or_else(|| format!("no block number in {r}"))
        })
        .collect()
}

/// The nearest node (a real process) is killed and restarted three times while London callers
/// read `eth_blockNumber` in batches, and blocks arrive every second. Its upstream sees each
/// block 600 ms after anvil does, so most of the time it is one block behind the other node
/// (healthy: within the lag allowed) when it takes its callers back. No caller ever sees the
/// number go down, and no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tip_never_goes_backwards_across_failover_and_failback() {
    let anvil = Anvil::start(&["--block-time", "1"]).await;
    let slow = DelayedUpstream::start(&anvil.url, Duration::from_millis(600)).await;
    let gw = start_gateway_with(&geo_section("")).await;
    let dir = tempfile::tempdir().unwrap();
    let _us = start_node(&gw, &NodeSpec::at(US_EAST, &anvil.url)).await;
    let mut eu = NodeProcess::spawn(&gw, &NodeSpec::at(EU_WEST, &slow.url), dir.path()).await;
    wait_serving_for(&gw, 2, 20).await;
    let url = format!("http://{}/", gw.http_addr);
    let http = Http::default();
    let batch: Vec<Value> = (0..50)
        .map(|i| serde_json::json!({"jsonrpc":"2.0","id":i,"method":"eth_blockNumber"}))
        .collect();
    let body = Bytes::from(serde_json::to_vec(&batch).unwrap());

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (http, url, body, stop, reads) = (
                http.clone(),
                url.clone(),
                body.clone(),
                stop.clone(),
                reads.clone(),
            );
            tokio::spawn(async move {
                let (mut high, mut backwards, mut failed) = (0u64, Vec::new(), Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match block_numbers(&http, &url, LONDON, &body).await {
                        Ok(ns) => {
                            reads.fetch_add(ns.len() as u64, Ordering::Relaxed);
                            for n in ns {
                                if n < high {
                                    backwards.push((high, n));
                                }
                                high = high.max(n);
                            }
                        }
                        Err(e) => failed.push(e),
                    }
                }
                (high, backwards, failed)
            })
        })
        .collect();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        eu.kill().await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        eu = NodeProcess::spawn(&gw, &NodeSpec::at(EU_WEST, &slow.url), dir.path()).await;
    }
    // Long enough for the last restart to take its callers back.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    stop.store(true, Ordering::Relaxed);
    let mut highest = 0;
    for w in workers {
        let (high, backwards, failed) = w.await.unwrap();
        assert!(
            backwards.is_empty(),
            "the tip went backwards (seen, then): {backwards:?}"
        );
        assert!(
            failed.is_empty(),
            "{} requests failed: {:?}",
            failed.len(),
            failed.first()
        );
        highest = highest.max(high);
    }
    let reads = reads.load(Ordering::Relaxed);
    println!("monotonic tip: {reads} eth_blockNumber reads by 4 callers across 3 kills and restarts, none lower than one seen before; highest block {highest}");
    assert!(
        reads > 10_000,
        "too little load to mean anything: {reads} reads"
    );
    assert!(highest >= 8, "blocks kept coming: highest {highest}");
    drop(eu);
}

/// While a block with a transaction arrives every second, a batch asking for the `latest` block,
/// the `latest` block's first transaction and the block number answers all three at one block:
/// the transaction is from the block the batch returned, and the number is not below it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reads_latest_at_one_block() {
    let anvil = Anvil::start(&["--block-time", "1"]).await;
    let gw = start_gateway("").await;
    let _node = start_node(&gw, &NodeSpec::eu_west(&anvil.url)).await;
    wait_serving(&gw, 1).await;
    let url = format!("http://{}/", gw.http_addr);
    let http = Http::default();
    let stop = Arc::new(AtomicBool::new(false));
    // One transfer per block, so every block has a transaction 0.
    let sender = {
        let (http, anvil_url, stop) = (http.clone(), anvil.url.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                http.rpc(
                    &anvil_url,
                    "eth_sendTransaction",
                    serde_json::json!([{"from": "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266",
                        "to": "0x70997970c51812dc3a010c7d01b50e0d17dc79c8", "value": "0x1"}]),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let batch = serde_json::json!([
        {"jsonrpc":"2.0","id":1,"method":"eth_getBlockByNumber","params":["latest", false]},
        {"jsonrpc":"2.0","id":2,"method":"eth_getTransactionByBlockNumberAndIndex","params":["latest","0x0"]},
        {"jsonrpc":"2.0","id":3,"method":"eth_blockNumber"}
    ])
    .to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    let (mut batches, mut compared) = (0, 0);
    while std::time::Instant::now() < deadline {
        let v = http.post(&url, batch.clone()).await.json();
        let a = v.as_array().expect("a batch answer");
        let block = &a[0]["result"];
        let number = block["number"].as_str().expect("a block");
        let tx = &a[1]["result"];
        if !tx.is_null() {
            assert_eq!(
                tx["blockNumber"], number,
                "transaction from another block: {v}"
            );
            assert_eq!(tx["blockHash"], block["hash"], "{v}");
            compared += 1;
        }
        let bn = a[2]["result"].as_str().unwrap();
        let n = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
        assert!(
            n(bn) >= n(number),
            "eth_blockNumber {bn} below the batch's block {number}"
        );
        batches += 1;
    }
    stop.store(true, Ordering::Relaxed);
    sender.await.unwrap();
    println!("one block per batch: {batches} batches, {compared} with a transaction compared");
    assert!(
        compared > 10,
        "too few batches with a transaction: {compared}"
    );
}
