//! Sends calls to edge nodes and fails over: one call on the node's request stream per
//! attempt ([`super::mux`]), the next candidate on a transport error, a lost node, a refusal
//! or a node-side failure, all within the request's deadline. Application errors from the chain (e.g. `execution reverted`) are final.
//! A read the first node is late with is raced against the next node (hedged, see
//! [`super::hedge`]); writes never are.

use std::iter::Peekable;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proto::frame::FrameError;
use proto::msg::{CacheStatus, Call, CallResult, Outcome, RpcRequest, RpcResponse};
use proto::rpc;
use tokio::time::Instant;

use super::hedge::{self, Class, Hedging};
use super::mux::MuxError;
use super::registry::{InFlight, Node};
use super::sendraw;
use crate::config::{Config, MethodTimeouts};
use crate::ops::metrics::Metrics;
use crate::ops::status::Recent;

#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error("node left")]
    NodeGone,
    #[error("timed out")]
    Timeout,
    #[error("stream: {0}")]
    Mux(#[from] MuxError),
    #[error("bad response: {0}")]
    Frame(#[from] FrameError),
    /// A well-formed response that does not fit the request (e.g. its call count).
    #[error("bad response: {0}")]
    Protocol(String),
}

impl AttemptError {
    pub fn reason(&self) -> &'static str {
        match self {
            AttemptError::NodeGone => "node_gone",
            AttemptError::Timeout => "timeout",
            AttemptError::Mux(MuxError::Busy) => "busy",
            AttemptError::Mux(_) => "stream_error",
            AttemptError::Frame(_) | AttemptError::Protocol(_) => "protocol_error",
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
    /// Per call: the node whose answer it is (`None`: the gateway's own error).
    pub from: Vec<Option<Arc<Node>>>,
}

/// Per request at most: limited, so no node (or caller) writes the log at its rate.
static BAD_ANSWER_LOG: daemon::loglimit::LogLimit = daemon::loglimit::LogLimit::new(10, 60);

/// Sends calls to nodes: what every attempt needs.
pub struct Dispatcher {
    metrics: Arc<Metrics>,
    recent: Arc<Recent>,
    /// `server.request_timeout_ms`, and `[timeouts]` over it for some methods.
    request_timeout: Duration,
    timeouts: MethodTimeouts,
    hedging: Hedging,
}

impl Dispatcher {
    pub fn new(metrics: Arc<Metrics>, recent: Arc<Recent>, config: &Config) -> Self {
        Self {
            recent,
            request_timeout: config.server.request_timeout,
            timeouts: config.timeouts.clone(),
            hedging: Hedging::new(&config.hedge, &metrics),
            metrics,
        }
    }

    /// Counts a failover away from `node` and keeps it for the status page.
    fn failed_over(&self, node: &Node, chain_id: u64, request_id: &str, reason: &'static str) {
        self.metrics.failovers.with_label_values(&[reason]).inc();
        self.recent.failover(node, chain_id, request_id, reason);
    }

    fn timed_out(&self, calls: &[Call]) -> String {
        format!(
            "request timed out after {} ms",
            self.timeout_for(calls).as_millis()
        )
    }

    /// The timeout of a request made of `calls`: `[timeouts]` for their methods (the largest),
    /// else `server.request_timeout_ms`.
    pub fn timeout_for(&self, calls: &[Call]) -> Duration {
        self.timeouts.for_methods(
            calls.iter().map(|c| c.method.as_str()),
            self.request_timeout,
        )
    }

    /// Dispatches `calls` for `chain_id` to `ranked` nodes in order until every call has a
    /// final answer or the candidates or the deadline run out; a read the node is late with
    /// also goes to the next node ([`super::hedge`]). `min_head`: see [`RpcRequest::min_head`].
    pub async fn dispatch(
        &self,
        chain_id: u64,
        request_id: &str,
        calls: Vec<Call>,
        (ranked, min_head): (Vec<Arc<Node>>, u64),
        deadline: Instant,
    ) -> Dispatched {
        let class = hedge::request_class(&calls);
        let hedged = self.hedging.admit(class);
        let mut p = Progress::new(calls);
        let mut candidates = ranked.into_iter().peekable();
        while !p.pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                p.last_error = Some(self.timed_out(&p.calls));
                break;
            }
            let Some(node) = candidates.next() else { break };
            let frame = RpcRequest::encode_parts(
                chain_id,
                request_id,
                left.as_millis().min(u128::from(u32::MAX)) as u32,
                min_head,
                p.pending.iter().map(|&i| &p.calls[i]),
            );
            let done = match class {
                Some(class) if hedged && candidates.peek().is_some() => {
                    let race = Race {
                        class,
                        expect: p.pending.len(),
                        deadline,
                    };
                    self.race(&race, node, frame, &mut candidates).await
                }
                _ => {
                    let res = self.timed_attempt(&node, class, frame, deadline).await;
                    vec![(node, res)]
                }
            };
            for (node, res) in done {
                let attempt = Attempt {
                    node: &node,
                    chain_id,
                    request_id,
                    deadline,
                };
                self.conclude(&mut p, &attempt, res).await;
            }
        }
        p.finish(chain_id)
    }

    /// Takes one finished attempt: its answers, or the failover away from its node.
    async fn conclude(
        &self,
        p: &mut Progress,
        a: &Attempt<'_>,
        res: Result<RpcResponse, AttemptError>,
    ) {
        // The breaker counts the node's own failures (transport, protocol), not its
        // upstream's trouble with a request (a heavy call timing out), which node errors
        // report. An attempt cancelled because a hedge won is not counted at all, nor one the
        // node refused unread (busy): it did no work and nothing was sent on.
        let ok = matches!(&res, Ok(r) if r.results.len() == p.pending.len());
        let busy = matches!(&res, Err(AttemptError::Mux(MuxError::Busy)));
        if !busy {
            a.node.record_attempt(ok);
        }
        let (reason, error) = match res {
            Ok(resp) if ok => return self.take(p, a, resp).await,
            Ok(resp) => {
                let e = AttemptError::Protocol(format!(
                    "{} results for {} calls",
                    resp.results.len(),
                    p.pending.len()
                ));
                if let Some(suppressed) = BAD_ANSWER_LOG.allow() {
                    tracing::warn!(node = %a.node.id, error = %e, suppressed, "node answered badly");
                }
                (e.reason(), e.to_string())
            }
            Err(e) => {
                tracing::debug!(node = %a.node.id, error = %e, "attempt failed; failing over");
                let error = match &e {
                    AttemptError::Timeout => self.timed_out(&p.calls),
                    other => format!("edge node failed: {other}"),
                };
                (e.reason(), error)
            }
        };
        if !busy {
            p.pending.iter().for_each(|&i| p.maybe_sent[i] = true);
        }
        self.failed_over(a.node, a.chain_id, a.request_id, reason);
        p.last_error = Some(error);
    }

    /// One attempt on `first`; when it is late (past its hedge delay) and the budget allows,
    /// the same request on the next candidate too. The first good answer wins and the other
    /// attempt is dropped (its call forgotten: not sent if still queued, its answer dropped if
    /// one comes). Returns the attempts that finished, in
    /// order: only the last can be good (a first finisher that failed waits for the other).
    async fn race(
        &self,
        r: &Race,
        first: Arc<Node>,
        frame: Bytes,
        rest: &mut Peekable<std::vec::IntoIter<Arc<Node>>>,
    ) -> Vec<(Arc<Node>, Result<RpcResponse, AttemptError>)> {
        let started = Instant::now();
        let delay = self.hedging.delay(&first.latency, r.class);
        let hedge_at = started + delay;
        let primary = self.timed_attempt(&first, Some(r.class), frame.clone(), r.deadline);
        tokio::pin!(primary);
        if hedge_at < r.deadline {
            tokio::select! {
                res = &mut primary => return vec![(first.clone(), res)],
                _ = tokio::time::sleep_until(hedge_at) => {}
            }
        }
        if hedge_at >= r.deadline || !self.hedging.spend(delay) {
            return vec![(first.clone(), primary.await)];
        }
        let second = rest.next().expect("a next candidate was peeked");
        // The frame's `budget_ms` was reckoned before the delay: the node may plan with a
        // little more time than is left, and the gateway's deadline still holds.
        let hedge = self.timed_attempt(&second, Some(r.class), frame, r.deadline);
        tokio::pin!(hedge);
        let (res, hedge_first) = tokio::select! {
            res = &mut primary => (res, false),
            res = &mut hedge => (res, true),
        };
        if r.good(&res) {
            if hedge_first {
                self.hedging.won.inc();
                // The first node was at least this slow; leaving its cancelled attempt out
                // would make it look faster than it is, and hedges more likely.
                first.latency.record(r.class, started.elapsed());
                return vec![(second.clone(), res)];
            }
            self.hedging.lost.inc();
            return vec![(first.clone(), res)];
        }
        // The first to finish failed: the other may still answer.
        let (failed, other) = if hedge_first {
            ((second.clone(), res), (first.clone(), primary.await))
        } else {
            ((first.clone(), res), (second.clone(), hedge.await))
        };
        if r.good(&other.1) {
            let used = if hedge_first {
                &self.hedging.lost
            } else {
                &self.hedging.won
            };
            used.inc();
        }
        vec![failed, other]
    }

    /// An attempt whose time, when it succeeds, goes into the node's latency for `class`.
    async fn timed_attempt(
        &self,
        node: &Arc<Node>,
        class: Option<Class>,
        frame: Bytes,
        deadline: Instant,
    ) -> Result<RpcResponse, AttemptError> {
        let started = Instant::now();
        let res = self.attempt(node, frame, deadline).await;
        if let (Some(class), Ok(_)) = (class, &res) {
            node.latency.record(class, started.elapsed());
        }
        res
    }

    /// Takes a node's response to the pending calls: final answers are settled, calls the
    /// node could not answer stay pending for the next node.
    async fn take(&self, p: &mut Progress, a: &Attempt<'_>, resp: RpcResponse) {
        p.node_used = Some(a.node.clone());
        if let Some(v) = resp.state_version {
            // A response can overtake the `Head` frame announcing its state.
            a.node.raise_state_version(a.chain_id, v);
        }
        a.node.cache.record(&resp.results);
        let mut still = Vec::new();
        for (i, r) in std::mem::take(&mut p.pending).into_iter().zip(resp.results) {
            if let Outcome::NodeError(_) = &r.outcome {
                // The node could not answer (its upstream failed): try the next node, but keep
                // this answer in case none can.
                self.failed_over(a.node, a.chain_id, a.request_id, "node_error");
                still.push(i);
                p.maybe_sent[i] = true;
                p.results[i] = Some(r);
                continue;
            }
            p.from[i] = Some(a.node.clone());
            p.results[i] = Some(match sendraw::settle(&p.calls[i], p.maybe_sent[i], r) {
                sendraw::Settled::Final(r) => {
                    if let (true, Some(v)) = (r.at_state, resp.state_version) {
                        p.tied[i] = Some((a.node.clone(), v));
                    }
                    r
                }
                sendraw::Settled::Confirm { hash, otherwise } => {
                    a.confirm(self, hash, otherwise).await
                }
            });
        }
        p.pending = still;
    }
}

