//! Gateway: one JSON-RPC URL in front of edge nodes joined over QUIC.
//!
//! Entry point: [`Gateway::start`] (the binary is a thin wrapper around it). The code map, by
//! concern (ARCHITECTURE.md walks a request through it):
//!
//! - [`front`]: the HTTP front door (connections, limits, paths, body) and JSON-RPC parsing and
//!   writing;
//! - [`request`]: the request path as named phases over one slot per call (admit, decide
//!   locally, charge, gateway tier, route, tip tier, dispatch, hold the tip, remember, write);
//! - [`answers`]: the gateway's cache tiers and what each keeps;
//! - [`nodes`]: the edge nodes: link (join, status), registry, health, router, dispatch;
//! - [`tenants`]: API keys, tenants and their limits (shared through Redis; [`redis_link`]
//!   opens the connections);
//! - [`geo`]: caller address (trusted proxies) and location (MaxMind DB);
//! - [`ops`]: the admin listener, Prometheus metrics and the status page;
//! - [`config`]: TOML config, validated at load;
//! - [`app`]: wiring: builds the parts and starts the tasks.

pub mod answers;
pub mod app;
pub mod config;
pub mod front;
pub mod geo;
pub mod nodes;
pub mod ops;
pub mod redis_link;
pub mod request;
pub mod subs;
pub mod tenants;

pub use app::{App, Gateway, SHUTDOWN_GRACE};
