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
