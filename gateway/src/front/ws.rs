//! JSON-RPC over WebSocket on the JSON-RPC paths (`GET` with `Upgrade: websocket` on `/`,
//! `/{chain}` and the key forms), after the same key, chain and origin checks as HTTP.
//!
//! Every message goes through the request path ([`crate::request`]) as an HTTP body would:
//! same parsing, limits, tiers, routing. `eth_subscribe` and `eth_unsubscribe` (single calls)
//! are the socket's own: a subscription joins a feed ([`crate::subs`]).
//!
//! One task per socket reads and writes; each request runs in a task of its own (at most
//! `max_in_flight_per_connection`, then the socket is not read until one finishes). Sending
//! never waits on a client: the feed queues into a bounded buffer and a client that lets it
//! fill is closed with 1008. A client that sends nothing (not even a pong to the gateway's
//! pings) for `idle_timeout_ms` is closed; on shutdown every socket gets 1001.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use proto::rpc;
use proto::sub::SubKind;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::jsonrpc::{self, Entry, Parsed};
use super::respond::{new_request_id, rpc_error, text, Resp};
use crate::app::App;
use crate::geo::Location;
use crate::request::Caller;
use crate::subs::{self, FeedKey, Out, State, Subscriber};
use crate::tenants::{Tenant, Tenants};

/// How long `eth_subscribe` waits for its feed to be set up on a node before answering: longer
/// than a node has to say `Ready` (5 s), so a refusal reaches the call, not a silent feed.
const READY_WAIT: Duration = Duration::from_secs(6);
/// How long a closing handshake may take.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// How long a slow client's close frame may wait behind what its socket already holds: a
/// client that reads again within it learns why it was cut off (1008).
const SLOW_CLOSE_WAIT: Duration = Duration::from_secs(10);
/// Queued messages written at once (one flush) when a socket has several waiting.
const WRITE_BATCH: usize = 64;
/// Read buffer per socket: small, since most sockets mostly wait (memory per subscriber).
const READ_BUFFER: usize = 4096;

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Who is on the socket, as the front door found out at the upgrade.
struct Ctx {
    pub chain_id: u64,
    pub tenant: Option<Arc<Tenant>>,
    pub tenants: Arc<Tenants>,
    pub addr: IpAddr,
    pub location: Option<Location>,
}

/// A `GET` asking for a WebSocket.
pub fn wants_upgrade<B>(req: &Request<B>) -> bool {
    let has = |name, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    req.method() == http::Method::GET
        && has(header::CONNECTION, "upgrade")
        && has(header::UPGRADE, "websocket")
}

/// Answers the upgrade (101) and starts the socket's task once hyper hands it over.
/// `peer` is the socket's address (the caller is found from it and the forwarding headers
/// its proxy may set, as for HTTP).
pub fn upgrade(
    app: &Arc<App>,
    mut req: Request<Incoming>,
    peer: IpAddr,
    chain_id: u64,
    tenant: Option<Arc<Tenant>>,
    tenants: Arc<Tenants>,
) -> Resp {
    let version_ok = req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return text(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key missing\n");
    };
    if !version_ok {
        let mut r = text(StatusCode::UPGRADE_REQUIRED, "WebSocket version 13 only\n");
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return r;
    }
    // Trusted proxies carry many callers each: the per-address cap is not for them.
    let capped = !app.trusted.contains(peer);
    let (addr_slot, permit) = match places(app, peer, capped) {
        Ok(held) => held,
        Err(refused) => return *refused,
    };
    let addr = crate::geo::client_ip(peer, req.headers(), &app.trusted);
    let ctx = Ctx {
        chain_id,
        tenant,
        tenants,
        addr,
        location: app.locate(addr).map(Arc::unwrap_or_clone),
    };
    let on = hyper::upgrade::on(&mut req);
    let app = app.clone();
    tokio::spawn(async move {
        match on.await {
            Ok(up) => {
                let cfg = socket_config(&app);
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(up), Role::Server, Some(cfg))
                        .await;
                serve(app, ws, ctx, permit).await;
                drop(addr_slot);
            }
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut r = text(StatusCode::SWITCHING_PROTOCOLS, "");
    let h = r.headers_mut();
    h.remove(header::CONTENT_TYPE);
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header"),
    );
    r
}

/// A place for one more socket: the address's (429 when it holds its share) and the
/// gateway's (503 when full).
fn places(
    app: &App,
    peer: IpAddr,
    capped: bool,
) -> Result<(AddrSlot, OwnedSemaphorePermit), Box<Resp>> {
    let refuse = |reason: &str, status, message: String| {
        app.metrics.rejected.with_label_values(&[reason]).inc();
        Box::new(rpc_error(status, rpc::LIMIT_EXCEEDED, &message))
    };
    let ws = &app.config.websocket;
    let Some(slot) = AddrSlot::take(app, peer, capped) else {
        return Err(refuse(
            "ws_connections_per_ip",
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "this address holds {} WebSockets already (websocket.max_connections_per_ip)",
                ws.max_connections_per_ip
            ),
        ));
    };
    let Ok(permit) = app.ws_permits.clone().try_acquire_owned() else {
        return Err(refuse(
            "ws_connections",
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "this gateway holds {} WebSockets already (websocket.max_connections)",
                ws.max_connections
            ),
        ));
    };
    Ok((slot, permit))
}

