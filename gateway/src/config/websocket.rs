//! `[websocket]`: JSON-RPC over WebSocket on the JSON-RPC port, and its subscriptions.

use std::time::Duration;

use serde::Deserialize;

use super::{invalid, Check};
use daemon::config::millis::{self, ms};

pub const DEFAULT_WS_MAX_CONNECTIONS: usize = 20_000;
pub const DEFAULT_WS_MAX_CONNECTIONS_PER_IP: usize = 256;
pub const DEFAULT_WS_MAX_SUBSCRIPTIONS: usize = 100;
pub const DEFAULT_WS_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// About a minute of `newHeads` and logs at a busy chain's pace, far more than a reading
/// client ever has queued.
pub const DEFAULT_WS_SEND_BUFFER: usize = 1024;
pub const DEFAULT_WS_PING_INTERVAL: Duration = Duration::from_secs(20);
pub const DEFAULT_WS_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_WS_MAX_FEEDS: usize = 1024;
pub const DEFAULT_WS_MAX_IN_FLIGHT: usize = 16;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Serve `GET` with `Upgrade: websocket` on the JSON-RPC paths.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Open sockets in all (they do not count against `server.max_connections`).
    #[serde(default = "d_conns")]
    pub max_connections: usize,
    /// Open sockets per client address (the socket's peer; trusted proxies are exempt).
    #[serde(default = "d_conns_per_ip")]
    pub max_connections_per_ip: usize,
    /// `eth_subscribe`s one socket may hold.
    #[serde(default = "d_subs")]
    pub max_subscriptions_per_connection: usize,
    /// Largest message a client may send (bigger ones close the socket with 1009).
    #[serde(default = "d_msg")]
    pub max_message_bytes: usize,
    /// Messages queued for one client; a client that lets it fill is disconnected (1008).
    #[serde(default = "d_buffer")]
    pub send_buffer_messages: usize,
    /// `ping_interval_ms`: how often the gateway pings each socket.
    #[serde(rename = "ping_interval_ms", default = "d_ping", with = "millis")]
    pub ping_interval: Duration,
    /// `idle_timeout_ms`: a socket the client has sent nothing on (not even a pong) for this
    /// long is closed.
    #[serde(rename = "idle_timeout_ms", default = "d_idle", with = "millis")]
    pub idle_timeout: Duration,
    /// Distinct (chain, kind, filter) feeds this gateway follows at once; each is one stream
    /// to a node.
    #[serde(default = "d_feeds")]
    pub max_feeds: usize,
    /// Requests one socket may have in flight; it is not read further until one finishes.
    #[serde(default = "d_in_flight")]
    pub max_in_flight_per_connection: usize,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_connections: DEFAULT_WS_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_WS_MAX_CONNECTIONS_PER_IP,
            max_subscriptions_per_connection: DEFAULT_WS_MAX_SUBSCRIPTIONS,
            max_message_bytes: DEFAULT_WS_MAX_MESSAGE_BYTES,
            send_buffer_messages: DEFAULT_WS_SEND_BUFFER,
            ping_interval: DEFAULT_WS_PING_INTERVAL,
            idle_timeout: DEFAULT_WS_IDLE_TIMEOUT,
            max_feeds: DEFAULT_WS_MAX_FEEDS,
            max_in_flight_per_connection: DEFAULT_WS_MAX_IN_FLIGHT,
        }
    }
}

fn yes() -> bool {
    true
}
fn d_conns() -> usize {
    DEFAULT_WS_MAX_CONNECTIONS
}
fn d_conns_per_ip() -> usize {
    DEFAULT_WS_MAX_CONNECTIONS_PER_IP
}
fn d_subs() -> usize {
    DEFAULT_WS_MAX_SUBSCRIPTIONS
}
fn d_msg() -> usize {
    DEFAULT_WS_MAX_MESSAGE_BYTES
}
fn d_buffer() -> usize {
    DEFAULT_WS_SEND_BUFFER
}
fn d_ping() -> Duration {
    DEFAULT_WS_PING_INTERVAL
}
fn d_idle() -> Duration {
    DEFAULT_WS_IDLE_TIMEOUT
}
fn d_feeds() -> usize {
    DEFAULT_WS_MAX_FEEDS
}
fn d_in_flight() -> usize {
    DEFAULT_WS_MAX_IN_FLIGHT
}

pub(super) fn check_websocket(w: &WebSocketConfig) -> Check {
    for (key, v) in [
        ("websocket.max_connections", w.max_connections),
        ("websocket.max_connections_per_ip", w.max_connections_per_ip),
        (
            "websocket.max_subscriptions_per_connection",
            w.max_subscriptions_per_connection,
        ),
        ("websocket.send_buffer_messages", w.send_buffer_messages),
        ("websocket.max_feeds", w.max_feeds),
        (
            "websocket.max_in_flight_per_connection",
            w.max_in_flight_per_connection,
        ),
    ] {
        if v == 0 {
            return Err(invalid(key, "must be at least 1"));
        }
    }
    if w.max_message_bytes < 1024 {
        return Err(invalid(
            "websocket.max_message_bytes",
            "must be at least 1024",
        ));
    }
    if w.ping_interval < Duration::from_millis(100) {
        return Err(invalid(
            "websocket.ping_interval_ms",
            "must be at least 100",
        ));
    }
    if w.idle_timeout <= w.ping_interval {
        return Err(invalid(
            "websocket.idle_timeout_ms",
            format!(
                "must be longer than ping_interval_ms ({} ms): pongs are what keep a quiet socket open",
                ms(w.ping_interval)
            ),
        ));
    }
    Ok(())
}
