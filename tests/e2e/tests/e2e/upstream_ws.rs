//! Edge nodes following their upstream's head over its WebSocket (`ws://` upstreams): a
//! `newHeads` notification makes the node poll at once, so with `head_poll_ms` at 10 s a new
//! block is still its head within 300 ms; a dropped socket falls back to polling at the normal
//! pace and is re-made with exactly one subscription; and the pending-transaction feed the
//! gateway's subscriptions read. The socket tests go through [`relay::WsRelay`], which counts
//! subscriptions and can drop sockets.

mod relay;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use e2e::*;
use relay::WsRelay;

/// Slow enough that only the socket can explain a head within [`FAST`].
const SLOW_POLL: Duration = Duration::from_secs(10);
const FAST: Duration = Duration::from_millis(300);
const DEV: [&str; 2] = [
    "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266",
    "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
];

/// A node (joined to `gw`) whose one upstream is `upstream`, polling at most every 10 s.
async fn node(gw: &gateway::Gateway, upstream: &str) -> edge_node::EdgeNode {
    let mut cfg = node_config(gw, &NodeSpec::eu_west(upstream), TOKEN);
    cfg.chains[0].head_poll = SLOW_POLL;
    edge_node::EdgeNode::start(cfg, proto::identity::Identity::generate().unwrap())
        .await
        .unwrap()
}

/// anvil behind the counting relay, a gateway, and a node following anvil through the relay's
/// socket (and polling at most every 10 s).
struct Relayed {
    anvil: Anvil,
    relay: WsRelay,
    gw: gateway::Gateway,
    node: edge_node::EdgeNode,
    chain: std::sync::Arc<edge_node::Chain>,
}

async fn relayed(anvil_args: &[&str]) -> Relayed {
    let anvil = Anvil::start(anvil_args).await;
    let relay = WsRelay::start(&anvil.url).await;
    let gw = start_gateway("").await;
    let node = node(&gw, &relay.ws_url).await;
    let chain = chain_of(&node).clone();
    wait_followed(&chain).await;
    Relayed {
        anvil,
        relay,
        gw,
        node,
        chain,
    }
}

/// Waits (at most 10 s) until the chain's head is followed over its upstream socket.
async fn wait_followed(chain: &edge_node::Chain) {
    wait_until("socket followed", Duration::from_secs(10), || {
        chain.followed()
    })
    .await;
}

async fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn head_of(chain: &edge_node::Chain) -> u64 {
    chain.head().map_or(0, |h| h.number)
}