/// One of an address's WebSocket places, given back on drop.
struct AddrSlot {
    addrs: Arc<parking_lot::Mutex<HashMap<IpAddr, usize>>>,
    ip: Option<IpAddr>,
}

impl AddrSlot {
    fn take(app: &App, ip: IpAddr, capped: bool) -> Option<Self> {
        let addrs = app.ws_addrs.clone();
        if !capped {
            return Some(Self { addrs, ip: None });
        }
        {
            let mut m = addrs.lock();
            let n = m.entry(ip).or_default();
            if *n >= app.config.websocket.max_connections_per_ip {
                return None;
            }
            *n += 1;
        }
        Some(Self {
            addrs,
            ip: Some(ip),
        })
    }
}

impl Drop for AddrSlot {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        let mut m = self.addrs.lock();
        if let Some(n) = m.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&ip);
            }
        }
    }
}

fn socket_config(app: &App) -> WebSocketConfig {
    let max = app.config.websocket.max_message_bytes;
    let mut cfg = WebSocketConfig::default();
    cfg.read_buffer_size = READ_BUFFER;
    // Messages are fed, then flushed once per batch (`write_loop`); a buffer this size is
    // written out as it fills.
    cfg.write_buffer_size = 64 * 1024;
    cfg.max_message_size = Some(max);
    cfg.max_frame_size = Some(max);
    cfg
}

/// One socket, until either side closes it.
async fn serve(app: Arc<App>, ws: Socket, ctx: Ctx, _permit: OwnedSemaphorePermit) {
    let m = &app.metrics.ws;
    m.connections.inc();
    let cfg = &app.config.websocket;
    let (tx, rx) = mpsc::channel(cfg.send_buffer_messages);
    let slow = CancellationToken::new();
    let (sink, stream) = ws.split();
    let (done_tx, done_rx) = oneshot::channel();
    let mut conn = Conn {
        app: app.clone(),
        ctx: Arc::new(ctx),
        tx,
        slow: slow.clone(),
        subs: HashMap::new(),
        in_flight: Arc::new(Semaphore::new(cfg.max_in_flight_per_connection)),
    };
    let mut stream = stream;
    let writer = write_loop(sink, rx, &app, slow, done_rx);
    tokio::pin!(writer);
    // Until either side ends: the reader (the client closed, went idle, broke a limit) or the
    // writer (a slow client, shutdown, a broken socket).
    let reader_ended = tokio::select! {
        close = conn.read_loop(&mut stream) => Some(close),
        _ = &mut writer => None,
    };
    // Then the close handshake: the client's answer is read (and anything it still sends),
    // so the socket is not dropped with unread data, which would reset it and lose the
    // close frame on the client's side.
    match reader_ended {
        Some(close) => {
            let _ = done_tx.send(close);
            let both = async { tokio::join!(&mut writer, drain(&mut stream)) };
            let _ = tokio::time::timeout(2 * CLOSE_WAIT, both).await;
        }
        None => {
            let _ = tokio::time::timeout(CLOSE_WAIT, drain(&mut stream)).await;
        }
    }
    let ids: Vec<Arc<str>> = conn.subs.keys().cloned().collect();
    for id in ids {
        conn.drop_sub(&id);
    }
    m.connections.dec();
}

/// Reads until the client's close frame or the end of the stream.
async fn drain(stream: &mut Stream) {
    while let Some(Ok(m)) = stream.next().await {
        if let Message::Close(_) = m {
            break;
        }
    }
}

type Sink = futures::stream::SplitSink<Socket, Message>;
type Stream = futures::stream::SplitStream<Socket>;

