//! The edge nodes, from the gateway's side.
//!
//! - [`link`]: accepting nodes over QUIC, checking their join, reading their status;
//! - [`registry`]: joined nodes and what the gateway knows of each;
//! - [`health`]: judging nodes from their status every interval, with hysteresis;
//! - [`router`]: which healthy nodes may serve a caller, best first;
//! - [`capability`]: what a call needs of a node (old state, a namespace, a logs range) and
//!   whether what the node announced covers it;
//! - [`dispatch`]: attempts on nodes, failover within the deadline; [`mux`]: the calls to a
//!   node, sharing its request stream;
//! - [`hedge`]: which reads may go to a second node when the first is late, after how long,
//!   and the budget that bounds how often; [`latency`]: each node's recent latency per class;
//! - [`sendraw`]: `eth_sendRawTransaction` across failovers;
//! - [`tip`]: the chain tip callers have seen, which no later answer goes below;
//! - [`audit`]: re-checking a share of the nodes' answers off the request path, and ejecting
//!   nodes shown wrong; [`reputation`]: each node's standing, by id;
//! - [`vantage`]: every gateway's smallest RTT to each node, shared through Redis, so each
//!   judges claimed locations from every vantage point.

pub mod audit;
pub mod capability;
pub mod dispatch;
pub mod health;
pub mod hedge;
pub mod latency;
pub mod link;
pub mod mux;
pub mod registry;
pub mod reputation;
pub mod router;
pub mod sendraw;
pub mod tip;
pub mod vantage;
