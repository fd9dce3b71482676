//! Audits: the gateway does not take an edge node's word for it. A share of the answers nodes
//! give (`audit.share`, per method in `audit.methods`) is checked after the caller has it, off
//! the request path, in a bounded number of tasks:
//!
//! - receipts, block receipts and logs against the block they name, asked of the same node
//!   ([`receipts`]): the header must hash to the block's hash, its transactions rebuild its
//!   `transactionsRoot` and its receipts its `receiptsRoot`, so no second node is needed;
//! - final answers (one right answer) against a second opinion: the audit upstream the operator
//!   trusts (`audit.upstream`), which decides, or another node; when two nodes differ, a third
//!   settles it and the node on the wrong side loses reputation.
//!
//! Answers are compared after canonicalising the JSON (object keys sorted, no whitespace).
//! Errors and `null` are never held against a node here (a node without the state, an
//! upstream hiccup): only two different results are a mismatch.
//!
//! Ejection ([`super::reputation`]): a node below `audit.eject_below` is flagged (never routed
//! to; its feeds move), every answer the gateway kept from it is dropped, and the evidence is
//! logged. A tick ends ejections whose time has passed and enforces ones the health checker's
//! penalties caused.

pub mod receipts;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use proto::msg::{Call, Outcome as CallOutcome};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::dispatch::Dispatcher;
use super::registry::{Node, Registry};
use super::reputation::Event;
use super::router::Router;
use crate::answers::{FinalAnswers, Tiers};
use crate::config::{AuditConfig, Config};
use crate::ops::metrics::Metrics;

/// How often ejections are enforced and ended.
const TICK: Duration = Duration::from_millis(250);
/// Every this many ticks (a minute), nodes in good standing regain `audit.reward`.
const HEAL_EVERY: u32 = 240;

/// One answer picked for an audit.
pub struct Sample {
    pub chain_id: u64,
    pub method: String,
    pub params: Bytes,
    pub answer: Bytes,
    pub final_answer: bool,
    pub node: Arc<Node>,
}

/// How an audit ended (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Wrong,
    Unresolved,
    Inconclusive,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Wrong => "wrong",
            Outcome::Unresolved => "unresolved",
            Outcome::Inconclusive => "inconclusive",
        }
    }
}

/// Who gave a second (or third) opinion.
enum Witness {
    Node(Arc<Node>),
    Trusted,
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// The audits and what they act on.
pub struct Auditor {
    cfg: AuditConfig,
    registry: Arc<Registry>,
    router: Arc<Router>,
    dispatcher: Arc<Dispatcher>,
    tiers: Arc<Tiers>,
    metrics: Arc<Metrics>,
    permits: Arc<Semaphore>,
    trusted: Option<(HttpClient, http::Uri)>,
    /// The chain id the audit upstream answers with, once asked.
    trusted_chain: tokio::sync::OnceCell<u64>,
    status_deadline: Duration,
    chain_names: HashMap<u64, String>,
    /// Ejected nodes whose kept answers are dropped once more at the next tick.
    forget_again: parking_lot::Mutex<Vec<(u64, u64)>>,
}

impl Auditor {
    pub fn new(
        config: &Config,
        (registry, router): (Arc<Registry>, Arc<Router>),
        dispatcher: Arc<Dispatcher>,
        tiers: Arc<Tiers>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let trusted = config.audit.upstream.as_ref().and_then(|u| {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http();
            Some((client, u.parse().ok()?))
        });
        let names: Vec<&str> = config.chains.iter().map(|c| c.name.as_str()).collect();
        metrics.audit.precreate(&names);
        Self {
            permits: Arc::new(Semaphore::new(config.audit.max_in_flight)),
            cfg: config.audit.clone(),
            registry,
            router,
            dispatcher,
            tiers,
            metrics,
            trusted,
            trusted_chain: tokio::sync::OnceCell::new(),
            status_deadline: config.quic.status_deadline,
            chain_names: config
                .chains
                .iter()
                .map(|c| (c.chain_id, c.name.clone()))
                .collect(),
            forget_again: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// Whether an answer to `method` is picked for an audit (one random draw; none when the
    /// method's share is 0). The caller decides whether the answer can be checked at all.
    pub fn sampled(&self, method: &str) -> bool {
        let share = self.cfg.share_of(method);
        share > 0.0 && rand::random::<f64>() < share
    }

    /// Audits `s` in a task of its own, if fewer than `audit.max_in_flight` are running.
    pub fn submit(self: &Arc<Self>, s: Sample) {
        let chain = self.chain_name(s.chain_id).to_string();
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.count(&chain, "skipped");
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            let outcome = tokio::time::timeout(me.cfg.timeout, me.audit(&s))
                .await
                .unwrap_or(Outcome::Inconclusive);
            me.count(&chain, outcome.label());
            drop(permit);
        });
    }

