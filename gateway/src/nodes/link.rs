//! The gateway's side of the node link: accept QUIC connections, check the join (token,
//! protocol version, and that the claimed node id is the one the TLS key proves), register the
//! node, and read its status reports until it goes away.

use std::sync::Arc;
use std::time::Duration;

use proto::frame::{self, FrameError, FrameType};
use proto::msg::{self, Head, Hello, Reject, Status, Welcome};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::capability::Held;
use super::mux::{Mux, MuxFailure};
use super::registry::{Node, Registry};
use super::tip::Marks;
use crate::config::QuicConfig;
use crate::ops::metrics::Metrics;
use crate::ops::status::Recent;

/// What accepting nodes needs.
pub struct Link {
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub recent: Arc<Recent>,
    /// This gateway's key fingerprint and name, sent in `Welcome`.
    pub gateway_id: String,
    pub gateway_name: String,
    pub quic: QuicConfig,
    /// Raised from the heads healthy nodes announce.
    pub marks: Arc<Marks>,
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("no control stream within the join deadline")]
    Timeout,
    #[error("protocol: {0}")]
    Frame(#[from] FrameError),
    #[error("connection: {0}")]
    Conn(#[from] quinn::ConnectionError),
    #[error("refused: {0}")]
    Refused(String),
    #[error("silent for {0:?}")]
    Silent(Duration),
    #[error("{0}")]
    Mux(#[from] MuxFailure),
}

const JOIN_DEADLINE: Duration = Duration::from_secs(5);
const MAX_CONTROL_FRAME: usize = 256 * 1024;

pub async fn accept_loop(app: Arc<Link>, endpoint: quinn::Endpoint, stop: CancellationToken) {
    loop {
        let incoming = tokio::select! {
            _ = stop.cancelled() => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let app = app.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    app.metrics
                        .node_joins
                        .with_label_values(&["tls_failed"])
                        .inc();
                    app.metrics
                        .quic_events
                        .with_label_values(&["handshake_failed"])
                        .inc();
                    tracing::warn!(%remote, error = %e, "node handshake failed");
                    return;
                }
            };
            app.metrics
                .quic_events
                .with_label_values(&["handshake_ok"])
                .inc();
            let res = session(&app, conn).await;
            app.metrics
                .quic_events
                .with_label_values(&[session_end(&res)])
                .inc();
            if let Err(e) = res {
                tracing::warn!(%remote, error = %e, "node session ended");
            }
        });
    }
    endpoint.close(0u32.into(), b"gateway shutting down");
}