/// One dispatch's progress: per call its answer so far, and which calls still need one.
struct Progress {
    calls: Vec<Call>,
    results: Vec<Option<CallResult>>,
    /// Per call: the node and chain-state version its answer is tied to, if so.
    tied: Vec<Option<(Arc<Node>, u64)>>,
    from: Vec<Option<Arc<Node>>>,
    pending: Vec<usize>,
    /// Calls an earlier attempt may have delivered (a transaction may already be in a pool).
    maybe_sent: Vec<bool>,
    node_used: Option<Arc<Node>>,
    last_error: Option<String>,
}

impl Progress {
    fn new(calls: Vec<Call>) -> Self {
        let n = calls.len();
        Self {
            calls,
            results: vec![None; n],
            tied: vec![None; n],
            from: vec![None; n],
            pending: (0..n).collect(),
            maybe_sent: vec![false; n],
            node_used: None,
            last_error: None,
        }
    }

    /// Every call's answer; calls no node answered get the last error (built only then: it
    /// costs a formatted JSON object, ~5k instructions, on a path that rarely needs it).
    fn finish(self, chain_id: u64) -> Dispatched {
        let last_error = self.last_error;
        let error = || match &last_error {
            Some(m) => rpc::error_object(rpc::INTERNAL_ERROR, m),
            None => rpc::error_object(
                rpc::NO_NODE,
                format!("no healthy edge node for chain {chain_id}"),
            ),
        };
        Dispatched {
            results: self
                .results
                .into_iter()
                .map(|r| r.unwrap_or_else(|| gateway_error(error())))
                .collect(),
            node: self.node_used,
            tied: self.tied,
            from: self.from,
        }
    }
}

