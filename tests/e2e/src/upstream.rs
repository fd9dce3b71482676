//! Test upstreams: one intercepting JSON-RPC proxy in front of anvil, and the counting, lagging,
//! lying and slow upstreams built on it.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::net::TcpListener;

/// A JSON-RPC proxy in front of an upstream whose behaviour is set by an [`Intercept`]: the
/// counting, lagging and lying upstreams below are all this one proxy.
pub trait Intercept: Send + Sync + 'static {
    /// Answer here instead of forwarding (`Some`: status and body), or let the call through.
    fn before(&self, _method: &str, _params: &Value) -> Option<(http::StatusCode, Bytes)> {
        None
    }
    /// Hold the call this long before forwarding it (a slow upstream).
    fn delay(&self, _method: &str, _params: &Value) -> Option<std::time::Duration> {
        None
    }
    /// Rewrite (or just observe) the upstream's answer.
    fn after(&self, _method: &str, _params: &Value, answer: Bytes) -> Bytes {
        answer
    }
}

/// Starts a proxy to `upstream` on a free loopback port; returns its URL.
/// A plain HTTP client for test servers that pass requests on.
pub type PassClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// POSTs a JSON-RPC body to `url` and returns the answer's body.
pub async fn forward(client: &PassClient, url: http::Uri, body: Bytes) -> std::io::Result<Bytes> {
    let fwd = http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap();
    let resp = client.request(fwd).await.map_err(std::io::Error::other)?;
    Ok(resp
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes())
}

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
                        if let Some(d) = hook.delay(&method, &v["params"]) {
                            tokio::time::sleep(d).await;
                        }
                        let bytes = forward(&client, upstream, body).await?;
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

/// An upstream that sees each new block `delay` after anvil does (a far or slow full node):
/// `eth_getBlockByNumber("latest")` answers the newest head that anvil has had for at least
/// `delay`; everything else goes through.
pub struct DelayedUpstream {
    pub url: String,
}

struct Delay {
    delay: std::time::Duration,
    /// Heads in order of first sight: (answer, first seen).
    seen: Mutex<std::collections::VecDeque<(Bytes, std::time::Instant)>>,
}

impl Intercept for Delay {
    fn after(&self, method: &str, params: &Value, answer: Bytes) -> Bytes {
        if !is_latest(method, params) {
            return answer;
        }
        let number = |b: &Bytes| {
            serde_json::from_slice::<Value>(b).ok()?["result"]["number"]
                .as_str()
                .map(str::to_string)
        };
        let now = std::time::Instant::now();
        let mut seen = self.seen.lock();
        if seen.back().map(|(b, _)| number(b)) != Some(number(&answer)) {
            seen.push_back((answer, now));
        }
        // Drop heads that a newer, old-enough head replaces.
        while seen.len() > 1 && now.duration_since(seen[1].1) >= self.delay {
            seen.pop_front();
        }
        seen.front().expect("one head at least").0.clone()
    }
}

impl DelayedUpstream {
    pub async fn start(upstream: &str, delay: std::time::Duration) -> Self {
        let hook = Arc::new(Delay {
            delay,
            seen: Mutex::new(std::collections::VecDeque::new()),
        });
        Self {
            url: start_proxy(upstream, hook).await,
        }
    }
}

/// A full node that keeps only recent state, in front of anvil (an archive): a state read at
/// a block more than `keep` below the head, or `earliest`, or at a block hash it never saw,
/// gets geth's "missing trie node" error; methods whose name starts with one of `refuse`
/// (`"trace_"`) get geth's answer for a module it does not serve. It learns the head and
/// block hashes from the answers passing through (and anvil's blocks at start), and records
/// every call it is asked.
pub struct PrunedUpstream {
    pub url: String,
    prune: Arc<Prune>,
}

struct Prune {
    keep: u64,
    refuse: Vec<String>,
    head: std::sync::atomic::AtomicU64,
    /// Block hash (lower case) → number.
    blocks: Mutex<std::collections::HashMap<String, u64>>,
    asked: Mutex<Vec<(String, Value)>>,
}

/// The state-reading methods and the index of their block parameter.
const STATE_READS: &[(&str, usize)] = &[
    ("eth_getBalance", 1),
    ("eth_getCode", 1),
    ("eth_getTransactionCount", 1),
    ("eth_getStorageAt", 2),
    ("eth_call", 1),
    ("eth_getProof", 2),
];

fn rpc_error(code: i64, message: String) -> Option<(http::StatusCode, Bytes)> {
    let body =
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "error": {"code": code, "message": message}});
    Some((http::StatusCode::OK, Bytes::from(body.to_string())))
}

fn quantity(v: &Value) -> Option<u64> {
    u64::from_str_radix(v.as_str()?.strip_prefix("0x")?, 16).ok()
}