async fn session(app: &Link, conn: quinn::Connection) -> Result<(), JoinError> {
    let (mut send, mut recv) = tokio::time::timeout(JOIN_DEADLINE, conn.accept_bi())
        .await
        .map_err(|_| JoinError::Timeout)??;
    let first = tokio::time::timeout(
        JOIN_DEADLINE,
        frame::read_frame(&mut recv, MAX_CONTROL_FRAME),
    )
    .await
    .map_err(|_| JoinError::Timeout)??
    .ok_or(JoinError::Timeout)?;
    let hello: Hello = msg::decode_json("Hello", &first.expect(FrameType::Hello)?)?;

    if let Err(reason) = check_join(app, &conn, &hello) {
        app.metrics.node_joins.with_label_values(&["refused"]).inc();
        tracing::warn!(node = %hello.node_id, region = %hello.region, %reason, "join refused");
        let _ = send
            .write_all(&msg::encode_json(
                FrameType::Reject,
                &Reject {
                    reason: reason.clone(),
                },
            ))
            .await;
        let _ = send.finish();
        // Give the Reject a moment to reach the node before closing.
        tokio::time::sleep(Duration::from_millis(100)).await;
        conn.close(1u32.into(), reason.as_bytes());
        return Err(JoinError::Refused(reason));
    }

    // The request stream: the node sees it with the first request.
    let (mux_send, mux_recv) = conn.open_bi().await?;
    let (mux, mux_driver) = Mux::new(mux_send, mux_recv, app.quic.max_frame_bytes);
    // A task of its own, so that answers arriving do not also poll the control stream.
    let mut mux_task = AbortOnDropHandle::new(tokio::spawn(mux_driver));
    let node = Arc::new(Node::new(&hello, conn.clone(), mux));
    let welcome = Welcome {
        gateway_id: app.gateway_id.clone(),
        status_interval_ms: app.quic.status_interval.as_millis() as u64,
        gateway_name: app.gateway_name.clone(),
    };
    // Registered before the Welcome goes out, so a node that has been welcomed is known.
    app.registry.insert(node.clone());
    if let Err(e) = send
        .write_all(&msg::encode_json(FrameType::Welcome, &welcome))
        .await
    {
        app.registry.remove(&node);
        return Err(JoinError::Frame(FrameError::Io(std::io::Error::other(e))));
    }
    app.metrics.node_joins.with_label_values(&["joined"]).inc();
    tracing::info!(
        node = %node.id,
        region = %node.region,
        remote = %conn.remote_address(),
        chains = ?node.chains,
        "node joined"
    );

    let deadline = app.quic.status_deadline;
    let res = tokio::select! {
        r = read_status(&node, &app.marks, &mut recv, deadline) => r,
        r = &mut mux_task => r.unwrap_or(Err(MuxFailure::Finished)).map_err(JoinError::from),
        r = large_answers(&node, &conn, app.quic.max_frame_bytes) => r,
    };
    if app.registry.remove(&node) {
        let reason = describe(&res, &conn);
        tracing::warn!(node = %node.id, region = %node.region, %reason, "node removed");
        app.recent.departed(&node, reason);
    }
    conn.close(0u32.into(), b"session over");
    res
}

fn check_join(app: &Link, conn: &quinn::Connection, hello: &Hello) -> Result<(), String> {
    if hello.protocol != proto::PROTOCOL_VERSION {
        return Err(format!(
            "protocol {} is not supported (gateway speaks {})",
            hello.protocol,
            proto::PROTOCOL_VERSION
        ));
    }
    if !app
        .quic
        .join_tokens
        .iter()
        .any(|t| constant_time_eq(t.as_bytes(), hello.token.as_bytes()))
    {
        return Err("bad join token".into());
    }
    match proto::tls::peer_node_id(conn) {
        Some(id) if id == hello.node_id => {}
        Some(id) => {
            return Err(format!(
                "claimed node id {} does not match the TLS key's id {id}",
                hello.node_id
            ))
        }
        None => return Err("no client certificate".into()),
    }
    if !(-90.0..=90.0).contains(&hello.latitude) || !(-180.0..=180.0).contains(&hello.longitude) {
        return Err("coordinates out of range".into());
    }
    if hello.region.is_empty() || hello.region.len() > 64 || hello.chains.is_empty() {
        return Err("region (1-64 chars) and at least one chain are required".into());
    }
    if app.registry.len() >= app.quic.max_nodes && app.registry.get(&hello.node_id).is_none() {
        return Err("gateway is at its node limit".into());
    }
    Ok(())
}

/// Reads status reports; a node silent past `deadline` is dropped, which also fails over its
/// in-flight requests (a SIGKILLed node sends nothing, so silence is the only signal).
async fn read_status(
    node: &Arc<Node>,
    marks: &Marks,
    recv: &mut quinn::RecvStream,
    deadline: Duration,
) -> Result<(), JoinError> {
    loop {
        tokio::select! {
            _ = node.gone.cancelled() => return Ok(()),
            f = tokio::time::timeout(deadline, frame::read_frame(recv, MAX_CONTROL_FRAME)) => {
                let Ok(f) = f else { return Err(JoinError::Silent(deadline)) };
                let Some(f) = f? else { return Ok(()) };
                match f.ty {
                    FrameType::Head => {
                        let head: Head = msg::decode_json("Head", &f.payload)?;
                        if !node.raise_state_version(head.chain_id, head.state_version) {
                            return Err(JoinError::Frame(FrameError::Malformed(
                                "Head",
                                format!("chain {} was not in the node's Hello", head.chain_id),
                            )));
                        }
                        node.raise_head(head.chain_id, head.head_number);
                        if node.health(head.chain_id).healthy {
                            marks.announced(head.chain_id, head.head_number, None);
                        }
                    }
                    _ => {
                        let status: Status =
                            msg::decode_json("Status", &f.expect(FrameType::Status)?)?;
                        for c in &status.chains {
                            node.raise_head(c.chain_id, c.head_number);
                            if let Some(f) = c.finalized_number {
                                node.raise_finalized(c.chain_id, f);
                            }
                            node.set_capabilities(c.chain_id, c.capabilities.as_ref().map(Held::from));
                            if node.health(c.chain_id).healthy {
                                marks.announced(c.chain_id, c.head_number, c.finalized_number);
                            }
                        }
                        node.record_status(status);
                    }
                }
            }
        }
    }
}