/// Sends what the socket's queue holds, pings, and the close frame at the end.
async fn write_loop(
    mut sink: Sink,
    mut rx: mpsc::Receiver<Out>,
    app: &App,
    slow: CancellationToken,
    mut reader_done: oneshot::Receiver<Option<(CloseCode, &'static str)>>,
) {
    let cfg = &app.config.websocket;
    let mut ping = tokio::time::interval_at(Instant::now() + cfg.ping_interval, cfg.ping_interval);
    // Made once: a `cancelled()` future registers with its token when first polled. Each poll
    // locks the token, so the socket polls a child of the shutdown token, not the one every
    // socket shares.
    let stop = app.ws_stop.child_token();
    let slowed = slow.cancelled();
    let stopped = stop.cancelled();
    tokio::pin!(slowed, stopped);
    let close = loop {
        let first = tokio::select! {
            biased;
            _ = &mut slowed => break Some((CloseCode::Policy, "slow consumer: send buffer full")),
            _ = &mut stopped => break Some((CloseCode::Away, "gateway shutting down")),
            r = &mut reader_done => break r.ok().flatten(),
            out = rx.recv() => match out {
                Some(o) => Some(o),
                None => break None,
            },
            _ = ping.tick() => None,
        };
        // What else is queued goes out in the same write.
        let write = async {
            match first {
                Some(o) => feed_out(&mut sink, o).await?,
                None => sink.feed(Message::Ping(Bytes::new())).await?,
            }
            for _ in 0..WRITE_BATCH {
                match rx.try_recv() {
                    Ok(o) => feed_out(&mut sink, o).await?,
                    Err(_) => break,
                }
            }
            sink.flush().await
        };
        // A client that stops reading blocks this write: its queue fills and `slow` fires; a
        // write that has not gone out within the idle timeout counts as slow too (a client
        // with nothing subscribed that never reads its answers).
        tokio::select! {
            r = write => if r.is_err() { return },
            _ = &mut slowed => {}
            _ = &mut stopped => {}
            _ = tokio::time::sleep(cfg.idle_timeout) => mark_slow(&slow, app),
        }
    };
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        let wait = match code {
            CloseCode::Policy => SLOW_CLOSE_WAIT,
            _ => CLOSE_WAIT,
        };
        let _ = tokio::time::timeout(wait, sink.send(Message::Close(Some(frame)))).await;
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, sink.close()).await;
}

/// Feeds one queued item: a response, or each notification of a block.
async fn feed_out(sink: &mut Sink, o: Out) -> Result<(), tungstenite::Error> {
    match o {
        // JSON is UTF-8; bytes an upstream sent that are not go out as they are, in binary.
        Out::Text(body) => match Utf8Bytes::try_from(body.clone()) {
            Ok(t) => sink.feed(Message::Text(t)).await,
            Err(_) => sink.feed(Message::Binary(body)).await,
        },
        Out::Event { sub, results } => {
            for result in results.iter() {
                sink.feed(notification(&sub, result)).await?;
            }
            Ok(())
        }
    }
}