    fn count(&self, chain: &str, outcome: &str) {
        self.metrics
            .audit
            .audits
            .with_label_values(&[chain, outcome])
            .inc();
    }

    fn chain_name(&self, chain_id: u64) -> &str {
        self.chain_names.get(&chain_id).map_or("?", String::as_str)
    }

    /// One audit: the receipts check where it applies, then a second opinion on final answers.
    pub async fn audit(&self, s: &Sample) -> Outcome {
        let mut checked = false;
        if receipts::checkable(&s.method) {
            match self.check_receipts(s).await {
                receipts::Verdict::Wrong(why) => {
                    self.wrong(&s.node.id, s, (&s.answer, None), &why);
                    return Outcome::Wrong;
                }
                receipts::Verdict::Consistent => checked = true,
                receipts::Verdict::Unknown(why) => {
                    tracing::debug!(node = %s.node.id, %why, "receipts check inconclusive");
                }
            }
        }
        if !s.final_answer {
            return match checked {
                true => self.confirmed(&s.node),
                false => Outcome::Inconclusive,
            };
        }
        match self.second_opinion(s).await {
            Outcome::Inconclusive if checked => self.confirmed(&s.node),
            o => o,
        }
    }

    fn confirmed(&self, node: &Node) -> Outcome {
        self.registry
            .book
            .record(&node.id, Event::Confirmed, &self.cfg);
        Outcome::Pass
    }

    /// Fetches and checks the receipts of the blocks `s`'s answer names, from the same node.
    async fn check_receipts(&self, s: &Sample) -> receipts::Verdict {
        let blocks = receipts::blocks_of(&s.method, &s.answer);
        if blocks.is_empty() {
            return receipts::Verdict::Unknown("no block to check against".into());
        }
        let mut verified = Vec::new();
        for hash in blocks {
            let calls = vec![
                call("eth_getBlockByHash", format!("[\"{hash}\",true]")),
                call("eth_getBlockReceipts", format!("[\"{hash}\"]")),
            ];
            let Some(answers) = self.ask(&s.node, s.chain_id, calls).await else {
                return receipts::Verdict::Unknown("the node did not answer".into());
            };
            let (Some(Ok(block)), Some(Ok(list))) = (answers.first(), answers.get(1)) else {
                return receipts::Verdict::Unknown("the block or its receipts were refused".into());
            };
            // Off the runtime: a large block's tries take milliseconds to rebuild, and on one
            // worker thread (the default on two cores) requests would wait for them.
            let (block, list) = (block.clone(), list.clone());
            match off_runtime(move || receipts::verify_block(hash, &block, &list)).await {
                Some(Ok(v)) => verified.push(v),
                Some(Err(v)) => return v,
                None => return receipts::Verdict::Unknown("the check did not finish".into()),
            }
        }
        let (method, answer) = (s.method.clone(), s.answer.clone());
        off_runtime(move || receipts::check_answer(&method, &answer, &verified))
            .await
            .unwrap_or_else(|| receipts::Verdict::Unknown("the check did not finish".into()))
    }

