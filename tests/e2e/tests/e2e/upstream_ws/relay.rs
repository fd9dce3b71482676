//! A WebSocket relay in front of anvil for the upstream-socket tests: on one port it forwards
//! HTTP JSON-RPC posts and relays WebSocket connections (as anvil serves both on one port), and
//! it counts what crosses it: open sockets, live `newHeads` and `newPendingTransactions`
//! subscriptions (made by an answered `eth_subscribe`, ended by an answered `eth_unsubscribe`
//! or the socket's end), and `eth_unsubscribe` requests. It can drop every socket at once, refuse
//! new ones (while HTTP keeps working), and refuse `newPendingTransactions` itself.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// One relayed socket's live subscriptions, by kind.
#[derive(Default)]
struct Subs {
    heads: HashSet<String>,
    pending: HashSet<String>,
}

#[derive(Default)]
struct Counts {
    /// Per open socket.
    sockets: HashMap<u64, Subs>,
    /// Most `newHeads` subscriptions live at once, over every socket.
    max_heads: usize,
    max_sockets: usize,
}

impl Counts {
    fn heads(&self) -> usize {
        self.sockets.values().map(|s| s.heads.len()).sum()
    }

    fn pending(&self) -> usize {
        self.sockets.values().map(|s| s.pending.len()).sum()
    }

    fn note_max(&mut self) {
        self.max_heads = self.max_heads.max(self.heads());
        self.max_sockets = self.max_sockets.max(self.sockets.len());
    }
}

struct State {
    anvil_http: http::Uri,
    anvil_ws: String,
    down: AtomicBool,
    refuse_pending: AtomicBool,
    counts: Mutex<Counts>,
    tasks: Mutex<HashMap<u64, AbortHandle>>,
    next_socket: AtomicU64,
    unsubscribes: AtomicUsize,
    sockets_opened: AtomicUsize,
}

/// The relay: `ws_url` for a node's `upstreams` (its HTTP twin reaches the same relay).
pub struct WsRelay {
    pub ws_url: String,
    state: Arc<State>,
}

