//! Several gateways, one network: edge nodes join every gateway; a gateway that dies disturbs
//! neither the others nor the nodes, and is rejoined when it returns; each gateway judges and
//! ranks nodes from its own measurements, and claimed locations are checked against every
//! gateway's (shared through a real Redis). Tenant quotas across two gateways:
//! `tenants::two_gateway_processes_share_a_tenant_limit_through_redis_and_fall_back_without_it`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};
use tokio::time::Instant;

use e2e::*;

const LONDON: &str = "81.2.69.142";

fn post(url: &str, body: String) -> http::Request<Full<Bytes>> {
    http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn balance_call(i: u64) -> String {
    json!({"jsonrpc":"2.0","id":i,"method":"eth_getBalance","params":[format!("0x{:040x}", i + 1), "latest"]})
        .to_string()
}

async fn status_json(http: &Http, admin: &str) -> Value {
    let r = http
        .send(
            http::Request::get(format!("{admin}/status.json"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    r.json()
}

/// Nodes in the status document of the gateway at `admin` (0 while it is down).
async fn nodes_on(http: &Http, admin: &str) -> usize {
    let req = http::Request::get(format!("{admin}/status.json"))
        .body(Full::default())
        .unwrap();
    match http.send(req).await {
        Ok(r) if r.status == 200 => r.json()["nodes"].as_array().map_or(0, Vec::len),
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_every_gateway_and_a_dead_gateway_disturbs_no_other() {
    let anvil = Anvil::start(&["--block-time", "1"]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut ga = GatewayProcess::spawn(dir.path(), "gw-a", "", &[]).await;
    let gb = GatewayProcess::spawn(dir.path(), "gw-b", "", &[]).await;
    let links = format!("{}{}", ga.node_link("gw-a"), gb.node_link("gw-b"));
    let mut nodes = Vec::new();
    for r in [US_EAST, EU_WEST, AP_SOUTHEAST] {
        nodes.push(
            NodeProcess::spawn_joined(&links, &NodeSpec::at(r, &anvil.url), dir.path()).await,
        );
    }
    let http = Http::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while nodes_on(&http, &ga.admin).await < 3 || nodes_on(&http, &gb.admin).await < 3 {
        assert!(
            Instant::now() < deadline,
            "nodes did not join both gateways"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ga.wait_serving().await;
    gb.wait_serving().await;

    // Each node reports both gateways; each gateway names itself.
    let mut reported = false;
    for _ in 0..40 {
        let doc = status_json(&http, &gb.admin).await;
        reported = doc["nodes"].as_array().unwrap().iter().all(|n| {
            let mut g: Vec<&str> = n["gateways"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            g.sort_unstable();
            g == ["gw-a", "gw-b"]
        });
        if reported {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reported, "{}", status_json(&http, &gb.admin).await);
    let r = http.send(post(&gb.url, balance_call(0))).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-gateway"), Some("gw-b"));

    // Load on gw-b (8 callers at once) while gw-a is SIGKILLed: no failed request on gw-b.
    let stop_at = Instant::now() + Duration::from_secs(4);
    let mut loads = Vec::new();
    for caller in 0..8u64 {
        let (http, url) = (http.clone(), gb.url.clone());
        loads.push(tokio::spawn(async move {
            let (mut ok, mut failed, mut i) = (0u64, Vec::new(), 1 + caller * 1_000_000);
            while Instant::now() < stop_at {
                match http.send(post(&url, balance_call(i))).await {
                    Ok(r) if r.status == 200 && r.json().get("result").is_some() => ok += 1,
                    Ok(r) => failed.push(format!("HTTP {}: {:?}", r.status, r.body)),
                    Err(e) => failed.push(e),
                }
                i += 1;
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    ga.kill().await;
    let killed = Instant::now();
    let (mut ok, mut failed) = (0, Vec::new());
    for l in loads {
        let (o, f) = l.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    println!(
        "gw-b served {ok} requests while gw-a died; {} failed",
        failed.len()
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok > 50);
    assert_eq!(
        nodes_on(&http, &gb.admin).await,
        3,
        "the nodes stayed on gw-b"
    );

    // gw-a comes back once the nodes have given its connection up (3 s idle timeout) and are
    // redialling it: every node rejoins within two seconds.
    tokio::time::sleep(Duration::from_millis(4500).saturating_sub(killed.elapsed())).await;
    ga.restart().await;
    let back = Instant::now();
    while nodes_on(&http, &ga.admin).await < 3 {
        assert!(
            back.elapsed() < Duration::from_secs(2),
            "nodes rejoined gw-a only partly after {:?}",
            back.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "all nodes rejoined gw-a {} ms after it came back",
        back.elapsed().as_millis()
    );
    ga.wait_serving().await;
    drop(nodes);
}

/// A gateway config for the vantage test: named, placed, sharing through `redis`, with the
/// real geo database (callers located by `X-Forwarded-For`) and a residency rule binding
/// British callers to `eu-west`.
fn placed(name: &str, lat: f64, lon: f64, redis: &Redis) -> gateway::config::Config {
    let mut cfg = gateway_config_with(
        "",
        &format!(
            "{}[[residency]]\nname = \"uk\"\ncountries = [\"GB\"]\nregions = [\"eu-west\"]\n",
            geo_section("")
        ),
    );
    cfg.server.name = name.into();
    cfg.geo.gateway_location = Some(gateway::config::Point { lat, lon });
    cfg.tenants.redis_url = Some(redis.url.clone());
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locations_are_checked_from_every_gateway_and_each_ranks_its_nearest_node() {
    let anvil = Anvil::start(&[]).await;
    let redis = Redis::start().await;
    let start = |cfg| async move {
        gateway::Gateway::start(cfg, proto::identity::Identity::generate().unwrap())
            .await
            .unwrap()
    };
    // gw-fra in Frankfurt, gw-sin in Singapore, ~10,300 km apart.
    let fra = start(placed("gw-fra", 50.11, 8.68, &redis)).await;
    let sin = start(placed("gw-sin", 1.35, 103.82, &redis)).await;
    // Two nodes claim Frankfurt (eu-west). The honest one is 1 ms from gw-fra and 60 ms from
    // gw-sin (one way); the liar is really next to gw-sin (no delay) and 60 ms from gw-fra. A
    // third, honest, is in Singapore (ap-southeast): 60 ms from gw-fra, 1 ms from gw-sin.
    let mut joined = Vec::new();
    let layout = [
        ("honest", "eu-west", (50.11, 8.68), 1u64, 60u64),
        ("liar", "eu-west", (50.11, 8.68), 60, 0),
        ("ap", "ap-southeast", (1.35, 103.82), 60, 1),
    ];
    for (name, region, (lat, lon), to_fra, to_sin) in layout {
        let spec = NodeSpec {
            region: name,
            lat,
            lon,
            upstream: &anvil.url,
        };
        let mut cfg = node_config(&fra, &spec, TOKEN);
        cfg.region = region.into();
        let second = node_config(&sin, &spec, TOKEN).gateways.remove(0);
        cfg.gateways.push(second);
        for (link, (gw, ms)) in cfg
            .gateways
            .iter_mut()
            .zip([(&fra, to_fra), (&sin, to_sin)])
        {
            if ms > 0 {
                link.address = udp_delay_relay(gw.quic_addr, Duration::from_millis(ms))
                    .await
                    .to_string();
            }
        }
        let node = edge_node::EdgeNode::start(cfg, proto::identity::Identity::generate().unwrap())
            .await
            .unwrap();
        joined.push((name, node));
    }
    wait_serving_for(&fra, 3, 20).await;
    wait_serving_for(&sin, 3, 20).await;
    let id = |r: &str| {
        joined
            .iter()
            .find(|(x, _)| *x == r)
            .unwrap()
            .1
            .node_id
            .clone()
    };
    let (honest, liar, ap) = (id("honest"), id("liar"), id("ap"));

    // Each gateway ranks by its own RTTs and the caller's distance to each node's claim.
    let london = fra.app.locate(LONDON.parse().unwrap());
    let at = |lat, lon, country: &str, continent: &str| gateway::geo::Location {
        lat,
        lon,
        country: Some(country.into()),
        continent: Some(continent.into()),
    };
    // Callers bound by no residency rule (London is: below).
    let paris = at(48.85, 2.35, "FR", "EU");
    let singapore = at(1.29, 103.85, "SG", "AS");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let first = |gw: &gateway::Gateway, caller: Option<&gateway::geo::Location>| {
        gw.app.router.rank(CHAIN_ID, caller).unwrap()[0].id.clone()
    };
    // From Paris: gw-fra's nearest Frankfurt node is the honest one (2 ms); gw-sin's is the
    // liar (next to it, and its claim is near the caller).
    assert_eq!(first(&fra, Some(&paris)), honest, "gw-fra, caller in Paris");
    assert_eq!(first(&sin, Some(&paris)), liar, "gw-sin, caller in Paris");
    // From Singapore: gw-sin picks the Singapore node (2 ms) over the liar (closer to gw-sin,
    // but claiming to be 10,000 km from the caller). gw-fra, for the same caller, picks its
    // own 2 ms Frankfurt node: the Singapore node is 120 ms from gw-fra, more than the 10,000
    // km (100 ms of fibre) the caller's answer travels from Frankfurt. Same caller, different
    // gateways, each choosing from where it stands.
    assert_eq!(
        first(&sin, Some(&singapore)),
        ap,
        "gw-sin, caller in Singapore"
    );
    assert_eq!(
        first(&fra, Some(&singapore)),
        honest,
        "gw-fra, caller in Singapore"
    );

    // gw-fra's own measurement allows the liar's claim (120 ms reaches 12,000 km); gw-sin's
    // loopback RTT does not (Frankfurt is 10,000 km away). Shared through Redis, the flag
    // reaches gw-fra too, naming gw-sin's measurement; the honest node passes both.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let on = |gw: &gateway::Gateway, id: &str| gw.app.registry.get(id).unwrap();
        let fra_flag = on(&fra, &liar);
        if !fra_flag.plausible() && !on(&sin, &liar).plausible() {
            let why = fra_flag.ruled_out_by().unwrap();
            assert!(why.starts_with("gw-sin:"), "{why}");
            for id in [&honest, &ap] {
                assert!(on(&fra, id).plausible() && on(&sin, id).plausible(), "{id}");
            }
            let own = fra_flag.min_rtt().unwrap();
            assert!(
                own >= Duration::from_millis(110),
                "gw-fra alone measured {own:?}"
            );
            println!("gw-fra flags the liar: {why}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the liar was not flagged on both gateways"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let doc = status_json(
        &Http::default(),
        &format!("http://{}", fra.admin_addr.unwrap()),
    )
    .await;
    let liar_doc = doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == liar.as_str())
        .unwrap()
        .clone();
    assert_eq!(liar_doc["location_plausible"], false);
    assert!(liar_doc["location_ruled_out_by"]
        .as_str()
        .unwrap()
        .starts_with("gw-sin"));

    // Residency-bound callers (London, bound to eu-west) never reach the liar on either
    // gateway, even though it is eu-west too (and on gw-sin it is the nearest).
    for gw in [&fra, &sin] {
        let ranked = gw.app.router.rank(CHAIN_ID, london.as_deref()).unwrap();
        assert!(
            ranked.iter().all(|n| n.id != liar),
            "{}",
            gw.app.config.server.name
        );
        assert!(ranked.iter().any(|n| n.id == honest));
    }
    let http = Http::default();
    let url = format!("http://{}/", fra.http_addr);
    for i in 0..20u64 {
        let r = post_as(&http, &url, LONDON, balance_call(100 + i))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-edge-node"), Some(honest.as_str()), "call {i}");
    }
    for (_, n) in joined {
        n.shutdown().await;
    }
    fra.shutdown().await;
    sin.shutdown().await;
}
