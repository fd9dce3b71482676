//! `[server]` (the JSON-RPC listener and its limits) and `[quic]` (the node link).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, Check};
use daemon::config::millis::{self, ms};

pub const DEFAULT_MAX_BODY_BYTES: usize = 5 * 1024 * 1024;
pub const DEFAULT_MAX_BATCH: usize = 1000;
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_millis(30_000);
/// Below about a kilobyte gzip saves little and costs a CPU pass per response.
pub const DEFAULT_COMPRESS_MIN_BYTES: usize = 1024;
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_millis(10_000);
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_millis(10_000);
/// Longer than the pools of common clients keep a connection unused (undici 4 s, web3.py's
/// urllib3 until the server closes), short enough that idle keep-alive connections do not pile up.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_millis(30_000);
/// Far above what one caller needs (browsers open 6 per host, the load tests 32) and far below
/// `DEFAULT_MAX_CONNECTIONS`, so no single address can take the listener.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;
/// Status every 250 ms and a 750 ms silence deadline: a crashed node's traffic moves in under
/// a second, for a few bytes per node per report.
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_millis(250);
pub const DEFAULT_STATUS_DEADLINE: Duration = Duration::from_millis(750);
pub const DEFAULT_MAX_FRAME_BYTES: usize = proto::DEFAULT_MAX_FRAME_BYTES;
pub const DEFAULT_MAX_NODES: usize = 10_000;
/// Bound on `server.worker_threads`.
pub const MAX_WORKER_THREADS: usize = 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// This gateway's name: in `x-gateway` on every answer, on the status page, in the
    /// welcome nodes report back, and (with several gateways) whose measurements are whose, so
    /// unique among gateways sharing a Redis. Default: the host name.
    #[serde(default = "d_name")]
    pub name: String,
    /// JSON-RPC listener (HTTP/1.1 and h2c).
    pub listen: SocketAddr,
    /// Admin listener: `/metrics`, `/healthz`, `/readyz`.
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    #[serde(default = "d_body")]
    pub max_body_bytes: usize,
    #[serde(default = "d_batch")]
    pub max_batch: usize,
    /// `request_timeout_ms`: the whole request, failovers included.
    #[serde(
        rename = "request_timeout_ms",
        default = "d_req_timeout",
        with = "millis"
    )]
    pub request_timeout: Duration,
    /// Open client connections. When full, the connection idle the longest is closed to make
    /// room; with none idle, the new one is refused.
    #[serde(default = "d_max_conn")]
    pub max_connections: usize,
    /// Open client connections from one address (an IPv6 /64); trusted proxies are exempt.
    #[serde(default = "d_max_conn_per_ip")]
    pub max_connections_per_ip: usize,
    /// `header_timeout_ms`: a new connection must have sent its first request's headers within
    /// this time, or it is closed.
    #[serde(
        rename = "header_timeout_ms",
        default = "d_header_timeout",
        with = "millis"
    )]
    pub header_timeout: Duration,
    /// `idle_timeout_ms`: a connection with no request in flight that starts no new request
    /// within this time (since its last response was ready) is closed (HTTP/1.1 and HTTP/2).
    #[serde(
        rename = "idle_timeout_ms",
        default = "d_idle_timeout",
        with = "millis"
    )]
    pub idle_timeout: Duration,
    /// `body_timeout_ms`: a client must finish sending its request body within this time.
    #[serde(
        rename = "body_timeout_ms",
        default = "d_body_timeout",
        with = "millis"
    )]
    pub body_timeout: Duration,
    /// Answers of at least this many bytes go out gzip-encoded to callers that accept it
    /// (`Accept-Encoding`); 0 turns compression of answers off.
    #[serde(default = "d_compress_min")]
    pub compress_min_bytes: usize,
    /// Runtime worker threads; 0 (the default) means one per CPU core but one, at least one
    /// ([`daemon::runtime`]). With one, a request never changes threads on its way through
    /// (a current-thread runtime: no cross-thread wakeups, the lowest latency while one core
    /// keeps up); more threads serve more cores.
    #[serde(default)]
    pub worker_threads: usize,
    /// Bearer token for `/admin/*` on the admin listener (at least 16 characters); without
    /// one those endpoints answer 403.
    #[serde(default)]
    pub admin_token: Option<Secret>,
}

/// A credential from the config: compared, never printed.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Secret {
    /// Equal to `given`, in time that depends on neither where they differ nor their lengths
    /// (their digests are compared).
    pub fn matches(&self, given: &str) -> bool {
        use sha2::{Digest, Sha256};
        let (a, b) = (Sha256::digest(&self.0), Sha256::digest(given));
        a.iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuicConfig {
    /// UDP address edge nodes dial.
    pub listen: SocketAddr,
    /// The gateway's private key (PEM), created on first start; relative to the config file.
    pub key_file: PathBuf,
    /// Tokens that let a node join. Any one matches.
    pub join_tokens: Vec<String>,
    /// `status_interval_ms`: how often nodes report (sent to them in whole milliseconds).
    #[serde(
        rename = "status_interval_ms",
        default = "d_status_interval",
        with = "millis"
    )]
    pub status_interval: Duration,
    /// `status_deadline_ms`: a node silent for this long is dropped from routing.
    #[serde(
        rename = "status_deadline_ms",
        default = "d_status_deadline",
        with = "millis"
    )]
    pub status_deadline: Duration,
    #[serde(default = "d_frame")]
    pub max_frame_bytes: usize,
    #[serde(default = "d_max_nodes")]
    pub max_nodes: usize,
}