    /// Compares a final answer with a second opinion, and on a mismatch with a third.
    async fn second_opinion(&self, s: &Sample) -> Outcome {
        let Some(a) = canonical_off_runtime(s.answer.clone()).await else {
            return Outcome::Inconclusive;
        };
        let Some((b, witness)) = self.opinion(s, &[&s.node.id]).await else {
            return Outcome::Inconclusive;
        };
        if a == b {
            if let Witness::Node(n) = &witness {
                self.confirmed(n);
            }
            return self.confirmed(&s.node);
        }
        let other = match witness {
            // The operator's own upstream decides.
            Witness::Trusted => {
                let why = "the audit upstream answered differently";
                self.wrong(&s.node.id, s, (&a, Some(&b)), why);
                return Outcome::Wrong;
            }
            Witness::Node(n) => n,
        };
        let Some((c, _)) = self.opinion(s, &[&s.node.id, &other.id]).await else {
            self.unresolved(s, &other, "no third node to ask");
            return Outcome::Unresolved;
        };
        if c == a {
            let why = format!("{} and a third node answered differently", s.node.id);
            self.wrong(&other.id, s, (&b, Some(&a)), &why);
        } else if c == b {
            let why = format!("{} and a third node answered differently", other.id);
            self.wrong(&s.node.id, s, (&a, Some(&b)), &why);
        } else {
            self.unresolved(s, &other, "three nodes, three answers");
            return Outcome::Unresolved;
        }
        Outcome::Wrong
    }

    /// Another answer to `s`'s call, canonical: from the audit upstream if one is configured,
    /// else from a routable node not in `exclude` (picked at random).
    async fn opinion(&self, s: &Sample, exclude: &[&str]) -> Option<(Vec<u8>, Witness)> {
        if let Some((client, uri)) = &self.trusted {
            if self.trusted_chain(client, uri).await == Some(s.chain_id) {
                let answer = self.ask_trusted(client, uri, &s.method, &s.params).await?;
                return Some((canonical_off_runtime(answer).await?, Witness::Trusted));
            }
        }
        let others: Vec<Arc<Node>> = self
            .registry
            .candidates(s.chain_id, self.status_deadline)
            .into_iter()
            .filter(|n| !exclude.contains(&n.id.as_str()))
            .collect();
        let node = others
            .get(rand::random_range(0..others.len().max(1)))?
            .clone();
        let calls = vec![Call {
            method: s.method.clone(),
            params: s.params.clone(),
        }];
        let answer = self.ask(&node, s.chain_id, calls).await?.pop()?.ok()?;
        Some((canonical_off_runtime(answer).await?, Witness::Node(node)))
    }

    /// Asks one node `calls` (no failover); per call its result or error, `None` when the node
    /// did not answer them all.
    async fn ask(
        &self,
        node: &Arc<Node>,
        chain_id: u64,
        calls: Vec<Call>,
    ) -> Option<Vec<Result<Bytes, Bytes>>> {
        self.metrics
            .audit
            .calls
            .with_label_values(&[self.chain_name(chain_id)])
            .inc_by(calls.len() as u64);
        let id = format!("audit-{:016x}", rand::random::<u64>());
        let deadline = Instant::now() + self.cfg.timeout;
        let d = self
            .dispatcher
            .dispatch(chain_id, &id, calls, (vec![node.clone()], 0), deadline)
            .await;
        if d.from
            .iter()
            .any(|f| f.as_ref().is_none_or(|f| f.id != node.id))
        {
            return None;
        }
        d.results
            .into_iter()
            .map(|r| match r.outcome {
                CallOutcome::Result(b) => Some(Ok(b)),
                CallOutcome::Error(b) => Some(Err(b)),
                CallOutcome::NodeError(_) => None,
            })
            .collect()
    }

