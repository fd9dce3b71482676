//! A minimal HTTP client for the tests, and calls made as a caller somewhere in the world.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

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
    /// Sends any request; `Err` only when the transport failed.
    pub async fn send(&self, req: http::Request<Full<Bytes>>) -> Result<Reply, String> {
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("transport: {e}"))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

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

/// Posts a JSON body as a caller at `ip` (through a trusted loopback proxy); `Err` only when
/// the transport failed.
pub async fn post_as(
    http: &Http,
    url: &str,
    ip: &str,
    body: impl Into<Bytes>,
) -> Result<Reply, String> {
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .header("x-forwarded-for", ip)
        .body(Full::new(body.into()))
        .unwrap();
    http.send(req).await
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
    let resp = post_as(http, url, ip, body).await?;
    let header = |name: &str| {
        resp.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (region, tier) = (header("x-edge-region"), header("x-cache-tier"));
    let status = resp.status;
    let v: Value = serde_json::from_slice(&resp.body).map_err(|e| e.to_string())?;
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

/// Runs one of the real-client scripts in `tests/clients` against `rpc_url` with `env` set;
/// panics with its output unless it succeeds, else returns its stdout.
pub async fn run_client(
    program: &std::path::Path,
    script: &str,
    rpc_url: &str,
    env: &[(&str, &str)],
) -> String {
    let out = tokio::process::Command::new(program)
        .arg(crate::repo_root().join("tests/clients").join(script))
        .env("RPC_URL", rpc_url)
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {}: {e} (run scripts/deps.sh)", program.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
