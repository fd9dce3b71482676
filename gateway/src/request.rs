//! The request path: what happens to a JSON-RPC request body once the HTTP front door has
//! read it, as named phases over one [`Slot`] per call, in the order they run:
//!
//! 1. **admit** ([`Path::admit`]): the body is parsed within the batch limit (the tenant's, if
//!    lower); a body that is not JSON-RPC is refused as a whole.
//! 2. **decide locally** ([`Path::decide_locally`]): invalid calls and methods this gateway
//!    (or the caller's tenant) refuses are answered on the spot and never leave it.
//! 3. **charge** ([`Path::charge`]): the calls left are charged to the tenant's budgets (or the
//!    keyless caller's address); calls over a limit are refused with the limit named.
//! 4. **gateway tier** ([`Path::gateway_tier`]): final answers the gateway kept.
//! 5. **route** ([`Path::route`]): the nodes that may serve the chain, best first, and of
//!    those the ones that can answer the calls ([`crate::nodes::capability`]: old state, a
//!    namespace, a logs range); a call no node can answer is refused naming why, and a batch
//!    no one node can answer whole is split into groups by the nodes that can.
//! 6. **tip tier** ([`Path::tip_tier`]): answers the chosen node gave under the chain state it
//!    still announces, for every open call or none (so a batch never mixes two states).
//!    Reads at a moving tag go first to nodes that have reached the tip callers have been
//!    shown ([`crate::nodes::tip`]).
//! 7. **dispatch** ([`Path::dispatch`]): what is left goes to the nodes, with failover; the
//!    node is told that tip, so it catches up before it answers if it must.
//! 8. **hold the tip** ([`Path::hold_tip`]): `eth_blockNumber` never answers below the tip
//!    callers have seen; block numbers in answers (receipts) raise it.
//! 9. **remember** ([`Path::remember`]): each tier keeps what it may
//!    ([`crate::answers::Tiers::remember`] owns the rule).
//! 10. **audit** ([`Path::audit`]): a share of the nodes' answers is handed to the auditor,
//!     which checks them off the request path ([`crate::nodes::audit`]).
//! 11. **write** ([`Path::write`]): the body in call order with each caller's id, and the
//!     headers (`x-cache`, `x-cache-tier`, `x-edge-node`, `x-edge-region`); gzip-encoded when
//!     large and the caller accepts it (a single kept answer from its once-deflated form).

mod capable;
mod phases;
mod slot;

use std::net::IpAddr;
use std::sync::Arc;

use tokio::time::Instant;

pub use slot::{Answer, Slot, Tier};

use crate::answers::Tiers;
use crate::config::ChainConfig;
use crate::front::respond::Resp;
use crate::geo::Location;
use crate::nodes::audit::Auditor;
use crate::nodes::dispatch::Dispatcher;
use crate::nodes::registry::Node;
use crate::nodes::router::Router;
use crate::nodes::tip::Marks;
use crate::ops::metrics::{ChainSeries, Metrics};
use crate::tenants::{Tenancy, Tenant, Tenants};

/// What the phases use: one chain's view of the gateway, borrowed for one request.
pub struct Path<'a> {
    pub chain: &'a ChainConfig,
    /// The gateway-wide deny list (`[methods] deny`); the chain's own lists are in `chain`.
    pub deny: &'a [String],
    pub max_batch: usize,
    pub tiers: &'a Tiers,
    pub router: &'a Router,
    pub dispatcher: &'a Dispatcher,
    pub metrics: &'a Metrics,
    pub series: &'a ChainSeries,
    pub marks: &'a Marks,
    /// Answers of at least this many bytes are gzip-encoded for callers that accept it (0: never).
    pub compress_min: usize,
    pub tenancy: &'a Tenancy,
    pub auditor: &'a Arc<Auditor>,
}

/// Who sent a request, as the front door found out.
pub struct Caller<'r> {
    pub location: Option<&'r Location>,
    /// The caller's address (after trusted proxies): what keyless limits count by.
    pub addr: IpAddr,
    /// The tenant whose key the request carries (`None`: keyless).
    pub tenant: Option<&'r Tenant>,
    /// The tenants file in use when the request came in.
    pub tenants: &'r Tenants,
}

/// One request on its way through the phases.
pub struct Request<'r> {
    /// The `x-request-id`, also sent to the node and logged on both sides.
    pub id: &'r str,
    pub started: Instant,
    pub caller: Option<&'r Location>,
    pub tenant: Option<&'r Tenant>,
    pub batch: bool,
    pub slots: Vec<Slot>,
    /// The node named in `x-edge-node`: the one that answered, or whose tip answers were used.
    pub node: Option<Arc<Node>>,
    /// The caller accepts a gzip-encoded answer.
    pub gzip: bool,
    /// The tip mark the node is told (set by `route` when a call reads a moving tag, else 0),
    /// and the finalized mark (when a call reads `safe` or `finalized`).
    pub min_head: u64,
    pub min_finalized: u64,
    /// Calls refused over a limit, and the longest `Retry-After` among them (seconds).
    pub refused: usize,
    pub retry_after: u64,
    /// Set by `route` only when no node can answer every open call: the calls in groups,
    /// each with the nodes that can answer it (empty: one group, the ranked nodes).
    pub split: Vec<Group>,
}

/// Calls of a split request that go to the same nodes.
pub struct Group {
    /// Indices into [`Request::slots`].
    pub slots: Vec<usize>,
    /// The nodes that can answer every call of the group, best first.
    pub nodes: Vec<Arc<Node>>,
}

impl Path<'_> {
    /// Runs every phase over `body` and returns the response.
    pub async fn serve(
        &self,
        body: &bytes::Bytes,
        id: &str,
        started: Instant,
        caller: &Caller<'_>,
        gzip: bool,
    ) -> Resp {
        let mut req = match self.admit(body, id, started, caller) {
            Ok(req) => req,
            Err(refused) => return *refused,
        };
        req.gzip = gzip;
        self.decide_locally(&mut req);
        self.charge(&mut req, caller);
        self.gateway_tier(&mut req);
        if req.slots.iter().any(Slot::open) {
            let ranked = self.route(&mut req);
            if let Ok(ranked) = &ranked {
                self.tip_tier(&mut req, ranked.first());
            }
            // Boxed: the node round trip's future is kilobytes, and inline it would make every
            // request's future that large, hits included (copied on each request, and held in
            // every keep-alive connection's slot even while it is idle).
            Box::pin(self.dispatch(&mut req, ranked)).await;
            self.hold_tip(&mut req);
            self.remember(&req);
            self.audit(&req);
        }
        self.write(req)
    }
}
