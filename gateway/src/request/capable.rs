//! Routing by what nodes can answer ([`crate::nodes::capability`]): fitting the ranked nodes
//! to the needs of a request's calls, refusing calls no node can answer, and, only when no one
//! node can answer the rest, splitting them into groups dispatched at once.

use std::sync::Arc;

use proto::msg::{CacheStatus, Call};
use tracing::Instrument;

use super::{Group, Path, Request, Tier};
use crate::nodes::capability::{self, Held, Need};
use crate::nodes::registry::Node;

impl Path<'_> {
    /// The ranked nodes that can answer every call with a need. When the best few cannot,
    /// every node the caller may use is considered; a call none of them can answer is refused
    /// here, naming why; and when no one node can answer the rest, they are split
    /// (`req.split`) by the nodes that can answer each.
    pub(super) fn fit(
        &self,
        req: &mut Request<'_>,
        ranked: Vec<Arc<Node>>,
        needs: &[(usize, Need)],
    ) -> Vec<Arc<Node>> {
        let chain = self.chain.chain_id;
        let able = |nodes: &[Arc<Node>], needs: &[(usize, Need)]| -> Vec<Arc<Node>> {
            let can_all = |n: &&Arc<Node>| needs.iter().all(|&(_, need)| n.can(chain, need));
            nodes.iter().filter(can_all).cloned().collect()
        };
        let all = able(&ranked, needs);
        if !all.is_empty() {
            return all;
        }
        let mut pool = self.router.rank_all(chain, req.caller);
        self.tip_first(req, &mut pool);
        let all = able(&pool, needs);
        if !all.is_empty() {
            return all;
        }
        let mut answerable = Vec::with_capacity(needs.len());
        for &(i, need) in needs {
            if pool.iter().any(|n| n.can(chain, need)) {
                answerable.push((i, need));
                continue;
            }
            let held: Vec<Held> = pool.iter().filter_map(|n| n.capabilities(chain)).collect();
            self.metrics
                .rejected
                .with_label_values(&["no_capable_node"])
                .inc();
            let error = capability::refusal(chain, need, &held);
            req.slots[i].decide(CacheStatus::Bypass, Err(error), Tier::Local);
        }
        let all = able(&pool, &answerable);
        if answerable.is_empty() || !all.is_empty() {
            return if answerable.is_empty() { ranked } else { all };
        }
        req.split = split(req, &ranked, &pool, &answerable, chain);
        // No one node: so no tip answers either (they come from one node's state).
        Vec::new()
    }

    /// Dispatches each group of a split request to its nodes, concurrently, and settles them.
    pub(super) async fn dispatch_split(&self, req: &mut Request<'_>) {
        let groups = std::mem::take(&mut req.split)
            .into_iter()
            .map(|g| {
                let (open, calls): (Vec<usize>, Vec<Call>) = g
                    .slots
                    .iter()
                    .filter(|&&i| req.slots[i].open())
                    .filter_map(|&i| Some((i, req.slots[i].to_call()?)))
                    .unzip();
                (open, calls, g.nodes)
            })
            .collect::<Vec<_>>();
        let n: usize = groups.iter().map(|(_, c, _)| c.len()).sum();
        if self.tiers.finals.enabled() {
            self.series.gateway_miss.inc_by(n as u64);
        }
        let span = tracing::info_span!(
            "rpc",
            id = req.id,
            chain = self.chain.name.as_str(),
            method = "batch"
        );
        let (id, min_head) = (req.id, req.min_head);
        let chain = self.chain.chain_id;
        let done = futures::future::join_all(groups.into_iter().map(|(open, calls, nodes)| {
            let deadline = req.started + self.dispatcher.timeout_for(&calls);
            let d = self
                .dispatcher
                .dispatch(chain, id, calls, (nodes, min_head), deadline);
            async move { (open, d.await) }
        }))
        .instrument(span)
        .await;
        for (open, d) in done {
            self.settle(req, open, d);
        }
    }
}

/// The open calls of a request no one node can answer whole, grouped by the nodes that can
/// answer each (calls with no need: the ranked nodes); calls with the same nodes travel
/// together.
fn split(
    req: &Request<'_>,
    ranked: &[Arc<Node>],
    pool: &[Arc<Node>],
    needs: &[(usize, Need)],
    chain: u64,
) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for (i, _) in req.slots.iter().enumerate().filter(|(_, s)| s.open()) {
        let nodes: Vec<Arc<Node>> = match needs.iter().find(|(j, _)| *j == i) {
            Some(&(_, need)) => pool
                .iter()
                .filter(|n| n.can(chain, need))
                .cloned()
                .collect(),
            None => ranked.to_vec(),
        };
        let same = |g: &&mut Group| {
            g.nodes.len() == nodes.len()
                && g.nodes.iter().zip(&nodes).all(|(a, b)| Arc::ptr_eq(a, b))
        };
        match groups.iter_mut().find(same) {
            Some(g) => g.slots.push(i),
            None => groups.push(Group {
                slots: vec![i],
                nodes,
            }),
        }
    }
    groups
}
