//! Edge nodes the gateway does not have to trust: audits catch a node whose upstream lies (about
//! `eth_call` by comparing with other nodes, about receipts against the block's
//! `receiptsRoot`), eject it, drop what the gateway kept from it, and an operator can re-admit
//! it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use e2e::*;
use http_body_util::Full;
use serde_json::{json, Value};

const LONDON: &str = "81.2.69.142";
const ADMIN: &str = "admin-token-for-the-trust-tests";
/// Deploys a contract whose constructor emits one log holding 32 bytes (0x2a).
const LOG_DEPLOY: &str = "0x602a60005260206000a000";
const LIE: &str = "0x6666666666666666666666666666666666666666666666666666666666666666";

fn tamper_logs(r: &mut Value) {
    for l in r["logs"].as_array_mut().into_iter().flatten() {
        l["data"] = json!(format!("0x{}", "99".repeat(32)));
    }
}

/// An upstream that lies about every `eth_call` and, consistently, about the logs of every
/// receipt (one by one and a block's at once).
fn liar() -> TamperFn {
    Arc::new(|method: &str, _params: &Value, answer: Bytes| {
        let mut v: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        match method {
            "eth_call" => v["result"] = json!(LIE),
            "eth_getTransactionReceipt" => tamper_logs(&mut v["result"]),
            "eth_getBlockReceipts" => v["result"]
                .as_array_mut()
                .into_iter()
                .flatten()
                .for_each(tamper_logs),
            _ => return answer,
        }
        Bytes::from(v.to_string())
    })
}

/// A transaction with a log in block 1, then enough blocks on top that block 1 is final.
async fn chain_with_a_log(http: &Http, anvil: &Anvil) -> String {
    let accounts = http.rpc(&anvil.url, "eth_accounts", json!([])).await;
    let tx = http
        .rpc(
            &anvil.url,
            "eth_sendTransaction",
            json!([{"from": accounts["result"][0], "data": LOG_DEPLOY}]),
        )
        .await;
    let tx = tx["result"].as_str().unwrap_or_else(|| panic!("{tx}"));
    http.rpc(&anvil.url, "anvil_mine", json!(["0x80"])).await;
    tx.to_string()
}

/// A gateway that audits every answer it can (`audit.share = 1`), with an admin token.
async fn auditing_gateway(extra: &str) -> gateway::Gateway {
    let mut cfg = gateway_config_with(
        "",
        &format!("{}\n[audit]\nshare = 1.0\n{extra}\n", geo_section("")),
    );
    cfg.server.admin_token = Some(gateway::config::Secret(ADMIN.into()));
    gateway::Gateway::start(cfg, proto::identity::Identity::generate().unwrap())
        .await
        .unwrap()
}

fn audits(gw: &gateway::Gateway, outcome: &str) -> u64 {
    gw.app
        .metrics
        .audit
        .audits
        .with_label_values(&["anvil", outcome])
        .get()
}

