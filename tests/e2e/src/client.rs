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