impl WsRelay {
    /// A relay to the anvil at `anvil_url` (`http://host:port`), on a free loopback port.
    pub async fn start(anvil_url: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ws_url = format!("ws://{}", listener.local_addr().unwrap());
        let state = Arc::new(State {
            anvil_http: anvil_url.parse().unwrap(),
            anvil_ws: anvil_url.replacen("http://", "ws://", 1),
            down: AtomicBool::new(false),
            refuse_pending: AtomicBool::new(false),
            counts: Mutex::new(Counts::default()),
            tasks: Mutex::new(HashMap::new()),
            next_socket: AtomicU64::new(0),
            unsubscribes: AtomicUsize::new(0),
            sockets_opened: AtomicUsize::new(0),
        });
        let st = state.clone();
        tokio::spawn(async move {
            let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            while let Ok((stream, _)) = listener.accept().await {
                let (st, client) = (st.clone(), client.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(st.clone(), client.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Self { ws_url, state }
    }

    /// Drops every relayed socket at once, without a close frame (a network failure).
    pub fn kill(&self) {
        for (_, task) in self.state.tasks.lock().drain() {
            task.abort();
        }
    }

    /// While down, socket upgrades are refused with HTTP 503; posts are still forwarded.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Answers `eth_subscribe("newPendingTransactions")` with an error itself.
    pub fn refuse_pending(&self, refuse: bool) {
        self.state.refuse_pending.store(refuse, Ordering::SeqCst);
    }

    /// Live `newHeads` subscriptions over every open socket.
    pub fn heads_subscriptions(&self) -> usize {
        self.state.counts.lock().heads()
    }

    /// Live `newPendingTransactions` subscriptions over every open socket.
    pub fn pending_subscriptions(&self) -> usize {
        self.state.counts.lock().pending()
    }

    /// The most `newHeads` subscriptions, and the most sockets, ever live at once.
    pub fn max_live(&self) -> (usize, usize) {
        let c = self.state.counts.lock();
        (c.max_heads, c.max_sockets)
    }

    pub fn open_sockets(&self) -> usize {
        self.state.counts.lock().sockets.len()
    }

    pub fn sockets_opened(&self) -> usize {
        self.state.sockets_opened.load(Ordering::SeqCst)
    }

    /// `eth_unsubscribe` requests seen from clients.
    pub fn unsubscribes(&self) -> usize {
        self.state.unsubscribes.load(Ordering::SeqCst)
    }
}

type Reply = http::Response<Full<Bytes>>;

async fn handle(
    st: Arc<State>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    mut req: http::Request<hyper::body::Incoming>,
) -> Result<Reply, std::io::Error> {
    let upgrade = req
        .headers()
        .get(http::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if !upgrade {
        let body = req
            .into_body()
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        let bytes = e2e::forward(&client, st.anvil_http.clone(), body).await?;
        return Ok(http::Response::new(Full::new(bytes)));
    }
    if st.down.load(Ordering::SeqCst) {
        let mut r = http::Response::new(Full::new(Bytes::from_static(b"down")));
        *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        return Ok(r);
    }
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()))
        .unwrap_or_default();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let id = st.next_socket.fetch_add(1, Ordering::SeqCst);
    let st2 = st.clone();
    let task = tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let client =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        relay(st2, id, client).await;
    });
    st.tasks.lock().insert(id, task.abort_handle());
    let mut r = http::Response::new(Full::new(Bytes::new()));
    *r.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(http::header::UPGRADE, "websocket".parse().unwrap());
    h.insert(http::header::CONNECTION, "Upgrade".parse().unwrap());
    h.insert("sec-websocket-accept", key.parse().unwrap());
    Ok(r)
}

/// Forgets a socket's subscriptions when its relay ends, aborted included.
struct Registered {
    st: Arc<State>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.st.counts.lock().sockets.remove(&self.id);
        self.st.tasks.lock().remove(&self.id);
    }
}

/// What an `eth_subscribe` or `eth_unsubscribe` request id asked for.
enum Asked {
    Subscribe { pending: bool },
    Unsubscribe(String),
}

async fn relay<S>(st: Arc<State>, id: u64, mut client: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures::{SinkExt, StreamExt};
    let Ok((mut anvil, _)) = tokio_tungstenite::connect_async(st.anvil_ws.as_str()).await else {
        return;
    };
    st.sockets_opened.fetch_add(1, Ordering::SeqCst);
    let _registered = Registered { st: st.clone(), id };
    {
        let mut c = st.counts.lock();
        c.sockets.insert(id, Subs::default());
        c.note_max();
    }
    let mut asked: HashMap<String, Asked> = HashMap::new();
    loop {
        tokio::select! {
            msg = client.next() => {
                let Some(Ok(msg)) = msg else { return };
                let Message::Text(text) = msg else {
                    if msg.is_close() {
                        let _ = anvil.close(None).await;
                        return;
                    }
                    continue; // Pings are answered here; nothing else is relayed.
                };
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let req_id = v["id"].to_string();
                match (v["method"].as_str(), v["params"][0].as_str()) {
                    (Some("eth_subscribe"), Some(kind)) => {
                        let pending = kind == "newPendingTransactions";
                        if pending && st.refuse_pending.load(Ordering::SeqCst) {
                            let no = json!({"jsonrpc": "2.0", "id": v["id"], "error": {"code": -32601, "message": "newPendingTransactions is not served here"}});
                            if client.send(Message::text(no.to_string())).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        asked.insert(req_id, Asked::Subscribe { pending });
                    }
                    (Some("eth_unsubscribe"), Some(sub)) => {
                        st.unsubscribes.fetch_add(1, Ordering::SeqCst);
                        asked.insert(req_id, Asked::Unsubscribe(sub.to_string()));
                    }
                    _ => {}
                }
                if anvil.send(Message::Text(text)).await.is_err() {
                    return;
                }
            }
            msg = anvil.next() => {
                let Some(Ok(msg)) = msg else { return };
                let Message::Text(text) = msg else { continue };
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                if let Some(what) = asked.remove(&v["id"].to_string()) {
                    let mut c = st.counts.lock();
                    if let Some(subs) = c.sockets.get_mut(&id) {
                        match (what, &v["result"]) {
                            (Asked::Subscribe { pending }, Value::String(sub)) => {
                                let set = if pending { &mut subs.pending } else { &mut subs.heads };
                                set.insert(sub.clone());
                            }
                            (Asked::Unsubscribe(sub), Value::Bool(true)) => {
                                subs.heads.remove(&sub);
                                subs.pending.remove(&sub);
                            }
                            _ => {}
                        }
                    }
                    c.note_max();
                }
                if client.send(Message::Text(text)).await.is_err() {
                    return;
                }
            }
        }
    }
}
