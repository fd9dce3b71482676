//! Sends calls to edge nodes and fails over: one QUIC stream per attempt, the next candidate on
//! a transport error, a lost node, a refused stream or a node-side failure, all within the
//! request's deadline. Application errors from the chain (e.g. `execution reverted`) are final.

use std::sync::Arc;

use bytes::Bytes;
use proto::frame::{self, FrameType};
use proto::msg::{CacheStatus, Call, CallResult, Outcome, RpcRequest, RpcResponse};
use proto::rpc;
use tokio::time::Instant;

use crate::registry::{InFlight, Node};
use crate::sendraw;
use crate::App;

#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error("node left")]
    NodeGone,
    #[error("timed out")]
    Timeout,
    #[error("stream: {0}")]
    Stream(String),
    #[error("bad response: {0}")]
    Protocol(String),
}

impl AttemptError {
    pub fn reason(&self) -> &'static str {
        match self {
            AttemptError::NodeGone => "node_gone",
            AttemptError::Timeout => "timeout",
            AttemptError::Stream(_) => "stream_error",
            AttemptError::Protocol(_) => "protocol_error",
        }
    }
}

/// The outcome of dispatching one request.
pub struct Dispatched {
    pub results: Vec<CallResult>,
    /// The node that answered the last attempt (shown in `x-edge-node`), if any did.
    pub node: Option<Arc<Node>>,
    /// Per call: the node and chain-state version its answer is tied to (`at_state`), if so.
    pub tied: Vec<Option<(Arc<Node>, u64)>>,
}

/// Dispatches `calls` for `chain_id` to `ranked` nodes in order until every call has a final
/// answer or the candidates or the deadline run out.
pub async fn dispatch(
    app: &App,
    chain_id: u64,
    request_id: &str,
    calls: Vec<Call>,
    ranked: Vec<Arc<Node>>,
    deadline: Instant,
) -> Dispatched {
    let n = calls.len();
    let mut results: Vec<Option<CallResult>> = vec![None; n];
    let mut tied: Vec<Option<(Arc<Node>, u64)>> = vec![None; n];
    let mut pending: Vec<usize> = (0..n).collect();
    let mut node_used = None;
    let mut last_error: Option<String> = None;
    let mut candidates = ranked.into_iter();
    // Calls an earlier attempt may have delivered (a transaction may already be in a pool).
    let mut maybe_sent = vec![false; n];

    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            last_error = Some(format!(
                "request timed out after {} ms",
                app.config.server.request_timeout.as_millis()
            ));
            break;
        }
        let Some(node) = candidates.next() else { break };
        let req = RpcRequest {
            chain_id,
            request_id: request_id.to_string(),
            budget_ms: left.as_millis().min(u128::from(u32::MAX)) as u32,
            calls: pending.iter().map(|&i| calls[i].clone()).collect(),
        };
        let res = attempt(app, &node, req.encode(), deadline).await;
        // The breaker counts the node's own failures (transport, protocol), not its upstream's
        // trouble with a request (a heavy call timing out), which node errors report.
        let ok = matches!(&res, Ok(r) if r.results.len() == pending.len());
        node.record_attempt(ok);
        match res {
            Ok(resp) if resp.results.len() == pending.len() => {
                node_used = Some(node.clone());
                if let Some(v) = resp.state_version {
                    // A response can overtake the `Head` frame announcing its state.
                    node.raise_state_version(chain_id, v);
                }
                node.cache.record(&resp.results);
                let mut still = Vec::new();
                for (&i, r) in pending.iter().zip(resp.results) {
                    match &r.outcome {
                        // The node could not answer (its upstream failed): try the next node,
                        // but keep this answer in case none can.
                        Outcome::NodeError(_) => {
                            app.metrics
                                .failovers
                                .with_label_values(&["node_error"])
                                .inc();
                            app.recent
                                .failover(&node, chain_id, request_id, "node_error");
                            still.push(i);
                            maybe_sent[i] = true;
                            results[i] = Some(r);
                        }
                        _ => match sendraw::settle(&calls[i], maybe_sent[i], r) {
                            sendraw::Settled::Final(r) => {
                                if let (true, Some(v)) = (r.at_state, resp.state_version) {
                                    tied[i] = Some((node.clone(), v));
                                }
                                results[i] = Some(r)
                            }
                            sendraw::Settled::Confirm { hash, otherwise } => {
                                let c = Confirm {
                                    node: &node,
                                    chain_id,
                                    request_id,
                                    deadline,
                                };
                                results[i] = Some(c.run(app, hash, otherwise).await)
                            }
                        },
                    }
                }
                pending = still;
            }
            Ok(resp) => {
                let e = AttemptError::Protocol(format!(
                    "{} results for {} calls",
                    resp.results.len(),
                    pending.len()
                ));
                tracing::warn!(node = %node.id, error = %e, "node answered badly");
                pending.iter().for_each(|&i| maybe_sent[i] = true);
                app.metrics.failovers.with_label_values(&[e.reason()]).inc();
                app.recent.failover(&node, chain_id, request_id, e.reason());
                last_error = Some(e.to_string());
            }
            Err(e) => {
                tracing::debug!(node = %node.id, error = %e, "attempt failed; failing over");
                pending.iter().for_each(|&i| maybe_sent[i] = true);
                app.metrics.failovers.with_label_values(&[e.reason()]).inc();
                app.recent.failover(&node, chain_id, request_id, e.reason());
                last_error = Some(match e {
                    AttemptError::Timeout => format!(
                        "request timed out after {} ms",
                        app.config.server.request_timeout.as_millis()
                    ),
                    other => format!("edge node failed: {other}"),
                });
            }
        }
    }

    let fallback = |msg: &Option<String>| CallResult {
        cache: CacheStatus::Bypass,
        outcome: Outcome::Error(match msg {
            Some(m) => rpc::error_object(rpc::INTERNAL_ERROR, m),
            None => rpc::error_object(
                rpc::NO_NODE,
                format!("no healthy edge node for chain {chain_id}"),
            ),
        }),
        final_answer: false,
        at_state: false,
    };
    Dispatched {
        results: results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| fallback(&last_error)))
            .collect(),
        node: node_used,
        tied,
    }
}