impl std::fmt::Debug for QuicConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicConfig")
            .field("listen", &self.listen)
            .field("key_file", &self.key_file)
            .field("join_tokens", &"MASKED")
            .field("status_interval", &self.status_interval)
            .field("status_deadline", &self.status_deadline)
            .finish()
    }
}

fn d_body() -> usize {
    DEFAULT_MAX_BODY_BYTES
}
fn d_batch() -> usize {
    DEFAULT_MAX_BATCH
}
fn d_req_timeout() -> Duration {
    DEFAULT_REQUEST_TIMEOUT
}
fn d_compress_min() -> usize {
    DEFAULT_COMPRESS_MIN_BYTES
}
fn d_max_conn() -> usize {
    DEFAULT_MAX_CONNECTIONS
}
fn d_max_conn_per_ip() -> usize {
    DEFAULT_MAX_CONNECTIONS_PER_IP
}
fn d_header_timeout() -> Duration {
    DEFAULT_HEADER_TIMEOUT
}
fn d_idle_timeout() -> Duration {
    DEFAULT_IDLE_TIMEOUT
}
fn d_body_timeout() -> Duration {
    DEFAULT_BODY_TIMEOUT
}
fn d_status_interval() -> Duration {
    DEFAULT_STATUS_INTERVAL
}
fn d_status_deadline() -> Duration {
    DEFAULT_STATUS_DEADLINE
}
fn d_frame() -> usize {
    DEFAULT_MAX_FRAME_BYTES
}
fn d_max_nodes() -> usize {
    DEFAULT_MAX_NODES
}

/// Keys that must not be zero.
fn check_positive(keys: &[(&str, u128)]) -> Check {
    match keys.iter().find(|(_, v)| *v == 0) {
        Some((key, _)) => Err(invalid(*key, "must be greater than 0")),
        None => Ok(()),
    }
}

/// The name when the host's is unusable.
pub const DEFAULT_GATEWAY_NAME: &str = "gateway";

/// The host name (unique per machine and per Kubernetes pod, so gateways sharing a Redis differ
/// without configuring), else [`DEFAULT_GATEWAY_NAME`].
fn d_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| name_ok(h))
        .unwrap_or_else(|| DEFAULT_GATEWAY_NAME.to_string())
}

fn name_ok(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

pub(super) fn check_server(s: &ServerConfig) -> Check {
    if !name_ok(&s.name) {
        return Err(invalid(
            "server.name",
            format!(
                "{:?} must be 1 to 64 letters, digits, '-', '_' or '.'",
                s.name
            ),
        ));
    }
    check_positive(&[
        ("server.max_body_bytes", s.max_body_bytes as u128),
        ("server.max_batch", s.max_batch as u128),
        ("server.request_timeout_ms", ms(s.request_timeout)),
        ("server.max_connections", s.max_connections as u128),
        (
            "server.max_connections_per_ip",
            s.max_connections_per_ip as u128,
        ),
        ("server.header_timeout_ms", ms(s.header_timeout)),
        ("server.idle_timeout_ms", ms(s.idle_timeout)),
        ("server.body_timeout_ms", ms(s.body_timeout)),
    ])?;
    if s.worker_threads > MAX_WORKER_THREADS {
        return Err(invalid(
            "server.worker_threads",
            format!("{} is more than {MAX_WORKER_THREADS}", s.worker_threads),
        ));
    }
    if let Some(t) = &s.admin_token {
        if t.0.len() < 16 || t.0.chars().any(char::is_whitespace) {
            return Err(invalid(
                "server.admin_token",
                "must be at least 16 characters, without spaces",
            ));
        }
    }
    Ok(())
}

/// `[quic]`, and its frame bound against `server.max_body_bytes`.
pub(super) fn check_quic(q: &QuicConfig, s: &ServerConfig) -> Check {
    check_positive(&[
        ("quic.status_interval_ms", ms(q.status_interval)),
        ("quic.max_nodes", q.max_nodes as u128),
    ])?;
    // Nodes clamp the interval they are asked for to this range (edge_node::link).
    if !(100..=1000).contains(&ms(q.status_interval)) {
        return Err(invalid(
            "quic.status_interval_ms",
            format!(
                "{} is not in 100..=1000 (nodes report at most that often and at least that rarely)",
                ms(q.status_interval)
            ),
        ));
    }
    if q.status_deadline <= q.status_interval {
        return Err(invalid(
            "quic.status_deadline_ms",
            format!(
                "({}) must be longer than quic.status_interval_ms ({})",
                ms(q.status_deadline),
                ms(q.status_interval)
            ),
        ));
    }
    if q.max_frame_bytes < s.max_body_bytes + 1024 {
        return Err(invalid(
            "quic.max_frame_bytes",
            "must exceed server.max_body_bytes by at least 1024",
        ));
    }
    if q.join_tokens.is_empty() || q.join_tokens.iter().any(|t| t.len() < 8) {
        return Err(invalid(
            "quic.join_tokens",
            "needs at least one token, each at least 8 characters",
        ));
    }
    Ok(())
}
