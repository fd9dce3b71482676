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

use crate::{
    free_port, gateway_config, gateway_config_with, node_config, node_config_for, NodeSpec,
    CHAIN_ID, TOKEN,
};

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
    /// A node joined to every gateway in `links` (`[[gateways]]` tables).
    pub async fn spawn_joined(links: &str, spec: &NodeSpec<'_>, dir: &std::path::Path) -> Self {
        let cfg = format!(
            "key_file = \"{region}.key\"\nregion = \"{region}\"\nlatitude = {lat}\nlongitude = {lon}\n{links}\n[[chains]]\nchain_id = {CHAIN_ID}\nupstreams = [\"{up}\"]\nhead_poll_ms = 200\n",
            region = spec.region,
            lat = spec.lat,
            lon = spec.lon,
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

    /// A node joined to the in-process gateway `gw`.
    pub async fn spawn(gw: &Gateway, spec: &NodeSpec<'_>, dir: &std::path::Path) -> Self {
        let link = format!(
            "[[gateways]]\naddress = \"{}\"\nfingerprint = \"{}\"\ntoken = \"{TOKEN}\"\n",
            gw.quic_addr, gw.fingerprint
        );
        Self::spawn_joined(&link, spec, dir).await
    }

    /// SIGKILL: no goodbye, the gateway must notice on its own.
    pub async fn kill(&mut self) {
        self.child.kill().await.unwrap();
    }
}

/// The `gateway` binary next to this test binary.
pub fn gateway_bin() -> PathBuf {
    edge_node_bin().with_file_name("gateway")
}

/// A gateway as a real process on free loopback ports, its log (at `info`) in `dir`.
pub struct GatewayProcess {
    child: Child,
    config: PathBuf,
    env: Vec<(String, String)>,
    /// `http://127.0.0.1:PORT` of the JSON-RPC and admin listeners.
    pub url: String,
    pub admin: String,
    pub quic_addr: String,
    pub fingerprint: String,
    pub log: PathBuf,
}

impl GatewayProcess {
    /// Starts `gateway --config` with `tables` after the required sections and `env` set, and
    /// waits until its admin listener answers.
    pub async fn spawn(
        dir: &std::path::Path,
        name: &str,
        tables: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let (http, admin) = (free_port(), free_port());
        let quic = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let key = dir.join(format!("{name}.key"));
        let fingerprint = Identity::load_or_generate(&key).unwrap().fingerprint();
        let cfg = format!(
            r#"
[server]
name = "{name}"
listen = "127.0.0.1:{http}"
admin_listen = "127.0.0.1:{admin}"
[quic]
listen = "127.0.0.1:{quic}"
key_file = "{key}"
join_tokens = ["{TOKEN}"]
[[chains]]
name = "anvil"
chain_id = {CHAIN_ID}
{tables}
"#,
            key = key.display()
        );
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, cfg).unwrap();
        let log = dir.join(format!("{name}.log"));
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let g = Self {
            child: Self::launch(&path, &env, &log),
            config: path,
            env,
            url: format!("http://127.0.0.1:{http}"),
            admin: format!("http://127.0.0.1:{admin}"),
            quic_addr: format!("127.0.0.1:{quic}"),
            fingerprint,
            log,
        };
        g.wait_started().await;
        g
    }

    fn launch(config: &std::path::Path, env: &[(String, String)], log: &std::path::Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        Command::new(gateway_bin())
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawning gateway")
    }

    /// SIGKILL, as a crash would.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Starts it again with the same config, key and ports (after [`Self::kill`]).
    pub async fn restart(&mut self) {
        self.child = Self::launch(&self.config, &self.env, &self.log);
        self.wait_started().await;
    }

    async fn wait_started(&self) {
        let http = crate::Http::default();
        for _ in 0..100 {
            let ok = http
                .send(
                    http::Request::get(format!("{}/healthz", self.admin))
                        .body(Default::default())
                        .unwrap(),
                )
                .await
                .is_ok_and(|r| r.status == 200);
            if ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gateway did not start:\n{}", self.log_text());
    }

    /// Starts an in-process edge node joined to this gateway.
    pub async fn node(&self, spec: &NodeSpec<'_>) -> EdgeNode {
        let cfg = node_config_for(&self.quic_addr, &self.fingerprint, spec, TOKEN);
        EdgeNode::start(cfg, Identity::generate().unwrap())
            .await
            .unwrap()
    }

    /// Waits until `/readyz` says every chain has a healthy node (at most 10 s).
    pub async fn wait_serving(&self) {
        let http = crate::Http::default();
        for _ in 0..200 {
            let req = http::Request::get(format!("{}/readyz", self.url))
                .body(Default::default())
                .unwrap();
            if http.send(req).await.is_ok_and(|r| r.status == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "gateway at {} has no serving node:\n{}",
            self.url,
            self.log_text()
        );
    }

    /// Its `[[gateways]]` entry for a node config.
    pub fn node_link(&self, name: &str) -> String {
        format!(
            "[[gateways]]\nname = \"{name}\"\naddress = \"{}\"\nfingerprint = \"{}\"\ntoken = \"{TOKEN}\"\n",
            self.quic_addr, self.fingerprint
        )
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("gateway is running")
    }
}