/// Mines one block on anvil and returns its number.
async fn mine(http: &Http, anvil: &Anvil) -> u64 {
    let r = http.rpc(&anvil.url, "evm_mine", json!([])).await;
    assert!(r.get("error").is_none(), "{r}");
    let n = http.rpc(&anvil.url, "eth_blockNumber", json!([])).await;
    u64::from_str_radix(n["result"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

/// Mines a block and asserts the node's head reaches it within `limit`; returns how long it took.
async fn mined_and_seen(
    http: &Http,
    anvil: &Anvil,
    chain: &edge_node::Chain,
    limit: Duration,
) -> Duration {
    let n = mine(http, anvil).await;
    let t0 = Instant::now();
    wait_until(&format!("head {n}"), limit, || head_of(chain) >= n).await;
    t0.elapsed()
}

#[tokio::test]
async fn new_heads_wake_the_node_long_before_its_poll() {
    let anvil = Anvil::start(&[]).await;
    let gw = start_gateway("").await;
    let ws = anvil.url.replacen("http://", "ws://", 1);
    let node = node(&gw, &ws).await;
    let chain = chain_of(&node).clone();
    wait_followed(&chain).await;
    wait_until("first head", Duration::from_secs(10), || {
        chain.head().is_some()
    })
    .await;
    let http = Http::default();
    for _ in 0..3 {
        let took = mined_and_seen(&http, &anvil, &chain, FAST).await;
        eprintln!("new head seen {took:?} after evm_mine (head_poll_ms = 10000)");
    }
    // The node answers at the new head through the gateway too.
    wait_serving(&gw, 1).await;
    let url = format!("http://{}/", gw.http_addr);
    let via_gw = http.rpc(&url, "eth_blockNumber", json!([])).await;
    assert_eq!(via_gw["result"], "0x3", "{via_gw}");
    let metrics = node.shared.metrics.render();
    let port = anvil.url.rsplit(':').next().unwrap();
    let connected =
        format!("edge_upstream_ws_connected{{chain_id=\"31337\",upstream=\"127.0.0.1:{port}\"}} 1");
    assert!(metrics.contains(&connected), "{connected} in\n{metrics}");
    assert!(
        metrics.contains("edge_upstream_ws_heads_total{chain_id=\"31337\"} 3"),
        "{metrics}"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn a_dropped_socket_falls_back_to_polling_and_resubscribes_once() {
    let Relayed {
        anvil,
        relay,
        gw: _gw,
        node,
        chain,
    } = relayed(&[]).await;
    let http = Http::default();
    assert_eq!(relay.heads_subscriptions(), 1);
    // Two blocks over the socket, 1 s apart in their timestamps, so the node learns a block
    // time (anvil would give blocks mined within one second the same timestamp).
    let r = http
        .rpc(&anvil.url, "anvil_setBlockTimestampInterval", json!([1]))
        .await;
    assert!(r.get("error").is_none(), "{r}");
    for _ in 0..2 {
        mined_and_seen(&http, &anvil, &chain, FAST).await;
    }

    // The socket drops and cannot come back: the node polls at its normal pace (a quarter of
    // the block time), not at head_poll_ms.
    relay.set_down(true);
    relay.kill();
    wait_until("socket lost", Duration::from_secs(2), || !chain.followed()).await;
    wait_until("relay empty", Duration::from_secs(2), || {
        relay.open_sockets() == 0
    })
    .await;
    for _ in 0..2 {
        let took = mined_and_seen(&http, &anvil, &chain, Duration::from_secs(3)).await;
        eprintln!("socket down: new head seen by polling {took:?} after evm_mine");
    }

    // Back: one socket, one subscription, and heads over it again.
    relay.set_down(false);
    wait_until("socket back", Duration::from_secs(10), || chain.followed()).await;
    assert_eq!(relay.heads_subscriptions(), 1);
    mined_and_seen(&http, &anvil, &chain, FAST).await;

    // Drops in quick succession: never two sockets or two subscriptions, and one at the end.
    for _ in 0..3 {
        relay.kill();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    wait_until("socket back after drops", Duration::from_secs(10), || {
        chain.followed() && relay.heads_subscriptions() == 1
    })
    .await;
    mined_and_seen(&http, &anvil, &chain, FAST).await;
    assert_eq!(relay.open_sockets(), 1);
    assert_eq!(
        relay.max_live(),
        (1, 1),
        "(newHeads subscriptions, sockets) at once"
    );
    assert!(
        relay.sockets_opened() >= 3,
        "{} sockets",
        relay.sockets_opened()
    );
    let metrics = node.shared.metrics.render();
    assert!(
        !metrics.contains("edge_upstream_ws_reconnects_total{chain_id=\"31337\"} 0"),
        "{metrics}"
    );

    // Shutdown unsubscribes before closing.
    node.shutdown().await;
    assert!(relay.unsubscribes() >= 1);
    wait_until("subscription ended", Duration::from_secs(2), || {
        relay.heads_subscriptions() == 0
    })
    .await;
}

#[tokio::test]
async fn pending_transactions_flow_while_someone_listens() {
    // No mining: a sent transaction stays pending.
    let Relayed {
        anvil,
        relay,
        gw,
        node,
        chain,
    } = relayed(&["--no-mining"]).await;
    let http = Http::default();
    assert_eq!(relay.pending_subscriptions(), 0, "nobody listens yet");

    let mut rx = chain.pending_transactions().expect("a ws upstream");
    wait_until("pending subscribed", Duration::from_secs(3), || {
        relay.pending_subscriptions() == 1
    })
    .await;
    let sent = send_tx(&http, &anvil).await;
    let got = tokio::time::timeout(Duration::from_secs(3), rx.recv())
        .await
        .expect("a pending hash within 3 s")
        .unwrap();
    assert_eq!(got, sent);
    // A second receiver shares the one subscription.
    let mut rx2 = chain.pending_transactions().unwrap();
    let sent = send_tx(&http, &anvil).await;
    for rx in [&mut rx, &mut rx2] {
        let got = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await;
        assert_eq!(got.unwrap().unwrap(), sent);
    }
    assert_eq!(relay.pending_subscriptions(), 1);

    // Nobody listens: the subscription goes a few seconds later.
    drop((rx, rx2));
    wait_until("pending unsubscribed", Duration::from_secs(8), || {
        relay.pending_subscriptions() == 0
    })
    .await;
    assert_eq!(relay.heads_subscriptions(), 1, "newHeads stays");

    // An upstream that refuses: receivers are closed, and new callers are told why.
    relay.refuse_pending(true);
    let mut rx = chain.pending_transactions().unwrap();
    let end = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await;
    assert_eq!(
        end.expect("closed within 3 s"),
        Err(tokio::sync::broadcast::error::RecvError::Closed)
    );
    let why = chain.pending_transactions().unwrap_err().to_string();
    assert!(why.contains("refused newPendingTransactions"), "{why}");

    // An HTTP-only chain has no feed, and says why.
    let plain = node_http(&gw, &anvil.url).await;
    let why = chain_of(&plain).pending_transactions().unwrap_err();
    assert_eq!(
        why.to_string(),
        "no upstream of chain 31337 is a WebSocket (ws:// or wss://) upstream; \
         newPendingTransactions needs one"
    );
    assert!(!chain_of(&plain).followed());
    plain.shutdown().await;
    node.shutdown().await;
}

async fn node_http(gw: &gateway::Gateway, upstream: &str) -> edge_node::EdgeNode {
    start_node(gw, &NodeSpec::eu_west(upstream)).await
}

/// Sends 1 wei between anvil's unlocked dev accounts; returns the transaction hash.
async fn send_tx(http: &Http, anvil: &Anvil) -> String {
    let r: Value = http
        .rpc(
            &anvil.url,
            "eth_sendTransaction",
            json!([{"from": DEV[0], "to": DEV[1], "value": "0x1"}]),
        )
        .await;
    r["result"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string()
}
