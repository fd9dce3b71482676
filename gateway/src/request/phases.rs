//! The phases of [`Path`], each one job over the request's slots (see the module docs of
//! [`crate::request`] for the order).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, StatusCode};
use proto::msg::{CacheStatus, Call, Outcome};
use proto::rpc;
use tokio::time::Instant;
use tracing::Instrument;

use super::{Answer, Caller, Path, Request, Slot, Tier};
use crate::answers::{FinalAnswers, Offered, StateAnswers};
use crate::front::compress;
use crate::front::jsonrpc::{self, Entry, Parsed};
use crate::front::respond::{json, names, Resp};
use crate::nodes::audit;
use crate::nodes::capability::{self, Need};
use crate::nodes::dispatch::{self, Dispatched};
use crate::nodes::registry::Node;
use crate::nodes::router::RouteError;
use crate::nodes::tip;
use crate::ops::metrics::CallOutcome;

impl Path<'_> {
    /// Admit: parses the body within the batch limit (the tenant's, if lower) into one slot per
    /// element; a body that is not JSON-RPC, or a batch over the limit, is refused as a whole.
    pub fn admit<'r>(
        &self,
        body: &Bytes,
        id: &'r str,
        started: Instant,
        caller: &Caller<'r>,
    ) -> Result<Request<'r>, Box<Resp>> {
        let max_batch = caller
            .tenant
            .map_or(self.max_batch, |t| t.max_batch.min(self.max_batch));
        let parsed = jsonrpc::parse_bytes(body, max_batch).map_err(|e| {
            let reason = match e {
                jsonrpc::BodyError::Parse(_) => "parse_error",
                jsonrpc::BodyError::BatchTooLarge { .. } => {
                    if let Some(t) = caller.tenant.filter(|t| t.max_batch < self.max_batch) {
                        self.tenancy.count_batch_refused(&t.name);
                    }
                    "batch_too_large"
                }
                _ => "invalid_request",
            };
            self.metrics.rejected.with_label_values(&[reason]).inc();
            self.metrics
                .requests
                .with_label_values(&[&self.chain.name, reason])
                .inc();
            Box::new(json(StatusCode::OK, jsonrpc::body_error(&e)))
        })?;
        let (entries, batch) = match parsed {
            Parsed::Single(e) => (vec![e], false),
            Parsed::Batch(v) => (v, true),
        };
        Ok(Request {
            id,
            started,
            caller: caller.location,
            tenant: caller.tenant,
            batch,
            slots: entries.into_iter().map(Slot::new).collect(),
            node: None,
            gzip: false,
            min_head: 0,
            min_finalized: 0,
            refused: 0,
            retry_after: 0,
            split: Vec::new(),
        })
    }

    /// Charge: every call still open is charged to the tenant (or the keyless address); those
    /// over a limit are refused with `-32005`, naming the limit.
    pub fn charge(&self, req: &mut Request<'_>, caller: &Caller<'_>) {
        if caller.tenant.is_none() && caller.tenants.keyless_rps == 0 {
            // Nothing to limit: count, without building the cost list.
            let calls = req.slots.iter().filter(|s| s.open()).count();
            self.tenancy.count_keyless(calls as u64);
            return;
        }
        // One call (the usual request) allocates no lists.
        let single: [u32; 1];
        let (calls, many): (Vec<usize>, Vec<u32>);
        let cus: &[u32] = match &req.slots[..] {
            [one] => match one.call().filter(|_| one.open()) {
                Some((m, _)) => {
                    (calls, single) = (Vec::new(), [caller.tenants.cost(m)]);
                    &single
                }
                None => return,
            },
            slots => {
                (calls, many) = slots
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.open())
                    .filter_map(|(i, s)| Some((i, caller.tenants.cost(s.call()?.0))))
                    .unzip();
                &many
            }
        };
        let refused = self
            .tenancy
            .charge(caller.tenants, caller.tenant, caller.addr, cus);
        for (i, r) in refused {
            let who = caller.tenant.map_or("this address", |t| t.name.as_str());
            let error = rpc::error_object(
                rpc::LIMIT_EXCEEDED,
                format!(
                    "limit exceeded: {} of {who}; retry after {} s",
                    r.limit.label(),
                    r.retry_after
                ),
            );
            self.metrics.rejected.with_label_values(&["limited"]).inc();
            let slot = calls.get(i).copied().unwrap_or(0);
            req.slots[slot].decide(CacheStatus::Bypass, Err(error), Tier::Local);
            req.refused += 1;
            req.retry_after = req.retry_after.max(r.retry_after);
        }
    }

    /// Decide locally: invalid elements and methods this gateway refuses are answered here.
    pub fn decide_locally(&self, req: &mut Request<'_>) {
        let tenant = req.tenant;
        // A batch mostly repeats one method: the lists are checked once for each run of it.
        let mut passed: Option<jsonrpc::Method> = None;
        for slot in &mut req.slots {
            let (reason, error) = match &slot.entry {
                Entry::Invalid { error, .. } => ("invalid_request", error.clone()),
                Entry::Call { method, .. } if passed.as_ref() == Some(method) => continue,
                Entry::Call { method, .. } => match self.refusal(tenant, method) {
                    Some(error) => ("method_denied", error),
                    None => {
                        passed = Some(method.clone());
                        continue;
                    }
                },
            };
            self.metrics.rejected.with_label_values(&[reason]).inc();
            slot.decide(CacheStatus::Bypass, Err(error), Tier::Local);
        }
    }

    /// The error for a method this gateway (or the caller's key) refuses here.
    fn refusal(&self, tenant: Option<&crate::tenants::Tenant>, method: &str) -> Option<Bytes> {
        let message = if !self.allowed(method) {
            format!("method {method} is not allowed on this gateway")
        } else if tenant.is_some_and(|t| !t.method_allowed(method)) {
            format!("method {method} is not allowed for this API key")
        } else if method == "eth_subscribe" || method == "eth_unsubscribe" {
            format!("{method} needs a WebSocket: connect with ws:// (or wss://) to this URL and send it as a single call")
        } else {
            return None;
        };
        Some(rpc::error_object(rpc::METHOD_NOT_FOUND, message))
    }

    /// The gateway-wide deny list, then the chain's own allow and deny lists.
    pub(crate) fn allowed(&self, method: &str) -> bool {
        !jsonrpc::denied(self.deny, method)
            && !jsonrpc::denied(&self.chain.methods_deny, method)
            && self
                .chain
                .methods_allow
                .as_ref()
                .is_none_or(|allow| jsonrpc::denied(allow, method))
    }

    /// Gateway tier: final answers kept here. Each miss keeps its key for `remember`.
    pub fn gateway_tier(&self, req: &mut Request<'_>) {
        if !self.tiers.finals.enabled() {
            return;
        }
        let mut key = Vec::new();
        for slot in req.slots.iter_mut().filter(|s| s.open()) {
            let Some((method, params)) = slot.call() else {
                continue;
            };
            // A read at a moving tag is never final: no look-up (about 2,000 instructions of
            // every `latest` read), and no key, so nothing of it is kept among final answers.
            if capability::at_moving_tag(params) {
                continue;
            }
            FinalAnswers::key_into(&mut key, self.chain.chain_id, method, params);
            match self.tiers.finals.get(&key) {
                Some(hit) => {
                    self.series.gateway_hit.inc();
                    self.series.gateway_hit_call(method);
                    slot.decide(CacheStatus::Hit, Ok(hit.result), Tier::Gateway);
                    slot.deflated = hit.deflated;
                }
                None => slot.key = Some(Bytes::copy_from_slice(&key)),
            }
        }
    }

    /// Route: the nodes that may serve this chain for this caller, best first; for a request
    /// that reads at a moving tag, those that have reached the tip callers were shown come
    /// first (in the same order), so no caller reads below what it has seen. Of those, only
    /// the nodes that can answer the calls (see [`Self::fit`]); empty when the request was
    /// split (`req.split`).
    pub fn route(&self, req: &mut Request<'_>) -> Result<Vec<Arc<Node>>, RouteError> {
        let mut ranked = self.router.rank(self.chain.chain_id, req.caller)?;
        let (head, finalized) = self.tip_marks(req);
        req.min_head = head;
        req.min_finalized = finalized;
        self.tip_first(req, &mut ranked);
        // Almost every request needs nothing of a node but its chain: no list is made then.
        let needs: Vec<(usize, Need)> = req
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.open())
            .filter_map(|(i, s)| Some((i, s.call().and_then(|(m, p)| capability::need(m, p))?)))
            .collect();
        if needs.is_empty() {
            return Ok(ranked);
        }
        Ok(self.fit(req, ranked, &needs))
    }

    /// Nodes that have reached the tip marks first, in the same order otherwise.
    pub(super) fn tip_first(&self, req: &Request<'_>, ranked: &mut [Arc<Node>]) {
        let (head, finalized) = (req.min_head, req.min_finalized);
        if head > 0 || finalized > 0 {
            let chain = self.chain.chain_id;
            // Stable: `false` (reached the marks) sorts first.
            ranked.sort_by_key(|n| n.head(chain) < head || n.finalized(chain) < finalized);
        }
    }

    /// The marks that apply to the open calls: the head mark if one reads at a moving tag,
    /// the finalized mark if one reads at `safe` or `finalized` (0: none applies).
    fn tip_marks(&self, req: &Request<'_>) -> (u64, u64) {
        let (mut tip, mut fin) = (false, false);
        for (m, p) in req.slots.iter().filter(|s| s.open()).filter_map(Slot::call) {
            tip |= tip::reads_tip(m, p);
            fin |= tip::reads_finalized(p);
        }
        let chain = self.chain.chain_id;
        (
            if tip { self.marks.head(chain) } else { 0 },
            if fin { self.marks.finalized(chain) } else { 0 },
        )
    }

    /// Tip tier: what the node routing picked said under the chain state it still announces.
    pub fn tip_tier(&self, req: &mut Request<'_>, first: Option<&Arc<Node>>) {
        let Some(node) = first.filter(|_| self.tiers.tips.enabled()) else {
            return;
        };
        // A node below the tip callers were shown must catch up first (at dispatch): what it
        // said under its current state is older than what someone has already seen.
        let chain = self.chain.chain_id;
        if node.head(chain) < req.min_head || node.finalized(chain) < req.min_finalized {
            return;
        }
        let current = node.state_version(chain);
        // All or nothing: the node may already be at a newer state than the gateway has heard
        // of, so tip answers mixed with the node's own could come from two blocks.
        let mut hits = Vec::new();
        for (i, slot) in req.slots.iter().enumerate().filter(|(_, s)| s.open()) {
            let Some((method, params)) = slot.call() else {
                continue;
            };
            let key = StateAnswers::key(node.session, chain, method, params);
            match self.tiers.tips.get(&key, current) {
                Some(hit) => hits.push((i, hit)),
                None => return,
            }
        }
        if hits.is_empty() {
            return;
        }
        for (i, hit) in hits {
            let slot = &mut req.slots[i];
            if let Some((method, _)) = slot.call() {
                self.series.gateway_hit.inc();
                self.series.gateway_hit_call(method);
            }
            slot.decide(CacheStatus::Hit, Ok(hit), Tier::Gateway);
        }
        req.node = Some(node.clone());
    }

    /// Dispatch: the calls still open go to the ranked nodes (or all get the routing error);
    /// a split request's groups each to their own nodes, at once.
    pub async fn dispatch(
        &self,
        req: &mut Request<'_>,
        ranked: Result<Vec<Arc<Node>>, RouteError>,
    ) {
        if !req.split.is_empty() {
            return self.dispatch_split(req).await;
        }
        let (open, calls): (Vec<usize>, Vec<Call>) = req
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.open())
            .filter_map(|(i, s)| Some((i, s.to_call()?)))
            .unzip();
        if calls.is_empty() {
            return;
        }
        if self.tiers.finals.enabled() {
            self.series.gateway_miss.inc_by(calls.len() as u64);
        }
        let d = match ranked {
            Ok(ranked) => {
                // The request's span, once it needs a node: everything that can log happens
                // from here on (failovers, bad answers). Answers from the gateway's own tier
                // log nothing, and a span cost them about a tenth of their CPU. Made with
                // every field it will carry: recording one later costs a formatting pass each.
                // Strings as `&str` (logged quoted), not `%`: a Display field goes through
                // `write!`, about 1,000 instructions each.
                let method = match (req.batch, calls.first()) {
                    (false, Some(c)) => c.method.as_str(),
                    _ => "batch",
                };
                let span = tracing::info_span!(
                    "rpc",
                    id = req.id,
                    chain = self.chain.name.as_str(),
                    method
                );
                let deadline = req.started + self.dispatcher.timeout_for(&calls);
                let min_head = req.min_head;
                self.dispatcher
                    .dispatch(
                        self.chain.chain_id,
                        req.id,
                        calls,
                        (ranked, min_head),
                        deadline,
                    )
                    .instrument(span)
                    .await
            }
            Err(e) => {
                self.metrics.rejected.with_label_values(&[e.reason()]).inc();
                dispatch::unserved(&calls, &e.to_string())
            }
        };
        self.settle(req, open, d);
    }

    /// Puts each node answer in its slot and counts it.
    pub(super) fn settle(&self, req: &mut Request<'_>, open: Vec<usize>, d: Dispatched) {
        let by_node = d.node.is_some();
        if let Some(n) = d.node {
            req.node = Some(n);
        }
        let answered = d.results.into_iter().zip(d.tied).zip(d.from);
        for (i, ((r, tied), from)) in open.into_iter().zip(answered) {
            let slot = &mut req.slots[i];
            slot.from = from;
            let (outcome, result) = match r.outcome {
                Outcome::Result(b) => (CallOutcome::Result, Ok(b)),
                Outcome::Error(b) => (CallOutcome::RpcError, Err(b)),
                Outcome::NodeError(b) => (CallOutcome::NodeError, Err(b)),
            };
            let method = slot.call().map_or("", |(m, _)| m);
            self.series.node_call(method, r.cache, outcome, by_node);
            let tier = match by_node {
                true => Tier::Node {
                    final_answer: r.final_answer,
                    tied: tied.map(|(node, version)| (node.session, version)),
                },
                false => Tier::Local,
            };
            slot.decide(r.cache, result, tier);
        }
    }

    /// Hold the tip: `eth_blockNumber` answers no lower than the tip callers were shown, and
    /// block numbers in answers (the block number, a receipt's or transaction's block) raise
    /// it, so a client that saw a receipt for block N reads N or later from then on.
    pub fn hold_tip(&self, req: &mut Request<'_>) {
        let chain = self.chain.chain_id;
        for slot in &mut req.slots {
            let Some((method, _)) = slot.call() else {
                continue;
            };
            let tx_lookup = matches!(
                method,
                "eth_getTransactionReceipt" | "eth_getTransactionByHash"
            );
            if method != "eth_blockNumber" && !tx_lookup {
                continue;
            }
            let Some(Answer { result: Ok(r), .. }) = &mut slot.answer else {
                continue;
            };
            if tx_lookup {
                if let Some(n) = tip::block_number_of(r) {
                    self.marks.shown(chain, n);
                }
                continue;
            }
            let Some(n) = tip::quantity(r) else { continue };
            let mark = self.marks.head(chain);
            if n < mark {
                *r = Bytes::from(format!("\"{mark:#x}\""));
            } else {
                self.marks.shown(chain, n);
            }
        }
    }

    /// Remember: the gateway tiers keep what they may of the nodes' answers.
    pub fn remember(&self, req: &Request<'_>) {
        for slot in &req.slots {
            let (Some((method, params)), Some(answer)) = (slot.call(), &slot.answer) else {
                continue;
            };
            let (Ok(result), Tier::Node { final_answer, tied }) = (&answer.result, answer.tier)
            else {
                continue;
            };
            // Ejected while this request was in flight: nothing of it is kept.
            if slot.from.as_ref().is_some_and(|n| n.ejected()) {
                continue;
            }
            self.tiers.remember(Offered {
                chain_id: self.chain.chain_id,
                method,
                params,
                key: slot.key.as_ref(),
                result,
                cache: answer.cache,
                final_answer,
                tied,
                source: slot.from.as_ref().map_or(0, |n| n.origin),
            });
        }
    }

    /// Audit: hands a share of the nodes' answers to the auditor (a random draw per answer;
    /// nothing for answers from the gateway's tiers).
    pub fn audit(&self, req: &Request<'_>) {
        for slot in &req.slots {
            let (Some(node), Some((method, params)), Some(answer)) =
                (&slot.from, slot.call(), &slot.answer)
            else {
                continue;
            };
            let (Ok(result), Tier::Node { final_answer, .. }) = (&answer.result, answer.tier)
            else {
                continue;
            };
            if !self.auditor.sampled(method) {
                continue;
            }
            // The node sets the final flag itself: a changed node could clear it on its lies.
            // A state read at a block both the gateway's mark and the node call final has one
            // right answer anyway (gas estimates and access lists vary by client: not those).
            let finalized = || {
                let chain = self.chain.chain_id;
                let fin = self.marks.finalized(chain).min(node.finalized(chain));
                !matches!(method, "eth_estimateGas" | "eth_createAccessList")
                    && matches!(capability::need(method, params),
                        Some(Need::StateAt(n)) if n <= fin)
            };
            let final_answer = final_answer || finalized();
            if final_answer || audit::receipts::checkable(method) {
                self.auditor.submit(audit::Sample {
                    chain_id: self.chain.chain_id,
                    method: method.to_string(),
                    params: params.clone(),
                    answer: result.clone(),
                    final_answer,
                    node: node.clone(),
                });
            }
        }
    }

    /// Write: the body in call order with each caller's id (notifications get no answer, a
    /// request of notifications only an empty body), then the headers.
    pub fn write(&self, req: Request<'_>) -> Resp {
        let mut out = BytesMut::with_capacity(256);
        if req.batch {
            out.extend_from_slice(b"[");
        }
        let mut first = true;
        let mut ok = true;
        for slot in &req.slots {
            let answer = slot.answer.as_ref().expect("every call was answered");
            ok &= answer.result.is_ok();
            let Some(id) = slot.entry.id() else { continue };
            if !first {
                out.extend_from_slice(b",");
            }
            first = false;
            let result = answer.result.as_ref().map(|b| &b[..]).map_err(|b| &b[..]);
            jsonrpc::write_response(&mut out, id, result);
        }
        if req.batch {
            out.extend_from_slice(b"]");
        }
        match ok {
            true => &self.series.requests_ok,
            false => &self.series.requests_error,
        }
        .inc();
        let body = if first { Bytes::new() } else { out.freeze() };
        let large = self.compress_min > 0 && body.len() >= self.compress_min;
        let gzipped = match (large && req.gzip, req.batch) {
            (false, _) => None,
            (true, false) => Some(self.gzip_single(&req, &body)),
            (true, true) => Some(compress::gzip(&body)),
        };
        // Every call refused over a limit: 429; some: the others' answers, with 200.
        let calls = || req.slots.iter().filter(|s| s.call().is_some()).count();
        let status = match req.refused {
            n if n > 0 && n == calls() => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::OK,
        };
        let mut resp = json(status, gzipped.unwrap_or(body));
        if req.refused > 0 {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(req.retry_after));
        }
        if large {
            let h = resp.headers_mut();
            h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
            if req.gzip {
                h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
        }
        if !req.batch {
            single_headers(&mut resp, &req);
        }
        resp
    }

    /// A single answer gzip-encoded: a kept answer's once-deflated form wrapped in the
    /// caller's envelope, else `body` compressed now.
    fn gzip_single(&self, req: &Request<'_>, body: &Bytes) -> Bytes {
        let slot = &req.slots[0];
        match (&slot.deflated, slot.entry.id()) {
            (Some(d), Some(id)) => {
                let (prefix, suffix) = jsonrpc::result_envelope(id);
                d.gzip_around(&prefix, suffix)
            }
            _ => compress::gzip(body),
        }
    }
}

/// `x-edge-node`, `x-edge-region`, `x-cache` and `x-cache-tier` (on hits) of a single call.
fn single_headers(resp: &mut Resp, req: &Request<'_>) {
    let h = resp.headers_mut();
    if let Some(node) = &req.node {
        if let Some(v) = &node.id_header {
            h.insert(names::X_EDGE_NODE, v.clone());
        }
        if let Some(v) = &node.region_header {
            h.insert(names::X_EDGE_REGION, v.clone());
        }
    }
    let Some(Answer { cache, tier, .. }) = req.slots.first().and_then(|s| s.answer.as_ref()) else {
        return;
    };
    h.insert(names::X_CACHE, HeaderValue::from_static(cache.as_str()));
    if *cache == CacheStatus::Hit {
        let tier = match tier {
            Tier::Gateway => "gateway",
            _ => "edge",
        };
        h.insert(names::X_CACHE_TIER, HeaderValue::from_static(tier));
    }
}