    /// The chain the audit upstream serves (asked once): it decides only for that chain, and
    /// other chains' audits ask nodes.
    async fn trusted_chain(&self, client: &HttpClient, uri: &http::Uri) -> Option<u64> {
        let id = self
            .trusted_chain
            .get_or_try_init(|| async {
                let answer = self
                    .ask_trusted(client, uri, "eth_chainId", b"[]")
                    .await
                    .ok_or(())?;
                let hex: String = serde_json::from_slice(&answer).map_err(|_| ())?;
                u64::from_str_radix(hex.trim_start_matches("0x"), 16).map_err(|_| ())
            })
            .await;
        id.ok().copied()
    }

    /// Asks the audit upstream (plain JSON-RPC over HTTP); its result, if it gave one.
    async fn ask_trusted(
        &self,
        client: &HttpClient,
        uri: &http::Uri,
        method: &str,
        params: &[u8],
    ) -> Option<Bytes> {
        self.metrics.audit.trusted_calls.inc();
        let params = if params.is_empty() {
            &b"[]"[..]
        } else {
            params
        };
        let body = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":{},\"params\":{}}}",
            Value::String(method.to_string()),
            String::from_utf8_lossy(params)
        );
        let req = http::Request::post(uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .ok()?;
        let resp = client.request(req).await.ok()?;
        let bytes = resp.into_body().collect().await.ok()?.to_bytes();
        let v: Value = serde_json::from_slice(&bytes).ok()?;
        serde_json::to_vec(v.get("result")?).ok().map(Bytes::from)
    }

    /// A node was shown wrong: logs the evidence (its answer's hash, and the answer it was
    /// held against), drops the gateway's kept copy if the sampled answer was the wrong one, and
    /// lowers its reputation (ejecting it when that takes it below the threshold).
    fn wrong(&self, id: &str, s: &Sample, (given, right): (&[u8], Option<&[u8]>), why: &str) {
        let right = right.map_or_else(|| "-".to_string(), short_hash);
        let evidence = format!(
            "{} params sha256:{} answered sha256:{} against sha256:{right}: {why}",
            s.method,
            short_hash(&s.params),
            short_hash(given),
        );
        if id == s.node.id {
            // Kept by the gateway under the caller's spelling: not served again, ejected or not.
            let key = FinalAnswers::key(s.chain_id, &s.method, &s.params);
            if self.tiers.finals.remove(&key) {
                self.metrics.audit.dropped_answers.inc();
            }
        }
        tracing::warn!(node = %id, chain_id = s.chain_id, %evidence, "audit: node answered wrongly");
        if self
            .registry
            .book
            .record(id, Event::Wrong(evidence.clone()), &self.cfg)
        {
            self.eject(id, &evidence);
        }
    }

    fn unresolved(&self, s: &Sample, other: &Node, why: &str) {
        tracing::warn!(
            node = %s.node.id, other = %other.id, method = %s.method,
            params = %short_hash(&s.params), %why,
            "audit: two nodes answered differently and nothing settled it"
        );
    }

    /// Takes `id` out of routing and drops what the gateway kept from it.
    fn eject(&self, id: &str, evidence: &str) {
        self.metrics.audit.ejections.inc();
        let (origin, session) = match self.registry.get(id) {
            Some(n) => {
                n.set_ejected(true);
                (n.origin, n.session)
            }
            None => (super::registry::origin(id), 0),
        };
        self.router.rebuild();
        self.forget(origin, session);
        // Once more next tick: a request in flight to it may have kept an answer meanwhile.
        self.forget_again.lock().push((origin, session));
        let secs = self.cfg.eject_for.as_secs();
        tracing::warn!(node = %id, %evidence, for_secs = secs, "node ejected: its answers were wrong");
    }

