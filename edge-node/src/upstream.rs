//! Upstream full nodes: pooled HTTP(S) JSON-RPC clients with timeouts, tried in turn.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::metrics::Metrics;
use crate::policy;

mod h1;

/// Largest upstream response body accepted; bigger answers are an error, not an OOM.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error, Clone)]
pub enum UpstreamError {
    #[error("upstream timeout after {0} ms")]
    Timeout(u64),
    #[error("upstream unavailable: {0}")]
    Transport(String),
    #[error("upstream answered HTTP {0}")]
    Status(u16),
    #[error("upstream sent an invalid JSON-RPC response: {0}")]
    BadResponse(String),
}

/// What an upstream said to one call.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Result(Bytes),
    Error(Bytes),
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

pub struct Upstream {
    pub url: http::Uri,
    /// Bounded metric label: `host:port` of the configured URL.
    pub label: String,
    /// The lean HTTP/1.1 client for `http://` URLs; `https://` ones go through hyper-util
    /// (TLS, HTTP/2).
    plain: Option<Arc<h1::Pool>>,
    /// Set when the upstream sent something provably wrong (a proof or header that does not
    /// verify); such an upstream is tried last until this passes.
    suspect_until: parking_lot::Mutex<Option<Instant>>,
}

/// Idle sockets kept per upstream, and for how long.
const POOL_MAX_IDLE: usize = 256;
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a provably wrong upstream is tried last.
const SUSPECT_FOR: Duration = Duration::from_secs(60);

pub struct Upstreams {
    list: Vec<Upstream>,
    client: HttpClient,
    timeout: Duration,
    next: AtomicUsize,
    metrics: Arc<Metrics>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

impl Upstreams {
    /// `urls` as parsed (and checked to be http(s) with a host) at config load.
    pub fn new(urls: &[http::Uri], timeout: Duration, metrics: Arc<Metrics>) -> Self {
        let mut http = HttpConnector::new();
        // Small JSON-RPC requests must not wait on Nagle; TLS needs non-http schemes allowed.
        http.set_nodelay(true);
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE)
            .build(https);
        let list = urls
            .iter()
            .map(|url| {
                let label = label_of(url);
                let plain = (url.scheme() == Some(&http::uri::Scheme::HTTP)).then(|| {
                    let pool = Arc::new(h1::Pool::new(
                        url,
                        POOL_MAX_IDLE,
                        POOL_IDLE_TIMEOUT,
                        MAX_RESPONSE_BYTES,
                    ));
                    reap(&pool);
                    pool
                });
                Upstream {
                    url: url.clone(),
                    label,
                    plain,
                    suspect_until: parking_lot::Mutex::new(None),
                }
            })
            .collect();
        Self {
            list,
            client,
            timeout,
            next: AtomicUsize::new(0),
            metrics,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn label(&self, i: usize) -> &str {
        &self.list[i % self.list.len()].label
    }

    /// Marks upstream `i` as having sent provably wrong data.
    pub fn mark_faulty(&self, i: usize) {
        *self.list[i % self.list.len()].suspect_until.lock() = Some(Instant::now() + SUSPECT_FOR);
    }

    fn suspect(&self, up: &Upstream) -> bool {
        up.suspect_until.lock().is_some_and(|t| t > Instant::now())
    }

    /// Upstream indices, trusted ones first (suspects last).
    pub fn trust_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.list.len()).collect();
        order.sort_by_key(|&i| self.suspect(&self.list[i]));
        order
    }

    /// Sends one call to upstream number `i`.
    pub async fn call_on(
        &self,
        i: usize,
        method: &str,
        params: &[u8],
        budget: Duration,
    ) -> Result<Answer, UpstreamError> {
        let limit = budget.min(self.timeout);
        self.call_one(&self.list[i % self.list.len()], method, params, limit)
            .await
            .map_err(|e| match e {
                UpstreamError::Timeout(_) => UpstreamError::Timeout(limit.as_millis() as u64),
                other => other,
            })
    }