impl Prune {
    /// The block a state read is at: `Some(None)` when it names a block this node cannot
    /// place, `None` for a tag (the head's state, which it holds).
    fn block_of(&self, param: &Value) -> Option<Option<u64>> {
        if param == "earliest" {
            return Some(Some(0));
        }
        if let Some(n) = quantity(param).or_else(|| quantity(&param["blockNumber"])) {
            return Some(Some(n));
        }
        let hash = param["blockHash"].as_str()?.to_ascii_lowercase();
        Some(self.blocks.lock().get(&hash).copied())
    }

    fn learn(&self, block: &Value) {
        let (Some(n), Some(hash)) = (quantity(&block["number"]), block["hash"].as_str()) else {
            return;
        };
        self.head.fetch_max(n, std::sync::atomic::Ordering::SeqCst);
        self.blocks.lock().insert(hash.to_ascii_lowercase(), n);
    }
}

impl Intercept for Prune {
    fn before(&self, method: &str, params: &Value) -> Option<(http::StatusCode, Bytes)> {
        self.asked.lock().push((method.to_string(), params.clone()));
        if self.refuse.iter().any(|p| method.starts_with(p.as_str())) {
            let m = format!("the method {method} does not exist/is not available");
            return rpc_error(-32601, m);
        }
        let &(_, at) = STATE_READS.iter().find(|(m, _)| *m == method)?;
        let block = self.block_of(&params[at])?;
        let head = self.head.load(std::sync::atomic::Ordering::SeqCst);
        match block {
            Some(n) if n.saturating_add(self.keep) >= head => None,
            _ => rpc_error(
                -32000,
                "missing trie node 6f8a2b1c9d0e4f5a (path ) <nil>".into(),
            ),
        }
    }

    fn after(&self, method: &str, _params: &Value, answer: Bytes) -> Bytes {
        if method.starts_with("eth_getBlockBy") {
            if let Ok(v) = serde_json::from_slice::<Value>(&answer) {
                self.learn(&v["result"]);
            }
        }
        answer
    }
}

impl PrunedUpstream {
    /// Keeps the state of the last `keep` blocks of the anvil at `upstream`, and refuses the
    /// methods starting with one of `refuse`.
    pub async fn start(upstream: &str, keep: u64, refuse: &[&str]) -> Self {
        let prune = Arc::new(Prune {
            keep,
            refuse: refuse.iter().map(|s| s.to_string()).collect(),
            head: Default::default(),
            blocks: Default::default(),
            asked: Default::default(),
        });
        // The blocks so far, so a block named by hash can be placed.
        let client: PassClient = Client::builder(TokioExecutor::new()).build_http();
        let get = |params: Value| {
            let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "eth_getBlockByNumber", "params": params});
            forward(
                &client,
                upstream.parse().unwrap(),
                Bytes::from(body.to_string()),
            )
        };
        let latest: Value =
            serde_json::from_slice(&get(serde_json::json!(["latest", false])).await.unwrap())
                .unwrap();
        let head = quantity(&latest["result"]["number"]).unwrap();
        for n in 0..=head {
            let b: Value = serde_json::from_slice(
                &get(serde_json::json!([format!("{n:#x}"), false]))
                    .await
                    .unwrap(),
            )
            .unwrap();
            prune.learn(&b["result"]);
        }
        Self {
            url: start_proxy(upstream, prune.clone()).await,
            prune,
        }
    }

    /// The calls it was asked (forwarded or refused) of `method`, by params.
    pub fn asked(&self, method: &str) -> Vec<Value> {
        self.prune
            .asked
            .lock()
            .iter()
            .filter(|(m, _)| m == method)
            .map(|(_, p)| p.clone())
            .collect()
    }
}

/// An upstream slow for some calls: every `every`th `eth_getBalance` (0: none) and every
/// `eth_sendRawTransaction` wait `delay` before they are forwarded. Counts the signed
/// transactions it forwards, by their raw bytes.
pub struct SlowUpstream {
    pub url: String,
    slow: Arc<Slow>,
}

struct Slow {
    every: usize,
    delay: std::time::Duration,
    balances: std::sync::atomic::AtomicUsize,
    raw: Mutex<Vec<String>>,
}

impl Intercept for Slow {
    fn delay(&self, method: &str, params: &Value) -> Option<std::time::Duration> {
        match method {
            "eth_getBalance" if self.every > 0 => {
                let n = self
                    .balances
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                (n % self.every == self.every - 1).then_some(self.delay)
            }
            "eth_sendRawTransaction" => {
                self.raw
                    .lock()
                    .push(params[0].as_str()?.to_ascii_lowercase());
                Some(self.delay)
            }
            _ => None,
        }
    }
}

impl SlowUpstream {
    pub async fn start(upstream: &str, every: usize, delay: std::time::Duration) -> Self {
        let slow = Arc::new(Slow {
            every,
            delay,
            balances: Default::default(),
            raw: Mutex::new(Vec::new()),
        });
        Self {
            url: start_proxy(upstream, slow.clone()).await,
            slow,
        }
    }

    /// How many times the signed transaction `raw` was forwarded here.
    pub fn sent(&self, raw: &str) -> usize {
        let raw = raw.to_ascii_lowercase();
        self.slow.raw.lock().iter().filter(|r| **r == raw).count()
    }
}
