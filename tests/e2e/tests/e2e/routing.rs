//! Geo-aware routing, residency, health from sync status, failover, and WAN-like delays.

use std::time::{Duration, Instant};

use serde_json::json;

use e2e::*;

const LONDON: &str = "81.2.69.142";
const MOUNTAIN_VIEW: &str = "8.8.8.8";
const SYDNEY: &str = "1.1.1.1";
const ACCT0: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

async fn served_by(http: &Http, url: &str, ip: &str) -> Result<String, String> {
    call_as(http, url, ip, "eth_getBalance", json!([ACCT0, "latest"])).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_go_to_the_nearest_region() {
    let anvil = Anvil::start(&[]).await;
    let gw = start_gateway_with(&geo_section("")).await;
    let mut nodes = Vec::new();
    for r in [US_EAST, EU_WEST, AP_SOUTHEAST] {
        nodes.push(start_node(&gw, &NodeSpec::at(r, &anvil.url)).await);
    }
    wait_serving_for(&gw, 3, 10).await;
    let url = format!("http://{}/", gw.http_addr);
    let http = Http::default();
    for (ip, want) in [
        (LONDON, "eu-west"),
        (MOUNTAIN_VIEW, "us-east"),
        (SYDNEY, "ap-southeast"),
    ] {
        for _ in 0..10 {
            assert_eq!(
                served_by(&http, &url, ip).await.as_deref(),
                Ok(want),
                "caller {ip}"
            );
        }
    }
    // An untrusted peer's X-Forwarded-For is not believed: a gateway that trusts no proxy
    // treats the loopback caller as unknown (no location), whatever the header says.
    let gw2 = start_gateway_with(&geo_section("").replace(
        "trusted_proxies = [\"127.0.0.0/8\", \"::1\"]",
        "trusted_proxies = []",
    ))
    .await;
    let _n = start_node(&gw2, &NodeSpec::at(AP_SOUTHEAST, &anvil.url)).await;
    wait_serving_for(&gw2, 1, 10).await;
    let before = gw2
        .app
        .metrics
        .geo_lookups
        .with_label_values(&["found"])
        .get();
    served_by(&http, &format!("http://{}/", gw2.http_addr), LONDON)
        .await
        .unwrap();
    assert_eq!(
        gw2.app
            .metrics
            .geo_lookups
            .with_label_values(&["found"])
            .get(),
        before
    );
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eu_callers_stay_in_the_eu_or_get_a_clear_error() {
    let anvil = Anvil::start(&[]).await;
    let rule = "[[residency]]\nname = \"eu\"\ncontinents = [\"EU\"]\nregions = [\"eu-west\"]\n";
    let gw = start_gateway_with(&format!("{}{rule}", geo_section(""))).await;
    let us = start_node(&gw, &NodeSpec::at(US_EAST, &anvil.url)).await;
    let eu = start_node(&gw, &NodeSpec::at(EU_WEST, &anvil.url)).await;
    wait_serving_for(&gw, 2, 10).await;
    let url = format!("http://{}/", gw.http_addr);
    let http = Http::default();
    for _ in 0..20 {
        assert_eq!(
            served_by(&http, &url, LONDON).await.as_deref(),
            Ok("eu-west")
        );
    }
    eu.shutdown().await;
    wait_serving_for(&gw, 1, 10).await;
    let err = served_by(&http, &url, LONDON).await.unwrap_err();
    assert!(
        err.contains("-32002") && err.contains("residency") && err.contains("eu-west"),
        "{err}"
    );
    // Callers outside the rule are still served.
    assert_eq!(
        served_by(&http, &url, MOUNTAIN_VIEW).await.as_deref(),
        Ok("us-east")
    );
    us.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_nearest_node_under_load_fails_no_request() {
    let anvil = Anvil::start(&[]).await;
    let gw = start_gateway_with(&geo_section("")).await;
    let dir = tempfile::tempdir().unwrap();
    let mut eu = NodeProcess::spawn(&gw, &NodeSpec::at(EU_WEST, &anvil.url), dir.path()).await;
    let _us = NodeProcess::spawn(&gw, &NodeSpec::at(US_EAST, &anvil.url), dir.path()).await;
    wait_serving_for(&gw, 2, 20).await;
    let url = format!("http://{}/", gw.http_addr);
    let http = Http::default();
    assert_eq!(
        served_by(&http, &url, LONDON).await.as_deref(),
        Ok("eu-west")
    );

    // 8 concurrent London callers for 7 s; eu-west is SIGKILLed at 1.5 s, restarted at 3.5 s.
    let start = Instant::now();
    let run_for = Duration::from_secs(7);
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                let mut log = Vec::new();
                while start.elapsed() < run_for {
                    let t0 = start.elapsed();
                    let r = served_by(&http, &url, LONDON).await;
                    log.push((t0, start.elapsed(), r));
                }
                log
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_at = start.elapsed();
    eu.kill().await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let restarted_at = start.elapsed();
    let _eu2 = NodeProcess::spawn(&gw, &NodeSpec::at(EU_WEST, &anvil.url), dir.path()).await;

    let mut log = Vec::new();
    for w in workers {
        log.extend(w.await.unwrap());
    }
    let failed: Vec<_> = log.iter().filter(|(_, _, r)| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        log.len(),
        failed.first()
    );

    // Traffic moved: the first answer from us-east after the kill, and the slowest request.
    let moved = log
        .iter()
        .filter(|(_, done, r)| *done > killed_at && r.as_deref() == Ok("us-east"))
        .map(|(_, done, _)| *done - killed_at)
        .min()
        .expect("us-east took over");
    let slowest = log.iter().map(|(t0, done, _)| *done - *t0).max().unwrap();
    let back = log
        .iter()
        .filter(|(t0, _, r)| *t0 > restarted_at && r.as_deref() == Ok("eu-west"))
        .map(|(t0, _, _)| *t0 - restarted_at)
        .min()
        .expect("eu-west came back after its restart");
    println!(
        "failover: {} requests, 0 failed; traffic moved {} ms after the kill; slowest request {} ms; eu-west back {} ms after restart",
        log.len(),
        moved.as_millis(),
        slowest.as_millis(),
        back.as_millis()
    );
    assert!(
        moved < Duration::from_secs(1),
        "traffic moved after {moved:?}"
    );
    // Served by eu-west again only after the hysteresis (recover_after good checks).
    let hysteresis = gw.app.config.quic.status_interval * (gw.app.config.health.recover_after - 1);
    assert!(
        back >= hysteresis,
        "eu-west returned after {back:?}, before the hysteresis {hysteresis:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_upstream_drops_its_node_until_it_catches_up() {
    let anvil = Anvil::start(&["--block-time", "1"]).await;
    let lagging = LaggingUpstream::start(&anvil.url).await;
    let gw = start_gateway_with(&geo_section("[health]\nmax_lag_blocks = 2\n")).await;
    let eu = start_node(&gw, &NodeSpec::at(EU_WEST, &lagging.url)).await;
    let us = start_node(&gw, &NodeSpec::at(US_EAST, &anvil.url)).await;
    wait_serving_for(&gw, 2, 10).await;
    let url = format!("http://{}/", gw.http_addr);
    let http = Http::default();
    // Under a loaded suite eu-west can be a block behind (1 s blocks) when both first serve:
    // wait, briefly, for routing to settle on it before freezing its upstream.
    let mut first = Err(String::new());
    for _ in 0..30 {
        first = served_by(&http, &url, LONDON).await;
        if first.as_deref() == Ok("eu-west") {
            break;
        }
        // Why, for the log: eu-west judged behind (its health), or an attempt on it failing
        // (failovers by reason).
        let failovers: Vec<_> = [
            "stream_error",
            "timeout",
            "busy",
            "node_error",
            "node_gone",
            "protocol_error",
        ]
        .iter()
        .map(|r| (*r, gw.app.metrics.failovers.with_label_values(&[r]).get()))
        .filter(|(_, n)| *n > 0)
        .collect();
        let eu_health = gw.app.registry.get(&eu.node_id).map(|n| n.health(CHAIN_ID));
        println!(
            "London first served by {first:?}: eu-west {eu_health:?}; failovers {failovers:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(first.as_deref(), Ok("eu-west"));

    lagging
        .frozen
        .store(true, std::sync::atomic::Ordering::SeqCst);
    wait_serving_for(&gw, 1, 15).await;
    let node = gw.app.registry.get(&eu.node_id).unwrap();
    let h = node.health(CHAIN_ID);
    assert!(!h.healthy && h.reason.contains("lagging"), "{h:?}");
    // London callers fail over to the next-nearest node meanwhile.
    assert_eq!(
        served_by(&http, &url, LONDON).await.as_deref(),
        Ok("us-east")
    );

    lagging
        .frozen
        .store(false, std::sync::atomic::Ordering::SeqCst);
    wait_serving_for(&gw, 2, 15).await;
    assert_eq!(
        served_by(&http, &url, LONDON).await.as_deref(),
        Ok("eu-west")
    );
    eu.shutdown().await;
    us.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wan_delays_drive_lowest_latency_mode_and_expose_implausible_locations() {
    let anvil = Anvil::start(&[]).await;
    // A gateway in Frankfurt, ranking by measured RTT alone.
    let gw = start_gateway_with(
        "[routing]\nmode = \"lowest-latency\"\n[geo]\ngateway_location = { lat = 50.11, lon = 8.68 }\n",
    )
    .await;
    let mut nodes = Vec::new();
    // (region, claimed location, one-way delay through the relay; None = direct)
    let layout = [
        (("far-relay", 1.35, 103.82), Some(60u64)), // claims Singapore, 120 ms RTT: plausible
        (("near-relay", 50.0, 8.0), Some(3)),       // Frankfurt area, 6 ms RTT
        (("liar", 1.35, 103.82), None),             // claims Singapore at loopback RTT
        (("mid-relay", 48.85, 2.35), Some(20)),     // Paris, 40 ms RTT
    ];
    for ((region, lat, lon), delay) in layout {
        let mut cfg = node_config(
            &gw,
            &NodeSpec {
                region,
                lat,
                lon,
                upstream: &anvil.url,
            },
            TOKEN,
        );
        if let Some(ms) = delay {
            let relay = udp_delay_relay(gw.quic_addr, Duration::from_millis(ms)).await;
            cfg.gateways[0].address = relay.to_string();
        }
        let n = edge_node::EdgeNode::start(cfg, proto::identity::Identity::generate().unwrap())
            .await
            .unwrap();
        nodes.push((region, n));
    }
    wait_serving_for(&gw, 4, 20).await;
    // Let a few health rounds sample the RTTs.
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let by_region = |r: &str| {
        let id = &nodes.iter().find(|(reg, _)| *reg == r).unwrap().1.node_id;
        gw.app.registry.get(id).unwrap()
    };
    for (r, lo, hi) in [
        ("far-relay", 110.0, 200.0),
        ("near-relay", 5.0, 40.0),
        ("mid-relay", 38.0, 100.0),
    ] {
        let rtt = by_region(r).min_rtt().unwrap().as_secs_f64() * 1000.0;
        assert!((lo..hi).contains(&rtt), "{r}: measured min RTT {rtt:.1} ms");
    }
    assert!(
        !by_region("liar").plausible(),
        "Singapore at loopback RTT must be flagged"
    );
    assert!(
        by_region("far-relay").plausible(),
        "Singapore at 120 ms RTT is plausible"
    );
    assert!(by_region("near-relay").plausible());
    assert!(gw.app.metrics.implausible_nodes_total.get() >= 1);

    // Lowest-latency mode ignores claimed locations: the liar (loopback RTT) wins, then the
    // near relay. Take the liar out and the near relay must win every time.
    let url = format!("http://{}/", gw.http_addr);
    let http = Http::default();
    let first = served_by(&http, &url, "81.2.69.142").await.unwrap();
    assert_eq!(first, "liar");
    let liar = nodes.iter().position(|(r, _)| *r == "liar").unwrap();
    nodes.remove(liar).1.shutdown().await;
    wait_serving_for(&gw, 3, 10).await;
    for _ in 0..10 {
        assert_eq!(
            served_by(&http, &url, "81.2.69.142").await.as_deref(),
            Ok("near-relay")
        );
    }
    for (_, n) in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_delivered_before_a_failover_is_reported_sent_not_failed() {
    let anvil = Anvil::start(&[]).await;
    // eu-west's upstream takes the transaction (anvil mines it) but the answer is lost.
    let lose_answer: TamperFn =
        std::sync::Arc::new(|method: &str, _p: &serde_json::Value, b: bytes::Bytes| {
            if method == "eth_sendRawTransaction" {
                bytes::Bytes::from_static(b"<html>502 Bad Gateway</html>")
            } else {
                b
            }
        });
    let flaky = TamperingUpstream::start(&anvil.url, lose_answer).await;
    let gw = start_gateway_with(&geo_section("")).await;
    let eu = start_node(&gw, &NodeSpec::at(EU_WEST, &flaky.url)).await;
    let us = start_node(&gw, &NodeSpec::at(US_EAST, &anvil.url)).await;
    wait_serving_for(&gw, 2, 10).await;
    let http = Http::default();
    let signed = http
        .rpc(&anvil.url, "eth_signTransaction", json!([{"from": ACCT0, "to": "0x000000000000000000000000000000000000dEaD", "value": "0x1", "gas": "0x5208", "nonce": "0x0", "maxFeePerGas": "0x77359400", "maxPriorityFeePerGas": "0x1", "chainId": "0x7a69"}]))
        .await;
    let raw = signed["result"]
        .as_str()
        .unwrap_or_else(|| panic!("{signed}"))
        .to_string();

    let body = json!({"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction","params":[raw]})
        .to_string();
    let req = http::Request::post(format!("http://{}/", gw.http_addr))
        .header("content-type", "application/json")
        .header("x-forwarded-for", LONDON)
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let resp = http.client.request(req).await.unwrap();
    use http_body_util::BodyExt;
    let v: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let hash = v["result"]
        .as_str()
        .unwrap_or_else(|| panic!("reported failed: {v}"));
    // The receipt, as a client waits for it: anvil can show a just-mined transaction a moment
    // before its receipt.
    let mut receipt = serde_json::Value::Null;
    for _ in 0..50 {
        receipt = http
            .rpc(&anvil.url, "eth_getTransactionReceipt", json!([hash]))
            .await;
        if !receipt["result"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        receipt["result"]["status"], "0x1",
        "the reported hash is the mined transaction: {receipt}"
    );
    assert!(
        gw.app
            .metrics
            .failovers
            .with_label_values(&["node_error"])
            .get()
            >= 1
    );
    eu.shutdown().await;
    us.shutdown().await;
}

/// An answer larger than the request stream carries inline (`proto::msg::INLINE_MAX`) comes
/// on a stream of its own, whole, while small answers keep coming on the request stream; all of
/// them are what anvil answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_arrive_whole_beside_small_ones() {
    let anvil = Anvil::start(&[]).await;
    let http = Http::default();
    http.rpc(&anvil.url, "anvil_mine", json!([200])).await;
    let gw = start_gateway_with(&geo_section("")).await;
    let node = start_node(&gw, &NodeSpec::at(EU_WEST, &anvil.url)).await;
    wait_serving_for(&gw, 1, 10).await;
    let url = format!("http://{}/", gw.http_addr);
    let batch: Vec<_> = (1..=200u64)
        .map(|n| {
            json!({"jsonrpc": "2.0", "id": n, "method": "eth_getBlockByNumber",
            "params": [format!("0x{n:x}"), false]})
        })
        .collect();
    let body = serde_json::to_string(&batch).unwrap();
    let large = async {
        let mut sizes = Vec::new();
        for _ in 0..3 {
            let r = post_as(&http, &url, LONDON, body.clone()).await.unwrap();
            assert_eq!(r.status, 200);
            sizes.push(r.body.len());
            let got = r.json();
            let want = http.post(&anvil.url, body.clone()).await.json();
            assert_eq!(got, want);
        }
        sizes
    };
    let small = async {
        for i in 0..50u64 {
            let got = http
                .rpc(
                    &url,
                    "eth_getBlockByNumber",
                    json!([format!("0x{:x}", i % 200 + 1), false]),
                )
                .await;
            let want = http
                .rpc(
                    &anvil.url,
                    "eth_getBlockByNumber",
                    json!([format!("0x{:x}", i % 200 + 1), false]),
                )
                .await;
            assert_eq!(got, want, "small call {i}");
        }
    };
    let (sizes, ()) = tokio::join!(large, small);
    // The node's answer to the batch (the same results, framed) is larger than INLINE_MAX.
    assert!(
        sizes.iter().all(|&s| s > proto::msg::INLINE_MAX + 1024),
        "{sizes:?}"
    );
    node.shutdown().await;
}

/// A node at its in-flight limit refuses a request at once (`Busy` on the request stream), and
/// the gateway gives it to the next node without waiting on the busy one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_node_refuses_at_once_and_the_next_node_answers() {
    let anvil = Anvil::start(&[]).await;
    let slow = SlowUpstream::start(&anvil.url, 1, Duration::from_secs(3)).await;
    let gw = start_gateway_with(&format!("{}[hedge]\nenabled = false\n", geo_section(""))).await;
    let mut cfg = node_config(&gw, &NodeSpec::at(EU_WEST, &slow.url), TOKEN);
    cfg.max_in_flight = 1;
    let eu = edge_node::EdgeNode::start(cfg, proto::identity::Identity::generate().unwrap())
        .await
        .unwrap();
    let us = start_node(&gw, &NodeSpec::at(US_EAST, &anvil.url)).await;
    wait_serving_for(&gw, 2, 10).await;
    let url = format!("http://{}/", gw.http_addr);
    let http = Http::default();
    let refused = || gw.app.metrics.failovers.with_label_values(&["busy"]).get();
    let before = refused();
    let held = {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move { served_by(&http, &url, LONDON).await })
    };
    // The first call now holds eu-west's one slot, behind its slow upstream.
    for _ in 0..100 {
        if eu.shared.in_flight.available_permits() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(eu.shared.in_flight.available_permits(), 0);
    let started = Instant::now();
    let other = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
    let got = call_as(
        &http,
        &url,
        LONDON,
        "eth_getBalance",
        json!([other, "latest"]),
    )
    .await;
    assert_eq!(got.as_deref(), Ok("us-east"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(refused(), before + 1);
    assert_eq!(held.await.unwrap().as_deref(), Ok("eu-west"));
    eu.shutdown().await;
    us.shutdown().await;
}