/// What a race of two attempts needs to know about the request.
struct Race {
    class: Class,
    /// Answers a good response carries (one per pending call).
    expect: usize,
    deadline: Instant,
}

impl Race {
    /// A response that answers something: one whose every call is a node error (an upstream
    /// failing fast) must not cancel an attempt that may still answer.
    fn good(&self, res: &Result<RpcResponse, AttemptError>) -> bool {
        matches!(res, Ok(r) if r.results.len() == self.expect
            && r.results.iter().any(|c| !matches!(c.outcome, Outcome::NodeError(_))))
    }
}

/// One attempt on one node.
struct Attempt<'a> {
    node: &'a Arc<Node>,
    chain_id: u64,
    request_id: &'a str,
    deadline: Instant,
}

impl Attempt<'_> {
    /// Asks the node whether the chain knows a transaction: if so a retried send succeeded (its
    /// first copy got there), else the error stands.
    async fn confirm(&self, d: &Dispatcher, hash: String, otherwise: CallResult) -> CallResult {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let req = RpcRequest {
            chain_id: self.chain_id,
            request_id: self.request_id.to_string(),
            budget_ms: left.as_millis().min(u128::from(u32::MAX)) as u32,
            min_head: 0,
            calls: vec![Call {
                method: "eth_getTransactionByHash".into(),
                params: format!("[\"{hash}\"]").into(),
            }],
        };
        let known = match d.attempt(self.node, req.encode(), self.deadline).await {
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
        results: calls.iter().map(|_| gateway_error(err.clone())).collect(),
        node: None,
        tied: vec![None; calls.len()],
        from: vec![None; calls.len()],
    }
}

impl Dispatcher {
    async fn attempt(
        &self,
        node: &Arc<Node>,
        frame_bytes: Bytes,
        deadline: Instant,
    ) -> Result<RpcResponse, AttemptError> {
        let _load = InFlight::new(node.clone());
        // No watch on `node.gone` per call: a node marked gone fails its calls itself
        // (`Node::mark_gone` closes the mux).
        let work = async {
            let payload = node.mux.call(frame_bytes).await.map_err(|e| match e {
                MuxError::Closed if node.gone.is_cancelled() => AttemptError::NodeGone,
                e => AttemptError::Mux(e),
            })?;
            Ok(RpcResponse::decode(payload)?)
        };
        tokio::select! {
            biased;
            r = work => r,
            _ = tokio::time::sleep_until(deadline) => Err(AttemptError::Timeout),
        }
    }
}

/// An error the gateway gives a call itself (no node answered it).
fn gateway_error(error: Bytes) -> CallResult {
    CallResult {
        cache: CacheStatus::Bypass,
        outcome: Outcome::Error(error),
        final_answer: false,
        at_state: false,
    }
}