    /// Drops what the gateway kept from a node: a scan of both tiers, off the runtime's workers.
    fn forget(&self, origin: u64, session: u64) {
        let (tiers, dropped) = (
            self.tiers.clone(),
            self.metrics.audit.dropped_answers.clone(),
        );
        tokio::task::spawn_blocking(move || dropped.inc_by(tiers.forget_node(origin, session)));
    }

    /// An operator re-admits `id`; false if it was not ejected.
    pub fn readmit(&self, id: &str) -> bool {
        let was = self.registry.book.readmit(id);
        if was {
            self.back(id, "re-admitted by an operator");
        }
        was
    }

    fn back(&self, id: &str, why: &str) {
        if let Some(n) = self.registry.get(id) {
            n.set_ejected(false);
        }
        self.router.rebuild();
        tracing::info!(node = %id, %why, "node back in routing");
    }

    /// Ends ejections whose time has passed and enforces new ones (the health checker's
    /// penalties can eject too).
    pub fn tick(&self) {
        let again = std::mem::take(&mut *self.forget_again.lock());
        for (origin, session) in again {
            self.forget(origin, session);
        }
        for id in self.registry.book.expire(Instant::now()) {
            self.back(&id, "its ejection ended");
        }
        for n in self.registry.snapshot() {
            if !n.ejected() && self.registry.book.is_ejected(&n.id) {
                let why = self.registry.book.standing(&n.id).last_wrong;
                self.eject(&n.id, why.as_deref().unwrap_or("health drops"));
            }
        }
    }

    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        let mut n = 0u32;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => self.tick(),
            }
            n = (n + 1) % HEAL_EVERY;
            if n == 0 {
                self.registry.book.heal(self.cfg.reward);
            }
        }
    }
}

fn call(method: &str, params: String) -> Call {
    Call {
        method: method.into(),
        params: params.into(),
    }
}

/// The answer's JSON with object keys sorted and no whitespace; `None` for `null` and
/// anything that is not JSON (neither is compared).
/// Runs CPU-heavy checking work on the blocking pool (`None`: it panicked or was cancelled).
async fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

/// [`canonical`], on the blocking pool for a large answer (a whole block takes milliseconds).
async fn canonical_off_runtime(answer: Bytes) -> Option<Vec<u8>> {
    const INLINE_MAX: usize = 16 * 1024;
    if answer.len() <= INLINE_MAX {
        return canonical(&answer);
    }
    off_runtime(move || canonical(&answer)).await.flatten()
}

pub fn canonical(answer: &[u8]) -> Option<Vec<u8>> {
    fn sort(v: Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut pairs: Vec<(String, Value)> = m.into_iter().collect();
                pairs.sort_by(|a, b| a.0.cmp(&b.0));
                Value::Object(pairs.into_iter().map(|(k, v)| (k, sort(v))).collect())
            }
            Value::Array(a) => Value::Array(a.into_iter().map(sort).collect()),
            other => other,
        }
    }
    match serde_json::from_slice::<Value>(answer).ok()? {
        Value::Null => None,
        v => serde_json::to_vec(&sort(v)).ok(),
    }
}

/// The first 16 hex digits of SHA-256: enough to match evidence across logs.
fn short_hash(b: &[u8]) -> String {
    let d = Sha256::digest(b);
    d[..8].iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_ignores_key_order_and_spacing_only() {
        let a = canonical(br#"{"b":1,"a":{"y":[1,2],"x":"0xAb"}}"#).unwrap();
        let b = canonical(br#"{ "a": {"x":"0xAb", "y":[1, 2]}, "b":1 }"#).unwrap();
        assert_eq!(a, b);
        assert_ne!(
            a,
            canonical(br#"{"a":{"x":"0xAb","y":[2,1]},"b":1}"#).unwrap()
        );
        assert_eq!(canonical(b"null"), None);
        assert_eq!(canonical(b"not json"), None);
        assert_eq!(canonical(br#""0x1""#).unwrap(), br#""0x1""#.to_vec());
    }
}
