//! Observability end to end, one file per area: the `/metrics` expositions (`metrics`: parse,
//! naming rules, promtool), the shipped dashboards and alert rules (`dashboards`: linted and
//! checked by promtool, no stack; `prometheus`: every metric they use is exported, a real
//! Prometheus answers their queries), the `/status` page in headless Chromium (`status_page`),
//! a tenant's CORS origins as that browser enforces them (`cors`), and what the logs carry
//! (`logs`). Here: what several areas share, a running stack and its traffic.

mod browser;
mod cors;
mod dashboards;
mod expo;
mod logs;
mod metrics;
mod prometheus;
mod promql;
mod status_page;
mod tools;

use edge_node::EdgeNode;
use gateway::Gateway;
use serde_json::json;

use e2e::*;

const LONDON: &str = "81.2.69.142";
const MOUNTAIN_VIEW: &str = "8.8.8.8";
const SYDNEY: &str = "1.1.1.1";
/// A private address: located nowhere, counted as country `unknown`.
const PRIVATE: &str = "10.0.0.7";
/// The key of the stack's one tenant.
const TENANT_KEY: &str = "observability-tenant-key";
const ACCT0: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

// === A running stack ===

/// anvil, a gateway with the real geo database and tenants sharing limits through a real
/// Redis, and three in-process edge nodes with admin listeners.
struct Stack {
    _anvil: Anvil,
    _redis: Redis,
    _tenants: tempfile::TempDir,
    gw: Gateway,
    nodes: Vec<EdgeNode>,
    http: Http,
    url: String,
}

impl Stack {
    async fn start() -> Self {
        let anvil = Anvil::start(&["--block-time", "1"]).await;
        let redis = Redis::start().await;
        let tenants = tempfile::tempdir().unwrap();
        let file = tenants.path().join("tenants.toml");
        std::fs::write(
            &file,
            format!(
                "[[tenants]]\nname = \"obs\"\nkey_sha256 = [\"{}\"]\nrequests_per_second = 2\n",
                gateway::tenants::hash_key_hex(TENANT_KEY)
            ),
        )
        .unwrap();
        // The tip tier off: repeats must reach the nodes, whose cache counters these tests read.
        let gw = start_gateway_with(&format!(
            "{}[cache]\ntip_max_bytes = 0\n[tenants]\nfile = {:?}\nredis_url = {:?}\n",
            geo_section(""),
            file.display().to_string(),
            redis.url
        ))
        .await;
        let mut nodes = Vec::new();
        for r in [US_EAST, EU_WEST, AP_SOUTHEAST] {
            nodes.push(start_node(&gw, &NodeSpec::at(r, &anvil.url)).await);
        }
        wait_serving_for(&gw, 3, 20).await;
        let url = format!("http://{}/", gw.http_addr);
        Self {
            _anvil: anvil,
            _redis: redis,
            _tenants: tenants,
            gw,
            nodes,
            http: Http::default(),
            url,
        }
    }

    fn admin(&self) -> String {
        format!("http://{}", self.gw.admin_addr.expect("admin listener"))
    }

    fn edge_admins(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("http://{}", n.admin_addr.expect("edge admin listener")))
            .collect()
    }

    async fn scrape(&self, base: &str) -> String {
        let r = self.http.get(&format!("{base}/metrics")).await;
        assert_eq!(r.status, 200, "{base}/metrics");
        String::from_utf8(r.body.to_vec()).expect("exposition is UTF-8")
    }

    /// A little of everything: callers in three countries and one unlocatable, cache misses and
    /// hits, a batch, and requests refused at the gateway.
    async fn traffic(&self) {
        traffic(&self.http, &self.url).await;
        // A tenant over its limit of 2 per second: some calls are refused.
        let url = format!("{}v1/{TENANT_KEY}", self.url);
        for _ in 0..5 {
            self.http.rpc(&url, "eth_chainId", json!([])).await;
        }
    }

    async fn shutdown(self) {
        for n in self.nodes {
            n.shutdown().await;
        }
        self.gw.shutdown().await;
    }
}

async fn traffic(http: &Http, url: &str) {
    let genesis = http
        .rpc(url, "eth_getBlockByNumber", json!(["0x0", false]))
        .await;
    let hash = genesis["result"]["hash"]
        .as_str()
        .unwrap_or_else(|| panic!("no genesis hash: {genesis}"))
        .to_string();
    for ip in [LONDON, MOUNTAIN_VIEW, SYDNEY, PRIVATE] {
        for (m, p) in [
            ("eth_getBalance", json!([ACCT0, "latest"])),
            ("eth_getBlockByHash", json!([hash, false])),
            ("eth_getBlockByHash", json!([hash, false])),
            ("eth_getCode", json!([ACCT0, "latest"])),
        ] {
            call_as(http, url, ip, m, p)
                .await
                .unwrap_or_else(|e| panic!("{m} as {ip}: {e}"));
        }
    }
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance", "params": [ACCT0, "latest"]},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_getBlockByHash", "params": [hash, false]},
    ]);
    assert_eq!(http.post(url, batch.to_string()).await.status, 200);
    http.post(url, "{not json").await;
    http.rpc(url, "anvil_mine", json!([])).await;
    http.post(&format!("{url}no-such-chain"), "{}").await;
}
