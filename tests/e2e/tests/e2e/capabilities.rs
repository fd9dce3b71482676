//! Node capabilities: a full node that keeps recent state only, and an archive node. A
//! historical state read goes to the archive node even when the full node is nearer; with no
//! archive node the caller gets a clear error and the full node is never asked. Namespaces
//! likewise (`trace_` only where an upstream serves it), and a batch no one node can answer
//! whole is split.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};

use e2e::*;

const LONDON: &str = "81.2.69.142";
const ACCT0: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";
const ACCT1: &str = "0x70997970c51812dc3a010c7901b1b51ddb6c3aa4";
/// Blocks of state the full node keeps.
const KEEP: u64 = 16;

fn call(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// Posts `body` as a caller in London: the answer and the region that served it.
async fn ask(http: &Http, url: &str, body: &Value) -> (Value, Option<String>) {
    let r = post_as(http, url, LONDON, body.to_string()).await.unwrap();
    let region = r.header("x-edge-region").map(str::to_string);
    (r.json(), region)
}

/// Sends ACCT0 → ACCT1 on anvil (one block) and waits until it is mined (anvil answers with
/// the hash before its miner has run); the transaction hash.
async fn transfer(http: &Http, anvil: &str) -> String {
    let tx = json!([{"from": ACCT0, "to": ACCT1, "value": "0xde0b6b3a7640000"}]);
    let r = http.rpc(anvil, "eth_sendTransaction", tx).await;
    let hash = r["result"]
        .as_str()
        .expect("a transaction hash")
        .to_string();
    for _ in 0..200 {
        let receipt = http
            .rpc(anvil, "eth_getTransactionReceipt", json!([hash]))
            .await;
        if receipt["result"].is_object() {
            return hash;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("transaction {hash} was not mined within 5 s");
}

/// Balance reads of ACCT0 at block 1 (by number or by its hash) `up` was asked.
fn asked_at_block_1(up: &PrunedUpstream, hash1: &str) -> usize {
    up.asked("eth_getBalance")
        .iter()
        .filter(|p| p[0].as_str().is_some_and(|a| a.eq_ignore_ascii_case(ACCT0)))
        .filter(|p| {
            let b = &p[1];
            b == "0x1" || b["blockNumber"] == "0x1" || b["blockHash"] == hash1
        })
        .count()
}

/// Waits until both nodes announced what their probes found (at most 10 s).
async fn wait_probed(gw: &gateway::Gateway) {
    for _ in 0..200 {
        let probed = gw.app.registry.snapshot().iter().all(|n| {
            let head = n.head(CHAIN_ID);
            n.capabilities(CHAIN_ID)
                .is_some_and(|c| match n.region.as_str() {
                    "us-east" => c.oldest_state == 0,
                    _ => c.oldest_state > 0 && c.oldest_state < head,
                })
        });
        if probed {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the nodes did not announce their probed capabilities");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn historical_state_goes_to_an_archive_node_or_gets_a_clear_error() {
    let anvil = Anvil::start(&[]).await;
    let http = Http::default();
    // Block 1 moves ACCT0's balance, 30 blocks later another transfer moves it again: the
    // balance at block 1 differs from the latest, and is older than the full node keeps.
    let tx = transfer(&http, &anvil.url).await;
    http.rpc(&anvil.url, "anvil_mine", json!(["0x1e"])).await;
    transfer(&http, &anvil.url).await;
    let direct = |method: &'static str, params: Value| {
        let (http, url) = (http.clone(), anvil.url.clone());
        async move { http.rpc(&url, method, params).await["result"].clone() }
    };
    let at_1 = direct("eth_getBalance", json!([ACCT0, "0x1"])).await;
    let latest = direct("eth_getBalance", json!([ACCT0, "latest"])).await;
    assert_ne!(at_1, latest);
    let debug_trace = direct("debug_traceTransaction", json!([tx])).await;
    let hash1 = direct("eth_getBlockByNumber", json!(["0x1", false])).await["hash"].clone();

    // The archive (anvil, all state) is far from London and has no debug_ methods; the full
    // node (recent state, no trace_ methods) is near.
    let archive_up = PrunedUpstream::start(&anvil.url, u64::MAX, &["debug_"]).await;
    let full_up = PrunedUpstream::start(&anvil.url, KEEP, &["trace_"]).await;
    let gw = start_gateway_with(&geo_section("")).await;
    let archive = start_node(&gw, &NodeSpec::at(US_EAST, &archive_up.url)).await;
    let _full = start_node(&gw, &NodeSpec::at(EU_WEST, &full_up.url)).await;
    wait_serving_for(&gw, 2, 10).await;
    wait_probed(&gw).await;
    let url = format!("http://{}/", gw.http_addr);

    // A historical read goes to the archive node; a latest read to the nearer full node.
    let (r, region) = ask(
        &http,
        &url,
        &call(1, "eth_getBalance", json!([ACCT0, "0x1"])),
    )
    .await;
    assert_eq!(
        (&r["result"], region.as_deref()),
        (&at_1, Some("us-east")),
        "{r}"
    );
    let (r, region) = ask(
        &http,
        &url,
        &call(1, "eth_getBalance", json!([ACCT0, "latest"])),
    )
    .await;
    assert_eq!(
        (&r["result"], region.as_deref()),
        (&latest, Some("eu-west")),
        "{r}"
    );
    // EIP-1898 by number, too.
    let by_number = json!([ACCT0, {"blockNumber": "0x1"}]);
    let (r, region) = ask(&http, &url, &call(1, "eth_getBalance", by_number)).await;
    assert_eq!(
        (&r["result"], region.as_deref()),
        (&at_1, Some("us-east")),
        "{r}"
    );

    // A batch the archive can answer whole goes there whole.
    let batch = json!([
        call(1, "eth_getBalance", json!([ACCT0, "0x1"])),
        call(2, "eth_getBalance", json!([ACCT0, "latest"])),
    ]);
    let (r, _) = ask(&http, &url, &batch).await;
    assert_eq!((&r[0]["result"], &r[1]["result"]), (&at_1, &latest), "{r}");

    // Namespaces: trace_ only on the archive, debug_ only on the full node.
    let (r, region) = ask(&http, &url, &call(1, "trace_transaction", json!([tx]))).await;
    assert!(r["result"].is_array(), "{r}");
    assert_eq!(region.as_deref(), Some("us-east"));
    let (r, region) = ask(&http, &url, &call(1, "debug_traceTransaction", json!([tx]))).await;
    assert_eq!(
        (&r["result"], region.as_deref()),
        (&debug_trace, Some("eu-west")),
        "{r}"
    );

    // No one node answers both old state and debug_: the batch is split, each call to the
    // node that can answer it.
    let batch = json!([
        call(1, "eth_getBalance", json!([ACCT0, "0x1"])),
        call(2, "debug_traceTransaction", json!([tx])),
    ]);
    let (r, _) = ask(&http, &url, &batch).await;
    assert_eq!(
        (&r[0]["result"], &r[1]["result"]),
        (&at_1, &debug_trace),
        "{r}"
    );
    assert_eq!(traced(&archive_up, "debug_traceTransaction", &tx), 0);
    assert_eq!(traced(&full_up, "trace_transaction", &tx), 0);
    assert_eq!(asked_at_block_1(&full_up, hash1.as_str().unwrap()), 0);

    // Without the archive node: a clear error naming the block and the oldest block held,
    // and the full node is never asked.
    archive.shutdown().await;
    let hash1 = hash1.as_str().unwrap();
    refused_without_an_archive(&gw, (&http, &url), &full_up, (&tx, hash1), &debug_trace).await;
}

/// The full node alone: the historical read and `trace_` are refused with -32002 naming why
/// (in a batch, only that call), the full node never sees them, and `/status.json` shows what
/// it announced.
async fn refused_without_an_archive(
    gw: &gateway::Gateway,
    (http, url): (&Http, &str),
    full_up: &PrunedUpstream,
    (tx, hash1): (&str, &str),
    debug_trace: &Value,
) {
    let url = url.to_string();
    let batch = json!([
        call(1, "eth_getBalance", json!([ACCT0, "0x1"])),
        call(2, "debug_traceTransaction", json!([tx])),
    ]);
    wait_serving_for(gw, 1, 10).await;
    let oldest = gw.app.registry.snapshot()[0]
        .capabilities(CHAIN_ID)
        .unwrap()
        .oldest_state;
    let (r, _) = ask(
        http,
        &url,
        &call(1, "eth_getBalance", json!([ACCT0, "0x1"])),
    )
    .await;
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert_eq!(r["error"]["code"], -32002, "{r}");
    assert!(
        message.contains("block 1 ")
            && message.contains(&format!("oldest held: {oldest}"))
            && message.contains("archive"),
        "{message}"
    );
    let (r, _) = ask(http, &url, &call(1, "trace_transaction", json!([tx]))).await;
    assert_eq!(r["error"]["code"], -32002, "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("trace_"),
        "{r}"
    );
    // In a batch, only the call no node can answer is refused.
    let (r, _) = ask(http, &url, &batch).await;
    assert_eq!(
        (&r[0]["error"]["code"], &r[1]["result"]),
        (&json!(-32002), debug_trace),
        "{r}"
    );
    assert_eq!(asked_at_block_1(full_up, hash1), 0);
    assert_eq!(traced(full_up, "trace_transaction", tx), 0);
    let refused = gw
        .app
        .metrics
        .rejected
        .with_label_values(&["no_capable_node"])
        .get();
    assert_eq!(refused, 3);

    // What each node announced is on the status document.
    let admin = format!("http://{}", gw.admin_addr.unwrap());
    let doc: Value = http
        .send(
            http::Request::get(format!("{admin}/status.json"))
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap()
        .json();
    let caps = &doc["nodes"][0]["chains"][0]["capabilities"];
    assert_eq!(caps["oldest_state"], oldest, "{doc}");
    assert_eq!(caps["namespaces"], json!(["debug", "txpool"]), "{doc}");
}

/// How many `method` calls for transaction `tx` `up` was asked.
fn traced(up: &PrunedUpstream, method: &str, tx: &str) -> usize {
    up.asked(method).iter().filter(|p| p[0] == tx).count()
}
