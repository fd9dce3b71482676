//! Following an upstream's head over its WebSocket: one task per `ws://`/`wss://` upstream per
//! chain ([`Chain::follow`]), next to the tracker. It subscribes to `newHeads` and, on every
//! notification, wakes the tracker ([`Chain::reveal`] with the header's number): the tracker
//! polls at once and tag reads wait for that poll (at most 500 ms). The socket is only a
//! wake-up: the tracker still fetches and verifies every header over HTTP(S), and nothing the
//! socket says is served. While a subscription is live the tracker polls only at `head_poll_ms`
//! ([`Chain::followed`]); when the socket drops the normal pace resumes at once.
//!
//! The same socket carries the chain's pending-transaction feed ([`super::pending`]): while
//! the feed has receivers, one follower holds a `newPendingTransactions` subscription.
//!
//! No leak: a follower has at most one socket, and on it at most one subscription of each
//! kind; a socket is closed (`eth_unsubscribe` best effort, then a close frame, bounded) before
//! the next is opened. Reconnects back off from 100 ms to 5 s with jitter; a dead socket is
//! found by a ping every 15 s and its pong's deadline, while a long quiet spell is fine (blocks
//! can be slow).

use std::sync::Arc;

use daemon::loglimit::LogLimit;
use futures::{SinkExt, StreamExt};
use prometheus::IntGauge;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::pending::{Claim, Feed};
use super::Chain;
use crate::blockref::parse_hex;
use crate::metrics::Metrics;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connecting (TCP, TLS, upgrade) must finish within this.
pub const CONNECT_WITHIN: Duration = Duration::from_secs(5);
/// Largest message (and frame) accepted from the upstream; a header is a few KiB.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
const PING_EVERY: Duration = Duration::from_secs(15);
const PONG_WITHIN: Duration = Duration::from_secs(10);
/// The upstream must answer `eth_subscribe("newHeads")` within this.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// A send that does not finish within this means the upstream stopped reading.
const SEND_WITHIN: Duration = Duration::from_secs(5);
/// Closing (unsubscribe, close frame, the upstream's close frame) takes at most this.
const CLOSE_WITHIN: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A subscription live this long counts as steady: when it drops, reconnecting starts again
/// from [`BACKOFF_MIN`]. Shorter ones keep backing off, so a flapping upstream is not hammered.
const STEADY_AFTER: Duration = Duration::from_secs(10);
/// The pending-transaction subscription goes once the feed has had no receiver this long.
const PENDING_LINGER: Duration = Duration::from_secs(3);
/// How often the feed's receivers are counted.
const PENDING_CHECK: Duration = Duration::from_secs(1);

// An upstream (or the network) can make sockets flap: these lines are rate limited.
static CONNECTED_LOG: LogLimit = LogLimit::new(10, 60);
static LOST_LOG: LogLimit = LogLimit::new(10, 60);
static PENDING_LOG: LogLimit = LogLimit::new(10, 60);
static ODD_LOG: LogLimit = LogLimit::new(5, 60);

/// Why a session on one socket ended.
enum Ended {
    /// The node is stopping.
    Stopped,
    /// Not reachable, dropped, silent past a pong's deadline, or `newHeads` refused.
    Lost(String),
}

fn lost(why: impl Into<String>) -> Ended {
    Ended::Lost(why.into())
}