    /// Sends one call, starting at the next upstream in rotation and moving on when one fails
    /// at the transport level, all within `budget`.
    pub async fn call(
        &self,
        method: &str,
        params: &[u8],
        budget: Duration,
    ) -> Result<Answer, UpstreamError> {
        let limit = budget.min(self.timeout);
        let deadline = Instant::now() + limit;
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last = UpstreamError::Transport("no upstream configured".into());
        let n = self.list.len();
        let mut order: Vec<&Upstream> = (0..n).map(|i| &self.list[(start + i) % n]).collect();
        // Rotation spreads load; suspects go last.
        order.sort_by_key(|u| self.suspect(u));
        for up in order {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.call_one(up, method, params, left).await {
                Ok(a) => return Ok(a),
                // A bad answer or a timeout would likely repeat; only transport errors move on.
                // A transaction may have reached the first upstream before the failure; sending
                // it elsewhere is the gateway's decision, which knows how to settle that.
                Err(e @ (UpstreamError::Transport(_) | UpstreamError::Status(_)))
                    if method == "eth_sendRawTransaction" =>
                {
                    return Err(e)
                }
                Err(e @ (UpstreamError::Transport(_) | UpstreamError::Status(_))) => last = e,
                // Name the limit that applied, not what was left of it for this upstream.
                Err(UpstreamError::Timeout(_)) => {
                    return Err(UpstreamError::Timeout(limit.as_millis() as u64))
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    async fn call_one(
        &self,
        up: &Upstream,
        method: &str,
        params: &[u8],
        timeout: Duration,
    ) -> Result<Answer, UpstreamError> {
        let body = request_body(method, params);
        let started = Instant::now();
        let fut = async {
            let (status, bytes) = match &up.plain {
                // Only reads are sent twice: a transaction, a filter poll or anything unknown is
                // not (the gateway decides how to settle a doubt about a transaction).
                Some(pool) => {
                    let resp = pool
                        .post(&body, || policy::rule(method) != policy::Rule::Never)
                        .await
                        .map_err(|e| UpstreamError::Transport(e.to_string()))?;
                    (resp.status, resp.body)
                }
                None => self.hyper_post(up, body).await?,
            };
            // Rate limits and server errors are the upstream's trouble, not an answer, even
            // when they come with a JSON-RPC error body.
            if status == 429
                || (500..600).contains(&status)
                || (!(200..300).contains(&status) && bytes.is_empty())
            {
                return Err(UpstreamError::Status(status));
            }
            parse_answer(&bytes)
        };
        let res = match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Timeout(timeout.as_millis() as u64)),
        };
        let outcome = match &res {
            Ok(Answer::Result(_)) => "result",
            Ok(Answer::Error(_)) => "rpc_error",
            Err(UpstreamError::Timeout(_)) => "timeout",
            Err(_) => "transport_error",
        };
        self.metrics
            .upstream_requests
            .with_label_values(&[&up.label, outcome])
            .inc();
        self.metrics
            .upstream_duration
            .with_label_values(&[&up.label])
            .observe(started.elapsed().as_secs_f64());
        res
    }

    /// POSTs through hyper-util's client: HTTPS upstreams.
    async fn hyper_post(&self, up: &Upstream, body: Bytes) -> Result<(u16, Bytes), UpstreamError> {
        let req = http::Request::post(up.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .expect("static request parts are valid");
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| UpstreamError::Transport(error_chain(&e)))?;
        let status = resp.status().as_u16();
        let bytes = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| UpstreamError::Transport(e.to_string()))?
            .to_bytes();
        Ok((status, bytes))
    }
}

/// Closes `pool`'s sockets idle past its timeout, every timeout, while the pool lives. Outside
/// a runtime (some unit tests build `Upstreams` without one) sockets are pruned on use only.
fn reap(pool: &Arc<h1::Pool>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let pool = Arc::downgrade(pool);
    rt.spawn(async move {
        let Some(every) = pool.upgrade().map(|p| p.idle_timeout()) else {
            return;
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match pool.upgrade() {
                Some(p) => p.prune(),
                None => return,
            }
        }
    });
}

/// An upstream's metric and log label: `host:port` (the port when the URL gives one), never
/// the user and password a URL may carry, nor its path (where API keys often are).
pub fn label_of(url: &http::Uri) -> String {
    match (url.host(), url.port_u16()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        (None, _) => "unknown".to_string(),
    }
}

fn request_body(method: &str, params: &[u8]) -> Bytes {
    let method = serde_json::to_string(method).expect("a string serialises");
    let params: &[u8] = if params.is_empty() { b"[]" } else { params };
    let mut v = Vec::with_capacity(48 + method.len() + params.len());
    v.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":");
    v.extend_from_slice(method.as_bytes());
    v.extend_from_slice(b",\"params\":");
    v.extend_from_slice(params);
    v.push(b'}');
    Bytes::from(v)
}

fn parse_answer(bytes: &[u8]) -> Result<Answer, UpstreamError> {
    let env: Envelope<'_> =
        serde_json::from_slice(bytes).map_err(|e| UpstreamError::BadResponse(e.to_string()))?;
    match (env.result, env.error) {
        (_, Some(err)) => Ok(Answer::Error(Bytes::copy_from_slice(err.get().as_bytes()))),
        (Some(res), None) => Ok(Answer::Result(Bytes::copy_from_slice(res.get().as_bytes()))),
        // `"result": null` deserialises to None through Option<&RawValue>.
        (None, None) if has_null_result(bytes) => Ok(Answer::Result(Bytes::from_static(b"null"))),
        (None, None) => Err(UpstreamError::BadResponse(
            "neither result nor error".into(),
        )),
    }
}

fn has_null_result(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.as_object().map(|o| o.contains_key("result")))
        .unwrap_or(false)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_result_error_and_null() {
        assert_eq!(
            parse_answer(br#"{"jsonrpc":"2.0","id":1,"result":"0x1"}"#).unwrap(),
            Answer::Result(Bytes::from_static(b"\"0x1\""))
        );
        assert_eq!(
            parse_answer(br#"{"jsonrpc":"2.0","id":1,"result":null}"#).unwrap(),
            Answer::Result(Bytes::from_static(b"null"))
        );
        assert!(matches!(
            parse_answer(br#"{"jsonrpc":"2.0","id":1,"error":{"code":3,"message":"x"}}"#),
            Ok(Answer::Error(_))
        ));
        assert!(parse_answer(br#"{"jsonrpc":"2.0","id":1}"#).is_err());
        assert!(parse_answer(b"<html>").is_err());
    }

    #[test]
    fn labels_carry_no_credentials() {
        let label = |u: &str| label_of(&u.parse().unwrap());
        assert_eq!(
            label("http://user:secret@node.example:8545/key"),
            "node.example:8545"
        );
        assert_eq!(label("https://rpc.example/v3/secret"), "rpc.example");
        assert_eq!(label("http://[::1]:8545"), "[::1]:8545");
    }

    #[test]
    fn request_body_is_valid_json() {
        let b = request_body("eth_getBalance", br#"["0x1","latest"]"#);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["method"], "eth_getBalance");
        assert_eq!(v["params"][1], "latest");
        let v: serde_json::Value =
            serde_json::from_slice(&request_body("eth_chainId", b"")).unwrap();
        assert_eq!(v["params"], serde_json::json!([]));
    }
}