fn notification(sub: &str, result: &str) -> Message {
    let mut s = String::with_capacity(90 + sub.len() + result.len());
    s.push_str(r#"{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":""#);
    s.push_str(sub);
    s.push_str(r#"","result":"#);
    s.push_str(result);
    s.push_str("}}");
    Message::Text(s.into())
}

/// The client let its queue fill (or a write stall): its socket closes with 1008.
fn mark_slow(slow: &CancellationToken, app: &App) {
    if !slow.is_cancelled() {
        slow.cancel();
        app.metrics.ws.slow_consumers.inc();
    }
}

/// The reading side of a socket and what it owns.
struct Conn {
    app: Arc<App>,
    ctx: Arc<Ctx>,
    tx: mpsc::Sender<Out>,
    slow: CancellationToken,
    /// This socket's subscriptions and their feeds.
    subs: HashMap<Arc<str>, FeedKey>,
    in_flight: Arc<Semaphore>,
}

impl Conn {
    /// Reads until the client closes, goes quiet past the idle timeout, or breaks a limit;
    /// returns the close frame to send, if any.
    async fn read_loop(&mut self, stream: &mut Stream) -> Option<(CloseCode, &'static str)> {
        let idle = self.app.config.websocket.idle_timeout;
        loop {
            let msg = match tokio::time::timeout(idle, stream.next()).await {
                Err(_) => return Some((CloseCode::Away, "idle timeout")),
                Ok(None) | Ok(Some(Ok(Message::Close(_)))) => return None,
                Ok(Some(Err(tungstenite::Error::Capacity(_)))) => {
                    self.count("too_big");
                    return Some((
                        CloseCode::Size,
                        "message too big (websocket.max_message_bytes)",
                    ));
                }
                Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(m))) => m,
            };
            let body = match msg {
                Message::Text(t) => Bytes::from(t),
                Message::Binary(b) => b,
                _ => continue, // Pings are answered by the library; pongs only count as life.
            };
            self.on_message(body).await;
        }
    }

    fn count(&self, result: &str) {
        self.app
            .metrics
            .ws
            .messages
            .with_label_values(&[result])
            .inc();
    }

    async fn on_message(&mut self, body: Bytes) {
        if let Some((id, method, params)) = subscription_call(&body) {
            self.count(method_label(&method));
            let id = id.unwrap_or_else(|| Bytes::from_static(b"null"));
            match method.as_str() {
                "eth_subscribe" => self.subscribe(&id, &params).await,
                _ => {
                    let answer = self.unsubscribe(&params);
                    self.respond(&id, answer);
                }
            }
            return;
        }
        self.count("request");
        // At most this many requests at once, answers queued included; the socket is not read
        // meanwhile.
        let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
            return;
        };
        let (app, ctx, tx) = (self.app.clone(), self.ctx.clone(), self.tx.clone());
        tokio::spawn(async move {
            let body = request(&app, &ctx, body).await;
            if !body.is_empty() {
                let _ = tx.send(Out::Text(body)).await;
            }
            drop(permit);
        });
    }

    /// Queues an answer; a full queue means the client does not read (closed with 1008).
    fn respond(&self, id: &[u8], answer: Result<Bytes, Bytes>) {
        let mut out = BytesMut::with_capacity(128);
        let answer = answer.as_ref().map(|b| &b[..]).map_err(|b| &b[..]);
        jsonrpc::write_response(&mut out, id, answer);
        if self.tx.try_send(Out::Text(out.freeze())).is_err() {
            mark_slow(&self.slow, &self.app);
        }
    }

    /// `eth_subscribe`: the subscription id once its feed is set up on a node, then the
    /// feed's blocks; or an error. The answer is queued before the subscription joins the
    /// feed, so no notification comes before the client knows its id.
    async fn subscribe(&mut self, id: &[u8], params: &[u8]) {
        let (joining, key) = match self.open(params).await {
            Ok(opened) => opened,
            Err(e) => return self.respond(id, Err(e)),
        };
        let sub_id = subs::new_id();
        self.respond(id, Ok(Bytes::from(format!("\"{sub_id}\""))));
        let sub = Subscriber {
            id: sub_id.clone(),
            tx: self.tx.clone(),
            slow: self.slow.clone(),
        };
        self.app.subs.attach(joining, sub);
        self.subs.insert(sub_id, key);
    }

    /// Checks and limits, then joins the feed and waits (bounded) until it is set up.
    async fn open(&self, params: &[u8]) -> Result<(subs::Joining, FeedKey), Bytes> {
        if let Some(refusal) = self.refused("eth_subscribe") {
            return Err(refusal);
        }
        let (kind, filter) =
            subs::filter::parse(params).map_err(|e| rpc::error_object(rpc::INVALID_PARAMS, e))?;
        self.take_place()?;
        let rule = crate::nodes::router::residency_rule(
            &self.app.config.residency,
            self.ctx.location.as_ref(),
        );
        let key = FeedKey {
            chain_id: self.ctx.chain_id,
            kind,
            filter,
            rule: rule.map(|(i, _)| i),
        };
        let app = self.app.clone();
        let (joining, mut state) = match app.subs.join(key.clone(), self.ctx.location.clone()) {
            Ok(joined) => joined,
            Err(e) => {
                self.give_place_back();
                return Err(rpc::error_object(rpc::LIMIT_EXCEEDED, e.to_string()));
            }
        };
        let _ = tokio::time::timeout(READY_WAIT, state.wait_for(|s| *s != State::Starting)).await;
        let refused = match &*state.borrow() {
            State::Refused(why) => Some(why.clone()),
            _ => None,
        };
        match refused {
            Some(why) => {
                drop(joining);
                self.give_place_back();
                let code = match kind {
                    SubKind::NewPendingTransactions => rpc::METHOD_NOT_FOUND,
                    _ => rpc::INTERNAL_ERROR,
                };
                Err(rpc::error_object(code, why))
            }
            None => Ok((joining, key)),
        }
    }

    /// A place for one more subscription: within the socket's limit and the tenant's.
    fn take_place(&self) -> Result<(), Bytes> {
        let max = self.app.config.websocket.max_subscriptions_per_connection;
        if self.subs.len() >= max {
            return Err(rpc::error_object(
                rpc::LIMIT_EXCEEDED,
                format!("limit exceeded: at most {max} subscriptions per connection"),
            ));
        }
        match &self.ctx.tenant {
            Some(t) if !self.app.subs.take_tenant_slot(&t.name, t.max_subscriptions) => {
                Err(rpc::error_object(
                    rpc::LIMIT_EXCEEDED,
                    format!(
                        "limit exceeded: at most {} subscriptions for {} on this gateway",
                        t.max_subscriptions, t.name
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    fn give_place_back(&self) {
        if let Some(t) = &self.ctx.tenant {
            self.app.subs.release_tenant_slot(&t.name);
        }
    }

    /// `eth_unsubscribe`: `true`, or geth's error for an id this socket does not hold.
    fn unsubscribe(&mut self, params: &[u8]) -> Result<Bytes, Bytes> {
        if let Some(refusal) = self.refused("eth_unsubscribe") {
            return Err(refusal);
        }
        let id = match serde_json::from_slice::<Vec<String>>(params) {
            Ok(v) if v.len() == 1 => v.into_iter().next().expect("one"),
            _ => {
                return Err(rpc::error_object(
                    rpc::INVALID_PARAMS,
                    "eth_unsubscribe takes one param: the subscription id",
                ))
            }
        };
        match self.drop_sub(&id) {
            true => Ok(Bytes::from_static(b"true")),
            false => Err(rpc::error_object(-32000, "subscription not found")),
        }
    }

    /// Ends one of this socket's subscriptions; false if it holds no such id.
    fn drop_sub(&mut self, id: &str) -> bool {
        let Some((id, key)) = self.subs.remove_entry(id) else {
            return false;
        };
        self.app.subs.unsubscribe(&key, &id);
        self.give_place_back();
        true
    }

    /// The gateway's, the chain's and the tenant's method lists, then the tenant's limits,
    /// as for any call.
    fn refused(&self, method: &str) -> Option<Bytes> {
        let app = &self.app;
        let chain = app.config.chain_by_id(self.ctx.chain_id)?;
        let path = app.path(chain);
        let tenant = self.ctx.tenant.as_deref();
        if !path.allowed(method) || tenant.is_some_and(|t| !t.method_allowed(method)) {
            return Some(rpc::error_object(
                rpc::METHOD_NOT_FOUND,
                format!("method {method} is not allowed on this gateway"),
            ));
        }
        let cost = [self.ctx.tenants.cost(method)];
        let refused = app
            .tenancy
            .charge(&self.ctx.tenants, tenant, self.ctx.addr, &cost);
        refused.into_iter().next().map(|(_, r)| {
            rpc::error_object(
                rpc::LIMIT_EXCEEDED,
                format!(
                    "limit exceeded: {}; retry after {} s",
                    r.limit.label(),
                    r.retry_after
                ),
            )
        })
    }
}

fn method_label(method: &str) -> &'static str {
    match method {
        "eth_subscribe" => "subscribe",
        _ => "unsubscribe",
    }
}

/// A single `eth_subscribe` / `eth_unsubscribe` call: its id, method and params.
fn subscription_call(body: &Bytes) -> Option<(Option<Bytes>, String, Bytes)> {
    // Cheap test first: most messages are ordinary requests.
    let probe = &body[..body.len().min(4096)];
    if !probe
        .windows(13)
        .any(|w| w == b"eth_subscribe" || w == b"eth_unsubscri")
    {
        return None;
    }
    match jsonrpc::parse_bytes(body, 1) {
        Ok(Parsed::Single(Entry::Call { id, method, params }))
            if method == "eth_subscribe" || method == "eth_unsubscribe" =>
        {
            Some((id, method.into_owned(), params))
        }
        _ => None,
    }
}

/// One request through the request path, as if it came over HTTP; the response body.
async fn request(app: &App, ctx: &Ctx, body: Bytes) -> Bytes {
    let Some(chain) = app.config.chain_by_id(ctx.chain_id) else {
        return Bytes::new();
    };
    let id_buf = new_request_id();
    let request_id = std::str::from_utf8(&id_buf).expect("hex digits");
    let who = Caller {
        location: ctx.location.as_ref(),
        addr: ctx.addr,
        tenant: ctx.tenant.as_deref(),
        tenants: &ctx.tenants,
    };
    let started = Instant::now();
    let resp = app
        .path(chain)
        .serve(&body, request_id, started, &who, false)
        .await;
    match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(never) => match never {},
    }
}