/// Answers too large for the request stream, each on a stream the node opened for it. Only an
/// answer some call is waiting for is read (others are stopped at their header); a stream that
/// fails or is malformed fails its own call, not the connection.
async fn large_answers(
    node: &Arc<Node>,
    conn: &quinn::Connection,
    max: usize,
) -> Result<(), JoinError> {
    loop {
        let mut recv = conn.accept_uni().await?;
        let node = node.clone();
        // Its own task: a large answer arriving slowly must not hold up the next one.
        tokio::spawn(async move {
            let mut header = [0u8; 5 + msg::TAG_BYTES];
            if recv.read_exact(&mut header).await.is_err() {
                return;
            }
            let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let tag = u64::from_be_bytes(header[5..].try_into().expect("8 bytes"));
            if header[4] != FrameType::TaggedResponse as u8 || !node.mux.is_waiting(tag) {
                let _ = recv.stop(0u32.into());
                return;
            }
            let answer = if len > max {
                let _ = recv.stop(0u32.into());
                Err(format!(
                    "answer of {len} bytes exceeds the {max}-byte frame limit"
                ))
            } else {
                match recv
                    .read_to_end((4 + len + 1).saturating_sub(header.len()))
                    .await
                {
                    Ok(rest) if rest.len() + header.len() == 4 + len => Ok(rest.into()),
                    Ok(_) => Err("answer stream ended early or ran on".to_string()),
                    Err(e) => Err(e.to_string()),
                }
            };
            node.mux.deliver_large(tag, answer);
        });
    }
}

/// The `gateway_quic_connection_events_total{event}` value for how a session ended.
fn session_end(res: &Result<(), JoinError>) -> &'static str {
    use quinn::ConnectionError as E;
    match res {
        Ok(()) => "closed",
        Err(JoinError::Timeout) => "join_timeout",
        Err(JoinError::Refused(_)) => "join_refused",
        Err(JoinError::Silent(_)) => "silent",
        // A read failing because the node closed the connection is just its goodbye.
        Err(e) => match connection_error(e) {
            Some(E::ApplicationClosed(_) | E::ConnectionClosed(_)) => "closed",
            Some(_) => "lost",
            None => "protocol_error",
        },
    }
}

/// The connection-level cause behind a session error, if there is one.
fn connection_error(e: &JoinError) -> Option<&quinn::ConnectionError> {
    let io = match e {
        JoinError::Conn(c) => return Some(c),
        JoinError::Frame(FrameError::Io(io)) => io,
        JoinError::Mux(MuxFailure::Frame(FrameError::Io(io))) => io,
        _ => return None,
    };
    let inner = io.get_ref()?;
    if let Some(quinn::ReadError::ConnectionLost(c)) = inner.downcast_ref() {
        return Some(c);
    }
    match inner.downcast_ref()? {
        quinn::WriteError::ConnectionLost(c) => Some(c),
        _ => None,
    }
}

fn describe(res: &Result<(), JoinError>, conn: &quinn::Connection) -> String {
    match (res, conn.close_reason()) {
        (Err(e), _) => e.to_string(),
        (Ok(()), Some(r)) => r.to_string(),
        (Ok(()), None) => "control stream closed".into(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
