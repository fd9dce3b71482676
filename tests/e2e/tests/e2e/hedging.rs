//! Hedged reads: a node whose upstream holds some calls (every 25th balance read, 300 ms) is
//! raced by the next node once it is late. The p99 through the gateway drops, hedges stay
//! within their share, and a write (which the slow node also holds) is never sent twice.

use std::time::{Duration, Instant};

use serde_json::json;

use e2e::*;

const EVERY: usize = 25;
const SLOW: Duration = Duration::from_millis(300);
/// Reads per measured run; with one in 25 slow, the p99 is a slow one unless it is hedged.
const READS: u64 = 300;
/// Reads before the hedged run, so the slow node's latency figures are known.
const WARM_UP: u64 = 40;
const ACCT0: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_node_is_hedged_within_budget_and_writes_are_never_sent_twice() {
    let s = SlowNodes::start(EVERY, SLOW).await;

    let (gw, nodes) = s.stack("[hedge]\nenabled = false\n").await;
    let plain = read_balances(&format!("http://{}/", gw.http_addr), READS, 0, 1).await;
    assert_eq!(hedges(&gw, "sent"), 0);
    for n in nodes {
        n.shutdown().await;
    }
    gw.shutdown().await;

    let (gw, nodes) = s.stack("[hedge]\nmax_share = 0.1\n").await;
    let url = format!("http://{}/", gw.http_addr);
    let warm = read_balances(&url, WARM_UP, 1_000_000, 1).await;
    let hedged = read_balances(&url, READS, 2_000_000, 1).await;
    let sent = hedges(&gw, "sent");
    let share = sent as f64 / (WARM_UP + READS) as f64;
    let (p99_plain, p99_hedged) = (plain.quantile(0.99), hedged.quantile(0.99));
    eprintln!(
        "p50 {:?} -> {:?}, p99 {:?} -> {:?}; hedges sent {sent} (share {share:.3}), won {}, \
         lost {}, budget exhausted {}; answered by {:?}",
        plain.quantile(0.5),
        hedged.quantile(0.5),
        p99_plain,
        p99_hedged,
        hedges(&gw, "won"),
        hedges(&gw, "lost"),
        hedges(&gw, "budget_exhausted"),
        hedged.by_region,
    );
    assert_eq!(plain.errors + warm.errors + hedged.errors, 0);
    assert!(
        p99_plain >= SLOW,
        "the slow node sets the p99: {p99_plain:?}"
    );
    assert!(
        p99_hedged * 2 < p99_plain,
        "hedging must cut the p99: {p99_plain:?} -> {p99_hedged:?}"
    );
    assert!(hedges(&gw, "won") >= 1, "a hedge answered first");
    assert!(
        hedged.by_region.get("us-east").copied().unwrap_or(0) >= 1,
        "x-edge-region names the node whose answer won: {:?}",
        hedged.by_region
    );
    // The budget: max_share of the requests, plus the burst of 10 it can save up.
    assert!(
        sent as f64 <= 0.1 * (WARM_UP + READS) as f64 + 10.0,
        "{sent} hedges for {} requests",
        WARM_UP + READS
    );

    // Writes: the slow node holds each transaction 300 ms, far past any hedge delay, and
    // still each reaches the upstreams exactly once.
    let http = Http::default();
    for nonce in 0..3 {
        let signed = http
            .rpc(
                &s.anvil.url,
                "eth_signTransaction",
                json!([{"from": ACCT0,
                "to": "0x000000000000000000000000000000000000dEaD", "value": "0x1",
                "gas": "0x5208", "nonce": format!("{nonce:#x}"), "maxFeePerGas": "0x77359400",
                "maxPriorityFeePerGas": "0x1", "chainId": "0x7a69"}]),
            )
            .await;
        let raw = signed["result"]
            .as_str()
            .unwrap_or_else(|| panic!("{signed}"));
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction",
            "params": [raw]});
        let t = Instant::now();
        let reply = post_as(&http, &url, LONDON, body.to_string())
            .await
            .unwrap();
        assert!(reply.json()["result"].is_string(), "{}", reply.json());
        assert!(t.elapsed() >= SLOW, "sent through the slow node");
        assert_eq!(s.slow.sent(raw) + s.fast.sent(raw), 1, "nonce {nonce}");
    }
    assert_eq!(hedges(&gw, "sent"), sent, "writes are never hedged");
    for n in nodes {
        n.shutdown().await;
    }
    gw.shutdown().await;
}

fn hedges(gw: &gateway::Gateway, outcome: &str) -> u64 {
    gw.app
        .metrics
        .hedge
        .outcomes
        .with_label_values(&[outcome])
        .get()
}
