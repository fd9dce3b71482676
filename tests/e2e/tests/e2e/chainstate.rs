//! Edge-node chain state against real anvil: differential reads while blocks are produced,
//! reorgs and rollbacks, finality-aware caching, and lying upstreams.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use e2e::*;

const DEV: [&str; 3] = [
    "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266",
    "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
    "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc",
];
const CONTRACT: &str = "0x00000000000000000000000000000000c0ffee00";

struct Rig {
    anvil: Anvil,
    gw: gateway::Gateway,
    node: edge_node::EdgeNode,
    url: String,
    http: Http,
}

async fn rig(upstream: Option<&str>, verify: bool) -> Rig {
    let anvil = Anvil::start(&[]).await;
    let gw = start_gateway("").await;
    let up = upstream
        .map(str::to_string)
        .unwrap_or_else(|| anvil.url.clone());
    let mut cfg = node_config(&gw, &NodeSpec::eu_west(&up), TOKEN);
    cfg.chains[0].verify_state = verify;
    let node = edge_node::EdgeNode::start(cfg, proto::identity::Identity::generate().unwrap())
        .await
        .unwrap();
    let url = format!("http://{}/", gw.http_addr);
    Rig {
        anvil,
        gw,
        node,
        url,
        http: Http::default(),
    }
}

impl Rig {
    async fn direct(&self, method: &str, params: Value) -> Value {
        self.http.rpc(&self.anvil.url, method, params).await
    }

