//! Starting gateways and edge nodes (in process, or the `edge-node` binary as a real process)
//! and waiting for them to serve.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use edge_node::EdgeNode;
use gateway::Gateway;
use proto::identity::Identity;
use tokio::process::{Child, Command};

use crate::{gateway_config, gateway_config_with, node_config, NodeSpec, CHAIN_ID, TOKEN};

pub async fn start_gateway(extra: &str) -> Gateway {
    Gateway::start(gateway_config(extra), Identity::generate().unwrap())
        .await
        .unwrap()
}

/// Starts a gateway from TOML tables placed after the required sections.
pub async fn start_gateway_with(tables: &str) -> Gateway {
    Gateway::start(
        gateway_config_with("", tables),
        Identity::generate().unwrap(),
    )
    .await
    .unwrap()
}

pub async fn start_node(gw: &Gateway, spec: &NodeSpec<'_>) -> EdgeNode {
    EdgeNode::start(node_config(gw, spec, TOKEN), Identity::generate().unwrap())
        .await
        .unwrap()
}

/// Waits until `n` nodes can serve the test chain (at most 10 s).
pub async fn wait_serving(gw: &Gateway, n: usize) {
    wait_serving_for(gw, n, 10).await;
}

/// Waits until `n` nodes serve the test chain, or panics after `secs`.
pub async fn wait_serving_for(gw: &Gateway, n: usize, secs: u64) {
    let deadline = gw.app.config.quic.status_deadline;
    for _ in 0..secs * 20 {
        if gw.app.registry.candidates(CHAIN_ID, deadline).len() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "expected {n} serving nodes, have {}",
        gw.app.registry.candidates(CHAIN_ID, deadline).len()
    );
}

/// The node's one chain (every node the tests start serves one).
pub fn chain_of(node: &EdgeNode) -> &Arc<edge_node::Chain> {
    node.chains().next().unwrap()
}

/// The `edge-node` binary next to this test binary (`cargo build --bins` puts it there).
pub fn edge_node_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join("edge-node");
    assert!(
        p.exists(),
        "{} missing: run `cargo build --bins` first (scripts/test.sh does)",
        p.display()
    );
    p
}

/// An edge node as a real process, with a persistent key in `dir`.
pub struct NodeProcess {
    pub child: Child,
}

impl NodeProcess {
    pub async fn spawn(gw: &Gateway, spec: &NodeSpec<'_>, dir: &std::path::Path) -> Self {
        let cfg = format!(
            r#"
key_file = "{region}.key"
region = "{region}"
latitude = {lat}
longitude = {lon}
[gateway]
address = "{addr}"
fingerprint = "{fp}"
token = "{TOKEN}"
[[chains]]
chain_id = {CHAIN_ID}
upstreams = ["{up}"]
head_poll_ms = 200
"#,
            region = spec.region,
            lat = spec.lat,
            lon = spec.lon,
            addr = gw.quic_addr,
            fp = gw.fingerprint,
            up = spec.upstream
        );
        let path = dir.join(format!("{}.toml", spec.region));
        std::fs::write(&path, cfg).unwrap();
        let child = Command::new(edge_node_bin())
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning edge-node");
        Self { child }
    }

    /// SIGKILL: no goodbye, the gateway must notice on its own.
    pub async fn kill(&mut self) {
        self.child.kill().await.unwrap();
    }
}