/// Audits run after the answer: gives them a moment (1 s) before the next question; true once
/// the node is ejected.
async fn ejected_soon(node: &gateway::nodes::registry::Node) -> bool {
    for _ in 0..40 {
        if node.ejected() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    node.ejected()
}

async fn call_from_london(http: &Http, url: &str, method: &str, params: Value) -> Reply {
    let body = json!({"jsonrpc":"2.0","id":1,"method":method,"params":params}).to_string();
    post_as(http, url, LONDON, body).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_node_is_caught_ejected_and_its_kept_answers_dropped() {
    let anvil = Anvil::start(&[]).await;
    let http = Http::default();
    let tx = chain_with_a_log(&http, &anvil).await;
    let lying = TamperingUpstream::start(&anvil.url, liar()).await;
    let gw = auditing_gateway("").await;
    let url = format!("http://{}/", gw.http_addr);
    // The liar is the nearest node to London; two honest nodes farther away.
    let bad = start_node(&gw, &NodeSpec::at(EU_WEST, &lying.url)).await;
    let _us = start_node(&gw, &NodeSpec::at(US_EAST, &anvil.url)).await;
    let _ap = start_node(&gw, &NodeSpec::at(AP_SOUTHEAST, &anvil.url)).await;
    wait_serving_for(&gw, 3, 15).await;
    let liar_node = gw.app.registry.get(&bad.node_id).unwrap();

    // Each call a new question (another contract address) at block 1, which is final.
    let ask = |i: u32| {
        let to = format!("0x{i:040x}");
        (json!([{"to": to, "data": "0x"}, "0x1"]), to)
    };
    let mut lies = 0;
    let mut first_lie = None;
    let mut answers_by_liar = 0;
    for i in 1..=40 {
        let (params, _) = ask(i);
        let r = call_from_london(&http, &url, "eth_call", params).await;
        if r.header("x-edge-node") == Some(bad.node_id.as_str()) {
            answers_by_liar += 1;
        }
        if r.json()["result"] == LIE {
            lies += 1;
            first_lie.get_or_insert(i);
        }
        if ejected_soon(&liar_node).await {
            break;
        }
    }
    println!("ejected after {answers_by_liar} answers from the lying node ({lies} of them lies)");
    assert!(liar_node.ejected(), "the liar was never ejected");
    assert!(
        answers_by_liar <= 4,
        "two wrong answers eject a node at the default penalty: {answers_by_liar}"
    );
    assert!(audits(&gw, "wrong") >= 2);
    assert!(gw.app.metrics.audit.ejections.get() >= 1);
    assert!(
        gw.app.metrics.audit.dropped_answers.get() >= 1,
        "the liar's final answers were kept, and are dropped"
    );

    // From then on callers get the honest answers: the kept lies are gone.
    let (params, to) = ask(first_lie.expect("the liar lied at least once"));
    let direct = http
        .rpc(
            &anvil.url,
            "eth_call",
            json!([{"to": to, "data": "0x"}, "0x1"]),
        )
        .await;
    for _ in 0..5 {
        let r = call_from_london(&http, &url, "eth_call", params.clone()).await;
        assert_ne!(r.header("x-edge-node"), Some(bad.node_id.as_str()));
        assert_eq!(r.json()["result"], direct["result"]);
    }
    let receipt = call_from_london(&http, &url, "eth_getTransactionReceipt", json!([tx])).await;
    let direct = http
        .rpc(&anvil.url, "eth_getTransactionReceipt", json!([tx]))
        .await;
    assert_eq!(receipt.json()["result"], direct["result"]);

    // The status page says why; an operator re-admits the node.
    let admin = format!("http://{}", gw.admin_addr.unwrap());
    let status = http.get(&format!("{admin}/status.json")).await.json();
    let doc = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == bad.node_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(doc["state"], "ejected");
    assert_eq!(doc["reputation"]["ejected"], true);
    assert!(doc["reputation"]["last_wrong"]
        .as_str()
        .unwrap()
        .contains("eth_call"));
    let readmit = |token: &'static str| {
        http::Request::post(format!("{admin}/admin/nodes/{}/readmit", bad.node_id))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    assert_eq!(
        http.send(readmit("not-the-token")).await.unwrap().status,
        401
    );
    assert_eq!(http.send(readmit(ADMIN)).await.unwrap().status, 200);
    assert!(!liar_node.ejected());
    assert_eq!(http.send(readmit(ADMIN)).await.unwrap().status, 404);
    wait_serving_for(&gw, 3, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_that_does_not_match_its_block_is_caught_without_another_node() {
    let anvil = Anvil::start(&[]).await;
    let http = Http::default();
    let tx = chain_with_a_log(&http, &anvil).await;
    let lying = TamperingUpstream::start(&anvil.url, liar()).await;
    let counting = CountingProxy::start(&lying.url).await;
    let gw = auditing_gateway("").await;
    let url = format!("http://{}/", gw.http_addr);
    // The only node: there is no one to compare with.
    let node = start_node(&gw, &NodeSpec::at(EU_WEST, &counting.url)).await;
    wait_serving(&gw, 1).await;

    let r = call_from_london(&http, &url, "eth_getTransactionReceipt", json!([tx])).await;
    assert_eq!(r.header("x-edge-node"), Some(node.node_id.as_str()));
    let data = r.json()["result"]["logs"][0]["data"].clone();
    assert_eq!(
        data,
        json!(format!("0x{}", "99".repeat(32))),
        "the lie got through once"
    );
    let mut waited = 0;
    while audits(&gw, "wrong") == 0 && waited < 100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    assert_eq!(audits(&gw, "wrong"), 1, "caught by the receipts root");
    let standing = gw.app.registry.book.standing(&node.node_id);
    assert_eq!(standing.wrong, 1);
    let why = standing.last_wrong.unwrap();
    assert!(why.contains("receiptsRoot"), "{why}");
    assert!(why.contains("eth_getTransactionReceipt"), "{why}");
    // Checked against the block from the same node: its header and receipts, nothing else.
    assert!(counting.calls_of("eth_getBlockReceipts") >= 1);
    assert_eq!(audits(&gw, "pass"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_upstream_the_operator_trusts_decides_alone() {
    let anvil = Anvil::start(&[]).await;
    let http = Http::default();
    chain_with_a_log(&http, &anvil).await;
    let lying = TamperingUpstream::start(&anvil.url, liar()).await;
    let trusted = CountingProxy::start(&anvil.url).await;
    let gw = auditing_gateway(&format!("upstream = {:?}", trusted.url)).await;
    let url = format!("http://{}/", gw.http_addr);
    let node = start_node(&gw, &NodeSpec::at(EU_WEST, &lying.url)).await;
    wait_serving(&gw, 1).await;
    let gw_node = gw.app.registry.get(&node.node_id).unwrap();
    let mut answers = 0;
    for i in 1..=10u32 {
        let params = json!([{"to": format!("0x{i:040x}"), "data": "0x"}, "0x1"]);
        call_from_london(&http, &url, "eth_call", params).await;
        answers += 1;
        if ejected_soon(&gw_node).await {
            break;
        }
    }
    assert!(
        gw_node.ejected(),
        "the trusted upstream's word ejects the liar"
    );
    assert!(answers <= 3, "{answers} answers");
    assert!(
        trusted.calls_of("eth_call") >= 2,
        "asked the trusted upstream"
    );
    // With no node left, callers get a clear error rather than the liar's answer.
    let r = call_from_london(
        &http,
        &url,
        "eth_call",
        json!([{"to": format!("0x{:040x}", 1), "data": "0x"}, "0x1"]),
    )
    .await;
    assert_eq!(r.json()["error"]["code"], -32002, "{}", r.json());
}
