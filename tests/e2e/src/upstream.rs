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