impl Chain {
    /// Follows upstream `index`'s head over its WebSocket at `url` until `stop` fires; started
    /// next to [`Chain::track`], one task per entry of [`Chain::sockets`].
    pub async fn follow(
        self: Arc<Self>,
        index: usize,
        url: http::Uri,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) {
        let chain_label = self.chain_id.to_string();
        let label = self.upstreams.label(index).to_string();
        let gauge = metrics
            .sockets
            .upstream_ws_connected
            .with_label_values(&[&chain_label, &label]);
        let heads = metrics
            .sockets
            .upstream_ws_heads
            .with_label_values(&[&chain_label]);
        let reconnects = metrics
            .sockets
            .upstream_ws_reconnects
            .with_label_values(&[&chain_label]);
        let mut backoff = BACKOFF_MIN;
        let mut first = true;
        loop {
            if !std::mem::take(&mut first) {
                reconnects.inc();
            }
            let connected = tokio::select! {
                _ = stop.cancelled() => return,
                c = connect(&url) => c,
            };
            let (ended, live_for) = match connected {
                Ok(ws) => {
                    let session = Session {
                        chain: &self,
                        index,
                        label: &label,
                        gauge: &gauge,
                        heads_total: &heads,
                        next_id: 0,
                        heads: Heads::Off,
                        pending: Pending::Off,
                        idle_since: None,
                        live: None,
                    };
                    session.run(ws, &stop).await
                }
                Err(why) => (Ended::Lost(why), None),
            };
            let Ended::Lost(why) = ended else {
                tracing::debug!(chain_id = self.chain_id, upstream = %label, "upstream WebSocket closed");
                return;
            };
            if live_for.is_some_and(|d| d >= STEADY_AFTER) {
                backoff = BACKOFF_MIN;
            }
            let wait = backoff.mul_f64(rand::random_range(0.5..=1.0));
            backoff = (backoff * 2).min(BACKOFF_MAX);
            if let Some(suppressed) = LOST_LOG.allow() {
                tracing::warn!(
                    chain_id = self.chain_id,
                    upstream = %label,
                    reason = %why,
                    retry_in_ms = wait.as_millis() as u64,
                    suppressed,
                    "upstream WebSocket not followed; polling at the normal pace until it is back"
                );
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

async fn connect(url: &http::Uri) -> Result<Socket, String> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let connecting = tokio_tungstenite::connect_async_with_config(url.clone(), Some(config), true);
    match tokio::time::timeout(CONNECT_WITHIN, connecting).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(format!("connecting failed: {e}")),
        Err(_) => Err(format!(
            "not connected within {} ms",
            CONNECT_WITHIN.as_millis()
        )),
    }
}

/// The `newHeads` subscription on the current socket.
enum Heads {
    Off,
    /// Asked with this request id; answered by this deadline.
    Asking(u64, Instant),
    On(String),
}

/// The `newPendingTransactions` subscription on the current socket, with the feed's claim.
enum Pending<'a> {
    Off,
    Asking(u64, Claim<'a>),
    On(String, Claim<'a>),
}

/// While a `newHeads` subscription is live: counted in [`Chain::followed`] and the gauge.
struct Live<'a> {
    chain: &'a Chain,
    gauge: &'a IntGauge,
    since: Instant,
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.gauge.set(0);
        self.chain
            .followers
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// One socket's life: subscribe, wake the tracker per notification, keep the socket alive,
/// tend the pending feed, close.
struct Session<'a> {
    chain: &'a Chain,
    index: usize,
    label: &'a str,
    gauge: &'a IntGauge,
    heads_total: &'a prometheus::IntCounter,
    next_id: u64,
    heads: Heads,
    pending: Pending<'a>,
    /// Since when the pending feed has had no receiver.
    idle_since: Option<Instant>,
    live: Option<Live<'a>>,
}

/// What the upstream sends: an answer to one of our requests, or a subscription notification.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(default)]
    id: Option<u64>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
    #[serde(borrow, default)]
    params: Option<Notification<'a>>,
}

#[derive(Deserialize)]
struct Notification<'a> {
    subscription: String,
    #[serde(borrow)]
    result: &'a RawValue,
}

/// Of a `newHeads` header, only its number is read: the tracker fetches the header itself.
#[derive(Deserialize)]
struct HeadNumber {
    number: String,
}