    async fn head(&self) -> u64 {
        let v = self.direct("eth_blockNumber", json!([])).await;
        u64::from_str_radix(v["result"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    }

    /// Waits until the node's head is anvil's head (same hash).
    async fn synced(&self) {
        let want = self
            .direct("eth_getBlockByNumber", json!(["latest", false]))
            .await["result"]["hash"]
            .clone();
        for _ in 0..500 {
            let chain = chain_of(&self.node);
            if chain
                .head()
                .is_some_and(|h| json!(format!("{:#x}", h.hash)) == want)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("node never caught up with anvil's head {want}");
    }

    /// Sends 0x1234 wei from dev account 0 to 1 straight to anvil and waits until it is mined.
    async fn transfer(&self) {
        let sent = self
            .direct(
                "eth_sendTransaction",
                json!([{"from": DEV[0], "to": DEV[1], "value": "0x1234"}]),
            )
            .await;
        self.mined(&sent).await;
    }

    /// Waits until anvil has mined the transaction `sent` (an eth_sendTransaction response).
    async fn mined(&self, sent: &Value) {
        let hash = sent["result"]
            .as_str()
            .unwrap_or_else(|| panic!("send failed: {sent}"));
        for _ in 0..200 {
            let r = self
                .direct("eth_getTransactionReceipt", json!([hash]))
                .await;
            if !r["result"].is_null() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("transaction {hash} was never mined");
    }

    fn node_metric(&self, name: &str) -> f64 {
        let text = self.node.shared.metrics.render();
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

fn block_ref(rng: &mut StdRng, head: u64, hashes: &[String]) -> Value {
    match rng.random_range(0..9) {
        0 => json!("latest"),
        1 => json!("earliest"),
        2 => json!("finalized"),
        3 => json!("safe"),
        4 => json!({ "blockNumber": format!("{:#x}", rng.random_range(0..=head)) }),
        5 => json!({ "blockHash": hashes[rng.random_range(0..hashes.len())] }),
        6 => json!(format!("{:#x}", head + rng.random_range(1..4))), // beyond the head
        _ => json!(format!("{:#x}", rng.random_range(0..=head))),
    }
}

fn random_read(
    rng: &mut StdRng,
    head: u64,
    hashes: &[String],
    txs: &[String],
) -> (&'static str, Value) {
    let who = if rng.random_bool(0.2) {
        CONTRACT
    } else {
        DEV[rng.random_range(0..DEV.len())]
    };
    let b = block_ref(rng, head, hashes);
    // Block reads take a tag or number, not an EIP-1898 object.
    let tag = if b.is_object() {
        json!(format!("{:#x}", rng.random_range(0..=head)))
    } else {
        b.clone()
    };
    match rng.random_range(0..12) {
        0 => ("eth_getBalance", json!([who, b])),
        1 => ("eth_getTransactionCount", json!([who, b])),
        2 => ("eth_getCode", json!([who, b])),
        3 => ("eth_getStorageAt", json!([who, "0x0", b])),
        4 => (
            "eth_call",
            json!([{"to": "0x0000000000000000000000000000000000000004", "data": "0xbeef"}, b]),
        ),
        5 => ("eth_getBlockByNumber", json!([tag, rng.random_bool(0.5)])),
        6 => (
            "eth_getBlockByHash",
            json!([hashes[rng.random_range(0..hashes.len())], false]),
        ),
        7 => ("eth_getBlockTransactionCountByNumber", json!([tag])),
        8 => (
            "eth_getTransactionByBlockNumberAndIndex",
            json!([tag, "0x0"]),
        ),
        9 if !txs.is_empty() => (
            "eth_getTransactionReceipt",
            json!([txs[rng.random_range(0..txs.len())]]),
        ),
        10 => {
            let hi = rng.random_range(0..=head);
            let lo = hi.saturating_sub(rng.random_range(0..20));
            (
                "eth_getLogs",
                json!([{"fromBlock": format!("{lo:#x}"), "toBlock": format!("{hi:#x}")}]),
            )
        }
        _ => ("eth_blockNumber", json!([])),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_match_anvil_while_blocks_are_produced() {
    let r = rig(None, false).await;
    wait_serving(&r.gw, 1).await;
    // History deep enough for anvil's `finalized` to exist, and a contract with code and storage.
    r.direct("anvil_mine", json!(["0x50"])).await;
    r.direct("anvil_setCode", json!([CONTRACT, "0x6001600101"]))
        .await;
    r.direct(
        "anvil_setStorageAt",
        json!([CONTRACT, "0x0", format!("0x{:064x}", 42)]),
    )
    .await;
    r.direct("evm_mine", json!([])).await;

    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut txs: Vec<String> = Vec::new();
    let (mut compared, mut hits) = (0, 0);
    for round in 0..14 {
        // Move the chain: a transfer (a block with a transaction), or empty blocks.
        match round % 3 {
            0 => {
                let to = DEV[rng.random_range(1..DEV.len())];
                let tx = r
                    .direct("eth_sendTransaction", json!([{"from": DEV[0], "to": to, "value": format!("{:#x}", rng.random_range(1..1_000_000u64))}]))
                    .await;
                r.mined(&tx).await;
                txs.push(tx["result"].as_str().unwrap().to_string());
            }
            1 => {
                r.direct("evm_mine", json!([])).await;
            }
            _ => {
                r.direct(
                    "anvil_mine",
                    json!([format!("{:#x}", rng.random_range(1..4))]),
                )
                .await;
            }
        }
        r.synced().await;
        let head = r.head().await;
        let mut hashes = Vec::new();
        for n in [0, head / 2, head.saturating_sub(1), head] {
            let b = r
                .direct("eth_getBlockByNumber", json!([format!("{n:#x}"), false]))
                .await;
            hashes.push(b["result"]["hash"].as_str().unwrap().to_string());
        }
        for _ in 0..30 {
            let (method, params) = random_read(&mut rng, head, &hashes, &txs);
            let body = json!({"jsonrpc":"2.0","id":7,"method":method,"params":params}).to_string();
            let via = r.http.post(&r.url, body.clone()).await;
            let direct = r.http.post(&r.anvil.url, body).await.json();
            assert_eq!(via.json(), direct, "round {round}: {method} {params}");
            compared += 1;
            hits += usize::from(via.header("x-cache") == Some("HIT"));
        }
    }
    println!("differential: {compared} reads compared, {hits} cache hits, 0 mismatches");
    assert!(
        hits > 20,
        "the cache should have answered part of the stream ({hits} hits)"
    );
    assert_eq!(
        r.node_metric("edge_header_verification_failures_total"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalized_data_is_a_hit_and_tip_data_follows_the_head() {
    let r = rig(None, false).await;
    wait_serving(&r.gw, 1).await;
    r.direct("anvil_mine", json!(["0x50"])).await;
    r.synced().await;
    let post = |method: &str, params: Value| {
        let body = json!({"jsonrpc":"2.0","id":1,"method":method,"params":params}).to_string();
        let (http, url) = (r.http.clone(), r.url.clone());
        async move { http.post(&url, body).await }
    };
    // Block 1 is final: MISS then HIT, never asked upstream again.
    let a = post("eth_getBlockByNumber", json!(["0x1", false])).await;
    let b = post("eth_getBlockByNumber", json!(["0x1", false])).await;
    assert_eq!(
        (a.header("x-cache"), b.header("x-cache")),
        (Some("MISS"), Some("HIT"))
    );
    assert_eq!(a.json(), b.json());

    // Tip data: HIT while the head stays, a fresh answer once it moves.
    let t1 = post("eth_getBalance", json!([DEV[1], "latest"])).await;
    let t2 = post("eth_getBalance", json!([DEV[1], "latest"])).await;
    assert_eq!(
        (t1.header("x-cache"), t2.header("x-cache")),
        (Some("MISS"), Some("HIT"))
    );
    r.transfer().await;
    r.synced().await;
    let t3 = post("eth_getBalance", json!([DEV[1], "latest"])).await;
    assert_eq!(
        t3.header("x-cache"),
        Some("MISS"),
        "{:?} {:?}",
        t3.json(),
        t1.json()
    );
    assert_ne!(t3.json()["result"], t1.json()["result"]);
    assert_eq!(
        t3.json(),
        r.direct("eth_getBalance", json!([DEV[1], "latest"])).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tip_answers_repeat_only_while_the_node_announces_the_same_state() {
    let r = rig(None, false).await;
    wait_serving(&r.gw, 1).await;
    r.direct("anvil_mine", json!(["0x50"])).await;
    r.synced().await;
    let chain = chain_of(&r.node).clone();
    let gw_node = || r.gw.app.registry.snapshot().into_iter().next().unwrap();
    // The node announces every state it publishes, so the gateway knows the current one.
    let announced = || async {
        for _ in 0..200 {
            if gw_node().state_version(CHAIN_ID) == chain.state_version() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!(
            "gateway saw state {}, node is at {}",
            gw_node().state_version(CHAIN_ID),
            chain.state_version()
        );
    };
    announced().await;
    let body =
        json!({"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":[DEV[1], "latest"]})
            .to_string();
    let first = r.http.post(&r.url, body.clone()).await;
    let second = r.http.post(&r.url, body.clone()).await;
    let again = r.http.post(&r.url, body.clone()).await;
    assert_eq!(first.header("x-cache"), Some("MISS"));
    // The gateway keeps a tip answer once the node's cache had it (a question asked twice).
    assert_eq!(
        (second.header("x-cache"), second.header("x-cache-tier")),
        (Some("HIT"), Some("edge"))
    );
    assert_eq!(
        (again.header("x-cache"), again.header("x-cache-tier")),
        (Some("HIT"), Some("gateway")),
        "a repeat under the same state is answered by the gateway"
    );
    assert_eq!(again.header("x-edge-node"), first.header("x-edge-node"));
    assert_eq!(again.json(), first.json());
    // The node answers the block number itself (a hit there), so the gateway keeps it at once.
    let block = r
        .http
        .post(
            &r.url,
            json!({"jsonrpc":"2.0","id":2,"method":"eth_blockNumber","params":[]}).to_string(),
        )
        .await;
    let block_again = r
        .http
        .post(
            &r.url,
            json!({"jsonrpc":"2.0","id":2,"method":"eth_blockNumber","params":[]}).to_string(),
        )
        .await;
    assert_eq!(block_again.header("x-cache-tier"), Some("gateway"));
    assert_eq!(block_again.json(), block.json());

    // A transfer lands in a new block: from the moment the gateway hears of the node's new
    // state, the old answer is never given again, and the new one is repeated in turn.
    let old = first.json()["result"].clone();
    r.transfer().await;
    let new = r.direct("eth_getBalance", json!([DEV[1], "latest"])).await["result"].clone();
    assert_ne!(new, old);
    let before = chain.state_version();
    let mut seen_new = false;
    let mut tiers = Vec::new();
    for _ in 0..2000 {
        // Read the gateway's view first: an answer after it names the new state is never old.
        let moved = gw_node().state_version(CHAIN_ID) > before;
        let a = r.http.post(&r.url, body.clone()).await;
        let got = a.json()["result"].clone();
        if moved {
            assert_eq!(got, new, "old answer after the new state was announced");
        }
        if got == new {
            seen_new = true;
            tiers.push(a.header("x-cache-tier").map(str::to_string));
        } else {
            assert!(!seen_new, "the old answer came back after the new one");
            assert_eq!(got, old);
        }
        if tiers.len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(seen_new, "the new balance never came through");
    assert_eq!(
        tiers.last().cloned().flatten().as_deref(),
        Some("gateway"),
        "the new answer is repeated by the gateway too: {tiers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_never_meets_its_old_tip_answers() {
    // Same key, new process: its state versions count from 1 again. Answers the gateway kept
    // for the old session must not match the new session's versions.
    let anvil = Anvil::start(&[]).await;
    let gw = start_gateway("").await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("node.key");
    let start = || async {
        edge_node::EdgeNode::start(
            node_config(&gw, &NodeSpec::eu_west(&anvil.url), TOKEN),
            proto::identity::Identity::load_or_generate(&key).unwrap(),
        )
        .await
        .unwrap()
    };
    let http = Http::default();
    let url = format!("http://{}/", gw.http_addr);
    let body =
        json!({"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":[DEV[1], "latest"]})
            .to_string();
    let gw_version = || {
        gw.app
            .registry
            .snapshot()
            .first()
            .map_or(0, |n| n.state_version(CHAIN_ID))
    };

    let node = start().await;
    wait_serving(&gw, 1).await;
    let mut kept = None;
    for _ in 0..20 {
        let a = http.post(&url, body.clone()).await;
        if a.header("x-cache-tier") == Some("gateway") {
            kept = Some((gw_version(), a.json()["result"].clone()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (old_version, old) = kept.expect("the gateway never kept the tip answer");
    node.shutdown().await;
    wait_serving_for(&gw, 0, 10).await;

    let sent = http
        .rpc(
            &anvil.url,
            "eth_sendTransaction",
            json!([{"from": DEV[0], "to": DEV[1], "value": "0x1234"}]),
        )
        .await;
    assert!(sent.get("error").is_none(), "{sent}");
    let new = loop {
        let b = http
            .rpc(&anvil.url, "eth_getBalance", json!([DEV[1], "latest"]))
            .await["result"]
            .clone();
        if b != old {
            break b;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let _node = start().await;
    wait_serving(&gw, 1).await;
    // Walk the new session's versions up past the old one, asking at each.
    for _ in 0..200 {
        let a = http.post(&url, body.clone()).await;
        assert_eq!(
            a.json()["result"],
            new,
            "an answer kept for the node's previous session came back (tier {:?}, version {})",
            a.header("x-cache-tier"),
            gw_version()
        );
        if gw_version() > old_version + 1 {
            return;
        }
        http.rpc(&anvil.url, "anvil_mine", json!(["0x1"])).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    panic!("the new session never passed version {old_version}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reorgs_and_rollbacks_never_leave_stale_answers() {
    let r = rig(None, false).await;
    wait_serving(&r.gw, 1).await;
    r.direct("anvil_mine", json!(["0x50"])).await;
    r.synced().await;
    let poll = chain_of(&r.node).poll_interval();
    let head = r.head().await;
    // Warm the cache with answers about the tip blocks that the reorg will replace.
    let probes: Vec<(&str, Value)> = vec![
        (
            "eth_getBlockByNumber",
            json!([format!("{:#x}", head), false]),
        ),
        (
            "eth_getBlockByNumber",
            json!([format!("{:#x}", head - 1), false]),
        ),
        ("eth_getBalance", json!([DEV[2], "latest"])),
        (
            "eth_getBalance",
            json!([DEV[2], format!("{:#x}", head - 1)]),
        ),
        (
            "eth_getBlockTransactionCountByNumber",
            json!([format!("{:#x}", head)]),
        ),
    ];
    let old_tip = r
        .direct("eth_getBlockByNumber", json!(["latest", false]))
        .await["result"]["hash"]
        .clone();
    for (m, p) in &probes {
        r.http.rpc(&r.url, m, p.clone()).await;
        r.http.rpc(&r.url, m, p.clone()).await;
    }

    // Replace the last 3 blocks with ones carrying a transfer to DEV[2].
    let tx = json!([[{"from": DEV[0], "to": DEV[2], "value": "0xde0b6b3a7640000"}, 1]]);
    let reorged_at = Instant::now();
    let res = r.direct("anvil_reorg", json!([3, tx])).await;
    assert!(res.get("error").is_none(), "{res}");
    let seen = watch_staleness(&r, &probes, reorged_at, poll).await;
    assert!(r.node_metric("edge_reorgs_total") >= 1.0);
    assert_fresh_after_publish("reorg", &seen, poll);
    // The replaced tip's hash is no longer answered from the cache.
    let gone = r
        .http
        .rpc(&r.url, "eth_getBlockByHash", json!([old_tip, false]))
        .await;
    assert_eq!(
        gone,
        r.direct("eth_getBlockByHash", json!([old_tip, false]))
            .await
    );

    // Roll back 2 blocks: the head goes down, answers follow, eth_blockNumber does not go back.
    let tip_before = r.http.rpc(&r.url, "eth_blockNumber", json!([])).await["result"].clone();
    let rolled_at = Instant::now();
    r.direct("anvil_rollback", json!([2])).await;
    let seen = watch_staleness(&r, &probes[2..], rolled_at, poll).await;
    assert_fresh_after_publish("rollback", &seen, poll);
    let tip_after = r.http.rpc(&r.url, "eth_blockNumber", json!([])).await["result"].clone();
    assert_eq!(tip_after, tip_before, "the served tip never goes backwards");
}

/// Waits until `node` has followed the chain to block `n`.
async fn wait_head(node: &edge_node::EdgeNode, n: u64) {
    for _ in 0..250 {
        let chain = chain_of(node);
        if chain.head().is_some_and(|h| h.number >= n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("node never reached block {n}");
}

/// What [`watch_staleness`] saw.
struct Staleness {
    /// When the last answer that differed from anvil's was seen (zero: none was).
    last_stale: Duration,
    /// When the node had published the new state and the gateway had heard of it.
    published: Option<Duration>,
    /// Answers that differed from anvil's although asked after `published`: each is a defect
    /// (the cache must be cleaned before the new state is published).
    stale_after_publish: usize,
    checks: usize,
}

/// Asks `probes` through the gateway and directly, over and over, for a while after a chain
/// change at `since`, noting when the node published the change (its head is anvil's new tip
/// and the gateway has heard of its new state version) and every answer that differed.
async fn watch_staleness(
    r: &Rig,
    probes: &[(&str, Value)],
    since: Instant,
    poll: Duration,
) -> Staleness {
    let want = r
        .direct("eth_getBlockByNumber", json!(["latest", false]))
        .await["result"]["hash"]
        .clone();
    let chain = chain_of(&r.node);
    let gw_node = || r.gw.app.registry.snapshot().into_iter().next();
    let mut seen = Staleness {
        last_stale: Duration::ZERO,
        published: None,
        stale_after_publish: 0,
        checks: 0,
    };
    let until = Instant::now() + poll * 4 + Duration::from_millis(500);
    while Instant::now() < until {
        if seen.published.is_none()
            && chain
                .head()
                .is_some_and(|h| json!(format!("{:#x}", h.hash)) == want)
            && gw_node().is_some_and(|n| n.state_version(CHAIN_ID) == chain.state_version())
        {
            seen.published = Some(since.elapsed());
        }
        let after_publish = seen.published.is_some();
        for (m, p) in probes {
            let via = r.http.rpc(&r.url, m, p.clone()).await;
            let direct = r.direct(m, p.clone()).await;
            seen.checks += 1;
            if via != direct {
                seen.last_stale = since.elapsed();
                seen.stale_after_publish += usize::from(after_publish);
            }
        }
    }
    seen
}

/// The invariant behind [`watch_staleness`]: no stale answer once the change is published, and
/// the node publishes it within a few poll intervals (the poll, then the walk back and the tag
/// fetches, on a busy 2-core machine).
fn assert_fresh_after_publish(what: &str, seen: &Staleness, poll: Duration) {
    println!(
        "{what}: published {:?} after it, last stale answer {} ms after it (poll interval {} ms, {} checks)",
        seen.published,
        seen.last_stale.as_millis(),
        poll.as_millis(),
        seen.checks
    );
    let published = seen
        .published
        .unwrap_or_else(|| panic!("{what}: the node never published the change"));
    assert!(
        published < poll * 10,
        "{what}: published only {published:?} after it (poll interval {poll:?})"
    );
    assert_eq!(
        seen.stale_after_publish, 0,
        "{what}: stale answers after the node published the change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_upstreams_are_caught_by_header_and_proof_checks() {
    // Header lie: the tip's state root is altered, so its hash no longer matches.
    let anvil = Anvil::start(&[]).await;
    let lie_header: TamperFn = Arc::new(|method: &str, _p: &Value, b: bytes::Bytes| {
        if method != "eth_getBlockByNumber" {
            return b;
        }
        let mut s = String::from_utf8_lossy(&b).to_string();
        if let Some(i) = s.find("\"stateRoot\":\"0x") {
            let at = i + "\"stateRoot\":\"0x".len();
            let flipped = if &s[at..at + 1] == "0" { "1" } else { "0" };
            s.replace_range(at..at + 1, flipped);
        }
        bytes::Bytes::from(s)
    });
    let liar = TamperingUpstream::start(&anvil.url, lie_header).await;
    let gw = start_gateway("").await;
    let node = start_node(&gw, &NodeSpec::eu_west(&liar.url)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let failures = node.shared.metrics.header_verification_failures.get();
    assert!(failures >= 1, "forged headers must be rejected");
    assert!(
        gw.app
            .registry
            .candidates(CHAIN_ID, Duration::from_secs(1))
            .is_empty(),
        "a node whose only upstream lies is not routable"
    );
    node.shutdown().await;

    // Proof lie: balances in eth_getProof are altered. With verified reads on, a node with one
    // honest and one lying upstream answers correctly; with only the liar it refuses clearly.
    let lie_proof: TamperFn = Arc::new(|method: &str, _p: &Value, b: bytes::Bytes| {
        if method != "eth_getProof" {
            return b;
        }
        let mut v: Value = serde_json::from_slice(&b).unwrap();
        v["result"]["balance"] = json!("0x56bc75e2d63100000"); // 100 ETH
        bytes::Bytes::from(v.to_string())
    });
    // (Anvil's genesis state root is the empty root whatever the genesis allocation, so
    // proofs at block 0 never verify there; read at mined blocks.)
    let anvil = Anvil::start(&[]).await;
    let liar = TamperingUpstream::start(&anvil.url, lie_proof).await;
    let gw = start_gateway("").await;
    let (http, url) = (Http::default(), format!("http://{}/", gw.http_addr));
    http.rpc(&anvil.url, "anvil_mine", json!(["0x3"])).await;
    let mut cfg = node_config(&gw, &NodeSpec::eu_west(&liar.url), TOKEN);
    cfg.chains[0].verify_state = true;
    cfg.chains[0].upstreams = vec![liar.url.parse().unwrap(), anvil.url.parse().unwrap()];
    let mixed =
        edge_node::EdgeNode::start(cfg.clone(), proto::identity::Identity::generate().unwrap())
            .await
            .unwrap();
    wait_serving(&gw, 1).await;
    wait_head(&mixed, 3).await;
    for _ in 0..4 {
        let via = http
            .rpc(&url, "eth_getBalance", json!([DEV[1], "latest"]))
            .await;
        assert_eq!(
            via["result"],
            http.rpc(&anvil.url, "eth_getBalance", json!([DEV[1], "latest"]))
                .await["result"],
            "{via}"
        );
    }
    let failed = mixed
        .shared
        .metrics
        .proof_verifications
        .with_label_values(&["failed"])
        .get();
    let verified = mixed
        .shared
        .metrics
        .proof_verifications
        .with_label_values(&["verified"])
        .get();
    assert!(
        failed >= 1 && verified >= 1,
        "failed {failed}, verified {verified}"
    );
    mixed.shutdown().await;
    // Gone from routing before its successor is judged (which takes a few health rounds).
    wait_serving(&gw, 0).await;

    cfg.chains[0].upstreams = vec![liar.url.parse().unwrap()];
    let only_liar = edge_node::EdgeNode::start(cfg, proto::identity::Identity::generate().unwrap())
        .await
        .unwrap();
    wait_serving(&gw, 1).await;
    wait_head(&only_liar, 3).await;
    let via = http
        .rpc(&url, "eth_getBalance", json!([DEV[1], "latest"]))
        .await;
    let msg = via["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains("state proof") && msg.contains("verif"),
        "{via}"
    );
    only_liar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_on_another_fork_or_lagging_are_not_used() {
    // A and its proxy agree; B is a different chain at the same height (another fork); a frozen
    // copy of A lags behind.
    let a = Anvil::start(&[]).await;
    let b = Anvil::start(&["--timestamp", "1000"]).await;
    let a_proxy = CountingProxy::start(&a.url).await;
    let lagging = LaggingUpstream::start(&a.url).await;
    let http = Http::default();
    for u in [&a.url, &b.url] {
        http.rpc(u, "anvil_mine", json!(["0x8"])).await;
    }
    // Let the lagging proxy see a head, then freeze it and move A on.
    http.rpc(
        &lagging.url,
        "eth_getBlockByNumber",
        json!(["latest", false]),
    )
    .await;
    lagging
        .frozen
        .store(true, std::sync::atomic::Ordering::SeqCst);
    http.rpc(&a.url, "anvil_mine", json!(["0x5"])).await;
    http.rpc(&b.url, "anvil_mine", json!(["0x5"])).await;

    let gw = start_gateway("").await;
    let mut cfg = node_config(&gw, &NodeSpec::eu_west(&a.url), TOKEN);
    cfg.chains[0].upstreams = [&b.url, &lagging.url, &a_proxy.url, &a.url]
        .map(|u| u.parse().unwrap())
        .to_vec();
    let node = edge_node::EdgeNode::start(cfg, proto::identity::Identity::generate().unwrap())
        .await
        .unwrap();
    wait_serving(&gw, 1).await;
    wait_head(&node, 13).await;
    let want = http
        .rpc(&a.url, "eth_getBlockByNumber", json!(["latest", false]))
        .await["result"]["hash"]
        .clone();
    let chain = chain_of(&node);
    assert_eq!(
        json!(format!("{:#x}", chain.head().unwrap().hash)),
        want,
        "the node follows the agreeing majority"
    );
    let order = chain.upstreams.trust_order();
    assert_eq!(
        &order[2..]
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        &[0usize, 1].into_iter().collect(),
        "the forked (0) and lagging (1) upstreams go last: {order:?}"
    );
    // Reads are served from the agreeing upstreams and match A.
    let url = format!("http://{}/", gw.http_addr);
    for n in 10..=13u64 {
        let p = json!([format!("{n:#x}"), false]);
        assert_eq!(
            http.rpc(&url, "eth_getBlockByNumber", p.clone()).await,
            http.rpc(&a.url, "eth_getBlockByNumber", p).await
        );
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_hash_answers_about_old_final_blocks_reach_the_gateway_tier() {
    // History older than the node: genesis is final but was never in the node's header ring.
    let anvil = Anvil::start(&[]).await;
    let http = Http::default();
    http.rpc(&anvil.url, "anvil_mine", json!(["0x90"])).await;
    let genesis = http
        .rpc(&anvil.url, "eth_getBlockByNumber", json!(["0x0", false]))
        .await["result"]["hash"]
        .clone();
    let gw = start_gateway("").await;
    let _node = start_node(&gw, &NodeSpec::eu_west(&anvil.url)).await;
    wait_serving(&gw, 1).await;
    let url = format!("http://{}/", gw.http_addr);
    let body = json!({"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":[DEV[1], {"blockHash": genesis}]}).to_string();
    let first = http.post(&url, body.clone()).await;
    assert_eq!(
        first.json(),
        http.post(&anvil.url, body.clone()).await.json()
    );
    // The node looks the hash up in the background; soon the gateway keeps the answer itself.
    let mut tier = None;
    for _ in 0..50 {
        let r = http.post(&url, body.clone()).await;
        assert_eq!(r.json()["result"], first.json()["result"]);
        tier = r.header("x-cache-tier").map(str::to_string);
        if tier.as_deref() == Some("gateway") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(tier.as_deref(), Some("gateway"));
}