/// Asks a node whether the chain knows a transaction: if so a retried send succeeded (its first
/// copy got there), else the error stands.
struct Confirm<'a> {
    node: &'a Arc<Node>,
    chain_id: u64,
    request_id: &'a str,
    deadline: Instant,
}

impl Confirm<'_> {
    async fn run(&self, app: &App, hash: String, otherwise: CallResult) -> CallResult {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let req = RpcRequest {
            chain_id: self.chain_id,
            request_id: self.request_id.to_string(),
            budget_ms: left.as_millis().min(u128::from(u32::MAX)) as u32,
            calls: vec![Call {
                method: "eth_getTransactionByHash".into(),
                params: format!("[\"{hash}\"]").into(),
            }],
        };
        let known = match attempt(app, self.node, req.encode(), self.deadline).await {
            Ok(r) => matches!(r.results.first(),
                Some(CallResult { outcome: Outcome::Result(b), .. }) if &b[..] != b"null"),
            Err(_) => false,
        };
        if known {
            sendraw::sent(hash, &otherwise)
        } else {
            otherwise
        }
    }
}

/// Answers every call with the same routing error (nothing was sent).
pub fn unserved(calls: &[Call], message: &str) -> Dispatched {
    let err = rpc::error_object(rpc::NO_NODE, message);
    Dispatched {
        results: calls
            .iter()
            .map(|_| CallResult {
                cache: CacheStatus::Bypass,
                outcome: Outcome::Error(err.clone()),
                final_answer: false,
                at_state: false,
            })
            .collect(),
        node: None,
        tied: vec![None; calls.len()],
    }
}

async fn attempt(
    app: &App,
    node: &Arc<Node>,
    frame_bytes: Bytes,
    deadline: Instant,
) -> Result<RpcResponse, AttemptError> {
    let _load = InFlight::new(node.clone());
    let max = app.config.quic.max_frame_bytes;
    let work = async {
        let (mut send, mut recv) = node
            .conn
            .open_bi()
            .await
            .map_err(|e| AttemptError::Stream(e.to_string()))?;
        send.write_all(&frame_bytes)
            .await
            .map_err(|e| AttemptError::Stream(e.to_string()))?;
        let _ = send.finish();
        let buf = recv
            .read_to_end(max)
            .await
            .map_err(|e| AttemptError::Stream(e.to_string()))?;
        let f = frame::decode_one(buf.into(), max)
            .and_then(|f| f.expect(FrameType::RpcResponse))
            .map_err(|e| AttemptError::Protocol(e.to_string()))?;
        RpcResponse::decode(f).map_err(|e| AttemptError::Protocol(e.to_string()))
    };
    tokio::select! {
        r = work => r,
        _ = node.gone.cancelled() => Err(AttemptError::NodeGone),
        _ = tokio::time::sleep_until(deadline) => Err(AttemptError::Timeout),
    }
}