impl<'a> Session<'a> {
    /// Serves the socket until it ends, then closes it; returns why, and how long the
    /// `newHeads` subscription was live.
    async fn run(mut self, mut ws: Socket, stop: &CancellationToken) -> (Ended, Option<Duration>) {
        let ended = self.serve(&mut ws, stop).await;
        // No longer followed from here: the tracker's normal pace resumes before the close.
        let live_for = self.live.take().map(|l| l.since.elapsed());
        self.close(&mut ws).await;
        (ended, live_for)
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    async fn serve(&mut self, ws: &mut Socket, stop: &CancellationToken) -> Ended {
        let id = self.id();
        if let Err(e) = send(ws, subscribe(id, "newHeads")).await {
            return e;
        }
        self.heads = Heads::Asking(id, Instant::now() + ANSWER_WITHIN);
        let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut check = tokio::time::interval(PENDING_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut nudges = self.chain.pending.as_ref().map(Feed::nudges);
        let mut pong_due: Option<Instant> = None;
        loop {
            let answer_due = match self.heads {
                Heads::Asking(_, due) => Some(due),
                _ => None,
            };
            let step = tokio::select! {
                _ = stop.cancelled() => return Ended::Stopped,
                msg = ws.next() => match msg {
                    Some(Ok(Message::Text(text))) => self.on_text(&text),
                    Some(Ok(Message::Pong(_))) => {
                        pong_due = None;
                        Ok(())
                    }
                    Some(Ok(Message::Close(frame))) => Err(lost(format!(
                        "closed by the upstream ({})",
                        frame.map_or_else(|| "no reason".to_string(), |f| f.to_string())
                    ))),
                    // Pings are answered by tungstenite as it reads; binary frames mean nothing here.
                    Some(Ok(_)) => Ok(()),
                    Some(Err(e)) => Err(lost(format!("reading failed: {e}"))),
                    None => Err(lost("closed by the upstream")),
                },
                _ = ping.tick() => {
                    pong_due.get_or_insert(Instant::now() + PONG_WITHIN);
                    send_message(ws, Message::Ping(Default::default())).await
                }
                _ = sleep_until(pong_due), if pong_due.is_some() => {
                    Err(lost(format!("no pong within {} s", PONG_WITHIN.as_secs())))
                }
                _ = sleep_until(answer_due), if answer_due.is_some() => {
                    Err(lost(format!("newHeads not answered within {} s", ANSWER_WITHIN.as_secs())))
                }
                _ = check.tick() => self.tend_pending(ws).await,
                _ = nudged(&mut nudges) => self.tend_pending(ws).await,
            };
            if let Err(ended) = step {
                return ended;
            }
        }
    }

    /// An answer to one of our requests, or a notification.
    fn on_text(&mut self, text: &str) -> Result<(), Ended> {
        let msg = match serde_json::from_str::<Incoming<'_>>(text) {
            Ok(m) => m,
            Err(e) => {
                if let Some(suppressed) = ODD_LOG.allow() {
                    tracing::debug!(chain_id = self.chain.chain_id, upstream = %self.label, error = %e, suppressed, "unreadable WebSocket message ignored");
                }
                return Ok(());
            }
        };
        if let Some(note) = msg.params {
            self.on_notification(&note);
            return Ok(());
        }
        let Some(id) = msg.id else { return Ok(()) };
        let answer = match (msg.result, msg.error) {
            (Some(r), None) => serde_json::from_str::<String>(r.get())
                .map_err(|_| format!("not a subscription id: {}", clip(r.get()))),
            (_, Some(e)) => Err(clip(e.get())),
            (None, None) => Err("an empty answer".to_string()),
        };
        if matches!(self.heads, Heads::Asking(asked, _) if asked == id) {
            let sub = answer.map_err(|why| lost(format!("newHeads refused: {why}")))?;
            self.heads = Heads::On(sub);
            self.go_live();
        } else if matches!(self.pending, Pending::Asking(asked, _) if asked == id) {
            let Pending::Asking(_, claim) = std::mem::replace(&mut self.pending, Pending::Off)
            else {
                unreachable!("matched above")
            };
            match answer {
                Ok(sub) => self.pending = Pending::On(sub, claim),
                Err(why) => {
                    if let Some(suppressed) = PENDING_LOG.allow() {
                        tracing::warn!(chain_id = self.chain.chain_id, upstream = %self.label, reason = %why, suppressed, "upstream refused newPendingTransactions; its receivers are closed");
                    }
                    if let Some(feed) = &self.chain.pending {
                        feed.refuse(why);
                    }
                }
            }
        }
        // Anything else answers an `eth_unsubscribe`: nothing to do.
        Ok(())
    }

    fn on_notification(&self, note: &Notification<'_>) {
        if matches!(&self.heads, Heads::On(sub) if *sub == note.subscription) {
            match serde_json::from_str::<HeadNumber>(note.result.get())
                .ok()
                .and_then(|h| parse_hex(&h.number))
            {
                Some(number) => {
                    self.heads_total.inc();
                    self.chain.reveal(number);
                }
                None => {
                    if let Some(suppressed) = ODD_LOG.allow() {
                        tracing::debug!(chain_id = self.chain.chain_id, upstream = %self.label, suppressed, "newHeads notification without a number ignored");
                    }
                }
            }
            return;
        }
        if let (Pending::On(sub, _), Some(feed)) = (&self.pending, &self.chain.pending) {
            if *sub == note.subscription {
                match serde_json::from_str::<String>(note.result.get()) {
                    Ok(hash) if is_hash(&hash) => feed.send(hash),
                    _ => {
                        if let Some(suppressed) = ODD_LOG.allow() {
                            tracing::debug!(chain_id = self.chain.chain_id, upstream = %self.label, suppressed, "pending transaction notification without a hash ignored");
                        }
                    }
                }
            }
        }
    }

    fn go_live(&mut self) {
        self.chain.followers.send_modify(|n| *n += 1);
        self.gauge.set(1);
        self.live = Some(Live {
            chain: self.chain,
            gauge: self.gauge,
            since: Instant::now(),
        });
        if let Some(suppressed) = CONNECTED_LOG.allow() {
            tracing::info!(chain_id = self.chain.chain_id, upstream = %self.label, suppressed, "following the upstream's head over its WebSocket");
        }
    }

    /// Subscribes to pending transactions when the feed has receivers and no follower holds
    /// the subscription; unsubscribes once it has had none for [`PENDING_LINGER`].
    async fn tend_pending(&mut self, ws: &mut Socket) -> Result<(), Ended> {
        let chain: &'a Chain = self.chain;
        let Some(feed) = chain.pending.as_ref() else {
            return Ok(());
        };
        let now = Instant::now();
        let receivers = feed.receivers();
        if receivers > 0 {
            self.idle_since = None;
        } else {
            self.idle_since.get_or_insert(now);
        }
        let idle = self
            .idle_since
            .is_some_and(|t| now.duration_since(t) >= PENDING_LINGER);
        match &self.pending {
            Pending::Off if receivers > 0 => {
                if let Some(claim) = feed.claim(self.index) {
                    let id = self.id();
                    self.pending = Pending::Asking(id, claim);
                    send(ws, subscribe(id, "newPendingTransactions")).await?;
                }
            }
            Pending::On(sub, _) if idle => {
                let id = self.next_id + 1;
                let bye = unsubscribe(id, sub);
                self.next_id = id;
                // Let go first: the claim is released whether or not the send gets out.
                self.pending = Pending::Off;
                send(ws, bye).await?;
            }
            // An unanswered request is waited for, so its subscription is never lost track of.
            _ => {}
        }
        Ok(())
    }

    /// Best effort, bounded: `eth_unsubscribe` each live subscription, send a close frame, and
    /// read until the upstream's close (a dropped socket fails at once).
    async fn close(&mut self, ws: &mut Socket) {
        let mut subs = Vec::new();
        if let Heads::On(sub) = std::mem::replace(&mut self.heads, Heads::Off) {
            subs.push(sub);
        }
        if let Pending::On(sub, _claim) = std::mem::replace(&mut self.pending, Pending::Off) {
            subs.push(sub);
        }
        let byes: Vec<String> = subs.iter().map(|s| unsubscribe(self.id(), s)).collect();
        let _ = tokio::time::timeout(CLOSE_WITHIN, async {
            for bye in byes {
                if ws.send(Message::text(bye)).await.is_err() {
                    return;
                }
            }
            let frame = CloseFrame {
                code: CloseCode::Normal,
                reason: Utf8Bytes::from_static("edge node closing"),
            };
            if ws.close(Some(frame)).await.is_err() {
                return;
            }
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }
}

async fn send(ws: &mut Socket, text: String) -> Result<(), Ended> {
    send_message(ws, Message::text(text)).await
}

async fn send_message(ws: &mut Socket, msg: Message) -> Result<(), Ended> {
    match tokio::time::timeout(SEND_WITHIN, ws.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(lost(format!("sending failed: {e}"))),
        Err(_) => Err(lost(format!(
            "a send did not finish within {} s",
            SEND_WITHIN.as_secs()
        ))),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolves when the pending feed nudges (never, without a feed).
async fn nudged(rx: &mut Option<watch::Receiver<u64>>) {
    if let Some(rx) = rx {
        if rx.changed().await.is_ok() {
            return;
        }
    }
    std::future::pending::<()>().await;
}

fn subscribe(id: u64, what: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"eth_subscribe","params":["{what}"]}}"#)
}

fn unsubscribe(id: u64, sub: &str) -> String {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "eth_unsubscribe", "params": [sub]})
        .to_string()
}

/// A transaction hash as upstreams send it: `0x` and 64 hex digits.
fn is_hash(s: &str) -> bool {
    s.len() == 66 && s.starts_with("0x") && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// An upstream's text for a log line or an error: at most 200 bytes.
fn clip(s: &str) -> String {
    let mut end = s.len().min(200);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_read_as_answers_or_notifications() {
        let note: Incoming<'_> = serde_json::from_str(
            r#"{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"0xab","result":{"number":"0x1b4","hash":"0x00"}}}"#,
        )
        .unwrap();
        let n = note.params.unwrap();
        assert_eq!(n.subscription, "0xab");
        let h: HeadNumber = serde_json::from_str(n.result.get()).unwrap();
        assert_eq!(parse_hex(&h.number), Some(0x1b4));
        let answer: Incoming<'_> =
            serde_json::from_str(r#"{"jsonrpc":"2.0","id":3,"result":"0xcd"}"#).unwrap();
        assert_eq!(answer.id, Some(3));
        assert!(answer.params.is_none());
        assert_eq!(answer.result.unwrap().get(), r#""0xcd""#);
    }

    #[test]
    fn requests_are_json_rpc() {
        let v: serde_json::Value = serde_json::from_str(&subscribe(1, "newHeads")).unwrap();
        assert_eq!(v["params"][0], "newHeads");
        let v: serde_json::Value = serde_json::from_str(&unsubscribe(2, "0x\"x")).unwrap();
        assert_eq!(v["params"][0], "0x\"x");
        assert_eq!(v["method"], "eth_unsubscribe");
    }

    #[test]
    fn only_hashes_pass_and_upstream_text_is_clipped() {
        assert!(is_hash(&format!("0x{}", "ab".repeat(32))));
        assert!(!is_hash("0x12"));
        assert!(!is_hash(&format!("0x{}", "zz".repeat(32))));
        assert_eq!(clip(&"é".repeat(200)).len(), 200);
    }
}
