//! A small WebSocket JSON-RPC client for the tests (the real-client tests use viem, ethers and
//! web3.py; this one gives the Rust tests exact control: stop reading, count, time).

use std::collections::VecDeque;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Notifications read while waiting for a response.
    pending: VecDeque<Value>,
    /// The subscription ids this client was given.
    ids: Vec<String>,
}

impl WsClient {
    /// Connects to `url` (`ws://…`), or panics after 5 s.
    pub async fn connect(url: &str) -> Self {
        Self::try_connect(url)
            .await
            .unwrap_or_else(|e| panic!("WebSocket connect to {url}: {e}"))
    }

    /// Connects to `url`, or says why not (the HTTP status of a refused upgrade, say).
    pub async fn try_connect(url: &str) -> Result<Self, String> {
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(url),
        )
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
        Ok(Self {
            ws,
            next_id: 1,
            pending: VecDeque::new(),
            ids: Vec::new(),
        })
    }

    /// Connects with a small receive buffer (`bytes`), so that a test that stops reading
    /// fills the path to the gateway quickly.
    pub async fn connect_small(url: &str, bytes: u32) -> Self {
        let host = url.trim_start_matches("ws://").split('/').next().unwrap();
        let addr: std::net::SocketAddr = host.parse().expect("ws://ip:port/");
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(bytes).unwrap();
        let tcp = sock.connect(addr).await.expect("connect");
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp))
            .await
            .unwrap_or_else(|e| panic!("WebSocket handshake with {url}: {e}"));
        Self {
            ws,
            next_id: 1,
            pending: VecDeque::new(),
            ids: Vec::new(),
        }
    }

    /// Sends one call and returns its whole response object (result or error).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let req = json!({"jsonrpc":"2.0","id":id,"method":method,"params":params});
        self.ws
            .send(Message::Text(req.to_string().into()))
            .await
            .expect("send");
        loop {
            let v = self
                .read(Duration::from_secs(10))
                .await
                .expect("a response");
            if v.get("id") == Some(&json!(id)) {
                return v;
            }
            self.pending.push_back(v);
        }
    }

    /// Sends a raw text message.
    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.to_string().into()))
            .await
            .expect("send");
    }

    /// `eth_subscribe`; panics unless it answers an id, or if a notification for that id came
    /// before the answer (geth never does that; clients drop them).
    pub async fn subscribe(&mut self, params: Value) -> String {
        let r = self.call("eth_subscribe", params).await;
        let id = r["result"]
            .as_str()
            .unwrap_or_else(|| panic!("eth_subscribe failed: {r}"))
            .to_string();
        let early = self
            .pending
            .iter()
            .any(|n| n["params"]["subscription"] == id.as_str());
        assert!(
            !early,
            "a notification for {id} came before its eth_subscribe answer"
        );
        self.ids.push(id.clone());
        id
    }

    /// The next subscription notification's `params` (`subscription`, `result`), within
    /// `limit`; panics on anything but an `eth_subscription` for one of this client's ids.
    pub async fn notification(&mut self, limit: Duration) -> Option<Value> {
        let v = match self.pending.pop_front() {
            Some(v) => v,
            None => self.read(limit).await?,
        };
        assert_eq!(v["method"], "eth_subscription", "not a notification: {v}");
        let sub = v["params"]["subscription"].as_str().unwrap_or_default();
        assert!(
            self.ids.iter().any(|i| i == sub),
            "a notification for an unknown subscription: {v}"
        );
        Some(v["params"].clone())
    }

    /// The next JSON message, within `limit`; `None` on timeout or close.
    async fn read(&mut self, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match m.ok()? {
                Message::Text(t) => return serde_json::from_str(&t).ok(),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Reads until the server closes the socket: the close code, or `None` if it just went.
    pub async fn close_code(&mut self, limit: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?
            {
                Some(Ok(Message::Close(Some(f)))) => return Some(f.code.into()),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    }

    /// The raw socket (to stop reading it, or to read it by hand).
    pub fn into_inner(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.ws
    }
}

/// `http://host:port` → `ws://host:port`.
pub fn ws_url(http: &str) -> String {
    http.replacen("http://", "ws://", 1)
}
